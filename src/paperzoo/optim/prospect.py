"""Prospect: a single-learning-rate stochastic method for spectral-risk distributionally robust optimization.

References: Distributionally Robust Optimization with Bias and Variance Reduction, 2024 (Mehta, Roulet,
Pillutla, Harchaoui; ICLR 2024), Algorithm 1.

Objective (Eq. 2 of the paper, with the chi-square shift cost of the official code):

.. math::
    F(w) = \\max_{q \\in \\mathcal P(\\sigma)} \\sum_{i=1}^n q_i \\ell_i(w) - \\frac{n\\nu}{2}\\Big\\|q -
    \\frac{\\mathbf 1}{n}\\Big\\|_2^2 + \\frac{\\mu}{2}\\|w\\|_2^2,

where :math:`\\mathcal P(\\sigma)` is the permutahedron of the spectrum :math:`\\sigma` (``spectrum``, shape
``(n,)``, nondecreasing, summing to 1): CVaR / superquantile, extremile, ESRM (see :func:`cvar_spectrum`,
:func:`extremile_spectrum`, :func:`esrm_spectrum`). The maximiser is a Euclidean projection onto the permutahedron,
computed by sorting and pool-adjacent-violators (:func:`spectral_risk_weights`).

One Prospect step (indices :math:`i, j` uniform and independent; tables :math:`l`, :math:`g_i`, :math:`\\rho`,
:math:`\\bar g = \\sum_i \\rho_i g_i` initialised at :math:`w_0`, :math:`q = \\rho = q^{opt}(l)`):

.. math::
    v &= n q_i \\nabla\\ell_i(w) - n\\rho_i g_i + \\bar g \\\\
    w^+ &= \\frac{w - \\eta v}{1 + \\eta\\mu} \\quad\\text{(prox of the ridge term)} \\\\
    \\bar g &\\leftarrow \\bar g - \\rho_i g_i + q_i\\nabla\\ell_i(w), \\quad g_i \\leftarrow \\nabla\\ell_i(w), \\quad
    \\rho_i \\leftarrow q_i \\quad\\text{(variance reduction)} \\\\
    l_j &\\leftarrow \\ell_j(w), \\quad q \\leftarrow q^{opt}(l) \\quad\\text{(bias reduction)}

Symbols: :math:`\\eta` = ``lr`` (the only tuned hyperparameter), :math:`\\nu` = ``nu``, :math:`\\mu` = ``mu``.

Deviations: the official code reuses the gradient index :math:`i` for the loss-table update (one oracle call per
step); we follow the paper's independent :math:`j` (``same_index=True`` gives the code's variant). The weights are
recomputed with a full sort each step (``O(n log n)``) instead of the paper's incremental re-sort.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import isotonic_regression

from paperzoo.core.accepts import Flag, FloatDType, Function, Generator, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_tensor
from paperzoo.core.convergence import check_finite_iterate, warn_not_converged

__all__ = ["ProspectResult", "spectral_risk_weights", "spectral_risk_objective", "cvar_spectrum",
           "extremile_spectrum", "esrm_spectrum", "prospect_objective", "squared_loss_oracle", "logistic_loss_oracle", "solve_prospect"]

LossOracle = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


class ProspectResult(NamedTuple):
    """Result of :func:`solve_prospect`.

    Attributes:
        x: final weights ``(d,)``.
        n_iter: stochastic steps run.
        converged: :math:`\\|\\nabla F(w)\\| \\le` ``tol`` at an epoch end.
        objective: :math:`F(w)` at every epoch end, ``w_0`` first, ``(n_epochs + 1,)``.
        grad_norm: :math:`\\|\\nabla F(w)\\|` (Danskin: :math:`\\sum_i q^{opt}_i\\nabla\\ell_i + \\mu w`) at the same points.
        n_epochs: epochs (``n`` steps each) run.
    """

    x: torch.Tensor
    n_iter: int
    converged: bool
    objective: torch.Tensor
    grad_norm: torch.Tensor
    n_epochs: int


def _check_spectrum(spectrum, n=None):
    check_tensor("spectrum", spectrum, ndim=1, nonnegative=True)  # floating: bool or integer weights are refused
    if n is not None and spectrum.shape[0] != n:
        raise ValueError(f"spectrum must have shape ({n},) (one weight per loss), got {tuple(spectrum.shape)}")
    if bool((spectrum[1:] < spectrum[:-1] - 1e-12).any()):
        raise ValueError("spectrum must be nondecreasing")
    if abs(float(spectrum.sum()) - 1.0) > 1e-6:
        raise ValueError(f"spectrum must sum to 1, got {float(spectrum.sum())!r}")
    return spectrum


@accepts(n=Int(ge=1), alpha=Real(gt=0, le=1), dtype=FloatDType())
def cvar_spectrum(n: int, alpha: float, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Superquantile (CVaR) at level ``alpha`` in (0, 1]: mass :math:`1/(\\alpha n)` on the top
    :math:`\\alpha n` losses (fractional at the boundary), shape ``(n,)``, nondecreasing.

    Example:
        >>> cvar_spectrum(4, 0.5).tolist()
        [0.0, 0.0, 0.5, 0.5]
    """
    alpha = float(alpha)
    # sigma_i = integral of 1/alpha over the quantile cell [(i-1)/n, i/n] intersected with [1 - alpha, 1].
    edges = torch.arange(n + 1, dtype=dtype) / n
    cdf = ((edges - (1 - alpha)).clamp_min(0.0) / alpha).clamp_max(1.0)
    return cdf[1:] - cdf[:-1]


