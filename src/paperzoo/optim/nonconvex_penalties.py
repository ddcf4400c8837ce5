"""Nonconvex accelerated gradient (Ghadimi-Lan AG) for SCAD- and MCP-penalised sparse regression.

References: Accelerated Gradient Methods for Sparse Statistical Learning with Nonconvex Penalties, 2023
(Yang, Asgharian, Bhatnagar; arXiv 2009.10629). The AG scheme is Ghadimi and Lan's, Accelerated Gradient Methods
for Nonconvex Nonlinear and Stochastic Programming, 2016.

Problem: :math:`\\min_\\beta F(\\beta) = \\ell(\\beta) + \\sum_j p_\\lambda(\\beta_j)` with a convex loss
:math:`\\ell` (``loss="ls"``: :math:`\\frac1{2n}\\|y - X\\beta\\|^2`; ``loss="logistic"``, labels in {0, 1}:
:math:`\\frac1n\\sum_i \\log(1 + e^{x_i^\\top\\beta}) - y_i x_i^\\top\\beta`) and a penalty
:math:`p_\\lambda` (``"scad"`` with shape ``a``, ``"mcp"`` with shape ``gamma``, or ``"l1"``).

The paper's decomposition: :math:`p_\\lambda(t) = \\lambda|t| + q_\\lambda(t)` where the concave part
:math:`q_\\lambda` is differentiable with a Lipschitz derivative (constant :math:`1/(a-1)` for SCAD,
:math:`1/\\gamma` for MCP). So :math:`f = \\ell + q_\\lambda` is smooth (nonconvex) and
:math:`h = \\lambda\\|\\cdot\\|_1` is convex with the soft-threshold prox, and Ghadimi-Lan's AG applies:

.. math::
    \\beta^{md}_k &= (1 - \\alpha_k)\\beta^{ag}_{k-1} + \\alpha_k \\beta_{k-1} \\\\
    \\beta_k &= S_{\\lambda_k\\lambda}(\\beta_{k-1} - \\lambda_k \\nabla f(\\beta^{md}_k)) \\\\
    \\beta^{ag}_k &= S_{\\beta_k\\lambda}(\\beta^{md}_k - \\beta_k \\nabla f(\\beta^{md}_k))

with the paper's hyperparameters (chosen to minimise Ghadimi-Lan's complexity bound):
:math:`\\beta_k = 0.99/L`, :math:`L = \\max(L_\\ell, L_q)`, the damping sequence
:math:`\\alpha_1 = 1`, :math:`\\alpha_k = 2 / (1 + \\sqrt{1 + 4/\\alpha_{k-1}^2})` and
:math:`\\lambda_k = \\beta_k / \\alpha_k`. :math:`S_\\tau` is :func:`paperzoo.optim.subgradient.soft_threshold`.

The closed-form proximal maps of the full penalties, :func:`prox_scad` and :func:`prox_mcp`, are provided too
(they define the "exact" proximal-gradient baseline, ``split=False`` in :func:`solve_ncvx_proximal_gradient`).

Deviations: no unpenalised intercept (centre the data instead); the public package's restarting variant is not
part of the paper's algorithm and is not implemented; the stopping rule is ours (relative change of ``F``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Flag, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_number
from paperzoo.core.convergence import check_finite_iterate, warn_not_converged
from paperzoo.optim.subgradient import _soft_threshold

__all__ = ["NonconvexAGResult", "scad_penalty", "mcp_penalty", "prox_scad", "prox_mcp", "ncvx_objective",
           "solve_ncvx_ag", "solve_ncvx_proximal_gradient"]

PENALTIES = ("scad", "mcp", "l1")
LOSSES = ("ls", "logistic")


class NonconvexAGResult(NamedTuple):
    """Result of :func:`solve_ncvx_ag` and :func:`solve_ncvx_proximal_gradient`.

    Attributes:
        x: the returned coefficients :math:`\\beta^{ag}` (AG) or the last iterate (proximal gradient), ``(p,)``.
        n_iter: iterations run (one gradient of :math:`\\ell` per iteration for both methods).
        converged: the relative change ``|F_k - F_{k-1}| <= tol * max(1, |F_k|)`` was met.
        objective: :math:`F` of the returned sequence at every iterate, ``x_0`` first, ``(n_iter + 1,)``.
        step: the step :math:`\\beta_k = 0.99/L` (AG) or :math:`1/L` (proximal gradient).
        lipschitz: :math:`L = \\max(L_\\ell, L_q)`.
    """

    x: torch.Tensor
    n_iter: int
    converged: bool
    objective: torch.Tensor
    step: float
    lipschitz: float


def _check_shape_params(penalty, lam, shape):
    """The penalty's shape against its range (the declarations checked that it is a positive number)."""
    if penalty == "scad":
        shape = check_number("shape (SCAD's a)", shape, low=1.0, low_inclusive=False)
    return penalty, float(lam), float(shape)


