"""Diagonal linear networks trained by (S)GD: the effective predictor, its loss and its sparsity, many runs at once.

References: SGD with Large Step Sizes Learns Sparse Features (Andriushchenko, Varre, Pillaud-Vivien, Flammarion),
2023; official code github.com/tml-epfl/sgd-sparse-features (``diag_nets.py``).

Model. Sparse regression with inputs :math:`X \\in \\mathbb R^{n\\times d}` (``X``) and targets :math:`y` (``y``); the
diagonal linear network predicts :math:`\\langle \\beta, x\\rangle` with the effective predictor
:math:`\\beta = u \\odot v` and is trained on the square loss

.. math:: L(u, v) = \\frac{1}{2n}\\,\\|X (u\\odot v) - y\\|_2^2 .

Initialisation :math:`u_0 = \\alpha \\mathbf 1`, :math:`v_0 = 0` (:math:`\\alpha` = ``init_scale``), as in the
official code; :math:`u^2 - v^2 = \\alpha^2` is conserved by gradient flow, so this is the :math:`u^2 - v^2`
parametrisation at scale :math:`\\alpha` in other coordinates. One step with step size :math:`\\eta_k`
(``lr_schedule(k)``) on a batch :math:`\\mathcal B_k` of ``batch_size`` indices is

.. math:: g = \\tfrac{1}{B}\\textstyle\\sum_{i\\in\\mathcal B_k} (\\langle x_i, u\\odot v\\rangle - y_i)\\, x_i, \\qquad
          u \\leftarrow u - \\eta_k\\, g \\odot v, \\quad v \\leftarrow v - \\eta_k\\, g \\odot u

(both factors updated from the same iterate). ``batch_size == n`` is full-batch GD (every sample, no noise);
``batch_size < n`` draws the batch uniformly with replacement (``batch_size = 1`` is the paper's SGD, one index per
step). Gradient flow from :math:`\\alpha \\to 0` converges to the minimum-:math:`\\ell_1` interpolant
(:func:`min_l1_interpolant`, a linear program); the paper's finding is that SGD at a large step, kept just below
divergence (the loss stabilises instead of decreasing), followed by a step decay, reaches a sparser predictor than
small-step SGD or GD from the same :math:`\\alpha`, and that GD with the same large steps does not.

Vectorisation: :func:`train_diagonal_network` advances ``n_runs`` independent runs together (their own batches and,
through a per-run ``lr_schedule``, their own step sizes); the only Python loop is over steps. A run whose iterate
leaves the ball ``max_norm`` (or turns non-finite) is marked diverged and frozen, so no NaN spreads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from paperzoo.core.accepts import Function, Generator, Int, Real, Tensor, accepts

__all__ = ["DiagonalNetworkRuns", "train_diagonal_network", "MinL1Interpolant", "min_l1_interpolant",
           "step_decay_schedule"]


class DiagonalNetworkRuns(NamedTuple):
    """Trajectories of ``r`` runs recorded at ``m`` steps (``record_steps``; the last is ``steps``).

    Attributes:
        beta: final effective predictors :math:`u\\odot v`, shape ``(r, d)`` (frozen value for diverged runs).
        u, v: final factors, shape ``(r, d)``.
        record_steps: the step counts at which the trajectory was recorded, shape ``(m,)``, int64.
        betas: effective predictor at each recorded step, shape ``(m, r, d)``.
        train_loss: full training loss :math:`\\frac1{2n}\\|X\\beta - y\\|^2` at each recorded step, ``(m, r)``
            (``inf`` once a run diverged).
        l1_norm: :math:`\\|\\beta\\|_1`, ``(m, r)``.
        n_active: number of coordinates with :math:`|\\beta_j| >` ``threshold``, ``(m, r)``, int64.
        diverged: ``(r,)`` bool, the run left the ball ``max_norm`` or turned non-finite.
        diverged_at: ``(r,)`` int64, the step at which it did (``-1`` if it never did).
        lrs: the step sizes used, ``(steps, r)``.
        n_iter: the number of steps taken.
    """

    beta: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    record_steps: torch.Tensor
    betas: torch.Tensor
    train_loss: torch.Tensor
    l1_norm: torch.Tensor
    n_active: torch.Tensor
    diverged: torch.Tensor
    diverged_at: torch.Tensor
    lrs: torch.Tensor
    n_iter: int


def _lr_table(lr_schedule: Callable, steps: int, n_runs: int, dtype: torch.dtype) -> torch.Tensor:
    rows = []
    for k in range(steps):
        lr = torch.as_tensor(lr_schedule(k), dtype=dtype)
        if lr.ndim > 1 or (lr.ndim == 1 and lr.shape[0] not in (1, n_runs)):
            raise ValueError(f"lr_schedule({k}) must be a number or a tensor of shape ({n_runs},), "
                             f"got shape {tuple(lr.shape)}")
        rows.append(lr.reshape(-1).expand(n_runs))
    table = torch.stack(rows)
    bad = ~torch.isfinite(table) | (table < 0)
    if bad.any():
        k = int(bad.any(1).nonzero()[0])
        raise ValueError(f"lr_schedule({k}) must be finite and >= 0, got {table[k].tolist()}")
    return table


def _train(X, y, init_scale, lrs, batch_size, generator, threshold, max_norm, record_every):
    """Unchecked kernel of :func:`train_diagonal_network`; ``lrs`` is the ``(steps, r)`` step-size table."""
    n, d = X.shape
    steps, r = lrs.shape
    u = torch.full((r, d), float(init_scale), dtype=X.dtype)
    v = torch.zeros(r, d, dtype=X.dtype)
    alive = torch.ones(r, dtype=torch.bool)
    diverged_at = torch.full((r,), -1, dtype=torch.int64)
    full = batch_size == n
    rec_steps, rec_beta = [], []

    def record(k):
        rec_steps.append(k)
        rec_beta.append(u * v)

    record(0)
    for k in range(steps):
        beta = u * v
        if full:
            resid = beta @ X.T - y  # (r, n)
            g = resid @ X / n
        else:
            idx = torch.randint(0, n, (r, batch_size), generator=generator)
            Xb = X[idx]  # (r, B, d)
            resid = torch.bmm(Xb, beta[:, :, None]).squeeze(-1) - y[idx]
            g = torch.bmm(resid[:, None, :], Xb).squeeze(1) / batch_size
        sg = (lrs[k] * alive)[:, None] * g
        u, v = u - sg * v, v - sg * u
        # NaN fails the comparison, so one reduction catches overflow and NaN alike
        bad = alive & ~(torch.maximum(u.abs().amax(1), v.abs().amax(1)) <= max_norm)
        if bad.any():
            # freeze at the last finite iterate: the run is over, its numbers stay finite
            u = torch.where(bad[:, None], u.nan_to_num(0.0, max_norm, -max_norm).clamp(-max_norm, max_norm), u)
            v = torch.where(bad[:, None], v.nan_to_num(0.0, max_norm, -max_norm).clamp(-max_norm, max_norm), v)
            diverged_at[bad] = k + 1
            alive &= ~bad
        if (k + 1) % record_every == 0 or k + 1 == steps:
            record(k + 1)
    betas = torch.stack(rec_beta)  # (m, r, d)
    resid = betas @ X.T - y
    loss = 0.5 * (resid ** 2).mean(-1)
    record_steps = torch.tensor(rec_steps, dtype=torch.int64)
    dead = (diverged_at[None, :] >= 0) & (record_steps[:, None] >= diverged_at[None, :])
    loss = torch.where(dead, torch.full_like(loss, math.inf), loss)
    return DiagonalNetworkRuns(u * v, u, v, record_steps, betas, loss, betas.abs().sum(-1),
                               (betas.abs() > threshold).sum(-1), ~alive, diverged_at, lrs, steps)


def _example(ctx):
    n, d = ctx.size("n"), ctx.size("d")
    return {"X": torch.randn(n, d, generator=ctx.generator, dtype=ctx.dtype),
            "y": torch.randn(n, generator=ctx.generator, dtype=ctx.dtype), "init_scale": 0.1,
            "lr_schedule": lambda k: 0.05, "batch_size": 1, "steps": 10, "n_runs": 2}


@accepts(X=Tensor("n", "d"), y=Tensor("n"), init_scale=Real(gt=0), lr_schedule=Function(), batch_size=Int(ge=1),
         steps=Int(ge=1), generator=Generator(), n_runs=Int(ge=1), threshold=Real(ge=0), max_norm=Real(gt=0),
         record_every=Int(ge=1), output="any", example=_example)
def train_diagonal_network(X: torch.Tensor, y: torch.Tensor, init_scale: float, lr_schedule: Callable,
                           batch_size: int, steps: int, generator: torch.Generator | None = None, *,
                           n_runs: int = 1, threshold: float = 1e-3, max_norm: float = 1e4,
                           record_every: int = 100) -> DiagonalNetworkRuns:
    """Train ``n_runs`` diagonal linear networks :math:`\\beta = u\\odot v` by (S)GD and record sparsity measures.

    References: SGD with Large Step Sizes Learns Sparse Features (Andriushchenko et al.), 2023.

    Update (module docstring): :math:`g = \\frac1B\\sum_{i\\in\\mathcal B_k}(\\langle x_i,\\beta\\rangle - y_i)x_i`,
    :math:`u \\leftarrow u - \\eta_k g\\odot v`, :math:`v \\leftarrow v - \\eta_k g\\odot u`, from
    :math:`u_0 = \\alpha\\mathbf 1, v_0 = 0`.

    Args:
        X: inputs, shape ``(n, d)``.
        y: targets, shape ``(n,)``.
        init_scale: :math:`\\alpha > 0`.
        lr_schedule: ``lr_schedule(k)`` for ``k = 0..steps-1`` gives :math:`\\eta_k`: a number (all runs) or a tensor
            of shape ``(n_runs,)`` (one step size per run: a sweep in one call); see :func:`step_decay_schedule`.
        batch_size: :math:`B`; ``n`` is full-batch GD, smaller draws ``B`` indices uniformly with replacement.
        steps: number of steps.
        generator: draws the batches (unused by full-batch GD).
        n_runs: independent runs advanced together.
        threshold: a coordinate counts as active when :math:`|\\beta_j| >` ``threshold``.
        max_norm: a run whose :math:`\\|u\\|_\\infty` or :math:`\\|v\\|_\\infty` exceeds this is diverged and frozen.
        record_every: record the trajectory every this many steps (and at the last step).

    Returns:
        :class:`DiagonalNetworkRuns`.

    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(10, 20, generator=g, dtype=torch.float64)
    >>> w = torch.zeros(20, dtype=torch.float64); w[:2] = 1.0
    >>> runs = train_diagonal_network(X, X @ w, 0.1, lambda k: 0.2, 10, 3000)  # GD
    >>> runs.betas.shape, bool(runs.train_loss[-1, 0] < 1e-6), runs.diverged.tolist()
    (torch.Size([31, 1, 20]), True, [False])
    """
    n = X.shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size must be <= n ({n}), got {batch_size}")
    lrs = _lr_table(lr_schedule, steps, n_runs, X.dtype)
    return _train(X, y, init_scale, lrs, batch_size, generator, threshold, max_norm, record_every)


@accepts(lr=Real(ge=0), milestone=Int(ge=0), factor=Real(gt=0),
         example=lambda ctx: {"lr": 0.5, "milestone": 10, "factor": 10.0})
def step_decay_schedule(lr, milestone: int, factor: float) -> Callable:
    """A two-phase step-size schedule: :math:`\\eta_k = \\eta` for :math:`k <` ``milestone``, then :math:`\\eta/`
    ``factor`` (the paper's large-step phase followed by a decay).

    References: SGD with Large Step Sizes Learns Sparse Features (Andriushchenko et al.), 2023.

    ``lr`` is a number; for one step size per run, pass ``lambda k: lrs * (1 if k < m else 1 / f)`` directly.

    >>> s = step_decay_schedule(0.5, 10, 10.0)
    >>> s(0), s(9), s(10)
    (0.5, 0.5, 0.05)
    """
    lr, factor = float(lr), float(factor)
    return lambda k: lr if k < milestone else lr / factor


class MinL1Interpolant(NamedTuple):
    """Solution of :math:`\\min \\|\\beta\\|_1` s.t. :math:`X\\beta = y`.

    Attributes:
        beta: the minimiser, shape ``(d,)``.
        l1_norm: :math:`\\|\\beta\\|_1`.
        residual: :math:`\\|X\\beta - y\\|_\\infty`.
        converged: the LP solver reported success.
        status: scipy's message.
    """

    beta: torch.Tensor
    l1_norm: float
    residual: float
    converged: bool
    status: str


@accepts(X=Tensor("n", "d"), y=Tensor("n"), output="any",
         example=lambda ctx: {"X": torch.randn(3, 6, generator=ctx.generator, dtype=ctx.dtype),
                              "y": torch.randn(3, generator=ctx.generator, dtype=ctx.dtype)})
def min_l1_interpolant(X: torch.Tensor, y: torch.Tensor) -> MinL1Interpolant:
    """The minimum-:math:`\\ell_1` interpolant (basis pursuit), the small-initialisation limit of gradient flow on
    a diagonal linear network.

    References: SGD with Large Step Sizes Learns Sparse Features (Andriushchenko et al.), 2023.

    Solved as the linear program :math:`\\min \\mathbf 1^\\top(p + q)` s.t. :math:`X(p - q) = y`, :math:`p, q \\ge 0`
    (scipy.optimize.linprog, HiGHS); :math:`\\beta = p - q`. Warns when the solver fails (e.g. ``y`` not in the
    range of ``X``).

    Args:
        X: shape ``(n, d)``; y: shape ``(n,)``.

    >>> X = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    >>> sol = min_l1_interpolant(X, torch.tensor([1.0, 1.0], dtype=torch.float64))
    >>> sol.beta.tolist(), round(sol.l1_norm, 6)
    ([0.0, 1.0, 0.0], 1.0)
    """
    import warnings

    from scipy.optimize import linprog

    A = X.detach().cpu().double().numpy()
    b = y.detach().cpu().double().numpy()
    d = A.shape[1]
    res = linprog(np.ones(2 * d), A_eq=np.hstack([A, -A]), b_eq=b, bounds=(0, None), method="highs")
    if not res.success:
        warnings.warn(f"min_l1_interpolant: linprog did not succeed ({res.message}); is y in the range of X?",
                      RuntimeWarning, stacklevel=2)
        beta = np.full(d, np.nan)
    else:
        beta = res.x[:d] - res.x[d:] + 0.0  # no -0.0
    beta_t = torch.as_tensor(beta, dtype=X.dtype, device=X.device)
    residual = float(np.abs(A @ beta - b).max()) if res.success else math.inf
    return MinL1Interpolant(beta_t, float(np.abs(beta).sum()), residual, bool(res.success), str(res.message))
