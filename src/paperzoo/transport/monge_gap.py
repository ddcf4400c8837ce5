"""Monge gap: a regulariser that measures how far a map is from being a c-optimal transport map, and the
map-fitting recipe built on it.

References: The Monge Gap: A Regularizer to Learn All Transport Maps, 2023 (Uscidda and Cuturi; ICML).

For a cost ``c``, a reference measure ``rho`` and a map ``T``, the Monge gap is

    M_rho^c(T) = E_{x ~ rho}[c(x, T(x))] - W_c(rho, T # rho)  >= 0,

zero exactly when ``T`` is a c-optimal map between ``rho`` and ``T # rho``. On a sample ``x_1..x_n`` of ``rho``
it is estimated with entropic OT (Eq. 8):

    M_hat(T) = 1/n sum_i c(x_i, T(x_i)) - W_{c,eps}(rho_n, T # rho_n),
    W_{c,eps}(a, b) = min_{P 1 = a, P^T 1 = b} <P, C> - eps H(P),      C_ij = c(x_i, T(x_j)).

The map is then fitted to a target ``nu`` by

    min_theta  Delta(T_theta # mu, nu) + lam * M_hat_mu(T_theta),

with the fitting loss ``Delta`` the Sinkhorn divergence and ``rho = mu`` (the source), on mini-batches.

Conventions and defaults: ``c(x, y) = ||x - y||^2`` (no 1/2) and ``eps = reg_scale * mean(C)`` with
``reg_scale = 0.05`` unless ``reg`` is given (ott-jax's relative-epsilon default, the authors' library).
``W_{c,eps}`` is the entropic objective ``<P, C> - eps H(P)``, ``H(P) = -sum P (log P - 1)``, of the shared
:func:`~paperzoo.transport.sinkhorn_log` (its ``reg_cost``, with envelope-theorem gradients reaching ``T(x)``).
With it the estimator is nonnegative for every map: the diagonal coupling ``I / n`` is feasible, so
``M_hat >= eps (1 + log n) > 0``; that floor is the entropic bias, and ``M_hat -> M_{rho_n}`` (the exact gap) as
``eps -> 0``. Other entropic conventions (``eps KL(P | a b^T)``) shift ``M_hat`` by a constant independent of
``T``: the same gradients, a different offset.

Deviations: none in the estimator. In :func:`fit_monge_gap_map` the map is any ``torch.nn.Module`` (default: a
plain MLP, no ICNN, as the paper advocates) trained with Adam; the Sinkhorn divergence uses the shared
:func:`~paperzoo.transport.sinkhorn_divergence` with an absolute ``fit_reg``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.accepts import Flag, Function, Generator, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_int
from paperzoo.transport.entropic import pairwise_cost, sinkhorn_divergence
from paperzoo.transport.result import ConvergenceWarning
from paperzoo.transport.sinkhorn import sinkhorn_log

__all__ = ["monge_gap", "MongeGapFit", "fit_monge_gap_map", "default_map"]


def _example_gap(ctx) -> dict:
    x = torch.randn(ctx.size("n"), ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype)
    return {"x": x, "Tx": 1.5 * x + 0.3 * torch.randn(x.shape, generator=ctx.generator, dtype=ctx.dtype),
            "max_iter": 200}


@accepts(x=Tensor("n", "d", degenerate=("coincident",)), Tx=Tensor("n", "e", degenerate=("coincident",)),
         reg=Real(gt=0, optional=True), reg_scale=Real(gt=0), cost_fn=Function(optional=True), max_iter=Int(ge=1),
         tol=Real(ge=0), warn=Flag(), example=lambda ctx: _example_gap(ctx))
def monge_gap(x: torch.Tensor, Tx: torch.Tensor, *, reg: float | None = None, reg_scale: float = 0.05,
              cost_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
              max_iter: int = 10_000, tol: float = 1e-6, warn: bool = True) -> torch.Tensor:
    """Entropic Monge gap ``1/n sum_i c(x_i, T(x_i)) - W_{c,eps}(rho_n, T # rho_n)`` of Eq. (8).

    Args:
        x: (n, d) sample of the reference measure ``rho`` (uniform weights).
        Tx: (n, d') the images ``T(x_i)``, row ``i`` the image of ``x[i]``; differentiable (gradients flow to the
            map's parameters). Same dtype and device as ``x`` (``d' = d`` for the default cost).
        reg: ``eps``, absolute entropic regularisation; ``None``: ``reg_scale * mean(C)`` (C detached).
        reg_scale: fraction of the mean cost used when ``reg`` is ``None`` (ott-jax default 0.05).
        cost_fn: ``(x, y) -> (n, m)`` cost matrix ``c(x_i, y_j)``, differentiable in ``y``; default
            :func:`~paperzoo.transport.pairwise_cost` with ``p = 2`` (squared Euclidean).
        max_iter, tol: of the Sinkhorn solve (:func:`~paperzoo.transport.sinkhorn_log`).
        warn: emit the solver's :class:`ConvergenceWarning` (off inside training loops that check it otherwise).

    Returns:
        0-dim tensor.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(32, 2, generator=g, dtype=torch.float64)
        >>> A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)      # SPD: an optimal map
        >>> R = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)     # a rotation: not optimal
        >>> gap_opt, gap_rot = monge_gap(x, x @ A, reg=0.1, tol=1e-5), monge_gap(x, x @ R, reg=0.1, tol=1e-5)
        >>> float(gap_opt) < 1.0 < 2.0 < float(gap_rot)        # entropic floor 0.1 * (1 + log 32) = 0.45
        True
    """
    if cost_fn is None:
        if Tx.shape[1] != x.shape[1]:
            raise ValueError(f"Tx must have the shape of x {tuple(x.shape)} for the default cost, got "
                             f"{tuple(Tx.shape)}")
        C = pairwise_cost(x, Tx, 2)
    else:
        C = cost_fn(x, Tx)
        n = x.shape[0]
        if not isinstance(C, torch.Tensor) or tuple(C.shape) != (n, n) or C.dtype != x.dtype:
            got = (f"{type(C).__name__} of shape {tuple(C.shape)} and dtype {C.dtype}" if isinstance(C, torch.Tensor)
                   else type(C).__name__)
            raise ValueError(f"cost_fn must return an ({n}, {n}) tensor of dtype {x.dtype} (the costs c(x_i, Tx_j)), "
                             f"got {got}")
        if not bool(torch.isfinite(C).all()):
            raise ValueError("cost_fn must return finite costs, got NaN or inf entries")
    n = x.shape[0]
    if reg is None:
        reg = reg_scale * float(C.detach().mean())
        if reg <= 0:  # a zero mean cost (T(x) == x everywhere: the gap is 0 for any eps) has no scale to use
            reg = reg_scale
    a = torch.full((n,), 1.0 / n, dtype=C.dtype, device=C.device)
    with warnings.catch_warnings():
        if not warn:
            warnings.simplefilter("ignore", ConvergenceWarning)
        res = sinkhorn_log(a, a, C, reg, max_iter=max_iter, tol=tol)
    return torch.diagonal(C).mean() - res.reg_cost


def default_map(dim: int, width: int = 64) -> nn.Module:
    """A plain MLP ``d -> width -> width -> d`` with GELU activations (no convexity or residual structure)."""
    check_int("dim", dim, low=1)
    check_int("width", width, low=1)
    return nn.Sequential(nn.Linear(dim, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, dim))


class MongeGapFit(NamedTuple):
    """Output of :func:`fit_monge_gap_map`.

    Attributes:
        model: the fitted map, (b, d) -> (b, d).
        loss_history: (n_iter,) total loss per step (CPU float64).
        fit_history: (n_iter,) Sinkhorn-divergence term per step.
        gap_history: (n_iter,) Monge-gap estimate per step; ``None`` when ``lam == 0`` (not computed).
    """

    model: nn.Module
    loss_history: torch.Tensor
    fit_history: torch.Tensor
    gap_history: torch.Tensor | None


@accepts(x=Tensor("n", "d", degenerate=("coincident",)), y=Tensor("m", "d", degenerate=("coincident",)),
         lam=Real(ge=0), n_iter=Int(ge=1), batch_size=Int(ge=2), lr=Real(gt=0), fit_reg=Real(gt=0),
         gap_reg=Real(gt=0, optional=True), gap_reg_scale=Real(gt=0), max_iter=Int(ge=1), tol=Real(ge=0),
         model=Function(optional=True), optimizer=Function(optional=True), generator=Generator(),
         example=lambda ctx: {"n_iter": 2, "max_iter": 100})
def fit_monge_gap_map(x: torch.Tensor, y: torch.Tensor, *, lam: float = 1.0, n_iter: int = 1000,
                      batch_size: int = 256, lr: float = 1e-3, fit_reg: float = 0.1, gap_reg: float | None = None,
                      gap_reg_scale: float = 0.05, max_iter: int = 1000, tol: float = 1e-4,
                      model: nn.Module | None = None, optimizer: Callable | None = None,
                      generator: torch.Generator | None = None) -> MongeGapFit:
    """Fit a map ``T`` from source samples ``x ~ mu`` to target samples ``y ~ nu`` by minimising
    ``S_eps(T # mu_b, nu_b) + lam * M_hat_{mu_b}(T)`` on mini-batches (``lam = 0``: the unregularised fit).

    Args:
        x: (n, d) source sample. y: (m, d) target sample, same dtype and device.
        lam: weight of the Monge gap (``lam >= 0``).
        n_iter: optimisation steps. batch_size: points drawn from each of ``x`` and ``y`` per step.
        lr: Adam learning rate (ignored when ``optimizer`` is given).
        fit_reg: absolute ``eps`` of the Sinkhorn divergence (cost ``||.||^2``).
        gap_reg, gap_reg_scale: ``reg`` and ``reg_scale`` of :func:`monge_gap`.
        max_iter, tol: of every Sinkhorn solve.
        model: the map (default :func:`default_map` built with torch's global RNG; seed it).
        optimizer: ``params -> torch.optim.Optimizer``; default Adam(lr).
        generator: CPU generator for the mini-batches.

    Example:
        >>> _ = torch.manual_seed(0); g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(128, 2, generator=g); y = 2 * torch.randn(128, 2, generator=g) + 1
        >>> fit = fit_monge_gap_map(x, y, n_iter=5, batch_size=64, generator=g)
        >>> fit.model(x).shape
        torch.Size([128, 2])
    """
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (its parameters are trained), got {type(model).__name__}")
    T = (model if model is not None else default_map(x.shape[1])).to(device=x.device, dtype=x.dtype)
    opt = (optimizer or (lambda p: torch.optim.Adam(p, lr=lr)))(T.parameters())
    hist = torch.zeros(3, n_iter, dtype=torch.float64)
    bx, by = min(batch_size, x.shape[0]), min(batch_size, y.shape[0])
    with warnings.catch_warnings():
        # a few unconverged solves early in training are harmless; the final tol is checked by the caller's metrics
        warnings.simplefilter("ignore", ConvergenceWarning)
        for it in range(n_iter):
            xb = x[torch.randperm(x.shape[0], generator=generator)[:bx].to(x.device)]
            yb = y[torch.randperm(y.shape[0], generator=generator)[:by].to(y.device)]
            Tx = T(xb)
            fit = sinkhorn_divergence(Tx, yb, fit_reg, max_iter=max_iter, tol=tol)
            if lam > 0:
                gap = monge_gap(xb, Tx, reg=gap_reg, reg_scale=gap_reg_scale, max_iter=max_iter, tol=tol)
                loss = fit + lam * gap
            else:
                gap, loss = None, fit
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became NaN or inf at step {it}; decrease lr")
            opt.zero_grad()
            loss.backward()
            opt.step()
            hist[0, it], hist[1, it] = float(loss.detach()), float(fit.detach())
            if gap is not None:
                hist[2, it] = float(gap.detach())
    return MongeGapFit(T, hist[0], hist[1], hist[2] if lam > 0 else None)