def _scad(x, lam, a):
    t = x.abs()
    mid = (2 * a * lam * t - t * t - lam**2) / (2 * (a - 1))
    return torch.where(t <= lam, lam * t, torch.where(t <= a * lam, mid, torch.full_like(t, (a + 1) * lam**2 / 2)))


def _mcp(x, lam, gamma):
    t = x.abs()
    return torch.where(t <= gamma * lam, lam * t - t * t / (2 * gamma), torch.full_like(t, gamma * lam**2 / 2))


# Coefficient vectors (p,) or a batch of them (B, p); elementwise, so any size p.
_COEFS = dict(max_batch_dims=1, degenerate=("zeros",))


@accepts(x=Tensor(..., "p", **_COEFS), lam=Real(ge=0), a=Real(gt=1))
def scad_penalty(x: torch.Tensor, lam: float, a: float = 3.7) -> torch.Tensor:
    """SCAD (Fan and Li, 2001), elementwise: :math:`\\lambda|t|` for :math:`|t| \\le \\lambda`,
    :math:`\\frac{2a\\lambda|t| - t^2 - \\lambda^2}{2(a-1)}` for :math:`\\lambda < |t| \\le a\\lambda`,
    :math:`\\frac{(a+1)\\lambda^2}{2}` beyond.

    Example:
        >>> scad_penalty(torch.tensor([0.5, 10.0], dtype=torch.float64), 1.0).tolist()
        [0.5, 2.35]
    """
    return _scad(x, float(lam), float(a))


@accepts(x=Tensor(..., "p", **_COEFS), lam=Real(ge=0), gamma=Real(gt=0))
def mcp_penalty(x: torch.Tensor, lam: float, gamma: float = 3.0) -> torch.Tensor:
    """MCP (Zhang, 2010), elementwise: :math:`\\lambda|t| - t^2/(2\\gamma)` for :math:`|t| \\le \\gamma\\lambda`,
    :math:`\\gamma\\lambda^2/2` beyond.

    Example:
        >>> mcp_penalty(torch.tensor([1.0, 10.0]), 1.0, 2.0).tolist()
        [0.75, 1.0]
    """
    return _mcp(x, float(lam), float(gamma))


def _concave_grad(x, penalty, lam, shape):
    """Derivative of the concave part :math:`q_\\lambda = p_\\lambda - \\lambda|\\cdot|` (smooth, Lipschitz)."""
    if penalty == "l1":
        return torch.zeros_like(x)
    t, sgn = x.abs(), torch.sign(x)
    if penalty == "scad":
        return torch.where(t <= lam, torch.zeros_like(x),
                           torch.where(t <= shape * lam, (lam * sgn - x) / (shape - 1), -lam * sgn))
    return torch.where(t <= shape * lam, -x / shape, -lam * sgn)


def _penalty_value(x, penalty, lam, shape):
    if penalty == "l1":
        return lam * x.abs().sum()
    fn = _scad if penalty == "scad" else _mcp
    return fn(x, lam, shape).sum()


def _prox_scad(z, lam, a, t):
    r, sgn = z.abs(), torch.sign(z)
    low = sgn * (r - t * lam).clamp_min(0.0)
    mid = ((a - 1) * z - sgn * a * t * lam) / (a - 1 - t)
    return torch.where(r <= (1 + t) * lam, low, torch.where(r <= a * lam, mid, z))