@accepts(n=Int(ge=1), r=Real(ge=1), dtype=FloatDType())
def extremile_spectrum(n: int, r: float = 2.0, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Extremile of order ``r >= 1``: :math:`\\sigma_i = (i/n)^r - ((i-1)/n)^r`, shape ``(n,)``.

    Example:
        >>> extremile_spectrum(2, 2.0).tolist()
        [0.25, 0.75]
    """
    r = float(r)
    edges = (torch.arange(n + 1, dtype=dtype) / n) ** r
    return edges[1:] - edges[:-1]


@accepts(n=Int(ge=1), rho=Real(gt=0), dtype=FloatDType())
def esrm_spectrum(n: int, rho: float = 1.0, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Exponential spectral risk measure: :math:`\\sigma_i \\propto \\int_{(i-1)/n}^{i/n} e^{\\rho t}dt`,
    shape ``(n,)``.

    Example:
        >>> round(float(esrm_spectrum(3, 2.0).sum()), 12)
        1.0
    """
    rho = float(rho)
    edges = torch.expm1(rho * torch.arange(n + 1, dtype=dtype) / n)
    return (edges[1:] - edges[:-1]) / edges[-1]


def _spectrum_example(ctx) -> dict:
    n = ctx.size("n")
    return {"spectrum": cvar_spectrum(n, 0.5, dtype=ctx.dtype)}


# spectrum: nondecreasing and summing to 1 (checked in the body: relations the specs cannot state); of any
# floating dtype, since it is used in float64 (a float64 spectrum from cvar_spectrum weights float32 losses).
_SPECTRUM = Tensor("n", dtype="any", nonnegative=True)
_RISK = dict(losses=Tensor("n", degenerate=("constant", "zeros")), spectrum=_SPECTRUM,
             nu=Real(ge=0))


@accepts(**_RISK, example=_spectrum_example)
def spectral_risk_weights(losses: torch.Tensor, spectrum: torch.Tensor, nu: float) -> torch.Tensor:
    """The maximising weights :math:`q^{opt}(l) = \\arg\\max_{q\\in\\mathcal P(\\sigma)} q^\\top l -
    \\frac{n\\nu}{2}\\|q - \\mathbf 1/n\\|^2 = \\Pi_{\\mathcal P(\\sigma)}(\\mathbf 1/n + l/(n\\nu))`.

    The projection onto the permutahedron: sort :math:`z` ascending, fit a nondecreasing sequence :math:`v` to
    :math:`z_{sorted} - \\sigma` by pool-adjacent-violators, return :math:`z - v` in the original order. With
    ``nu = 0`` the weights are :math:`\\sigma` assigned by rank (the unregularised spectral risk).

    Args:
        losses: ``(n,)``.
        spectrum: ``(n,)`` nondecreasing, sums to 1.
        nu: shift cost :math:`\\nu \\ge 0`.

    Example:
        >>> spectral_risk_weights(torch.tensor([3.0, 1.0, 2.0, 0.0], dtype=torch.float64),
        ...                       cvar_spectrum(4, 0.5), 0.0).tolist()
        [0.5, 0.0, 0.5, 0.0]
    """
    return _weights(losses, spectrum, float(nu))


def _weights(losses, spectrum, nu):
    _check_spectrum(spectrum, losses.shape[0])
    q = _project(losses.detach().cpu().numpy().astype(np.float64), spectrum.detach().cpu().numpy().astype(np.float64),
                 nu)
    return torch.as_tensor(q, dtype=losses.dtype, device=losses.device)


def _project(losses: np.ndarray, sigma: np.ndarray, nu: float) -> np.ndarray:
    """Unchecked core of :func:`spectral_risk_weights` on float64 arrays (the solver calls it every step)."""
    n = losses.shape[0]
    perm = np.argsort(losses, kind="stable")
    q = np.empty(n)
    if nu == 0:
        q[perm] = sigma
        return q
    zs = 1.0 / n + losses[perm] / (n * nu)
    starts = isotonic_regression(zs - sigma, increasing=True).blocks[:-1]
    lengths = np.diff(np.append(starts, n))
    # Within a pooled block B the fit is mean_B(z - sigma), so q = (z - mean_B z) + mean_B sigma. Writing it this
    # way (instead of z - fit) avoids cancellation when the losses are large compared with n * nu.
    mean_z = np.repeat(np.add.reduceat(zs, starts) / lengths, lengths)
    mean_s = np.repeat(np.add.reduceat(sigma, starts) / lengths, lengths)
    q[perm] = (zs - mean_z) + mean_s
    return q
    z = 1.0 / n + losses / (n * nu)
    zs = z[perm]
    fit = isotonic_regression((zs - sigma).detach().cpu().numpy().astype(np.float64), increasing=True)
    # Within a pooled block B the fit is mean_B(z - sigma), so q = (z - mean_B z) + mean_B sigma. Writing it this
    # way (instead of z - v) avoids cancellation when the losses are large compared with n * nu.
    starts = torch.as_tensor(fit.blocks, device=losses.device)
    lengths = starts[1:] - starts[:-1]
    block = torch.repeat_interleave(torch.arange(lengths.shape[0], device=losses.device), lengths)
    counts = lengths.to(losses.dtype)

    def block_mean(t):
        return torch.zeros(lengths.shape[0], dtype=t.dtype, device=t.device).index_add_(0, block, t)[block] / counts[block]

    q = torch.empty_like(losses)
    q[perm] = (zs - block_mean(zs)) + block_mean(sigma)
    return q


@accepts(**_RISK, example=_spectrum_example)
def spectral_risk_objective(losses: torch.Tensor, spectrum: torch.Tensor, nu: float) -> torch.Tensor:
    """:math:`\\max_{q\\in\\mathcal P(\\sigma)} q^\\top l - \\frac{n\\nu}{2}\\|q - \\mathbf 1/n\\|^2` (no ridge term).

    Example:
        >>> float(spectral_risk_objective(torch.tensor([3.0, 1.0, 2.0, 0.0]), cvar_spectrum(4, 0.5, dtype=torch.float32), 0.0))
        2.5
    """
    q = _weights(losses, spectrum, float(nu))
    n = losses.shape[0]
    return q @ losses - 0.5 * n * float(nu) * (q - 1.0 / n).square().sum()


# The oracles return a function (no numeric output to check).
@accepts(X=Tensor("n", "d"), y=Tensor("n"), output="any")
def squared_loss_oracle(X: torch.Tensor, y: torch.Tensor) -> LossOracle:
    """Oracle ``(w, idx) -> (losses (b,), grads (b, d))`` for :math:`\\ell_i(w) = \\tfrac12(x_i^\\top w - y_i)^2`
    (``idx=None``: every example). ``X: (n, d)``, ``y: (n,)``."""

    def oracle(w, idx=None):
        Xi, yi = (X, y) if idx is None else (X[idx], y[idx])
        r = Xi @ w - yi
        return 0.5 * r * r, r[:, None] * Xi

    return oracle


@accepts(X=Tensor("n", "d"), y=Tensor("n"), output="any",
         example=lambda ctx: {"y": (torch.arange(ctx.size("n")) % 2).to(ctx.dtype)})
def logistic_loss_oracle(X: torch.Tensor, y: torch.Tensor) -> LossOracle:
    """Oracle for :math:`\\ell_i(w) = \\log(1 + e^{x_i^\\top w}) - y_i x_i^\\top w`, labels in {0, 1}."""
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"y must hold labels in {{0, 1}}, got values in [{float(y.min())!r}, {float(y.max())!r}]")

    def oracle(w, idx=None):
        Xi, yi = (X, y) if idx is None else (X[idx], y[idx])
        u = Xi @ w
        return torch.nn.functional.softplus(u) - yi * u, (torch.sigmoid(u) - yi)[:, None] * Xi

    return oracle


