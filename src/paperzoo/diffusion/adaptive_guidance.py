"""Adaptive Guidance (AG): classifier-free guidance until the conditional and unconditional predictions align, then
the conditional model alone.

References: Adaptive Guidance: Training-free Acceleration of Conditional Diffusion Models, 2023 (AAAI 2025)

Classifier-free guidance evaluates the network twice per step. Castillo et al. observe that along a sampling run
the conditional and unconditional noise predictions become nearly parallel, after which the second evaluation
changes little. AG measures, for each sample, the cosine similarity of the two noise predictions

.. math::
    \\gamma_t = \\frac{\\langle \\varepsilon_c(x_t), \\varepsilon_u(x_t) \\rangle}
                     {\\lVert \\varepsilon_c(x_t) \\rVert\\, \\lVert \\varepsilon_u(x_t) \\rVert},
    \\qquad \\varepsilon(x, \\sigma) = \\frac{x - D(x, \\sigma)}{\\sigma},

and runs CFG, :math:`D_u + w (D_c - D_u)`, while :math:`\\gamma_t \\le \\bar\\gamma`; from the first evaluation
where :math:`\\gamma_t > \\bar\\gamma` on, that sample takes conditional steps :math:`D_c` only, for the rest of
the run (the truncated guidance policy the paper's search found, with an adaptive switch point). The cosine is
scale invariant, so :math:`\\gamma_t` is the cosine of :math:`x - D_c` and :math:`x - D_u` (the noise predictions
of any VP/VE parametrization at the same level differ from these only by a positive factor).

Symbols and arguments: :math:`D_c` = ``cond``, :math:`D_u` = ``uncond`` (denoisers ``model(x, sigma)``),
:math:`w` = ``scale`` (diffusers' ``guidance_scale``), :math:`\\bar\\gamma` = ``gamma_bar``. The default
``gamma_bar = 0.991`` is the value we use as the paper's default (read from secondary descriptions; see the
catalog's fidelity notes). ``gamma_bar > 1`` never switches, which is exactly CFG.

State: the returned :class:`AdaptiveGuidance` is a denoiser that remembers, per sample (row of ``x``), whether it
has switched, and counts the per-sample network evaluations it spent. One object serves one sampling run at a
time: call :meth:`AdaptiveGuidance.reset` before each new run (a call with a different batch size than the run in
progress raises). Rows must keep their order between calls, as every sampler here does.

Shapes: ``x`` is ``(N, ...)``, ``sigma`` ``(N,)`` with ``sigma > 0``; the similarity flattens each sample.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> from paperzoo.diffusion.guidance import class_conditional
    >>> from paperzoo.diffusion.samplers import sample_euler
    >>> from paperzoo.diffusion.schedules import get_sigmas_karras
    >>> gm = mixture_on_circle(4, 2, radius=3.0, std=0.4)
    >>> c0, _ = class_conditional(gm, [0, 0, 1, 1])
    >>> guided = adaptive_guidance(c0.denoise, gm.denoise, 3.0)
    >>> sigmas = get_sigmas_karras(20, 0.01, 10.0)
    >>> x = sample_euler(guided, 10.0 * torch.randn(64, 2, dtype=torch.float64), sigmas)
    >>> bool(guided.nfe < 2 * 20)         # fewer than CFG's two evaluations per step
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from paperzoo.core.accepts import Function, Real, Tensor, accepts

__all__ = ["noise_cosine_similarity", "AdaptiveGuidance", "adaptive_guidance", "GAMMA_BAR"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: The threshold :math:`\bar\gamma` used as the paper's default.
GAMMA_BAR = 0.991


def _noise_cosine(x: torch.Tensor, d_c: torch.Tensor, d_u: torch.Tensor, eps: float) -> torch.Tensor:
    a = (x - d_c).flatten(1)
    b = (x - d_u).flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(eps)


def _example_similarity(ctx) -> dict:
    x = torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype)
    return {"x": x, "denoised_cond": 0.5 * x + 0.1, "denoised_uncond": 0.3 * x - 0.2}


@accepts(x=Tensor(ndims=tuple(range(2, 8)), degenerate=("zeros",)),
         denoised_cond=Tensor(ndims=tuple(range(2, 8)), degenerate=("zeros",)),
         denoised_uncond=Tensor(ndims=tuple(range(2, 8)), degenerate=("zeros",)), eps=Real(gt=0),
         example=_example_similarity)
def noise_cosine_similarity(x: torch.Tensor, denoised_cond: torch.Tensor, denoised_uncond: torch.Tensor, *,
                            eps: float = 1e-12) -> torch.Tensor:
    """Per-sample :math:`\\gamma = \\cos(x - D_c, x - D_u)`, the cosine of the conditional and unconditional noise
    predictions at one level: ``x``, ``denoised_cond``, ``denoised_uncond`` ``(N, ...)`` -> ``(N,)``.

    ``eps`` floors the product of the norms (a prediction equal to ``x`` has no direction; its cosine is 0)."""
    if denoised_cond.shape != x.shape or denoised_uncond.shape != x.shape:
        raise ValueError(f"denoised_cond and denoised_uncond must have the shape of x {tuple(x.shape)}, got "
                         f"{tuple(denoised_cond.shape)} and {tuple(denoised_uncond.shape)}")
    return _noise_cosine(x, denoised_cond, denoised_uncond, eps)


class AdaptiveGuidance:
    """The AG denoiser ``model(x, sigma)`` over ``cond`` and ``uncond`` (build it with :func:`adaptive_guidance`).

    Attributes (for the run in progress, ``None`` before its first call):
        switched: bool ``(N,)``, the samples that take conditional steps only.
        cond_evaluations, uncond_evaluations: int ``(N,)``, per-sample evaluations of each model.
        similarities: list of ``(N,)`` tensors, :math:`\\gamma` at each call (NaN where not measured).
    """

    def __init__(self, cond: Denoiser, uncond: Denoiser, scale: float, gamma_bar: float, eps: float):
        self.cond, self.uncond = cond, uncond
        self.scale, self.gamma_bar, self.eps = float(scale), float(gamma_bar), float(eps)
        self.reset()

    def reset(self) -> "AdaptiveGuidance":
        """Forget the run in progress (call before each sampling run); returns ``self``."""
        self.switched = None
        self.cond_evaluations = None
        self.uncond_evaluations = None
        self.similarities: list[torch.Tensor] = []
        return self

    @property
    def nfe(self) -> float:
        """Mean network evaluations per sample so far (CFG spends 2 per call)."""
        if self.cond_evaluations is None:
            return 0.0
        return float((self.cond_evaluations + self.uncond_evaluations).double().mean())

    @property
    def evaluations(self) -> int:
        """Total per-sample network evaluations so far (a call on ``k`` rows of one model counts ``k``)."""
        if self.cond_evaluations is None:
            return 0
        return int((self.cond_evaluations + self.uncond_evaluations).sum())

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.switched is None:
            self.switched = torch.zeros(n, dtype=torch.bool, device=x.device)
            self.cond_evaluations = torch.zeros(n, dtype=torch.long, device=x.device)
            self.uncond_evaluations = torch.zeros(n, dtype=torch.long, device=x.device)
        elif self.switched.shape[0] != n:
            raise ValueError(f"x must keep the batch size of the run in progress ({self.switched.shape[0]}), got "
                             f"{n}: call reset() before a new sampling run")
        d_c = self.cond(x, sigma)
        self.cond_evaluations += 1
        gamma = torch.full((n,), float("nan"), dtype=x.dtype, device=x.device)
        active = (~self.switched).nonzero()[:, 0]
        if active.numel() == 0:
            self.similarities.append(gamma)
            return d_c
        xa, sa = x[active], sigma[active]
        d_u = self.uncond(xa, sa)
        self.uncond_evaluations[active] += 1
        out = d_c.clone()
        out[active] = d_u + self.scale * (d_c[active] - d_u)
        g = _noise_cosine(xa, d_c[active], d_u, self.eps)
        gamma[active] = g
        self.similarities.append(gamma)
        # The step just taken is guided; from the next call on, the rows past the threshold go conditional.
        self.switched[active[g > self.gamma_bar]] = True
        return out


@accepts(cond=Function(), uncond=Function(), scale=Real(), gamma_bar=Real(), eps=Real(gt=0), output="any",
         example=lambda ctx: {"cond": lambda x, s: 0.5 * x, "uncond": lambda x, s: 0 * x, "scale": 2.0})
def adaptive_guidance(cond: Denoiser, uncond: Denoiser, scale: float, gamma_bar: float = GAMMA_BAR, *,
                      eps: float = 1e-12) -> AdaptiveGuidance:
    """Adaptive Guidance over the conditional denoiser ``cond`` and the unconditional ``uncond``.

    Each call evaluates ``cond`` on every sample and ``uncond`` on the samples not yet switched; those get CFG,
    :math:`D_u + w (D_c - D_u)`, and switch to conditional-only steps for the rest of the run once their
    :math:`\\gamma` (:func:`noise_cosine_similarity`) exceeds ``gamma_bar``. The step on which the threshold is
    crossed is itself guided (its unconditional evaluation is already spent).

    Args:
        cond, uncond: denoisers ``model(x, sigma)``.
        scale: guidance weight :math:`w` (1 is the conditional model).
        gamma_bar: threshold :math:`\\bar\\gamma` (default :data:`GAMMA_BAR`); any value > 1 never switches (CFG),
            any value < -1 switches every sample after its first call.
        eps: floor of the norms' product in the similarity.

    Returns:
        An :class:`AdaptiveGuidance` denoiser; call its ``reset()`` before each sampling run.
    """
    return AdaptiveGuidance(cond, uncond, scale, gamma_bar, eps)