def _prox_mcp(z, lam, gamma, t):
    r, sgn = z.abs(), torch.sign(z)
    mid = sgn * (r - t * lam).clamp_min(0.0) / (1 - t / gamma)
    return torch.where(r <= gamma * lam, mid, z)


@accepts(z=Tensor(..., "p", **_COEFS), lam=Real(ge=0), a=Real(gt=1), step=Real(gt=0))
def prox_scad(z: torch.Tensor, lam: float, a: float = 3.7, step: float = 1.0) -> torch.Tensor:
    """Closed-form :math:`\\operatorname{prox}_{t\\,p^{SCAD}_\\lambda}(z)`, valid for :math:`t < a - 1`:

    .. math::
        \\operatorname{sign}(z)(|z| - t\\lambda)_+ \\ \\ (|z| \\le (1 + t)\\lambda), \\quad
        \\frac{(a - 1)z - \\operatorname{sign}(z)\\,a t\\lambda}{a - 1 - t} \\ \\ ((1+t)\\lambda < |z| \\le a\\lambda),
        \\quad z \\ \\ (|z| > a\\lambda).

    With ``step = 1`` this is Fan and Li's SCAD thresholding rule.

    Example:
        >>> [round(v, 4) for v in prox_scad(torch.tensor([0.5, 1.5, 3.0, 5.0]), 1.0).tolist()]
        [0.0, 0.5, 2.5882, 5.0]
    """
    lam, a, t = float(lam), float(a), float(step)
    if t >= a - 1:
        raise ValueError(f"step must be < a - 1 = {a - 1} for a single-valued SCAD prox, got {t!r}")
    return _prox_scad(z, lam, a, t)


@accepts(z=Tensor(..., "p", **_COEFS), lam=Real(ge=0), gamma=Real(gt=0), step=Real(gt=0))
def prox_mcp(z: torch.Tensor, lam: float, gamma: float = 3.0, step: float = 1.0) -> torch.Tensor:
    """Closed-form :math:`\\operatorname{prox}_{t\\,p^{MCP}_\\lambda}(z)` (firm thresholding), valid for
    :math:`t < \\gamma`: :math:`0` for :math:`|z| \\le t\\lambda`,
    :math:`\\operatorname{sign}(z)\\frac{|z| - t\\lambda}{1 - t/\\gamma}` for :math:`t\\lambda < |z| \\le \\gamma\\lambda`,
    :math:`z` beyond.

    Example:
        >>> prox_mcp(torch.tensor([0.5, 1.5, 5.0]), 1.0, 3.0).tolist()
        [0.0, 0.75, 5.0]
    """
    lam, gamma, t = float(lam), float(gamma), float(step)
    if t >= gamma:
        raise ValueError(f"step must be < gamma = {gamma} for a single-valued MCP prox, got {t!r}")
    return _prox_mcp(z, lam, gamma, t)


def _loss_and_grad(X, y, beta, loss):
    u = X @ beta
    n = X.shape[0]
    if loss == "ls":
        r = u - y
        return 0.5 * r.square().sum() / n, X.T @ r / n
    return (torch.nn.functional.softplus(u) - y * u).sum() / n, X.T @ (torch.sigmoid(u) - y) / n


_PROBLEM = dict(X=Tensor("n", "p"), y=Tensor("n"), penalty=Choice(*PENALTIES), lam=Real(ge=0),
                shape=Real(gt=0, optional=True), loss=Choice(*LOSSES))


def _check_labels(y, loss):
    if loss == "logistic" and not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("y must hold labels in {0, 1} for loss='logistic'")


@accepts(**_PROBLEM, beta=Tensor("p"))
def ncvx_objective(X: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, *, penalty: str, lam: float,
                   shape: float | None = None, loss: str = "ls") -> torch.Tensor:
    """:math:`F(\\beta) = \\ell(\\beta) + \\sum_j p_\\lambda(\\beta_j)`, ``X: (n, p)``, ``y: (n,)``, ``beta: (p,)``;
    ``shape`` is SCAD's ``a`` (default 3.7) or MCP's ``gamma`` (default 3)."""
    _check_labels(y, loss)
    penalty, lam, shape = _check_shape_params(penalty, lam, _default_shape(penalty, shape))
    return _loss_and_grad(X, y, beta, loss)[0] + _penalty_value(beta, penalty, lam, shape)


