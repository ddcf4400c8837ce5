"""Minority guidance: classifier guidance toward high minority-score classes, to sample the low-density data.

References: Don't Play Favorites: Minority Guidance for Diffusion Models, 2024

**Minority score** (the paper's Eq. 7, L2 version). Noise a clean sample to one level and measure how far
Tweedie's denoised estimate lands from it:

.. math::
    l(x_0) = E_{\\varepsilon}\\bigl\\| x_0 - D(x_0 + \\sigma\\varepsilon, \\sigma) \\bigr\\|_2^2 ,

estimated with ``n_iter`` draws of :math:`\\varepsilon` (official default 5). Denoisers regress to the
high-density modes, so a sample from a rare region is reconstructed toward its common neighbours and scores high.
The paper also uses LPIPS as the distance for images; here it is the squared L2 norm summed over coordinates.
The official code perturbs at DDPM step 600 of 1000 on the linear schedule (``perturb_t=60`` of 100 respaced steps),
VE level :math:`\\sigma \\approx 6.17` for data in :math:`[-1, 1]^d` (:data:`PAPER_PERTURB_SIGMA`); the level is a
required argument here since it is set by the data's scale.

**Classes.** The scores of the training set are cut at their quantiles :math:`q_j` at levels :math:`(j+1)/L`,
:math:`j = 0..L-1`; a score in :math:`(q_{j-1}, q_j]` gets label :math:`j` (label 0 up to :math:`q_0`), so label
:math:`L - 1` holds the most unique samples (:func:`minority_score_classes`; official :math:`L = 100`).

**Guidance.** A noise-conditional classifier :math:`p_\\psi(l \\mid x_t, \\sigma)` trained on the labels (cross
entropy on noised inputs, :func:`train_minority_classifier`) steers sampling by classifier guidance (Dhariwal &
Nichol, 2021), which in the VE denoiser form is

.. math::
    D_w(x, \\sigma) = D(x, \\sigma) + \\sigma^2\\, w(\\sigma)\\, \\nabla_x \\log p_\\psi(\\tilde l \\mid x, \\sigma),

the denoiser of the score :math:`\\nabla \\log p_\\sigma + w \\nabla \\log p_\\psi(\\tilde l \\mid \\cdot)`
(:func:`classifier_guidance`, :func:`minority_guidance`; official :math:`w = 3.5` and target :math:`\\tilde l =
L - 1` on LSUN-Bedrooms). :math:`w = 0` is the plain denoiser. On an exact
:class:`~paperzoo.diffusion.mixture.GaussianMixture` with classes that are sets of components,
:func:`mixture_class_log_posterior` gives the exact :math:`\\log p(c \\mid x, \\sigma)`, an oracle classifier.

Symbols and arguments: :math:`D` = ``model`` (a denoiser ``model(x, sigma)``), :math:`\\sigma` = ``sigma``,
:math:`w` = ``scale`` (a number or ``sigma -> w``), :math:`\\tilde l` = ``target``, :math:`L` = ``n_classes``.
Shapes: ``x0`` ``(N, d)``, scores and labels ``(N,)``, classifier logits ``(N, L)``, guided denoisers take
``x`` ``(N, ...)`` and ``sigma`` ``(N,)`` as the samplers call them.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> gm = mixture_on_circle(4, 2, radius=3.0, std=0.4, weights=torch.tensor([1.0, 1.0, 1.0, 0.05]))
    >>> x0 = gm.means.clone()                                  # one point at each mean
    >>> s = minority_score(gm.denoise, x0, 1.0, n_iter=2000, generator=torch.Generator().manual_seed(0))
    >>> bool(s[3] > 2 * s[:3].max())                           # the rare component's mean is the most unique
    True
    >>> labels, thresholds = minority_score_classes(s, 4)     # quartile classes: the rare mean in the top one
    >>> labels.tolist()
    [0, 2, 1, 3]
    >>> rare = mixture_class_log_posterior(gm, [0, 0, 0, 1])   # exact log p(c | x, sigma), shape (N, 2)
    >>> guided = minority_guidance(gm.denoise, rare, target=1, scale=3.5)
    >>> guided(torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, dtype=torch.float64)).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from paperzoo.core.accepts import (Function, Generator, Instance, Int, Ints, Module, OneOf, Real, Tensor, accepts)
from paperzoo.diffusion.guidance import guidance_scale_at
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.training import _adam_steps

__all__ = ["minority_score", "minority_score_classes", "classifier_guidance", "minority_guidance",
           "mixture_class_log_posterior", "MinorityClassifier", "train_minority_classifier",
           "PAPER_PERTURB_SIGMA", "PAPER_SCALE"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: VE level of the official perturbation (DDPM linear betas 1e-4..0.02, T = 1000, step 600), data in [-1, 1].
PAPER_PERTURB_SIGMA = 6.1735
#: The official guidance strength (``classifier_scale``) for LSUN-Bedrooms, target class L - 1 = 99.
PAPER_SCALE = 3.5


def _example_x0(ctx):
    return torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype)


# -- minority score ------------------------------------------------------------------------------------------------
@accepts(model=Function(), x0=Tensor("N", "d", degenerate=("coincident",)), sigma=Real(gt=0), n_iter=Int(ge=1),
         generator=Generator(),
         example=lambda ctx: {"model": lambda x, s: 0.5 * x, "x0": _example_x0(ctx), "sigma": 1.0})
@torch.no_grad()
def minority_score(model: Denoiser, x0: torch.Tensor, sigma: float, *, n_iter: int = 5,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The L2 minority score :math:`l(x_0) = E\\|x_0 - D(x_0 + \\sigma\\varepsilon, \\sigma)\\|^2` (Eq. 7), a Monte
    Carlo mean over ``n_iter`` noise draws, shape ``(N,)``.

    Args:
        model: the denoiser :math:`D(x, \\sigma)`, called with ``x`` ``(N * n_iter, d)`` and ``sigma`` of shape
            ``(N * n_iter,)``.
        x0: clean samples ``(N, d)``.
        sigma: the perturbation level :math:`\\sigma > 0` (VE).
        n_iter: noise draws per sample (official default 5).
    """
    n, d = x0.shape
    eps = torch.randn(n_iter, n, d, generator=generator, dtype=x0.dtype).to(x0.device)
    noisy = (x0 + sigma * eps).reshape(n_iter * n, d)
    denoised = model(noisy, torch.full((n_iter * n,), float(sigma), dtype=x0.dtype, device=x0.device))
    if not isinstance(denoised, torch.Tensor) or denoised.shape != noisy.shape:
        got = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else type(denoised).__name__
        raise ValueError(f"model must return a denoised tensor of shape {tuple(noisy.shape)}, got {got}")
    return (x0 - denoised.reshape(n_iter, n, d)).square().sum(-1).mean(0)


