"""Heavy-tailed (alpha-stable) noisy gradient descent and its Wasserstein algorithmic stability.

References: Algorithmic Stability of Heavy-Tailed SGD with General Loss Functions (Raj, Zhu, Gurbuzbalaban,
Simsekli), 2023.

The paper models heavy-tailed SGD by the Levy-driven SDE :math:`d\\theta_t = -\\nabla \\hat F(\\theta_t, X_n)\\,dt
+ \\sigma\\, dL^\\alpha_t` and its Euler discretisation

.. math:: \\theta_{k+1} = \\theta_k - \\eta\\,\\nabla \\hat F(\\theta_k, X_n) + \\sigma\\,\\eta^{1/\\alpha}\\,\\xi_{k+1},

with :math:`\\xi_k` standard symmetric :math:`\\alpha`-stable vectors. Its generalisation bounds come from the
Wasserstein-1 distance between the laws of the iterates trained on two datasets :math:`X_n, \\hat X_n` that differ
in one point (Wasserstein stability); for Lipschitz losses the expected generalisation error is at most the loss's
Lipschitz constant times that distance, and the paper's bounds make it :math:`O(1/n)` uniformly in time.

This module gives the pieces to measure it: :func:`symmetric_stable_noise` (Chambers-Mallows-Stuck sampler),
:func:`heavy_tailed_langevin` (the Euler scheme above, vectorised over chains), :func:`wasserstein_stability` (a
coupling upper bound :math:`E\\lVert\\theta_k - \\hat\\theta_k\\rVert \\ge W_1` from runs on the two datasets driven
by the same noise) and :func:`strongly_convex_stability_bound` (the contraction bound :math:`G / (n m)` that holds
under synchronous coupling for an ``m``-strongly convex objective).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.func import vmap

from paperzoo.core.accepts import Choice, FloatDType, Function, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.diagnostics._functional import flat_loss

__all__ = [
    "symmetric_stable_noise", "heavy_tailed_langevin", "HeavyTailedRun", "wasserstein_stability",
    "CoupledStability", "strongly_convex_stability_bound",
]


# -- noise ---------------------------------------------------------------------------------------------------------

def _stable(num_samples: int, dim: int, alpha: float, dtype, generator) -> torch.Tensor:
    # Chambers-Mallows-Stuck for beta = 0, scale 1 (characteristic function exp(-|u|^alpha)).
    V = (torch.rand(num_samples, dim, generator=generator, dtype=dtype) - 0.5) * math.pi
    W = -torch.log1p(-torch.rand(num_samples, dim, generator=generator, dtype=dtype))  # Exp(1), never 0 -> inf
    W = W.clamp_min(torch.finfo(dtype).tiny)
    if alpha == 1.0:
        return torch.tan(V)
    return torch.sin(alpha * V) / torch.cos(V) ** (1.0 / alpha) * (torch.cos(V - alpha * V) / W) ** (
        (1.0 - alpha) / alpha)


@accepts(num_samples=Int(ge=1), dim=Int(ge=1), alpha=Real(gt=0, le=2), dtype=FloatDType(), generator=Generator(),
         example=lambda ctx: {"num_samples": 4, "dim": 3, "alpha": 1.5, "dtype": ctx.dtype})
def symmetric_stable_noise(num_samples: int, dim: int, alpha: float, *, dtype: torch.dtype = torch.float64,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard symmetric alpha-stable noise, i.i.d. coordinates (Chambers-Mallows-Stuck).

    References: A Method for Simulating Stable Random Variables (Chambers, Mallows, Stuck), 1976.

    Each entry has characteristic function :math:`E e^{iuX} = e^{-|u|^\\alpha}` (scipy's
    ``levy_stable(alpha, 0)``, parametrisation S1, scale 1): with :math:`V \\sim U(-\\pi/2, \\pi/2)` and
    :math:`W \\sim \\mathrm{Exp}(1)`, :math:`X = \\sin(\\alpha V) / \\cos(V)^{1/\\alpha}\\,(\\cos((1-\\alpha)V)/W)^{(1-\\alpha)
    /\\alpha}`. ``alpha = 2`` is :math:`N(0, 2)`, ``alpha = 1`` is Cauchy; for ``alpha < 2`` the variance is infinite
    and for ``alpha <= 1`` the mean does not exist.

    Args:
        num_samples, dim: the output shape ``(num_samples, dim)``.
        alpha: tail index :math:`\\alpha \\in (0, 2]`.
        dtype: floating dtype of the output.
        generator: for the uniforms and exponentials.

    Example:
        >>> x = symmetric_stable_noise(20000, 1, 2.0, generator=torch.Generator().manual_seed(0))
        >>> round(float(x.var()), 1)   # alpha = 2: N(0, 2)
        2.0
    """
    return _stable(num_samples, dim, float(alpha), dtype, generator)


