"""DDIM inversion and the measurements of a study of how inverted latents relate to the noises that generate images.

References: There and Back Again: On the relation between noises, images, and their inversions in diffusion
models, 2024 (Staniszewski, Kuciński, Deja; later versions: "... between Noise and Image Inversions ...").

**DDIM inversion** runs the deterministic DDIM update backwards, from an image to a noise. In the VP form
(:math:`\\bar\\alpha_t`, noise prediction :math:`\\hat\\varepsilon`) a step from timestep :math:`t_i` up to
:math:`t_{i+1}` reuses the prediction made at the *current* state,

.. math::
    x_{t_{i+1}} = \\sqrt{\\bar\\alpha_{t_{i+1}}}\\,\\hat x_0(x_{t_i}) + \\sqrt{1 - \\bar\\alpha_{t_{i+1}}}\\,
    \\hat\\varepsilon(x_{t_i}, t_i), \\qquad
    \\hat x_0 = \\frac{x_{t_i} - \\sqrt{1 - \\bar\\alpha_{t_i}}\\,\\hat\\varepsilon}{\\sqrt{\\bar\\alpha_{t_i}}},

(the local-linearity approximation :math:`\\hat\\varepsilon(x_{t_{i+1}}) \\approx \\hat\\varepsilon(x_{t_i})`).
In paperzoo's VE convention (:math:`x = x_{vp}/\\sqrt{\\bar\\alpha}`, :math:`\\sigma = \\sqrt{1/\\bar\\alpha - 1}`,
denoiser :math:`D = \\hat x_0`) this is exactly an Euler step of the probability-flow ODE taken *upwards*,
:math:`x_{i+1} = x_i + (\\sigma_{i+1} - \\sigma_i)(x_i - D(x_i, \\sigma_i))/\\sigma_i`, i.e. the
:func:`~paperzoo.diffusion.samplers.euler_step` that DDIM sampling takes downwards. :func:`invert_ddim` runs that
step through :func:`~paperzoo.diffusion.samplers.run_sampler` on an increasing schedule ``sigmas``
(:func:`ddim_inversion_sigmas` builds DDIM's) and returns the latent at ``sigmas[-1]``; the VP latent is
``x / sqrt(1 + sigmas[-1]**2)``.

The study's finding: the first inversion steps, taken at tiny :math:`\\sigma` on a clean image, predict a noise
that is far from diverse (near zero in smooth, low-variance areas), so the latents keep the image's structure
and are less diverse and more correlated than Gaussian noise. Its fix, ``forward_steps = k``: replace the first
:math:`k` steps by the forward diffusion, :math:`x_{\\sigma_k} = x + \\sqrt{\\sigma_k^2 - \\sigma_0^2}\\,z`,
:math:`z \\sim \\mathcal N(0, I)`, then invert from :math:`\\sigma_k` (the paper's "forward" variant).

Measurements (the study's tools; rows are samples, columns coordinates/pixels):

- :func:`reconstruction_error`: per-sample mean squared difference (image vs its inversion's regeneration, or
  noise vs latent);
- :func:`top_k_correlation`: mean of the ``k`` largest absolute Pearson correlations between distinct
  coordinates across a batch (the paper's measure of correlated latent pixels, default ``k = 20``);
- :func:`moment_gaussian_kl`: :math:`\\mathrm{KL}(\\mathcal N(\\hat m, \\hat C)\\,\\|\\,\\mathcal N(0, I))` of the
  batch's sample moments, :math:`\\tfrac12(\\operatorname{tr}\\hat C + \\|\\hat m\\|^2 - d - \\log\\det\\hat C)`;
- :func:`ks_distance`: per-coordinate Kolmogorov-Smirnov distance to :math:`\\mathcal N(0, 1)`, averaged;
- :func:`assign_noises`: the optimal one-to-one assignment of noises to samples by squared distance
  (``scipy.optimize.linear_sum_assignment``) and the fraction of true pairs it recovers.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import GaussianMixture
    >>> from paperzoo.diffusion.schedules import alphas_cumprod_from_betas, betas_linear
    >>> gm = GaussianMixture(torch.zeros(1, 2, dtype=torch.float64),
    ...                      torch.diag(torch.tensor([1.0, 1e-3], dtype=torch.float64))[None])
    >>> sigmas = ddim_inversion_sigmas(alphas_cumprod_from_betas(betas_linear()).double(), 50)
    >>> x0 = gm.sample(2000, generator=torch.Generator().manual_seed(0))
    >>> z = invert_ddim(gm.denoise, x0, sigmas) / (1 + sigmas[-1] ** 2).sqrt()    # VP latents
    >>> std = z.std(0)                 # the low-variance ("plain") coordinate's latent is far from unit variance
    >>> bool(abs(std[0] - 1) < 0.1), bool(std[1] < 0.7)
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Flag, Function, Generator, Int, Tensor, accepts
from paperzoo.diffusion.samplers import euler_step, run_sampler
from paperzoo.diffusion.schedules import discrete_timesteps, sigmas_from_alphas_cumprod

__all__ = ["invert_ddim", "ddim_inversion_sigmas", "reconstruction_error", "top_k_correlation",
           "moment_gaussian_kl", "ks_distance", "assign_noises", "NoiseAssignment"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_increasing(sigmas: torch.Tensor) -> None:
    if sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must hold at least two levels (start and end), got {sigmas.shape[0]}")
    if bool((sigmas <= 0).any()):
        raise ValueError("sigmas must be > 0 (the inversion starts from the data taken at level sigmas[0] > 0)")
    if bool((sigmas[1:] < sigmas[:-1]).any()):
        raise ValueError("sigmas must be nondecreasing (an inversion goes from the data level up to the noise level)")


def _invert(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, forward_steps: int, generator, callback,
            progress: bool) -> torch.Tensor:
    """Unchecked kernel of :func:`invert_ddim`."""
    sigmas = sigmas.to(x.dtype)
    if forward_steps > 0:
        level = (sigmas[forward_steps] ** 2 - sigmas[0] ** 2).clamp_min(0).sqrt()
        x = x + level * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        sigmas = sigmas[forward_steps:]
    if sigmas.shape[0] < 2:
        return x
    return run_sampler(model, x, sigmas, euler_step, generator=generator, callback=callback, progress=progress)


def _example(ctx) -> dict:
    from paperzoo.diffusion.mixture import mixture_on_circle
    from paperzoo.diffusion.schedules import get_sigmas_karras

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {"model": gm.denoise, "x": gm.sample(5, generator=ctx.generator),
            "sigmas": get_sigmas_karras(6, 0.02, 10.0, dtype=ctx.dtype)[:-1].flip(0)}


@accepts(model=Function(), x=Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",)),
         sigmas=Tensor("n", nonnegative=True), forward_steps=Int(ge=0), generator=Generator(),
         callback=Function(optional=True), progress=Flag(), example=_example)
def invert_ddim(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, forward_steps: int = 0,
                generator: torch.Generator | None = None, callback: Callable[[dict], None] | None = None,
                progress: bool = False) -> torch.Tensor:
    """DDIM inversion: Euler steps of the probability-flow ODE from the data up to the noise level (module doc).

    Args:
        model: the denoiser ``model(x, sigma)`` (sigma of shape ``(N,)``).
        x: the images ``(N, ...)``, taken as the state at level ``sigmas[0]``.
        sigmas: the increasing levels ``(n + 1,)``, all > 0, ending at the latent's level (DDIM's:
            :func:`ddim_inversion_sigmas`). ``n`` steps, one model evaluation each.
        forward_steps: replace the first ``k`` steps by the forward diffusion to ``sigmas[k]`` (fresh noise from
            ``generator``); 0 (default) is plain DDIM inversion, ``n`` the forward diffusion alone.
        callback: ``callback({"x", "i", "sigma", "sigma_hat", "denoised"})`` before each step, real levels.

    Returns:
        The VE latent at ``sigmas[-1]``, shape of ``x`` (divide by ``sqrt(1 + sigmas[-1]**2)`` for the VP one).
    """
    _check_increasing(sigmas)
    if x.shape[0] == 0:
        raise ValueError(f"x must have a nonempty batch dimension first, got shape {tuple(x.shape)}")
    n = sigmas.shape[0] - 1
    if forward_steps > n:
        raise ValueError(f"forward_steps must be <= the number of steps ({n}), got {forward_steps}")
    return _invert(model, x, sigmas, forward_steps, generator, callback, progress)


@accepts(alphas_cumprod=Tensor("T", positive_mass=True), num_inference_steps=Int(ge=1),
         spacing=Choice("leading", "trailing", "linspace"),
         example=lambda ctx: {"alphas_cumprod": torch.linspace(0.999, 0.01, 20, dtype=ctx.dtype),
                              "num_inference_steps": 5})
def ddim_inversion_sigmas(alphas_cumprod: torch.Tensor, num_inference_steps: int,
                          spacing: str = "leading") -> torch.Tensor:
    """DDIM's inversion levels: the VE levels of its ``num_inference_steps`` timesteps
    (:func:`~paperzoo.diffusion.schedules.discrete_timesteps`, default DDIM's ``"leading"`` spacing), increasing,
    shape ``(num_inference_steps,)``: the image is taken at the first timestep's level, the latent lands on the
    last's (``n - 1`` steps)."""
    if bool((alphas_cumprod > 1).any()):
        raise ValueError("alphas_cumprod must be <= 1")
    sig = sigmas_from_alphas_cumprod(alphas_cumprod)
    t = discrete_timesteps(alphas_cumprod.shape[0], num_inference_steps, spacing)
    return sig[t.flip(0)]


# -- measurements ----------------------------------------------------------------------------------------------------
@accepts(x=Tensor(ndims=tuple(range(1, 8)), degenerate=("coincident",)),
         x_hat=Tensor(ndims=tuple(range(1, 8)), degenerate=("coincident",)),
         example=lambda ctx: {"x": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "x_hat": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype)})