def _default_shape(penalty, shape):
    if shape is not None:
        return shape
    return {"scad": 3.7, "mcp": 3.0}.get(penalty, 1.0)


def _setup(X, y, penalty, lam, shape, loss, x0, max_iter, tol):
    # types, shapes and ranges are checked by the callers' declarations; here the relations between arguments
    _check_labels(y, loss)
    penalty, lam, shape = _check_shape_params(penalty, lam, _default_shape(penalty, shape))
    max_iter, tol = int(max_iter), float(tol)
    if x0 is None:
        x0 = torch.zeros(X.shape[1], dtype=X.dtype, device=X.device)
    L_loss = float(torch.linalg.matrix_norm(X, ord=2)) ** 2 / X.shape[0]
    if loss == "logistic":
        L_loss /= 4.0
    L_q = 1.0 / (shape - 1.0) if penalty == "scad" else (1.0 / shape if penalty == "mcp" else 0.0)
    L = max(L_loss, L_q, 1e-300)

    def F(b):
        return _loss_and_grad(X, y, b, loss)[0] + _penalty_value(b, penalty, lam, shape)

    def grad_f(b):
        return _loss_and_grad(X, y, b, loss)[1] + _concave_grad(b, penalty, lam, shape)

    return penalty, lam, shape, loss, x0.to(X.dtype).clone(), max_iter, tol, L, F, grad_f


def _finish(name, x, k, converged, objective, step, L, max_iter, tol):
    if not converged and tol > 0:
        warn_not_converged(name, max_iter, tol, "increase max_iter")
    return NonconvexAGResult(x, k, converged, torch.stack(objective), step, L)


_SOLVER = dict(_PROBLEM, x0=Tensor("p", optional=True), max_iter=Int(ge=1), tol=Real(ge=0))


@accepts(**_SOLVER, example=lambda ctx: {"lam": 0.1, "max_iter": 50})
def solve_ncvx_ag(X: torch.Tensor, y: torch.Tensor, *, penalty: str = "scad", lam: float, shape: float | None = None,
                  loss: str = "ls", x0: torch.Tensor | None = None, max_iter: int = 5000,
                  tol: float = 1e-10) -> NonconvexAGResult:
    """Ghadimi-Lan nonconvex AG with the paper's damping sequence (see the module docstring for the update).

    Args:
        X: design, shape ``(n, p)``.
        y: response ``(n,)`` (labels in {0, 1} for ``loss="logistic"``).
        penalty: ``"scad"``, ``"mcp"`` or ``"l1"`` (the lasso, which makes the method Nesterov-type AG).
        lam: :math:`\\lambda \\ge 0`.
        shape: SCAD ``a > 1`` (default 3.7) or MCP ``gamma > 0`` (default 3); ignored for ``"l1"``.
        loss: ``"ls"`` or ``"logistic"``.
        x0: start :math:`\\beta_0 = \\beta^{ag}_0`, shape ``(p,)``; default zero.
        max_iter: iterations, ``>= 1``.
        tol: stop when ``|F_k - F_{k-1}| <= tol * max(1, |F_k|)`` on :math:`\\beta^{ag}` (``0``: run all).

    Returns:
        A :class:`NonconvexAGResult` whose ``x`` is :math:`\\beta^{ag}`.

    Example:
        >>> X = torch.eye(3, dtype=torch.float64) * 3**0.5; y = torch.tensor([3.0, 0.1, -6.0], dtype=torch.float64)
        >>> res = solve_ncvx_ag(X, y, penalty="mcp", lam=0.5)
        >>> [round(v, 3) for v in res.x.tolist()]
        [1.732, 0.0, -3.464]
    """
    penalty, lam, shape, loss, x, max_iter, tol, L, F, grad_f = _setup(X, y, penalty, lam, shape, loss, x0,
                                                                          max_iter, tol)
    beta_step = 0.99 / L
    x_ag = x.clone()
    alpha = None
    objective = [F(x_ag)]
    converged = False
    k = 0
    for k in range(1, max_iter + 1):
        alpha = 1.0 if alpha is None else 2.0 / (1.0 + math.sqrt(1.0 + 4.0 / alpha**2))
        lam_k = beta_step / alpha
        x_md = (1 - alpha) * x_ag + alpha * x
        g = grad_f(x_md)
        x = _soft_threshold(x - lam_k * g, lam_k * lam)
        x_ag = _soft_threshold(x_md - beta_step * g, beta_step * lam)
        check_finite_iterate("solve_ncvx_ag", x_ag, k, "check the data scaling")
        objective.append(F(x_ag))
        if tol > 0 and abs(float(objective[-1] - objective[-2])) <= tol * max(1.0, abs(float(objective[-1]))):
            converged = True
            break
    return _finish("solve_ncvx_ag", x_ag, k, converged, objective, beta_step, L, max_iter, tol)