# -- the Euler scheme ----------------------------------------------------------------------------------------------

def _check_common(inputs, targets):
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"targets must have as many rows as inputs ({inputs.shape[0]}), got {targets.shape[0]}")


def _batched_grad(batch_loss, in_dims):
    # Per-chain gradients as the gradient of the sum over chains of a vmapped forward: the chains do not interact,
    # and one reverse pass is ~3x cheaper than vmap(grad(...)) at these sizes.
    fwd = vmap(batch_loss, in_dims=in_dims)

    def g(theta, x, y):
        with torch.enable_grad():
            theta = theta.detach().requires_grad_(True)
            (out,) = torch.autograd.grad(fwd(theta, x, y).sum(), theta)
        return out
    return g


def _drift(batch_loss, weight_decay):
    g = _batched_grad(batch_loss, (0, None, None))

    def drift(theta, x, y):
        return g(theta, x, y) + weight_decay * theta
    return drift


class HeavyTailedRun(NamedTuple):
    """Final iterates of :func:`heavy_tailed_langevin`: ``params`` ``(C, P)``, ``n_iter`` steps, ``finite``."""

    params: torch.Tensor
    n_iter: int
    finite: bool


def _example_logistic(ctx):
    g = ctx.generator
    model = torch.nn.Linear(3, 1, bias=False).to(ctx.dtype)
    with torch.no_grad():
        model.weight.zero_()
    x = torch.randn(10, 3, generator=g, dtype=ctx.dtype)
    y = (torch.rand(10, 1, generator=g, dtype=ctx.dtype) < 0.5).to(ctx.dtype)
    return {"model": model, "loss_fn": torch.nn.functional.binary_cross_entropy_with_logits, "inputs": x,
            "targets": y, "alpha": 1.5, "sigma": 0.3, "lr": 0.1, "n_steps": 5, "n_chains": 4,
            "weight_decay": 0.5}


@accepts(model=Module(bind_dtype=True), loss_fn=Function(), inputs=Tensor(ndims=tuple(range(1, 9))),
         targets=Tensor(ndims=tuple(range(1, 9))), alpha=Real(ge=1, le=2), sigma=Real(ge=0), lr=Real(gt=0),
         n_steps=Int(ge=1), n_chains=Int(ge=1), weight_decay=Real(ge=0), generator=Generator(),
         example=_example_logistic)