def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared difference :math:`\\tfrac1d\\|x_i - \\hat x_i\\|^2`, shape ``(N,)``, for ``x`` and
    ``x_hat`` of one shape ``(N, ...)``."""
    if x.shape != x_hat.shape:
        raise ValueError(f"x_hat must have the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}")
    return (x - x_hat).square().reshape(x.shape[0], -1).mean(-1)


def _flat(name: str, z: torch.Tensor, min_rows: int) -> torch.Tensor:
    if z.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows (samples), got {z.shape[0]}")
    return z.reshape(z.shape[0], -1)


@accepts(z=Tensor(ndims=tuple(range(2, 8)), degenerate=("coincident",)), k=Int(ge=1),
         example=lambda ctx: {"z": torch.randn(8, 5, generator=ctx.generator, dtype=ctx.dtype), "k": 3})
def top_k_correlation(z: torch.Tensor, k: int = 20) -> torch.Tensor:
    """Mean of the ``k`` largest :math:`|\\rho_{jl}|`, :math:`j < l`, the Pearson correlations between coordinates
    ``j, l`` of the rows of ``z`` ``(N, ...)`` (flattened to ``(N, d)``). A coordinate constant over the batch
    correlates 0 with every other. Gaussian noise gives about :math:`\\sqrt{2\\log(d^2/2)/N}`. A 0-dim tensor."""
    flat = _flat("z", z, 2)
    d = flat.shape[1]
    pairs = d * (d - 1) // 2
    if k > pairs:
        raise ValueError(f"k must be <= the number of coordinate pairs ({pairs}), got {k}")
    centred = flat - flat.mean(0)
    cov = centred.T @ centred
    std = cov.diagonal().clamp_min(0).sqrt()
    scale = torch.outer(std, std)
    corr = torch.where(scale > 0, cov / scale.clamp_min(torch.finfo(z.dtype).tiny), torch.zeros_like(cov))
    j, m = torch.triu_indices(d, d, offset=1, device=z.device)
    return corr[j, m].abs().topk(k).values.mean()


@accepts(z=Tensor("n", "d"),
         example=lambda ctx: {"z": torch.randn(12, 3, generator=ctx.generator, dtype=ctx.dtype)})
def moment_gaussian_kl(z: torch.Tensor) -> torch.Tensor:
    """:math:`\\mathrm{KL}(\\mathcal N(\\hat m, \\hat C)\\,\\|\\,\\mathcal N(0, I_d))` of the sample mean and
    (unbiased) covariance of the rows of ``z`` ``(n, d)``, a 0-dim tensor; ``n > d`` and a nonsingular
    :math:`\\hat C` are required. For ``n`` draws of :math:`\\mathcal N(0, I)` it is about :math:`d(d + 3)/(4n)`."""
    n, d = z.shape
    if n <= d:
        raise ValueError(f"z must have more rows than columns (n > d = {d}) for a nonsingular covariance, got {n}")
    m = z.mean(0)
    centred = z - m
    cov = centred.T @ centred / (n - 1)
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise ValueError("z must have a nonsingular sample covariance (its rows span fewer than d dimensions)")
    logdet = 2 * chol.diagonal().log().sum()
    return 0.5 * (cov.diagonal().sum() + m.square().sum() - d - logdet)


@accepts(z=Tensor(ndims=tuple(range(1, 8)), degenerate=("coincident",)),
         example=lambda ctx: {"z": torch.randn(10, 3, generator=ctx.generator, dtype=ctx.dtype)})
def ks_distance(z: torch.Tensor) -> torch.Tensor:
    """Mean over coordinates of the Kolmogorov-Smirnov distance :math:`\\sup_u |F_{n,j}(u) - \\Phi(u)|` between each
    coordinate's empirical distribution over the rows of ``z`` ``(N, ...)`` and :math:`\\mathcal N(0, 1)`; a 0-dim
    tensor (scipy's ``kstest`` statistic, per coordinate)."""
    flat = _flat("z", z, 1)
    n = flat.shape[0]
    s = flat.sort(0).values
    cdf = 0.5 * torch.special.erfc(-s / math.sqrt(2))
    i = torch.arange(1, n + 1, dtype=z.dtype, device=z.device)[:, None]
    gap = torch.maximum(i / n - cdf, cdf - (i - 1) / n)
    return gap.max(0).values.mean()


class NoiseAssignment(NamedTuple):
    """``index[i]``: the sample the optimal assignment gives noise ``i`` (``(N,)`` int64); ``accuracy``: the fraction
    of ``i`` with ``index[i] == i`` (true pairs recovered); ``cost``: the mean squared distance per coordinate
    of the assigned pairs."""

    index: torch.Tensor
    accuracy: float
    cost: float


@accepts(noises=Tensor(ndims=tuple(range(2, 8))), samples=Tensor(ndims=tuple(range(2, 8))),
         example=lambda ctx: {"noises": torch.randn(6, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "samples": torch.randn(6, 3, generator=ctx.generator, dtype=ctx.dtype)})
def assign_noises(noises: torch.Tensor, samples: torch.Tensor) -> NoiseAssignment:
    """The one-to-one assignment of ``noises`` ``(N, ...)`` to ``samples`` ``(N, ...)`` (row ``i`` generated from
    noise ``i``) that minimises the total squared distance (``scipy.optimize.linear_sum_assignment``), and how many
    true pairs it recovers: the study's test that a generation stays nearest to its own noise."""
    if noises.shape != samples.shape:
        raise ValueError(f"samples must have the shape of noises {tuple(noises.shape)}, got {tuple(samples.shape)}")
    from scipy.optimize import linear_sum_assignment

    a, b = noises.reshape(noises.shape[0], -1), samples.reshape(samples.shape[0], -1)
    cost = torch.cdist(a.double(), b.double()).square()
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    index = torch.as_tensor(cols, dtype=torch.long, device=noises.device)[torch.as_tensor(rows).argsort()]
    accuracy = float((index == torch.arange(a.shape[0], device=noises.device)).double().mean())
    pair_cost = cost[torch.arange(a.shape[0], device=cost.device), index.to(cost.device)]
    return NoiseAssignment(index, accuracy, float(pair_cost.mean()) / a.shape[1])
