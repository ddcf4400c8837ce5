"""Signal-leak initialization: start sampling from noise plus a leak drawn from a model of the data.

References: Exploiting the Signal-Leak Bias in Diffusion Models, 2024 (Everaert, Fitsios, Bocchio, Arpa,
Süsstrunk, Achanta; WACV 2024).

A schedule whose last level keeps :math:`\\bar\\alpha_T > 0` (Stable Diffusion's, and any with leading spacing)
trains the denoiser on :math:`x_T = \\sqrt{\\bar\\alpha_T}\\,x_0 + \\sqrt{1 - \\bar\\alpha_T}\\,\\varepsilon`: a
"signal leak" of the data, mostly its low frequencies (mean brightness, colour), that the network reads. Sampling
from pure noise has no leak, so those components come out near their average (greyish, medium-bright images).
Instead of retraining (zero terminal SNR, :mod:`~paperzoo.diffusion.zero_terminal_snr`), the paper keeps the model
and puts a leak into the initial latent,

.. math::
    x_T = \\sqrt{\\bar\\alpha_T}\\,\\ell + \\sqrt{1 - \\bar\\alpha_T}\\,\\varepsilon, \\qquad
    \\ell \\sim \\hat p_{\\text{leak}},

where :math:`\\bar\\alpha_T` is that of the *first sampling* timestep and :math:`\\hat p_{\\text{leak}}` a simple
Gaussian model of the data, fitted from samples of it. In paperzoo's VE convention (:math:`x = x_0 +
\\sigma\\varepsilon`, :math:`\\sigma^2 = (1 - \\bar\\alpha)/\\bar\\alpha`) the same start is
:math:`x = \\ell + \\sigma_T\\varepsilon` (:func:`signal_leak_start`), for any sampler of
:mod:`~paperzoo.diffusion.samplers` run from ``sigmas[0] = sigma_T``.

The leak model (:class:`SignalLeak`, fitted by :func:`fit_signal_leak`), as the official code's "dct+pixel"
statistics: images of shape ``(C, H, W)``; the ``n_components`` lowest spatial frequencies of each channel (the
orthonormal 2-D DCT-II coefficients :math:`c_{uv}` with the smallest :math:`\\sqrt{u^2 + v^2}`,
:func:`low_frequency_basis`) get a joint Gaussian over all channels and components (mean ``lf_mean`` and full
covariance ``lf_cov``, shape ``(C K,)`` and ``(C K, C K)``, channel-major), and the remainder :math:`r = x - B^\\top
B x` gets an independent Gaussian per element (``hf_mean``, ``hf_var``, shape ``(C, H, W)``). A draw is
:math:`\\ell = B^\\top c + m_{hf} + \\sqrt{v_{hf}} \\odot z`, :math:`c \\sim \\mathcal N(m_{lf}, \\Sigma_{lf})`.
``n_components = 0`` is the official "pixel" statistics (mean and variance of each element). Its closed-form
moments are :func:`signal_leak_moments`; :func:`signal_leak_from_moments` builds the model a population with known
mean and covariance would give. Steering (the paper's brightness and colour control) is a change of the model's
mean, e.g. ``leak._replace(lf_mean=leak.lf_mean + shift)``.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.signal_leak import fit_signal_leak, signal_leak_start
    >>> g = torch.Generator().manual_seed(0)
    >>> data = 2.0 * torch.randn(4000, 1, 1, 1, generator=g, dtype=torch.float64) + torch.randn(
    ...     4000, 1, 8, 8, generator=g, dtype=torch.float64) * 0.1          # brightness varies, std 2
    >>> leak = fit_signal_leak(data, 3)
    >>> x = signal_leak_start(leak, torch.randn(4000, 1, 8, 8, generator=g, dtype=torch.float64), 13.0,
    ...                       generator=g)                                    # the VE state at sigma_T = 13
    >>> round(float(x.mean(dim=(1, 2, 3)).std()), 1)                        # brightness std: sqrt(4 + 169/64)
    2.6
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paperzoo.core.accepts import FloatDType, Generator, Instance, Int, Ints, Real, Tensor, accepts

__all__ = ["SignalLeak", "low_frequency_basis", "fit_signal_leak", "signal_leak_from_moments",
           "signal_leak_moments", "sample_signal_leak", "signal_leak_start"]


class SignalLeak(NamedTuple):
    """A Gaussian model of the signal leak for images of ``shape = (C, H, W)`` (see the module docstring).

    Fields: ``basis`` ``(K, H*W)``, orthonormal rows (the DCT-II vectors of the ``K`` lowest frequencies);
    ``lf_mean`` ``(C*K,)`` and ``lf_cov`` ``(C*K, C*K)``, the low-frequency coefficients' Gaussian (index
    ``c*K + k``); ``hf_mean`` and ``hf_var`` ``(C, H, W)``, the remainder's per-element Gaussian."""

    shape: tuple[int, int, int]
    basis: torch.Tensor
    lf_mean: torch.Tensor
    lf_cov: torch.Tensor
    hf_mean: torch.Tensor
    hf_var: torch.Tensor