def heavy_tailed_langevin(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                          inputs: torch.Tensor, targets: torch.Tensor, *, alpha: float, sigma: float, lr: float,
                          n_steps: int, n_chains: int, weight_decay: float = 0.0,
                          generator: torch.Generator | None = None) -> HeavyTailedRun:
    """Euler scheme of the alpha-stable-driven gradient SDE (heavy-tailed noisy GD), ``n_chains`` chains at once.

    References: Algorithmic Stability of Heavy-Tailed SGD with General Loss Functions, 2023.

    :math:`\\theta_{k+1} = \\theta_k - \\eta\\,(\\nabla \\hat F(\\theta_k) + \\lambda\\theta_k) + \\sigma\\,\\eta^{1/\\alpha}
    \\xi_{k+1}`, :math:`\\hat F` = ``loss_fn(model(inputs), targets)`` (full batch), :math:`\\lambda` =
    ``weight_decay``, :math:`\\eta` = ``lr``, :math:`\\xi` i.i.d. standard symmetric :math:`\\alpha`-stable
    coordinates (:func:`symmetric_stable_noise`). ``alpha = 2`` is Langevin/SGLD-type Gaussian noise of variance
    :math:`2\\sigma^2\\eta`. Every chain starts at the model's parameters; the model is not modified.

    Args:
        model, loss_fn: ``loss_fn(outputs, targets) -> scalar`` (mean over the batch).
        inputs ``(n, ...)``, targets ``(n, ...)``: the training set :math:`X_n`.
        alpha: tail index in ``[1, 2]``; sigma: noise scale; lr: step size :math:`\\eta`.
        n_steps, n_chains: iterations and independent chains :math:`C`.
        weight_decay: :math:`\\lambda \\ge 0` (an l2 term makes a convex loss strongly convex, i.e. dissipative).
        generator: for the noise.

    Returns:
        :class:`HeavyTailedRun` with ``params`` of shape ``(C, P)``; a warning if an iterate became non-finite.

    Example:
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> x, y = torch.ones(4, 1, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)
        >>> run = heavy_tailed_langevin(model, torch.nn.functional.mse_loss, x, y, alpha=1.5, sigma=0.0, lr=0.25,
        ...                             n_steps=2, n_chains=3)
        >>> run.params[:, 0].tolist()   # sigma = 0: GD, theta <- (1 - 2 * 0.25) theta
        [0.25, 0.25, 0.25]
    """
    _check_common(inputs, targets)
    theta0, batch_loss, _ = flat_loss(model, loss_fn)
    drift = _drift(batch_loss, weight_decay)
    scale = sigma * lr ** (1.0 / alpha)
    theta = theta0.expand(n_chains, -1).clone()
    for _ in range(n_steps):
        theta = theta - lr * drift(theta, inputs, targets) + scale * _stable(
            n_chains, theta.shape[1], alpha, theta.dtype, generator)
    finite = bool(torch.isfinite(theta).all())
    if not finite:
        warnings.warn(f"heavy_tailed_langevin: non-finite iterates; lower lr (got {lr}) or sigma (got {sigma})",
                      RuntimeWarning, stacklevel=2)
    return HeavyTailedRun(theta, n_steps, finite)


# -- Wasserstein stability -----------------------------------------------------------------------------------------

class CoupledStability(NamedTuple):
    """Coupling estimate of the Wasserstein-1 stability from :func:`wasserstein_stability`.

    ``distance``: mean over chains of :math:`\\lVert\\theta_K - \\hat\\theta_K\\rVert` (an upper bound on
    :math:`W_1` of the two laws for any coupling, up to Monte Carlo error); ``stderr``: its standard error (``inf``
    with one chain);
    ``per_chain`` ``(C,)``; ``path`` ``(checkpoints,)``: the mean distance at steps ``steps``; ``n_iter``;
    ``finite``; ``time_ratio``: the mean distance at step ``K`` over that at the checkpoint nearest ``K / 2``
    (about 1 once the distance is stationary, the paper's time-uniformity; 1 when both are 0, ``inf`` when only the
    earlier one is).
    """

    distance: float
    stderr: float
    per_chain: torch.Tensor
    path: torch.Tensor
    steps: torch.Tensor
    n_iter: int
    finite: bool
    time_ratio: float


def _example_pair(ctx):
    ex = _example_logistic(ctx)
    x2, y2 = ex["inputs"].clone(), ex["targets"].clone()
    x2[0] = torch.randn(3, generator=ctx.generator, dtype=ctx.dtype)
    y2[0] = 1.0 - y2[0]
    return {**ex, "inputs_alt": x2, "targets_alt": y2, "checkpoints": 2}


