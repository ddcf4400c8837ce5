"""Debiased loss weighting: the noise-prediction loss of diffusion training weighted by 1 / sqrt(SNR) per level.

References: Debias the Training of Diffusion Models, 2023 (Yu et al.; later versions titled "Unmasking Bias in
Diffusion Model Training").

The paper's argument: a network trained on the constant-weight noise loss :math:`L_{simple}` is used through
:math:`\\hat x_0 = (x_t - \\sqrt{1-\\bar\\alpha_t}\\,\\hat\\varepsilon)/\\sqrt{\\bar\\alpha_t}`, so an error in
:math:`\\hat\\varepsilon` becomes an error :math:`\\hat x_0 - x_0 = -\\mathrm{SNR}_t^{-1/2}(\\hat\\varepsilon -
\\varepsilon)` in the estimate of the clean data, amplified by :math:`\\mathrm{SNR}_t^{-1/2}` exactly at the noisy
levels that the sampler visits first. The uniform noise loss therefore under-weights, relative to the :math:`x_0`
error it stands for, the levels where that amplification is large; the paper's debiased objective keeps one factor
:math:`\\mathrm{SNR}_t^{-1/2}` of it:

.. math::
    L_{debiased} = \\sum_t \\mathbb E_{x_0, \\varepsilon}\\Bigl[\\frac{1}{\\sqrt{\\mathrm{SNR}_t}}
    \\bigl\\|\\varepsilon - \\varepsilon_\\theta(x_t, t)\\bigr\\|^2\\Bigr], \\qquad
    \\mathrm{SNR}_t = \\frac{\\bar\\alpha_t}{1 - \\bar\\alpha_t} = \\frac{1}{\\sigma^2},

with :math:`\\sigma` the VE level of step :math:`t` (paperzoo's convention, :math:`x = x_0 + \\sigma\\varepsilon`),
so the weight on the noise error is just :math:`\\sigma`. The official code applies exactly this factor to the
per-sample noise MSE, with no clipping and no normalization (its linear 1,000-step schedule keeps
:math:`\\sigma \\in [0.01, 157]`). Through :math:`\\hat x_0 - x_0 = -\\sigma(\\hat\\varepsilon - \\varepsilon)` and,
with the VP scaling, :math:`\\hat x_0 - x_0 = -\\sigma_t(\\hat v - v)`, :math:`\\sigma_t^2 = 1/(1 + \\mathrm{SNR})`,
the same objective on the other regression targets is (the conversion Min-SNR uses,
:mod:`paperzoo.diffusion.min_snr`)

.. math::
    w^{\\varepsilon} = \\frac{1}{\\sqrt{\\mathrm{SNR}}} = \\sigma, \\qquad
    w^{x_0} = \\sqrt{\\mathrm{SNR}} = \\frac1\\sigma, \\qquad
    w^{v} = \\frac{\\sqrt{\\mathrm{SNR}}}{\\mathrm{SNR} + 1} = \\frac{\\sigma}{1 + \\sigma^2}.

Against Min-SNR-:math:`\\gamma`: on the :math:`x_0` error the uniform noise loss weighs :math:`\\mathrm{SNR}`;
Min-SNR caps that weight at :math:`\\gamma`, the debiased loss takes its square root. So the debiased weight is
lower than Min-SNR-5's for :math:`1 < \\mathrm{SNR} < 25` and higher outside (it keeps growing with the SNR where
Min-SNR stops); on the noise loss it grows as :math:`\\sigma` where Min-SNR's stays at 1.

The weights are unbounded at the ends of the level range: :math:`w^{\\varepsilon} = \\infty` at a zero-SNR level
(:math:`\\sigma = \\infty`, a zero-terminal-SNR schedule) and :math:`w^{x_0} = \\infty` at :math:`\\sigma = 0`.
``max_weight`` (default ``None``: none, as in the paper) clips the weight from above; without it such a level is a
``ValueError``. :math:`w^{v}` is bounded by 1/2 and tends to 0 at both ends.

:func:`debiased_weight` evaluates the weights; :func:`debiased_weighting` returns the ``weighting(sigma)`` hook of
:func:`~paperzoo.diffusion.training.denoising_loss` and :func:`~paperzoo.diffusion.training.train_denoiser`.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.debiased_loss import debiased_weight
    >>> sigma = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)     # SNR 100, 4, 0.25
    >>> debiased_weight(sigma).tolist()                                 # 1 / sqrt(SNR)
    [0.1, 0.5, 2.0]
    >>> debiased_weight(sigma, "x0").tolist()                           # sqrt(SNR)
    [10.0, 2.0, 0.5]
    >>> debiased_weight(torch.tensor([float("inf")]), max_weight=100.0).tolist()   # zero SNR, clipped
    [100.0]
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from paperzoo.core.accepts import Choice, Real, Tensor, accepts
from paperzoo.diffusion.min_snr import MIN_SNR_PREDICTIONS

__all__ = ["debiased_weight", "debiased_weighting", "DEBIASED_PREDICTIONS"]

#: the regression targets the weighting is defined for (those of Min-SNR)
DEBIASED_PREDICTIONS = MIN_SNR_PREDICTIONS

_SIGMA = Tensor(ndims=tuple(range(0, 8)), nonnegative=True, finite=False, allow_empty=True)


def _debiased_weight(sigma: torch.Tensor, prediction: str, max_weight: float | None) -> torch.Tensor:
    """Unchecked :func:`debiased_weight` (the training loop's hook)."""
    if prediction == "eps":
        w = sigma.clone()
    elif prediction == "x0":
        w = sigma.reciprocal()
    else:  # sigma / (1 + sigma^2) written so that sigma = 0 and sigma = inf both give the limit 0
        w = (sigma.reciprocal() + sigma).reciprocal()
    return w if max_weight is None else w.clamp(max=max_weight)


@accepts(sigma=_SIGMA, prediction=Choice(*DEBIASED_PREDICTIONS), max_weight=Real(gt=0, optional=True),
         example=lambda ctx: {"sigma": torch.rand(6, generator=ctx.generator, dtype=ctx.dtype) * 3 + 0.01})
def debiased_weight(sigma: torch.Tensor, prediction: str = "eps", max_weight: float | None = None) -> torch.Tensor:
    """The debiased weights of the loss on ``prediction`` at VE levels ``sigma`` (module docstring).

    Args:
        sigma: VE levels :math:`\\sigma = \\sqrt{(1 - \\bar\\alpha)/\\bar\\alpha} = \\mathrm{SNR}^{-1/2}`, any shape,
            ``>= 0`` (``inf``: zero SNR).
        prediction: ``"eps"`` (:math:`\\mathrm{SNR}^{-1/2} = \\sigma`, the paper's), ``"x0"``
            (:math:`\\mathrm{SNR}^{1/2}`) or ``"v"`` (:math:`\\mathrm{SNR}^{1/2}/(\\mathrm{SNR}+1)`).
        max_weight: clip the weights at this value (``None``: no clipping, the paper's choice); needed for an
            ``"eps"`` weight at ``sigma = inf`` or an ``"x0"`` weight at ``sigma = 0``.

    Returns:
        The weights, shape and dtype of ``sigma``.
    """
    if bool(torch.isnan(sigma).any()):
        raise ValueError(f"sigma must not contain NaN, got tensor of shape {tuple(sigma.shape)} with NaN entries")
    w = _debiased_weight(sigma, prediction, None if max_weight is None else float(max_weight))
    if bool(torch.isinf(w).any()):
        where = "sigma = inf (zero SNR)" if prediction == "eps" else "sigma = 0 (infinite SNR)"
        raise ValueError(f"sigma must give finite weights: {where} has an infinite {prediction!r} weight; "
                         f"pass max_weight to clip it")
    return w


@accepts(prediction=Choice(*DEBIASED_PREDICTIONS), max_weight=Real(gt=0, optional=True),
         output="any")  # returns a function
def debiased_weighting(prediction: str = "eps", max_weight: float | None = None
                       ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``weighting(sigma) -> (N,)`` hook of :func:`~paperzoo.diffusion.training.denoising_loss` /
    :func:`~paperzoo.diffusion.training.train_denoiser` that applies the debiased weights to a network predicting
    ``prediction`` (it must match the network's ``prediction``; the hook cannot see the network). The hook is
    unchecked: the loss's levels are ``> 0`` and finite, where every weight is finite.

    Example::

        train_denoiser(MLPDenoiser(2), sample_data, sample_sigmas, steps=1000, weighting=debiased_weighting())
    """
    max_weight = None if max_weight is None else float(max_weight)

    def weighting(sigma: torch.Tensor) -> torch.Tensor:
        return _debiased_weight(sigma, prediction, max_weight)

    weighting.prediction, weighting.max_weight = prediction, max_weight
    return weighting