@accepts(**_SOLVER, split=Flag(), example=lambda ctx: {"lam": 0.1, "max_iter": 50})
def solve_ncvx_proximal_gradient(X: torch.Tensor, y: torch.Tensor, *, penalty: str = "scad", lam: float,
                                 shape: float | None = None, loss: str = "ls", split: bool = True,
                                 x0: torch.Tensor | None = None, max_iter: int = 5000,
                                 tol: float = 1e-10) -> NonconvexAGResult:
    """Proximal gradient with step :math:`1/L`, the paper's baseline.

    ``split=True`` (the paper's baseline): :math:`\\beta_k = S_{\\lambda/L}(\\beta_{k-1} - \\nabla f(\\beta_{k-1})/L)`
    on the same decomposition as :func:`solve_ncvx_ag`. ``split=False``: the prox of the whole penalty,
    :math:`\\beta_k = \\operatorname{prox}_{p_\\lambda/L}(\\beta_{k-1} - \\nabla\\ell(\\beta_{k-1})/L_\\ell)` with
    :func:`prox_scad` / :func:`prox_mcp` (needs :math:`1/L_\\ell` below ``a - 1`` or ``gamma``).
    Arguments and result as :func:`solve_ncvx_ag`.

    Example:
        >>> X = torch.eye(2, dtype=torch.float64); y = torch.tensor([3.0, 0.2], dtype=torch.float64)
        >>> res = solve_ncvx_proximal_gradient(X, y, penalty="scad", lam=0.5, split=False)
        >>> res.x.tolist()
        [3.0, 0.0]
    """
    penalty, lam, shape, loss, x, max_iter, tol, L, F, grad_f = _setup(X, y, penalty, lam, shape, loss, x0,
                                                                          max_iter, tol)
    if split:
        step = 1.0 / L

        def update(b):
            return _soft_threshold(b - step * grad_f(b), step * lam)
    else:
        L = float(torch.linalg.matrix_norm(X, ord=2)) ** 2 / X.shape[0] / (4.0 if loss == "logistic" else 1.0)
        step = 1.0 / max(L, 1e-300)
        if penalty == "scad" and step >= shape - 1 or penalty == "mcp" and step >= shape:
            raise ValueError(f"split=False needs the step 1/L = {step!r} below {'a - 1' if penalty == 'scad' else 'gamma'}"
                             f" = {shape - 1 if penalty == 'scad' else shape!r} (a single-valued prox); pass "
                             "split=True or a larger shape")
        prox = {"scad": lambda z: _prox_scad(z, lam, shape, step), "mcp": lambda z: _prox_mcp(z, lam, shape, step),
                "l1": lambda z: _soft_threshold(z, step * lam)}[penalty]

        def update(b):
            return prox(b - step * _loss_and_grad(X, y, b, loss)[1])
    objective = [F(x)]
    converged = False
    k = 0
    for k in range(1, max_iter + 1):
        x = update(x)
        check_finite_iterate("solve_ncvx_proximal_gradient", x, k, "check the data scaling")
        objective.append(F(x))
        if tol > 0 and abs(float(objective[-1] - objective[-2])) <= tol * max(1.0, abs(float(objective[-1]))):
            converged = True
            break
    return _finish("solve_ncvx_proximal_gradient", x, k, converged, objective, step, L, max_iter, tol)