def _coupled(batch_loss, theta0, data, data_alt, alpha, sigma, lr, n_steps, n_chains, weight_decay, coupling,
             checkpoints, generator):
    # Both runs in one vmap call over 2 C (chain, dataset) pairs; the data are expanded views, not copies.
    flat = _batched_grad(batch_loss, (0, 0, 0))
    xs = torch.stack([data[0], data_alt[0]]).unsqueeze(1).expand(2, n_chains, *data[0].shape)
    ys = torch.stack([data[1], data_alt[1]]).unsqueeze(1).expand(2, n_chains, *data[1].shape)
    xs, ys = xs.reshape(2 * n_chains, *data[0].shape), ys.reshape(2 * n_chains, *data[1].shape)

    def g(th, x, y):
        return flat(th.reshape(2 * n_chains, -1), x, y).reshape(th.shape)
    scale = sigma * lr ** (1.0 / alpha)
    thetas = theta0.expand(2, n_chains, -1).clone()
    p = thetas.shape[2]
    record = set(torch.linspace(n_steps / checkpoints, n_steps, checkpoints).round().long().tolist())
    steps, path = [], []
    for k in range(1, n_steps + 1):
        if coupling == "synchronous":
            xi = _stable(n_chains, p, alpha, thetas.dtype, generator).expand(2, -1, -1)
        else:
            xi = _stable(2 * n_chains, p, alpha, thetas.dtype, generator).reshape(2, n_chains, p)
        thetas = thetas - lr * (g(thetas, xs, ys) + weight_decay * thetas) + scale * xi
        if k in record:
            steps.append(k)
            path.append(torch.linalg.vector_norm(thetas[0] - thetas[1], dim=1).mean())
    theta, theta_alt = thetas[0], thetas[1]
    per_chain = torch.linalg.vector_norm(theta - theta_alt, dim=1)
    return per_chain, torch.stack(path), torch.tensor(steps)


@accepts(model=Module(bind_dtype=True), loss_fn=Function(), inputs=Tensor(ndims=tuple(range(1, 9))),
         targets=Tensor(ndims=tuple(range(1, 9))), inputs_alt=Tensor(ndims=tuple(range(1, 9))),
         targets_alt=Tensor(ndims=tuple(range(1, 9))), alpha=Real(ge=1, le=2), sigma=Real(ge=0), lr=Real(gt=0),
         n_steps=Int(ge=1), n_chains=Int(ge=1), weight_decay=Real(ge=0),
         coupling=Choice("synchronous", "independent"), checkpoints=Int(ge=1), generator=Generator(),
         example=_example_pair, infinite_ok=("stderr", "time_ratio"))