@accepts(scores=Tensor("N", degenerate=("constant",)), n_classes=Int(ge=1), output="any",  # labels are integers
         example=lambda ctx: {"scores": torch.rand(12, generator=ctx.generator, dtype=ctx.dtype), "n_classes": 3})
def minority_score_classes(scores: torch.Tensor, n_classes: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantile classes of minority scores: ``(labels, thresholds)``.

    ``thresholds`` ``(L,)`` are the quantiles of ``scores`` at :math:`(j + 1)/L` (linear interpolation, as
    ``torch.quantile``); ``labels`` ``(N,)`` (``torch.long``) is :math:`j` for a score in
    :math:`(q_{j-1}, q_j]`, 0 up to :math:`q_0`; label :math:`L - 1` holds the highest scores. Apply the same
    ``thresholds`` to new scores with ``torch.searchsorted(thresholds, s).clamp_max(L - 1)``.
    """
    thresholds = torch.quantile(scores, torch.arange(1, n_classes + 1, dtype=scores.dtype,
                                                     device=scores.device) / n_classes)
    labels = torch.searchsorted(thresholds.contiguous(), scores.contiguous()).clamp_max(n_classes - 1)
    return labels, thresholds


# -- guidance ------------------------------------------------------------------------------------------------------
def _guided(model, log_likelihood, scale):
    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        w = guidance_scale_at(scale, sigma, x)
        denoised = model(x, sigma)
        if w.dim() == 0 and float(w) == 0.0:
            return denoised
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_p = log_likelihood(x_in, sigma)
            if not isinstance(log_p, torch.Tensor) or log_p.shape != (x.shape[0],):
                got = tuple(log_p.shape) if isinstance(log_p, torch.Tensor) else type(log_p).__name__
                raise ValueError(f"log_likelihood must return one value per sample, shape ({x.shape[0]},), got "
                                 f"{got}")
            (grad,) = torch.autograd.grad(log_p.sum(), x_in)
        s2 = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).square()
        s2 = s2.view(-1, *([1] * (x.dim() - 1))) if s2.dim() == 1 else s2
        return denoised + s2 * w * grad.detach()

    return guided


@accepts(model=Function(), log_likelihood=Function(), scale=OneOf(Real(), Function()), output="any",
         example=lambda ctx: {"model": lambda x, s: 0.5 * x,
                              "log_likelihood": lambda x, s: -x.square().sum(-1), "scale": 2.0})
def classifier_guidance(model: Denoiser, log_likelihood: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        scale: float | Callable) -> Denoiser:
    """The classifier-guided denoiser :math:`D + \\sigma^2 w(\\sigma) \\nabla_x \\log p(c \\mid x, \\sigma)`.

    Args:
        model: the denoiser :math:`D(x, \\sigma)`.
        log_likelihood: ``(x, sigma) -> (N,)``, the differentiable :math:`\\log p(c \\mid x, \\sigma)` of the
            target (gradients are taken with respect to ``x`` only).
        scale: :math:`w`, a number or ``sigma -> w`` (a number or one weight per sample); with :math:`w = 0` on
            the whole batch the classifier is not evaluated and the result is ``model``'s output.
    """
    return _guided(model, log_likelihood, scale)


@accepts(model=Function(), classifier=Function(), target=Int(ge=0), scale=OneOf(Real(), Function()), output="any",
         example=lambda ctx: {"model": lambda x, s: 0.5 * x, "classifier": lambda x, s: torch.cat([x, -x], -1),
                              "target": 1, "scale": 3.5})
def minority_guidance(model: Denoiser, classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      target: int, scale: float | Callable = PAPER_SCALE) -> Denoiser:
    """Minority guidance: :func:`classifier_guidance` with :math:`\\log p_\\psi(\\tilde l \\mid x, \\sigma)`, the
    log-softmax of ``classifier(x, sigma)`` (logits ``(N, L)``) at class ``target`` (the paper's :math:`L - 1`
    for the most unique samples; lower classes steer toward other likelihood levels)."""
    def log_likelihood(x, sigma):
        logits = classifier(x, sigma)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"classifier must return logits of shape ({x.shape[0]}, L), got {got}")
        if target >= logits.shape[1]:
            raise ValueError(f"target must be < the classifier's number of classes ({logits.shape[1]}), got {target}")
        return torch.log_softmax(logits, dim=-1)[:, target]

    return _guided(model, log_likelihood, scale)


@accepts(mixture=Instance(GaussianMixture), classes=Ints(ge=0, min_length=1), output="any",  # returns a function
         example=lambda ctx: {"mixture": mixture_on_circle(4, 2, dtype=ctx.dtype), "classes": [0, 0, 1, 1]})
def mixture_class_log_posterior(mixture: GaussianMixture, classes: Sequence[int]
                                ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The exact classifier of a mixture whose component ``k`` belongs to class ``classes[k]``:
    ``(x, sigma) -> log p(c | x, sigma)`` of shape ``(..., C)``, the log of the class's summed responsibilities
    (differentiable in ``x``; its gradient is :math:`\\nabla\\log p_{\\sigma}(x \\mid c) - \\nabla\\log p_\\sigma(x)`)."""
    labels = torch.as_tensor(list(classes))
    if labels.shape[0] != mixture.n_components:
        raise ValueError(f"classes must have one label per component ({mixture.n_components}), got "
                         f"{labels.shape[0]}")
    n_classes = int(labels.max()) + 1
    missing = sorted(set(range(n_classes)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"classes must give every class 0..{n_classes - 1} a component, class {missing[0]} has none")
    member = labels[None, :] == torch.arange(n_classes)[:, None]                     # (C, K)
    floor = torch.finfo(mixture.dtype).min / 4

    def log_posterior(x: torch.Tensor, sigma) -> torch.Tensor:
        log_joint = mixture._components(x, sigma)[2]                                 # (..., K)
        masked = torch.where(member.to(x.device), log_joint[..., None, :], torch.full_like(log_joint[..., None, :],
                                                                                           floor))
        return torch.logsumexp(masked, -1) - torch.logsumexp(log_joint, -1, keepdim=True)

    return log_posterior


# -- a small noise-conditional classifier --------------------------------------------------------------------------
class MinorityClassifier(nn.Module):
    """A small MLP classifier :math:`p_\\psi(l \\mid x, \\sigma)` for low-dimensional data: logits ``(N, L)`` from
    ``x / sqrt(sigma_data^2 + sigma^2)`` and Fourier features of :math:`\\log\\sigma / 4`.

    Args:
        dim: data dimension; n_classes: :math:`L`; hidden, depth: the MLP's width and number of hidden layers;
        sigma_data: the data's scale, for the input normalisation; n_frequencies: Fourier features.
    """

    @accepts(dim=Int(ge=1), n_classes=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), sigma_data=Real(gt=0),
             n_frequencies=Int(ge=1), example=lambda ctx: {"dim": 2, "n_classes": 3})
    def __init__(self, dim: int, n_classes: int, hidden: int = 128, depth: int = 3, *, sigma_data: float = 1.0,
                 n_frequencies: int = 8):
        super().__init__()
        self.dim, self.n_classes, self.sigma_data = dim, n_classes, float(sigma_data)
        self.register_buffer("frequencies", torch.arange(1, n_frequencies + 1, dtype=torch.float32) * math.pi / 2)
        layers, width = [], dim + 2 * n_frequencies
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        c = (s.clamp(1e-12, 1e12).log() / 4)[:, None] * self.frequencies.to(x.dtype)
        x_in = x / (self.sigma_data**2 + s.square()).sqrt()[:, None]
        return self.net(torch.cat([x_in, torch.sin(c), torch.cos(c)], dim=-1))


@accepts(classifier=Module(bind_dtype=True), x0=Tensor("N", "d"), labels=Tensor("N", dtype="int", low=0),
         sample_sigmas=Function(), steps=Int(ge=0), batch_size=Int(ge=1), lr=Real(gt=0), generator=Generator(),
         mutates=("classifier",),
         example=lambda ctx: {"classifier": MinorityClassifier(2, 2, 8, 1).to(ctx.dtype), "x0": _example_x0(ctx),
                              "labels": torch.tensor([0, 1, 0, 1, 1, 0]),
                              "sample_sigmas": lambda n, g: torch.rand(n, generator=g, dtype=ctx.dtype) + 0.1,
                              "steps": 3, "batch_size": 4})
def train_minority_classifier(classifier: nn.Module, x0: torch.Tensor, labels: torch.Tensor,
                              sample_sigmas: Callable[[int, torch.Generator], torch.Tensor], *, steps: int,
                              batch_size: int = 256, lr: float = 1e-3,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """Adam on the noise-conditional cross entropy :math:`-\\log p_\\psi(l_i \\mid x_{0,i} + \\sigma_i
    \\varepsilon_i, \\sigma_i)` over minibatches of the labelled set; returns the loss history ``(steps,)``.

    ``sample_sigmas(n, generator) -> (n,)`` draws the training levels; ``labels`` are the
    :func:`minority_score_classes` labels of ``x0``. The classifier is trained in place.
    """
    n_classes = getattr(classifier, "n_classes", None)
    if n_classes is not None and int(labels.max()) >= n_classes:
        raise ValueError(f"labels must be < the classifier's n_classes ({n_classes}), got {int(labels.max())}")
    labels = labels.to(x0.device)

    def batch_loss(step):
        idx = torch.randint(0, x0.shape[0], (batch_size,), generator=generator).to(x0.device)
        sigma = sample_sigmas(batch_size, generator).to(x0.dtype)
        x = x0[idx] + sigma[:, None] * torch.randn(batch_size, x0.shape[1], generator=generator,
                                                   dtype=x0.dtype).to(x0.device)
        return nn.functional.cross_entropy(classifier(x, sigma), labels[idx])

    return _adam_steps(classifier, batch_loss, steps, lr, "train_minority_classifier")