# -- the frequency basis ------------------------------------------------------------------------------------------


def _dct_matrix(m: int, dtype: torch.dtype) -> torch.Tensor:
    """The orthonormal DCT-II matrix, ``(m, m)``: row ``u`` is :math:`a_u \\cos(\\pi (2j + 1) u / 2m)`."""
    j = torch.arange(m, dtype=dtype)
    u = torch.arange(m, dtype=dtype)[:, None]
    mat = torch.cos(math.pi * (2 * j + 1) * u / (2 * m)) * math.sqrt(2.0 / m)
    mat[0] = math.sqrt(1.0 / m)
    return mat


def _frequency_order(height: int, width: int) -> torch.Tensor:
    """Row-major indices ``u * width + v`` sorted by :math:`\\sqrt{u^2 + v^2}`, ties in row-major order."""
    u = torch.arange(height, dtype=torch.float64)[:, None]
    v = torch.arange(width, dtype=torch.float64)[None, :]
    radius = (u.square() + v.square()).flatten()  # squared: the same order, exact in floating point
    return torch.sort(radius, stable=True).indices


def _low_frequency_basis(height: int, width: int, n_components: int, dtype: torch.dtype) -> torch.Tensor:
    rows, cols = _dct_matrix(height, dtype), _dct_matrix(width, dtype)
    full = torch.einsum("ui,vj->uvij", rows, cols).reshape(height * width, height * width)
    return full[_frequency_order(height, width)[:n_components]]


@accepts(height=Int(ge=1), width=Int(ge=1), n_components=Int(ge=0), dtype=FloatDType(),
         example=lambda ctx: {"height": 4, "width": 3, "n_components": 3, "dtype": ctx.dtype})
def low_frequency_basis(height: int, width: int, n_components: int, *, dtype: torch.dtype = torch.float64
                        ) -> torch.Tensor:
    """The orthonormal 2-D DCT-II vectors of the ``n_components`` lowest frequencies of an ``height x width``
    image, shape ``(n_components, height * width)`` (flattened row-major); row :math:`(u, v)` is
    :math:`\\phi_u(i)\\phi_v(j)` with :math:`\\phi` the rows of the 1-D orthonormal DCT-II, so ``basis @ x.flatten()``
    are the coefficients ``scipy.fft.dctn(x, norm="ortho")[u, v]``. Frequencies are ordered by
    :math:`\\sqrt{u^2 + v^2}`, ties row-major (the official code's quarter circle of the DCT's top-left corner)."""
    if n_components > height * width:
        raise ValueError(f"n_components must be <= height * width = {height * width}, got {n_components}")
    return _low_frequency_basis(height, width, n_components, dtype)


# -- fitting ------------------------------------------------------------------------------------------------------


def _lift(basis: torch.Tensor, channels: int) -> torch.Tensor:
    """The block-diagonal ``(C*K, C*H*W)`` projection onto every channel's low frequencies (index ``c*K + k``)."""
    return torch.block_diag(*([basis] * channels)) if basis.shape[0] else basis.new_zeros((0, channels * basis.shape[1]))


def _example_data(ctx) -> torch.Tensor:
    return torch.randn(6, 2, 3, 4, generator=ctx.generator, dtype=ctx.dtype)


@accepts(data=Tensor("n", "c", "h", "w"), n_components=Int(ge=0),
         example=lambda ctx: {"data": _example_data(ctx), "n_components": 3})