def wasserstein_stability(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                          inputs: torch.Tensor, targets: torch.Tensor, inputs_alt: torch.Tensor,
                          targets_alt: torch.Tensor, *, alpha: float, sigma: float, lr: float, n_steps: int,
                          n_chains: int, weight_decay: float = 0.0, coupling: str = "synchronous",
                          checkpoints: int = 10, generator: torch.Generator | None = None) -> CoupledStability:
    """Wasserstein-1 algorithmic stability of heavy-tailed noisy GD, estimated by coupling two runs.

    References: Algorithmic Stability of Heavy-Tailed SGD with General Loss Functions, 2023.

    Runs :func:`heavy_tailed_langevin` on :math:`X_n` = ``(inputs, targets)`` and on the neighbouring
    :math:`\\hat X_n` = ``(inputs_alt, targets_alt)`` from the same start and returns
    :math:`E\\lVert\\theta_K - \\hat\\theta_K\\rVert \\ge W_1(\\mathrm{Law}(\\theta_K), \\mathrm{Law}(\\hat\\theta_K))`
    averaged over ``n_chains``. ``coupling="synchronous"`` drives both runs with the same :math:`\\xi_k` (the
    coupling behind contraction bounds: the difference then follows
    :math:`d_{k+1} = d_k - \\eta(\\nabla\\hat F(\\theta_k) - \\nabla\\hat F'(\\hat\\theta_k) + \\lambda d_k)`);
    ``"independent"`` uses fresh noise for the second run (a much looser coupling, for controls).

    Args:
        model, loss_fn, alpha, sigma, lr, n_steps, n_chains, weight_decay, generator: as in
            :func:`heavy_tailed_langevin`.
        inputs, targets, inputs_alt, targets_alt: ``(n, ...)`` each, the two datasets (same shapes).
        coupling: ``"synchronous"`` or ``"independent"``.
        checkpoints: number of evenly spaced steps at which the mean distance is recorded.

    Returns:
        :class:`CoupledStability`.

    Example:
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> x = torch.ones(4, 1, dtype=torch.float64)
        >>> y, y2 = torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)
        >>> y2[0] = 4.0   # mean target 1: the MSE minimiser moves from 0 to 1
        >>> s = wasserstein_stability(model, torch.nn.functional.mse_loss, x, y, x, y2, alpha=1.3, sigma=1.0,
        ...                           lr=0.25, n_steps=40, n_chains=8, generator=torch.Generator().manual_seed(0))
        >>> round(s.distance, 6)   # quadratic loss, synchronous noise: the difference is deterministic
        1.0
    """
    _check_common(inputs, targets)
    if inputs_alt.shape != inputs.shape or targets_alt.shape != targets.shape:
        raise ValueError(f"inputs_alt and targets_alt must have the shapes of inputs and targets "
                         f"({tuple(inputs.shape)}, {tuple(targets.shape)}), got {tuple(inputs_alt.shape)}, "
                         f"{tuple(targets_alt.shape)}")
    if checkpoints > n_steps:
        raise ValueError(f"checkpoints must be <= n_steps ({n_steps}), got {checkpoints}")
    theta0, batch_loss, _ = flat_loss(model, loss_fn)
    per_chain, path, steps = _coupled(batch_loss, theta0, (inputs, targets), (inputs_alt, targets_alt), float(alpha),
                                      float(sigma), float(lr), n_steps, n_chains, float(weight_decay), coupling,
                                      checkpoints, generator)
    finite = bool(torch.isfinite(per_chain).all())
    if not finite:
        warnings.warn(f"wasserstein_stability: non-finite iterates; lower lr (got {lr}) or sigma (got {sigma})",
                      RuntimeWarning, stacklevel=2)
    mean = float(per_chain.mean())
    se = float(per_chain.std() / math.sqrt(n_chains)) if n_chains > 1 else math.inf
    half = int(torch.argmin((steps - n_steps / 2).abs()))   # the checkpoint nearest K / 2 (the earlier one on ties)
    mid = float(path[half])
    last = float(path[-1])
    ratio = last / mid if mid > 0 else (1.0 if last == 0 else math.inf)
    return CoupledStability(mean, se, per_chain, path, steps, n_steps, finite, ratio)


@accepts(grad_gap=Real(ge=0), strong_convexity=Real(gt=0), n=Int(ge=1),
         example=lambda ctx: {"grad_gap": 2.0, "strong_convexity": 0.5, "n": 100})
def strongly_convex_stability_bound(grad_gap: float, strong_convexity: float, n: int) -> float:
    """Time-uniform contraction bound on the synchronous-coupling distance for an m-strongly convex objective.

    References: Algorithmic Stability of Heavy-Tailed SGD with General Loss Functions, 2023 (strongly convex case).

    If :math:`\\hat F + \\tfrac{\\lambda}{2}\\lVert\\theta\\rVert^2` is :math:`m`-strongly convex and
    :math:`M`-smooth, :math:`\\eta \\le 2/(m + M)`, and the per-sample gradients of the replaced pair differ by at most
    :math:`G = \\sup_\\theta\\lVert\\nabla f(\\theta, z_i) - \\nabla f(\\theta, \\hat z_i)\\rVert`, then under the
    same noise :math:`\\lVert d_{k+1}\\rVert \\le (1 - \\eta m)\\lVert d_k\\rVert + \\eta G / n`, so
    :math:`\\sup_k E\\lVert\\theta_k - \\hat\\theta_k\\rVert \\le G / (n m)` for every :math:`\\alpha`; this is the
    :math:`O(1/n)` stability the paper's strongly convex bound states (its constants differ).

    Args:
        grad_gap: :math:`G`; strong_convexity: :math:`m`; n: dataset size.

    Example:
        >>> strongly_convex_stability_bound(2.0, 0.5, 100)
        0.04
    """
    return float(grad_gap / (n * strong_convexity))
