r"""Rate checking for (stochastic) gradient methods: run a method, compare its gaps to a proven bound, fit slopes.

References: Handbook of Convergence Theorems for (Stochastic) Gradient Methods (Garrigos, Gower), 2023.
Revisiting the Last-Iterate Convergence of Stochastic Gradient Methods (Liu, Zhou), 2023.

Pieces:

- :func:`run_gradient_method`: (proximal) (stochastic) gradient descent,
  :math:`x_{t+1} = \operatorname{prox}_{\gamma_t h}(x_t - \gamma_t g_t)`, vectorised over any batch of
  independent runs, recording the last iterate and the uniform average at chosen steps.
- :func:`run_heavy_ball`: (stochastic) heavy ball with the handbook's step and momentum schedule
  (:math:`\gamma_t = 2\eta/(t+3)`, :math:`\beta_t = t/(t+3)`, the iterate-moving-average form with
  :math:`\lambda_t = t/2`).
- Bounds from the handbook, each a function of the step count ``t`` (a tensor) and the problem constants:
  :func:`gd_convex_bound`, :func:`gd_strongly_convex_bound`, :func:`gd_pl_bound`, :func:`sgd_strongly_convex_bound`,
  :func:`heavy_ball_convex_bound`, :func:`subgradient_bound`. Their constants are re-derived in each docstring
  (the proof fits in a few lines), because the handbook's own text could not be read where this was written.
- :func:`check_bound`: measured against bound at every recorded step (:class:`BoundCheck`).
- :func:`fit_loglog_slope`: least-squares slope of :math:`\log y` on :math:`\log x` (:class:`SlopeFit`), how a
  rate :math:`O(T^{-a})` is read off an experiment; :func:`fit_linear_rate` does the same for
  :math:`O(\rho^{t})`.
- :func:`soft_threshold`: the proximal map of :math:`\tau\|x\|_1`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Function, Int, Ints, OneOf, Real, Tensor, accepts
from paperzoo.core.checks import check_int, check_nonnegative, check_number, check_positive, check_tensor
from paperzoo.core.evidence import fit_line
from paperzoo.optim.subgradient import soft_threshold  # re-exported: the one prox of the L1 norm

__all__ = [
    "Trajectory",
    "BoundCheck",
    "SlopeFit",
    "run_gradient_method",
    "gd_convex_bound",
    "gd_strongly_convex_bound",
    "sgd_strongly_convex_bound",
    "gd_pl_bound",
    "run_heavy_ball",
    "heavy_ball_convex_bound",
    "subgradient_bound",
    "check_bound",
    "fit_loglog_slope",
    "fit_linear_rate",
    "soft_threshold",
]


class Trajectory(NamedTuple):
    r"""What :func:`run_gradient_method` recorded.

    Attributes:
        steps: ``(K,)`` long tensor, the step counts :math:`t` at which iterates were recorded (0 = start).
        last: ``(K, *batch, d)``, the iterate :math:`x_t` at each recorded step.
        average: ``(K, *batch, d)``, the uniform average :math:`\bar x_t = \frac1t\sum_{s=1}^{t} x_s` of the
            iterates after the start (equal to :math:`x_0` at ``t = 0``).
        n_iter: steps run.
        diverged: whether a NaN or inf appeared (the run stops there).
    """

    steps: torch.Tensor
    last: torch.Tensor
    average: torch.Tensor
    n_iter: int
    diverged: bool


def _descent_oracle(x, t):
    return x  # the gradient of |x|^2 / 2: the example problem of the declarations


@accepts(oracle=Function(), x0=Tensor(..., "d"), step_size=OneOf(Real(gt=0), Function()),
         num_steps=Int(ge=1), prox=Function(optional=True), record=Ints(ge=0, optional=True),
         example=lambda ctx: {"oracle": _descent_oracle, "step_size": 0.1, "num_steps": 5})
def run_gradient_method(
    oracle: Callable[[torch.Tensor, int], torch.Tensor],
    x0: torch.Tensor,
    step_size: float | Callable[[int], float],
    num_steps: int,
    *,
    prox: Callable[[torch.Tensor, float], torch.Tensor] | None = None,
    record: Sequence[int] | None = None,
) -> Trajectory:
    r"""Run :math:`x_{t+1} = \operatorname{prox}_{\gamma_t}(x_t - \gamma_t\, g_t)` with :math:`g_t` = ``oracle(x_t, t)``.

    Deterministic oracles give gradient descent, sampled ones SGD; ``prox=None`` is the identity. Every run in
    the batch moves at once.

    Args:
        oracle: ``(x, t) -> g`` with ``x`` and ``g`` of shape ``(B, d)`` (or ``(d,)``); ``t = 0, 1, ...``.
        x0: starting points, shape ``(B, d)`` for ``B`` runs (``(d,)`` for a single run).
        step_size: :math:`\gamma` (constant, ``> 0``) or ``t -> \gamma_t``.
        num_steps: :math:`T \ge 1`.
        prox: ``(y, gamma) -> x``, the proximal map of :math:`\gamma h`.
        record: step counts at which to keep the iterate (default ``0..T``); values in ``[0, T]``.

    Returns:
        :class:`Trajectory`. A NaN or inf stops the run with a ``RuntimeWarning`` naming ``step_size`` as the
        knob; ``diverged`` is then true and later records repeat the last finite state's NaNs.

    Example:
        >>> A = torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64))
        >>> traj = run_gradient_method(lambda x, t: x @ A, torch.ones(2, dtype=torch.float64), 0.1, 50)
        >>> bool(traj.last[-1].norm() < 1e-2), traj.n_iter
        (True, 50)
    """
    num_steps = int(num_steps)
    if record is None:
        record_set = list(range(num_steps + 1))
    else:
        record_set = sorted({check_int("record", r, low=0, high=num_steps) for r in record})
    wanted = set(record_set)
    x = x0.clone()
    running_sum = torch.zeros_like(x0)
    lasts, avgs = [], []
    diverged = False
    n_iter = 0

    def keep(t):
        lasts.append(x.clone())
        avgs.append(x.clone() if t == 0 else running_sum / t)

    if 0 in wanted:
        keep(0)
    for t in range(num_steps):
        gamma = check_positive(f"step_size({t})", step_size(t)) if callable(step_size) else step_size
        g = oracle(x, t)
        if t == 0 and (not isinstance(g, torch.Tensor) or g.shape != x.shape):
            raise ValueError(f"oracle must return a tensor of shape {tuple(x.shape)} (that of x0), got "
                             f"{tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__}")
        x = x - gamma * g
        if prox is not None:
            x = prox(x, gamma)
        running_sum += x
        n_iter = t + 1
        if not bool(torch.isfinite(x).all()):
            diverged = True
            warnings.warn(f"run_gradient_method: non-finite iterate at step {t + 1}; reduce step_size",
                          RuntimeWarning, stacklevel=2)
            break
        if n_iter in wanted:
            keep(n_iter)
    while len(lasts) < len(record_set):
        lasts.append(torch.full_like(x0, float("nan")))
        avgs.append(torch.full_like(x0, float("nan")))
    return Trajectory(torch.tensor(record_set), torch.stack(lasts), torch.stack(avgs), n_iter, diverged)


# t: step counts, integer or floating (the bounds are computed in float64)
_STEPS = Tensor("T", dtype="any", nonnegative=True)


@accepts(t=_STEPS, L=Real(gt=0), r0_sq=Real(ge=0))
def gd_convex_bound(t: torch.Tensor, L: float, r0_sq: float) -> torch.Tensor:
    r"""Handbook bound for gradient descent (and proximal GD) with :math:`\gamma = 1/L` on a convex :math:`L`-smooth
    objective: :math:`f(x_t) - f_* \le \dfrac{L\,\|x_0 - x_*\|^2}{2t}` for :math:`t \ge 1` (``r0_sq`` =
    :math:`\|x_0 - x_*\|^2`; ``inf`` at ``t = 0``).

    Example:
        >>> gd_convex_bound(torch.tensor([1.0, 10.0]), L=2.0, r0_sq=1.0).tolist()
        [1.0, 0.1]
    """
    L = check_positive("L", L)
    r0_sq = check_nonnegative("r0_sq", r0_sq)
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.where(t > 0, L * r0_sq / (2 * t.clamp_min(1.0)), torch.full_like(t, math.inf))


@accepts(t=_STEPS, L=Real(gt=0), mu=Real(ge=0), r0_sq=Real(ge=0))
def gd_strongly_convex_bound(t: torch.Tensor, L: float, mu: float, r0_sq: float) -> torch.Tensor:
    r"""Handbook bound for gradient descent with :math:`\gamma = 1/L` on a :math:`\mu`-strongly convex, :math:`L`-smooth
    objective: :math:`\|x_t - x_*\|^2 \le (1 - \mu/L)^t \|x_0 - x_*\|^2`.

    Example:
        >>> gd_strongly_convex_bound(torch.tensor([0.0, 2.0]), L=2.0, mu=1.0, r0_sq=4.0).tolist()
        [4.0, 1.0]
    """
    L = check_positive("L", L)
    mu = check_number("mu", mu, low=0.0, high=L)
    r0_sq = check_nonnegative("r0_sq", r0_sq)
    t = torch.as_tensor(t, dtype=torch.float64)
    return (1 - mu / L) ** t * r0_sq


@accepts(t=_STEPS, gamma=Real(gt=0), mu=Real(gt=0), r0_sq=Real(ge=0), sigma_star_sq=Real(ge=0))
def sgd_strongly_convex_bound(t: torch.Tensor, gamma: float, mu: float, r0_sq: float,
                              sigma_star_sq: float) -> torch.Tensor:
    r"""Handbook bound for SGD with a constant step :math:`\gamma \le 1/(2L_{\max})` on a :math:`\mu`-strongly convex sum
    of convex :math:`L_{\max}`-smooth terms:

    .. math:: \mathbb E\|x_t - x_*\|^2 \le (1 - \gamma\mu)^t \|x_0 - x_*\|^2 + \frac{2\gamma\sigma_*^2}{\mu},

    :math:`\sigma_*^2 = \mathbb E\|\nabla f_i(x_*)\|^2` (for proximal SGD, the variance of :math:`\nabla f_i(x_*)`).
    The caller is responsible for :math:`\gamma \le 1/(2L_{\max})`.

    Example:
        >>> sgd_strongly_convex_bound(torch.tensor([0.0]), gamma=0.1, mu=1.0, r0_sq=1.0, sigma_star_sq=1.0).tolist()
        [1.2]
    """
    gamma = check_positive("gamma", gamma)
    mu = check_positive("mu", mu)
    if gamma * mu > 1:
        raise ValueError(f"gamma * mu must be <= 1, got {gamma * mu!r}")
    r0_sq = check_nonnegative("r0_sq", r0_sq)
    sigma_star_sq = check_nonnegative("sigma_star_sq", sigma_star_sq)
    t = torch.as_tensor(t, dtype=torch.float64)
    return (1 - gamma * mu) ** t * r0_sq + 2 * gamma * sigma_star_sq / mu


def gd_pl_bound(t: torch.Tensor, L: float, mu: float, gap0: float) -> torch.Tensor:
    r"""Bound for gradient descent with :math:`\gamma = 1/L` on an :math:`L`-smooth function satisfying the
    Polyak-Lojasiewicz inequality :math:`\tfrac12\|\nabla f(x)\|^2 \ge \mu(f(x) - f_*)` (convexity not needed):

    .. math:: f(x_t) - f_* \le (1 - \mu/L)^t\,(f(x_0) - f_*),

    ``gap0`` = :math:`f(x_0) - f_*`. Proof: the descent lemma gives :math:`f(x_{t+1}) \le f(x_t) -
    \tfrac{1}{2L}\|\nabla f(x_t)\|^2`, and PL turns the decrease into :math:`\tfrac{\mu}{L}(f(x_t) - f_*)`.

    Example:
        >>> gd_pl_bound(torch.tensor([0.0, 1.0, 2.0]), L=2.0, mu=1.0, gap0=4.0).tolist()
        [4.0, 2.0, 1.0]
    """
    L = check_positive("L", L)
    mu = check_number("mu", mu, low=0.0, high=L)
    gap0 = check_nonnegative("gap0", gap0)
    t = torch.as_tensor(t, dtype=torch.float64)
    return (1 - mu / L) ** t * gap0


def run_heavy_ball(
    oracle: Callable[[torch.Tensor, int], torch.Tensor],
    x0: torch.Tensor,
    eta: float,
    num_steps: int,
    *,
    record: Sequence[int] | None = None,
) -> Trajectory:
    r"""(Stochastic) heavy ball with the handbook's schedule for convex problems.

    References: Handbook of Convergence Theorems for (Stochastic) Gradient Methods (Garrigos, Gower), 2023
    (the momentum section); the schedule is that of Sebbouh, Gower and Defazio, Almost sure convergence rates for
    Stochastic Gradient Descent and Stochastic Heavy Ball, 2021.

    .. math::
        x_{t+1} = x_t - \gamma_t g_t + \beta_t (x_t - x_{t-1}), \qquad
        \gamma_t = \frac{2\eta}{t + 3}, \quad \beta_t = \frac{t}{t + 3}, \quad x_{-1} = x_0,

    with :math:`g_t` = ``oracle(x_t, t)``. It is the iterate-moving-average form
    :math:`z_{t+1} = z_t - \eta g_t`, :math:`x_{t+1} = \frac{\lambda_{t+1}}{1 + \lambda_{t+1}} x_t +
    \frac{1}{1 + \lambda_{t+1}} z_{t+1}` with :math:`\lambda_t = t/2` and :math:`z_0 = x_0`; see
    :func:`heavy_ball_convex_bound` for its guarantee. Every run in the batch moves at once.

    Args:
        oracle: ``(x, t) -> g``, shapes ``(*batch, d)``.
        x0: start, ``(*batch, d)``.
        eta: :math:`\eta > 0` (the bound needs :math:`\eta \le 1/(4L_{\max})`).
        num_steps: :math:`T \ge 1`.
        record: step counts at which to keep the iterate (default ``0..T``).

    Returns:
        :class:`Trajectory` (``average`` is the uniform average of :math:`x_1..x_t`, as in
        :func:`run_gradient_method`).

    Example:
        >>> traj = run_heavy_ball(lambda x, t: x, torch.ones(1, dtype=torch.float64), 0.25, 2)
        >>> [round(v, 6) for v in traj.last.flatten().tolist()]
        [1.0, 0.833333, 0.6875]
    """
    check_tensor("x0", x0)
    if x0.dim() == 0:
        raise ValueError("x0 must have at least 1 dimension (the last is d), got shape ()")
    eta = check_positive("eta", eta)
    num_steps = check_int("num_steps", num_steps, low=1)
    record_set = list(range(num_steps + 1)) if record is None else sorted(
        {check_int("record", r, low=0, high=num_steps) for r in record})
    wanted = set(record_set)
    x, x_prev = x0.clone(), x0.clone()
    running_sum = torch.zeros_like(x0)
    lasts, avgs = ([x0.clone()], [x0.clone()]) if 0 in wanted else ([], [])
    diverged, n_iter = False, 0
    for t in range(num_steps):
        x, x_prev = x - (2 * eta / (t + 3)) * oracle(x, t) + (t / (t + 3)) * (x - x_prev), x
        running_sum += x
        n_iter = t + 1
        if not bool(torch.isfinite(x).all()):
            diverged = True
            warnings.warn(f"run_heavy_ball: non-finite iterate at step {t + 1}; reduce eta", RuntimeWarning,
                          stacklevel=2)
            break
        if n_iter in wanted:
            lasts.append(x.clone())
            avgs.append(running_sum / n_iter)
    while len(lasts) < len(record_set):
        lasts.append(torch.full_like(x0, float("nan")))
        avgs.append(torch.full_like(x0, float("nan")))
    return Trajectory(torch.tensor(record_set), torch.stack(lasts), torch.stack(avgs), n_iter, diverged)


def heavy_ball_convex_bound(t: torch.Tensor, eta: float, r0_sq: float, sigma_star_sq: float = 0.0) -> torch.Tensor:
    r"""Bound for :func:`run_heavy_ball` with :math:`\eta \le 1/(4L_{\max})` on a sum of convex
    :math:`L_{\max}`-smooth terms (deterministic: :math:`\sigma_* = 0`, :math:`L_{\max} = L`):

    .. math:: \mathbb E[f(x_t)] - f_* \le \frac{\|x_0 - x_*\|^2}{\eta\,(t + 1)} + 2\eta\sigma_*^2,

    :math:`\sigma_*^2 = \mathbb E\|\nabla f_i(x_*)\|^2`. Proof (Lyapunov): with :math:`z_t = x_t + \lambda_t(x_t -
    x_{t-1})` and :math:`E_t = \|z_t - x_*\|^2 + 2\eta\lambda_t (f(x_{t-1}) - f_*)`, convexity and
    :math:`\mathbb E\|g_t\|^2 \le 4L_{\max}(f(x_t) - f_*) + 2\sigma_*^2` give :math:`\mathbb E E_{t+1} \le E_t +
    2\eta^2\sigma_*^2` as long as :math:`\lambda_{t+1} \le 1 + \lambda_t - 2\eta L_{\max}`, which
    :math:`\lambda_t = t/2`, :math:`\eta \le 1/(4L_{\max})` satisfy; summing and dividing by
    :math:`2\eta\lambda_{t+1} = \eta(t+1)` gives the bound.

    Example:
        >>> heavy_ball_convex_bound(torch.tensor([0.0, 3.0]), eta=0.5, r0_sq=2.0).tolist()
        [4.0, 1.0]
    """
    eta = check_positive("eta", eta)
    r0_sq = check_nonnegative("r0_sq", r0_sq)
    sigma_star_sq = check_nonnegative("sigma_star_sq", sigma_star_sq)
    t = torch.as_tensor(t, dtype=torch.float64)
    return r0_sq / (eta * (t + 1)) + 2 * eta * sigma_star_sq


def subgradient_bound(step_sizes: torch.Tensor, G: float, r0_sq: float) -> torch.Tensor:
    r"""Bound for the (stochastic) subgradient method :math:`x_{s+1} = x_s - \gamma_s g_s` on a convex
    :math:`G`-Lipschitz function (for stochastic :math:`g_s`, :math:`\mathbb E\|g_s\|^2 \le G^2`): after
    :math:`t` steps,

    .. math:: \min_{0 \le s < t} f(x_s) - f_* \le \frac{\|x_0 - x_*\|^2 + G^2 \sum_{s<t} \gamma_s^2}{2\sum_{s<t}
        \gamma_s}

    (the same holds for the :math:`\gamma`-weighted average of :math:`x_0..x_{t-1}`, by Jensen). Proof:
    :math:`\|x_{s+1} - x_*\|^2 \le \|x_s - x_*\|^2 - 2\gamma_s (f(x_s) - f_*) + \gamma_s^2 G^2`, summed.

    Args:
        step_sizes: :math:`\gamma_0, \dots, \gamma_{T-1}`, shape ``(T,)``, positive.
        G: Lipschitz constant :math:`G \ge 0`.
        r0_sq: :math:`\|x_0 - x_*\|^2`.

    Returns:
        The bound for :math:`t = 1..T`, shape ``(T,)``.

    Example:
        >>> subgradient_bound(torch.tensor([0.5, 0.5]), G=1.0, r0_sq=1.0).tolist()
        [1.25, 0.75]
    """
    check_tensor("step_sizes", step_sizes, ndim=1)
    if bool((step_sizes <= 0).any()):
        raise ValueError("step_sizes must be > 0 entrywise")
    G = check_nonnegative("G", G)
    r0_sq = check_nonnegative("r0_sq", r0_sq)
    gam = step_sizes.double()
    return (r0_sq + G * G * torch.cumsum(gam * gam, 0)) / (2 * torch.cumsum(gam, 0))


class BoundCheck(NamedTuple):
    """Measured values against a bound, step by step.

    Attributes:
        holds: ``measured <= bound * (1 + rtol)`` at every entry.
        max_ratio: the largest ``measured / bound`` (how close the experiment comes to the bound).
        worst_index: where that ratio is reached.
        n_violations: entries where the bound fails.
    """

    holds: bool
    max_ratio: float
    worst_index: int
    n_violations: int


# Both are converted to float64, so any real dtype is accepted; NaN in measured counts as a violation and an
# infinite bound (gd_convex_bound at t = 0) is vacuous. max_ratio is inf where the bound is 0 and measured > 0.
@accepts(measured=Tensor(ndims=(1, 2), dtype="any", finite=False), bound=Tensor(ndims=(1, 2), dtype="any", finite=False),
         rtol=Real(ge=0), infinite_ok=("max_ratio",))
def check_bound(measured: torch.Tensor, bound: torch.Tensor, *, rtol: float = 0.0) -> BoundCheck:
    """Compare ``measured`` with ``bound`` entrywise (same shape; NaN in ``measured`` counts as a violation).

    Example:
        >>> check_bound(torch.tensor([0.5, 0.75]), torch.tensor([1.0, 1.0]))
        BoundCheck(holds=True, max_ratio=0.75, worst_index=1, n_violations=0)
    """
    check_tensor("measured", measured, finite=False)
    check_tensor("bound", bound, finite=False)
    rtol = check_nonnegative("rtol", rtol)
    if measured.shape != bound.shape:
        raise ValueError(f"measured must have the shape of bound {tuple(bound.shape)}, got {tuple(measured.shape)}")
    measured, bound = measured.double().flatten(), bound.double().flatten()
    ratio = torch.where(bound > 0, measured / bound, torch.where(measured <= 0, 0.0, math.inf))
    ratio = torch.where(torch.isnan(measured), math.inf, ratio)
    ok = ratio <= 1 + rtol
    worst = int(torch.argmax(ratio))
    return BoundCheck(bool(ok.all()), float(ratio[worst]), worst, int((~ok).sum()))


class SlopeFit(NamedTuple):
    """Least-squares line :math:`\\log y = \\text{slope}\\cdot\\log x + \\text{intercept}` and its :math:`R^2`."""

    slope: float
    intercept: float
    r2: float


def _check_abscissa(name: str, u: torch.Tensor) -> None:
    """A line is determined only by two distinct abscissae (the slope is 0/0 otherwise)."""
    if u.numel() < 2 or bool((u == u[0]).all()):
        raise ValueError(f"{name} must hold at least two distinct values for a fit, got {u.tolist()!r:.80}")


def _fit(u: torch.Tensor, v: torch.Tensor) -> SlopeFit:
    line = fit_line(u, v)
    return SlopeFit(line.slope, line.intercept, line.r2)


def _positive_series(ctx):
    n = ctx.size("n")
    return {"x": 10.0 ** torch.arange(1, n + 1, dtype=ctx.dtype),
            "y": torch.rand(n, generator=ctx.generator, dtype=ctx.dtype) + 0.1}


@accepts(x=Tensor("n", dtype="any", degenerate=("constant",)), y=Tensor("n", degenerate=("constant",)),
         example=_positive_series)
def fit_loglog_slope(x: torch.Tensor, y: torch.Tensor) -> SlopeFit:
    """Slope of :math:`\\log y` against :math:`\\log x` (both 1-D, positive, at least two distinct ``x``).

    Example:
        >>> x = torch.tensor([10.0, 100.0, 1000.0])
        >>> round(fit_loglog_slope(x, 3 * x ** -0.5).slope, 6)
        -0.5
    """
    _check_abscissa("x", x)
    if bool((x <= 0).any()) or bool((y <= 0).any()):
        raise ValueError("x and y must be > 0 entrywise for a log-log fit")
    return _fit(x.double().log(), y.double().log())


@accepts(t=Tensor("n", dtype="any", degenerate=("constant",)), y=Tensor("n", degenerate=("constant",)),
         example=lambda ctx: {"t": torch.arange(ctx.size("n"), dtype=ctx.dtype),
                              "y": _positive_series(ctx)["y"]})
def fit_linear_rate(t: torch.Tensor, y: torch.Tensor) -> float:
    """Per-step contraction :math:`\\rho` of a linear rate :math:`y_t \\approx C\\rho^t`, fitted on :math:`\\log y`.

    Example:
        >>> t = torch.arange(10.0)
        >>> round(fit_linear_rate(t, 2 * 0.9 ** t), 6)
        0.9
    """
    _check_abscissa("t", t)
    if bool((y <= 0).any()):
        raise ValueError("y must be > 0 entrywise for a linear-rate fit")
    return math.exp(_fit(t.double(), y.double().log()).slope)