def _problem_example(ctx) -> dict:
    n, d = ctx.size("n"), ctx.size("d")
    X = torch.randn(n, d, generator=ctx.generator, dtype=ctx.dtype)
    y = torch.randn(n, generator=ctx.generator, dtype=ctx.dtype)
    return {"oracle": squared_loss_oracle(X, y), **_spectrum_example(ctx)}


def _full_pass(oracle, w):
    """``oracle(w, None)``, checked: a tuple of losses ``(n,)`` and gradients ``(n, d)`` in ``w``'s dtype."""
    out = oracle(w, None)
    losses, grads = out if isinstance(out, tuple) and len(out) == 2 else (None, None)
    if not (isinstance(losses, torch.Tensor) and isinstance(grads, torch.Tensor) and losses.dim() == 1
            and grads.shape == (losses.shape[0], w.shape[0]) and losses.dtype == grads.dtype == w.dtype):
        raise ValueError(f"oracle(w, None) must return (losses (n,), grads (n, {w.shape[0]})) in the dtype of w "
                         f"({w.dtype}), got {type(out).__name__}")
    return losses, grads


@accepts(oracle=Function(), w=Tensor("d"), spectrum=_SPECTRUM, nu=Real(ge=0), mu=Real(ge=0),
         example=_problem_example)