def fit_signal_leak(data: torch.Tensor, n_components: int = 3) -> SignalLeak:
    """The signal-leak model fitted on ``data`` of shape ``(N, C, H, W)`` (N >= 2 images, or latents): the sample
    mean and (unbiased) covariance of the ``n_components`` lowest DCT frequencies of each channel, jointly over
    channels, and the per-element mean and (unbiased) variance of the remainder. ``n_components = 0`` fits the
    "pixel" model; ``n_components = H * W`` a full-covariance Gaussian (no remainder). Default 3, the official
    README's example."""
    n, channels, height, width = data.shape
    if n < 2:
        raise ValueError(f"data must hold at least 2 samples to fit a variance, got {n}")
    if n_components > height * width:
        raise ValueError(f"n_components must be <= H * W = {height * width}, got {n_components}")
    basis = _low_frequency_basis(height, width, n_components, data.dtype).to(data.device)
    pixels = data.reshape(n, channels, height * width)
    coeffs = pixels @ basis.T                                               # (N, C, K)
    remainder = (pixels - coeffs @ basis).reshape(data.shape)
    flat = coeffs.reshape(n, channels * n_components)
    lf_cov = torch.cov(flat.T).reshape(flat.shape[1], flat.shape[1]) if flat.shape[1] else flat.new_zeros((0, 0))
    return SignalLeak((channels, height, width), basis, flat.mean(0), lf_cov, remainder.mean(0),
                      remainder.var(0))


def _example_moments(ctx) -> dict:
    a = torch.randn(12, 12, generator=ctx.generator, dtype=ctx.dtype)
    return {"mean": torch.randn(12, generator=ctx.generator, dtype=ctx.dtype), "covariance": a @ a.T / 12,
            "shape": (1, 3, 4), "n_components": 2}


@accepts(mean=Tensor("d"), covariance=Tensor("d", "d", symmetric=True), shape=Ints(ge=1, min_length=3),
         n_components=Int(ge=0), example=_example_moments)
def signal_leak_from_moments(mean: torch.Tensor, covariance: torch.Tensor, shape, n_components: int = 3
                             ) -> SignalLeak:
    """The model :func:`fit_signal_leak` converges to on a population of images of ``shape = (C, H, W)`` with
    flattened mean ``mean`` ``(d,)`` and covariance ``covariance`` ``(d, d)``, ``d = C*H*W`` (for instance
    :meth:`~paperzoo.diffusion.mixture.GaussianMixture.mean` and ``covariance()`` of exact data): with ``P`` the
    low-frequency projection and ``Q = I - P^T P``, ``lf_mean = P mean``, ``lf_cov = P covariance P^T``,
    ``hf_mean = Q mean``, ``hf_var = diag(Q covariance Q)``."""
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {tuple(shape)}")
    channels, height, width = (int(s) for s in shape)
    d = channels * height * width
    if mean.shape[0] != d:
        raise ValueError(f"mean must have C*H*W = {d} entries for shape {tuple(shape)}, got {mean.shape[0]}")
    if n_components > height * width:
        raise ValueError(f"n_components must be <= H * W = {height * width}, got {n_components}")
    basis = _low_frequency_basis(height, width, n_components, mean.dtype).to(mean.device)
    lift = _lift(basis, channels)
    q = torch.eye(d, dtype=mean.dtype, device=mean.device) - lift.T @ lift
    hf_var = torch.einsum("ij,jk,ik->i", q, covariance, q).clamp_min(0)  # diag(Q S Q), rounding below 0 cut
    return SignalLeak((channels, height, width), basis, lift @ mean, lift @ covariance @ lift.T,
                      (q @ mean).reshape(channels, height, width), hf_var.reshape(channels, height, width))


# -- the leak's law and draws ---------------------------------------------------------------------------------------


def _example_leak(ctx) -> SignalLeak:
    return fit_signal_leak(_example_data(ctx), 3)


@accepts(leak=Instance(SignalLeak, what="SignalLeak"), example=lambda ctx: {"leak": _example_leak(ctx)})
def signal_leak_moments(leak: SignalLeak) -> tuple[torch.Tensor, torch.Tensor]:
    """The leak's exact mean ``(d,)`` and covariance ``(d, d)``, flattened (``d = C*H*W``):
    :math:`B^\\top m_{lf} + m_{hf}` and :math:`B^\\top \\Sigma_{lf} B + \\operatorname{diag}(v_{hf})`, with
    :math:`B` the low-frequency projection of every channel. The remainder's noise is drawn in every direction, the
    low frequencies included (as the official code does), so the low-frequency block of the covariance is
    :math:`\\Sigma_{lf} + B \\operatorname{diag}(v_{hf}) B^\\top`."""
    _check_leak(leak)
    lift = _lift(leak.basis, leak.shape[0])
    mean = lift.T @ leak.lf_mean + leak.hf_mean.flatten()
    cov = lift.T @ leak.lf_cov @ lift + torch.diag(leak.hf_var.flatten())
    return mean, cov


