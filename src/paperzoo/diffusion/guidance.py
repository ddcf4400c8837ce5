"""Guidance: wrappers that take denoisers and return a denoiser, and exact class-conditional mixtures to guide.

Classifier-free guidance (Ho & Salimans, 2022) combines a conditional and an unconditional denoiser,

.. math::
    D_w(x, \\sigma) = D_u(x, \\sigma) + w(\\sigma)\\,\\bigl(D_c(x, \\sigma) - D_u(x, \\sigma)\\bigr),

so :math:`w = 1` is the conditional model and :math:`w = 0` the unconditional one (diffusers'
``guidance_scale``). The scale may depend on the level: ``scale`` is a number or a callable ``sigma -> w``
(one weight per sample), the hook through which guidance schedules (a limited interval, an adaptive cut-off)
override one piece. The score of :math:`D_w` is :math:`(1 - w)\\nabla\\log p_u + w\\nabla\\log p_c`, the score of
:math:`p_u^{1-w} p_c^w` only at :math:`\\sigma = 0`; at :math:`\\sigma > 0` it is not the score of the noised tilted
distribution, which is what guidance papers study.

:func:`class_conditional` splits a :class:`~paperzoo.diffusion.mixture.GaussianMixture` into classes (sets of
components), giving exact :math:`D_c` and :math:`D_u` on which every guidance claim has ground truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from paperzoo.core.accepts import Function, Instance, Ints, OneOf, Real, accepts
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle

__all__ = ["classifier_free_guidance", "class_conditional", "guidance_scale_at"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guidance_scale_at(scale, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The weight :math:`w(\\sigma)` shaped to broadcast against ``x`` ``(N, ...)``."""
    w = scale(sigma) if callable(scale) else scale
    w = torch.as_tensor(w, dtype=x.dtype, device=x.device)
    if w.dim() == 0:
        return w
    if w.shape != (x.shape[0],):
        raise ValueError(f"scale must return a number or shape ({x.shape[0]},) (one weight per sample), got shape "
                         f"{tuple(w.shape)}")
    return w.view(-1, *([1] * (x.dim() - 1)))


@accepts(cond=Function(), uncond=Function(), scale=OneOf(Real(), Function()), output="any",  # returns a function
         example=lambda ctx: {"cond": lambda x, s: x, "uncond": lambda x, s: 0 * x, "scale": 2.0})
def classifier_free_guidance(cond: Denoiser, uncond: Denoiser, scale: float | Callable) -> Denoiser:
    """The guided denoiser :math:`D_u + w(\\sigma)(D_c - D_u)` (two evaluations per call; one where
    :math:`w(\\sigma)` is 0 or 1 for the whole batch)."""
    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        w = guidance_scale_at(scale, sigma, x)
        if w.dim() == 0 and float(w) == 1.0:
            return cond(x, sigma)
        if w.dim() == 0 and float(w) == 0.0:
            return uncond(x, sigma)
        d_u = uncond(x, sigma)
        return d_u + w * (cond(x, sigma) - d_u)

    return model


@accepts(mixture=Instance(GaussianMixture), classes=Ints(ge=0, min_length=1),
         example=lambda ctx: {"mixture": mixture_on_circle(4, 2, dtype=ctx.dtype), "classes": [0, 0, 1, 1]},
         output="any")  # mixtures
def class_conditional(mixture: GaussianMixture, classes: Sequence[int]) -> list[GaussianMixture]:
    """Per-class mixtures :math:`p(x_0 \\mid c)`: component ``k`` belongs to class ``classes[k]``; each class keeps
    its components with renormalised weights. ``mixture`` itself is the unconditional :math:`p(x_0)`.

    Returns a list indexed by class, ``0 .. max(classes)``; every class must own a component."""
    labels = torch.as_tensor(list(classes))
    if labels.shape[0] != mixture.n_components:
        raise ValueError(f"classes must have one label per component ({mixture.n_components}), got "
                         f"{labels.shape[0]}")
    out = []
    for c in range(int(labels.max()) + 1):
        idx = (labels == c).nonzero()[:, 0]
        if idx.numel() == 0:
            raise ValueError(f"classes must give every class 0..{int(labels.max())} a component, class {c} has none")
        if float(mixture.weights[idx].sum()) == 0:
            raise ValueError(f"classes: class {c}'s components all have weight 0")
        out.append(GaussianMixture(mixture.means[idx], mixture.covs[idx], mixture.weights[idx]))
    return out