def prospect_objective(oracle: LossOracle, w: torch.Tensor, spectrum: torch.Tensor, nu: float,
                       mu: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`F(w)` and :math:`\\nabla F(w) = \\sum_i q^{opt}_i(w)\\nabla\\ell_i(w) + \\mu w` (Danskin), one full pass.

    ``w: (d,)``; ``oracle``, ``spectrum``, ``nu``, ``mu`` as in :func:`solve_prospect`.
    """
    losses, grads = _full_pass(oracle, w)
    q = _weights(losses, spectrum, float(nu))
    n = losses.shape[0]
    value = q @ losses - 0.5 * n * nu * (q - 1.0 / n).square().sum() + 0.5 * mu * w.square().sum()
    return value, q @ grads + mu * w


@accepts(oracle=Function(), w0=Tensor("d"), spectrum=_SPECTRUM, lr=Real(gt=0), nu=Real(gt=0),
         mu=Real(ge=0), same_index=Flag(), generator=Generator(), max_epochs=Int(ge=1), tol=Real(ge=0),
         example=lambda ctx: {**_problem_example(ctx), "lr": 0.01, "max_epochs": 2})
def solve_prospect(
    oracle: LossOracle,
    w0: torch.Tensor,
    spectrum: torch.Tensor,
    *,
    lr: float,
    nu: float = 1.0,
    mu: float = 0.0,
    same_index: bool = False,
    generator: torch.Generator | None = None,
    max_epochs: int = 50,
    tol: float = 1e-10,
) -> ProspectResult:
    """Run Prospect (Algorithm 1; update rule in the module docstring).

    Args:
        oracle: ``(w, idx) -> (losses (b,), grads (b, d))`` for the examples ``idx`` (a 1-D long tensor, or
            ``None`` for all ``n``); see :func:`squared_loss_oracle`, :func:`logistic_loss_oracle`.
        w0: start ``(d,)``.
        spectrum: ``(n,)`` nondecreasing, sums to 1.
        lr: :math:`\\eta > 0`.
        nu: shift cost :math:`\\nu > 0` (smoothness of the max over :math:`q`).
        mu: ridge :math:`\\mu \\ge 0` (linear convergence needs :math:`\\mu > 0`).
        same_index: use the gradient index for the loss-table update (official code) instead of an independent one.
        generator: source of the sampled indices.
        max_epochs: epochs of ``n`` steps, ``>= 1``.
        tol: stop at an epoch end where :math:`\\|\\nabla F(w)\\| \\le` ``tol``.

    Returns:
        A :class:`ProspectResult`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(32, 3, generator=g, dtype=torch.float64); y = torch.randn(32, generator=g, dtype=torch.float64)
        >>> res = solve_prospect(squared_loss_oracle(X, y), torch.zeros(3, dtype=torch.float64), cvar_spectrum(32, 0.5),
        ...                      lr=0.01, nu=1.0, mu=0.1, generator=g, max_epochs=200, tol=1e-9)
        >>> res.converged
        True
    """
    lr, nu, mu, max_epochs, tol = float(lr), float(nu), float(mu), int(max_epochs), float(tol)
    w = w0.detach().clone()
    losses, grads = _full_pass(oracle, w)
    n = losses.shape[0]
    q = _weights(losses, spectrum, nu)
    sigma_np = spectrum.detach().cpu().numpy().astype(np.float64)
    cpu64 = losses.dtype == torch.float64 and losses.device.type == "cpu"
    rho = q.clone()
    table_g = grads.clone()
    gbar = rho @ table_g
    value, full_grad = prospect_objective(oracle, w, spectrum, nu, mu)
    objective, gnorms = [value], [full_grad.norm()]
    converged = bool(gnorms[-1] <= tol)
    steps = 0
    epoch = 0
    while not converged and epoch < max_epochs:
        I = torch.randint(n, (n,), generator=generator)
        J = I if same_index else torch.randint(n, (n,), generator=generator)
        for t in range(n):
            i, j = int(I[t]), int(J[t])
            loss_i, grad_i = oracle(w, I[t:t + 1])
            grad_i = grad_i[0]
            v = n * q[i] * grad_i - n * rho[i] * table_g[i] + gbar
            gbar = gbar - rho[i] * table_g[i] + q[i] * grad_i
            table_g[i] = grad_i
            rho[i] = q[i]
            losses[j] = loss_i[0] if j == i else oracle(w, J[t:t + 1])[0][0]
            w = (w - lr * v) / (1.0 + lr * mu)
            if not math.isfinite(float(losses[j])):
                check_finite_iterate("solve_prospect", losses[j:j + 1], steps + t + 1, "decrease lr")
            q = torch.as_tensor(_project(losses.numpy() if cpu64 else losses.double().cpu().numpy(), sigma_np, nu),
                                dtype=w.dtype, device=w.device)
        steps += n
        epoch += 1
        check_finite_iterate("solve_prospect", w, steps, "decrease lr")
        value, full_grad = prospect_objective(oracle, w, spectrum, nu, mu)
        objective.append(value)
        gnorms.append(full_grad.norm())
        converged = bool(gnorms[-1] <= tol)
    if not converged and tol > 0:
        warn_not_converged("solve_prospect", max_epochs, tol, "increase max_epochs or tune lr")
    return ProspectResult(w, steps, converged, torch.stack(objective), torch.stack(gnorms), epoch)