def _check_leak(leak: SignalLeak) -> None:
    channels, height, width = leak.shape
    k = leak.basis.shape[0]
    expected = {"basis": (k, height * width), "lf_mean": (channels * k,), "lf_cov": (channels * k, channels * k),
                "hf_mean": tuple(leak.shape), "hf_var": tuple(leak.shape)}
    for name, shape in expected.items():
        value = getattr(leak, name)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"leak.{name} must have shape {shape} for leak.shape {tuple(leak.shape)}, got {got}")
        if value.dtype != leak.basis.dtype:
            raise TypeError(f"leak.{name} must have the dtype of leak.basis ({leak.basis.dtype}), got {value.dtype}")
    if bool((leak.hf_var < 0).any()):
        raise ValueError("leak.hf_var must be >= 0")


def _sample_signal_leak(leak: SignalLeak, n: int, generator: torch.Generator | None) -> torch.Tensor:
    channels, height, width = leak.shape
    dtype, device = leak.basis.dtype, leak.basis.device
    out = leak.hf_mean + leak.hf_var.sqrt() * torch.randn((n, channels, height, width), generator=generator,
                                                          dtype=dtype).to(device)
    if leak.basis.shape[0]:
        # eigh, not Cholesky: a covariance fitted on fewer images than components is singular
        evals, evecs = torch.linalg.eigh(leak.lf_cov)
        root = evecs * evals.clamp_min(0).sqrt()
        z = torch.randn((n, root.shape[0]), generator=generator, dtype=dtype).to(device)
        coeffs = (leak.lf_mean + z @ root.T).reshape(n, channels, -1)
        out = out + (coeffs @ leak.basis).reshape(n, channels, height, width)
    return out


@accepts(leak=Instance(SignalLeak, what="SignalLeak"), n=Int(ge=1), generator=Generator(),
         example=lambda ctx: {"leak": _example_leak(ctx), "n": 5})
def sample_signal_leak(leak: SignalLeak, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` draws of the leak, shape ``(n, C, H, W)``, in the model's dtype and device, from ``generator``."""
    _check_leak(leak)
    return _sample_signal_leak(leak, n, generator)


def _example_start(ctx) -> dict:
    return {"leak": _example_leak(ctx), "noise": torch.randn(5, 2, 3, 4, generator=ctx.generator, dtype=ctx.dtype),
            "sigma": 13.0}


@accepts(leak=Instance(SignalLeak, what="SignalLeak"), noise=Tensor(ndims=(2, 4)), sigma=Real(gt=0),
         generator=Generator(), example=_example_start)
def signal_leak_start(leak: SignalLeak, noise: torch.Tensor, sigma: float, *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The initial VE state with a signal leak, :math:`x = \\ell + \\sigma\\varepsilon` (the paper's
    :math:`\\sqrt{\\bar\\alpha_T}\\ell + \\sqrt{1 - \\bar\\alpha_T}\\varepsilon` divided by
    :math:`\\sqrt{\\bar\\alpha_T}`), for a sampler run from ``sigmas[0] = sigma``, the first sampling level.

    ``noise`` is :math:`\\varepsilon`, shape ``(N, C, H, W)`` or flattened ``(N, C*H*W)`` (the result has its
    shape); the leaks :math:`\\ell` are drawn from ``generator``. The VP latent a diffusers pipeline takes is the
    result times :math:`(1 + \\sigma^2)^{-1/2}`. ``sigma`` must be finite: at zero terminal SNR there is no leak."""
    _check_leak(leak)
    if noise.dtype != leak.basis.dtype:
        raise TypeError(f"noise must have the dtype of the leak model ({leak.basis.dtype}), got {noise.dtype}")
    channels, height, width = leak.shape
    d = channels * height * width
    if noise.dim() == 4 and tuple(noise.shape[1:]) != tuple(leak.shape) or noise.dim() == 2 and noise.shape[1] != d:
        raise ValueError(f"noise must have shape (N, {channels}, {height}, {width}) or (N, {d}) for the leak "
                         f"model, got {tuple(noise.shape)}")
    ell = _sample_signal_leak(leak, noise.shape[0], generator).to(noise.device)
    return ell.reshape(noise.shape) + sigma * noise
