"""Min-SNR-gamma loss weighting: per-level weights of the denoising loss clamped at a signal-to-noise ratio gamma.

References: Efficient Diffusion Training via Min-SNR Weighting Strategy, 2023 (Hang et al., ICCV 2023).

The paper writes every parametrization's loss as a weighted :math:`x_0` error,
:math:`w_t \\| \\hat x_\\theta(x_t, t) - x_0 \\|^2`, and treats the levels as tasks whose gradients conflict; the
uniform :math:`\\varepsilon` loss of DDPM is :math:`w_t = \\mathrm{SNR}_t` there, which lets the low-noise levels
(huge SNR) dominate. Min-SNR-:math:`\\gamma` caps that weight (its Section 3.4):

.. math::
    w_t^{x_0} = \\min(\\mathrm{SNR}_t, \\gamma), \\qquad \\mathrm{SNR}_t = \\bar\\alpha_t / (1 - \\bar\\alpha_t)
    = 1 / \\sigma^2,

with :math:`\\sigma` the VE level of step :math:`t` (paperzoo's convention, :math:`x = x_0 + \\sigma\\varepsilon`).
Since :math:`\\hat x_0 - x_0 = -\\sigma(\\hat\\varepsilon - \\varepsilon)` and, with the VP scaling,
:math:`\\hat x_0 - x_0 = -\\sigma_t (\\hat v - v)`, :math:`\\sigma_t^2 = 1/(1 + \\mathrm{SNR})`, the same weighting
on the regression target a network actually predicts is (the paper's Appendix B and Section 4.2; the
official code's ``min_snr_<gamma>`` on :math:`\\varepsilon` and :math:`x_0`, ``vmin_snr_<gamma>`` on :math:`v`)

.. math::
    w^{\\varepsilon} = \\frac{\\min(\\mathrm{SNR}, \\gamma)}{\\mathrm{SNR}} = \\min(1, \\gamma\\sigma^2), \\qquad
    w^{x_0} = \\min(\\mathrm{SNR}, \\gamma), \\qquad
    w^{v} = \\frac{\\min(\\mathrm{SNR}, \\gamma)}{\\mathrm{SNR} + 1}
    = \\frac{\\min(1, \\gamma\\sigma^2)}{1 + \\sigma^2}.

The right-hand forms are what is computed: no division by an SNR, so :math:`\\sigma = 0` (infinite SNR) gives the
limits 0, :math:`\\gamma`, 0. A zero-SNR level (:math:`\\sigma = \\infty`, a zero-terminal-SNR schedule) gets
weight 1 for every prediction, as in the official code. The paper's default is :math:`\\gamma = 5`.

:func:`min_snr_weight` evaluates the weights; :func:`min_snr_weighting` returns the ``weighting(sigma)`` hook of
:func:`~paperzoo.diffusion.training.denoising_loss` and :func:`~paperzoo.diffusion.training.train_denoiser`.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.min_snr import min_snr_weight
    >>> sigma = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)     # SNR 100, 4, 0.25
    >>> [round(w, 6) for w in min_snr_weight(sigma, 5.0, "eps").tolist()]   # min(SNR, 5) / SNR
    [0.05, 1.0, 1.0]
    >>> min_snr_weight(sigma, 5.0, "x0").tolist()                     # min(SNR, 5)
    [5.0, 4.0, 0.25]
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from paperzoo.core.accepts import Choice, Real, Tensor, accepts

__all__ = ["min_snr_weight", "min_snr_weighting", "MIN_SNR_PREDICTIONS"]

#: the regression targets the weighting is defined for
MIN_SNR_PREDICTIONS = ("eps", "x0", "v")

_SIGMA = Tensor(ndims=tuple(range(0, 8)), nonnegative=True, finite=False, allow_empty=True)


def _min_snr_weight(sigma: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Unchecked :func:`min_snr_weight` (the training loop's hook)."""
    s2 = sigma.square()
    if prediction == "x0":
        w = s2.reciprocal().clamp(max=gamma)
    else:
        w = (gamma * s2).clamp(max=1.0)
        if prediction == "v":
            w = w / (1 + s2)
    # zero SNR: the official code sets these weights to 1 (the eps weight's limit; x0 and v would tend to 0)
    return torch.where(torch.isinf(sigma), torch.ones_like(w), w)


@accepts(sigma=_SIGMA, gamma=Real(gt=0), prediction=Choice(*MIN_SNR_PREDICTIONS),
         example=lambda ctx: {"sigma": torch.rand(6, generator=ctx.generator, dtype=ctx.dtype) * 3})
def min_snr_weight(sigma: torch.Tensor, gamma: float = 5.0, prediction: str = "eps") -> torch.Tensor:
    """The Min-SNR-:math:`\\gamma` weights of the loss on ``prediction`` at VE levels ``sigma`` (module docstring).

    Args:
        sigma: VE levels :math:`\\sigma = \\sqrt{(1 - \\bar\\alpha)/\\bar\\alpha}`, any shape, ``>= 0``
            (``inf``: zero SNR, weight 1).
        gamma: the clamp :math:`\\gamma > 0` on the SNR (paper default 5).
        prediction: ``"eps"`` (:math:`\\min(\\mathrm{SNR},\\gamma)/\\mathrm{SNR}`), ``"x0"``
            (:math:`\\min(\\mathrm{SNR},\\gamma)`) or ``"v"`` (:math:`\\min(\\mathrm{SNR},\\gamma)/(\\mathrm{SNR}+1)`).

    Returns:
        The weights, shape and dtype of ``sigma``.
    """
    if bool(torch.isnan(sigma).any()):
        raise ValueError(f"sigma must not contain NaN, got tensor of shape {tuple(sigma.shape)} with NaN entries")
    return _min_snr_weight(sigma, float(gamma), prediction)


@accepts(gamma=Real(gt=0), prediction=Choice(*MIN_SNR_PREDICTIONS), output="any")  # returns a function
def min_snr_weighting(gamma: float = 5.0, prediction: str = "eps") -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``weighting(sigma) -> (N,)`` hook of :func:`~paperzoo.diffusion.training.denoising_loss` /
    :func:`~paperzoo.diffusion.training.train_denoiser` that applies Min-SNR-:math:`\\gamma` to a network
    predicting ``prediction`` (it must match the network's ``prediction``; the hook cannot see the network).

    Example::

        train_denoiser(MLPDenoiser(2), sample_data, sample_sigmas, steps=1000, weighting=min_snr_weighting(5.0))
    """
    gamma = float(gamma)

    def weighting(sigma: torch.Tensor) -> torch.Tensor:
        return _min_snr_weight(sigma, gamma, prediction)

    weighting.gamma, weighting.prediction = gamma, prediction
    return weighting
