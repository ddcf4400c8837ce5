r"""Stochastic Hessian fitting on Lie groups: the preconditioner updates shared by PSGD and the fitter.

References: Stochastic Hessian Fittings with Lie Groups (Li), 2024.

The preconditioner :math:`P = Q^\top Q` is fitted from pairs :math:`(v, h)`, :math:`h = Hv` a Hessian-vector
product (or :math:`v \sim N(0, I)`, :math:`h = g` a gradient, for the whitening preconditioner), by minimising
the criterion (eq. 3 of the paper; PSGD's criterion)

.. math::
    c(P) = \mathbb E\left[h^\top P h + v^\top P^{-1} v\right],

whose minimiser for :math:`h = Hv` with :math:`\mathbb E[vv^\top] = I` is :math:`P = |H|^{-1}`. On a matrix Lie
group the perturbation :math:`Q \to (I + \mathcal E)Q` changes :math:`c` by
:math:`2\,\mathrm{tr}\{\mathcal E^\top(aa^\top - bb^\top)\}` with :math:`a = Qh`, :math:`b = Q^{-\top} v`, so the
(relative) gradient descent step is

.. math::
    Q \leftarrow Q - \frac{\mu}{\|aa^\top + bb^\top\|_2}\, \Pi\!\left(aa^\top - bb^\top\right) Q

with :math:`\Pi` the projection onto the group's Lie algebra (identity for :math:`GL(n, \mathbb R)`, the upper
triangular part for the group of invertible upper-triangular matrices, the diagonal for the diagonal group) and
the step normalised by the spectral norm of :math:`aa^\top + bb^\top`, which bounds the gradient's norm and
keeps :math:`\mu \in (0, 1)` a scale-free choice. For Kronecker-factored :math:`Q = Q_2 \otimes Q_1` acting on a
matrix :math:`G` as :math:`Q_1 G Q_2^\top`, the same step applies to each factor with
:math:`A = Q_1 H Q_2^\top`, :math:`B = Q_1^{-\top} V Q_2^{-1}` and gradients :math:`AA^\top - BB^\top`,
:math:`A^\top A - B^\top B`.

Where this module deviates from the paper: the spectral norm of a Kronecker factor's term is replaced by a cheap
lower bound (two power-iteration steps from the largest column, :func:`spectral_norm_lower_bound`), as the
author's code does; for single-vector groups the norm is computed exactly (the Gram matrix of :math:`[a, b]` is
at most :math:`2k \times 2k`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Function, Generator, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_tensor

__all__ = ["GROUPS", "spectral_norm_lower_bound", "fit_terms", "lie_group_step_", "euclidean_step_",
           "kron_init", "kron_precondition", "kron_step_", "LieGroupHessianFitter", "HessianFitResult",
           "fit_inverse_hessian"]

GROUPS = ("GL", "triu", "diag")
_METHODS = GROUPS + ("euclidean",)


def spectral_norm_lower_bound(A: torch.Tensor) -> torch.Tensor:
    """A lower bound on ``||A||_2`` for a symmetric positive semi-definite ``A`` ``(n, n)``: ``||A (A x)|| /
    ||A x||`` from its largest column ``x``, computed on ``A / max|A|`` so that neither overflow nor underflow can
    occur.

    Exact for rank-one matrices and at least ``||A||_2 / sqrt(n)`` in general (the largest column has norm
    ``>= ||A||_F / sqrt(n)``); used to normalise the Kronecker factors' Lie-group steps.
    """
    scale = A.abs().max()
    if scale == 0:
        return scale
    A = A / scale
    j = torch.argmax((A * A).sum(0))
    x = A @ A[:, j]
    x = x / x.norm()
    return scale * (A @ x).norm()


def _inv_t(Q: torch.Tensor, v: torch.Tensor, group: str) -> torch.Tensor:
    """``Q^{-T} v``; ``v`` is ``(n,)`` or ``(n, k)``."""
    if group == "diag":
        return v / (Q if v.dim() == 1 else Q.unsqueeze(1))
    vv = v if v.dim() == 2 else v.unsqueeze(1)
    if group == "triu":
        out = torch.linalg.solve_triangular(Q.mT, vv, upper=False)
    else:
        out = torch.linalg.solve(Q.mT, vv)
    return out if v.dim() == 2 else out.squeeze(1)


def fit_terms(Q: torch.Tensor, v: torch.Tensor, h: torch.Tensor, group: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``a = Q h`` and ``b = Q^{-T} v`` for ``Q`` ``(n, n)`` (``(n,)`` for ``diag``), ``v, h`` ``(n,)`` or ``(n, k)``."""
    a = Q * h if group == "diag" and h.dim() == 1 else (Q.unsqueeze(1) * h if group == "diag" else Q @ h)
    return a, _inv_t(Q, v, group)


def lie_group_step_(Q: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, group: str, lr: float,
                    tiny: float) -> torch.Tensor:
    r"""One Lie-group gradient step on :math:`c`, in place: :math:`Q \leftarrow Q - \mu\,\Pi(aa^\top - bb^\top)Q
    / \|aa^\top + bb^\top\|_2` (:math:`\mu` = ``lr``); ``a, b`` from :func:`fit_terms`. Returns ``Q``."""
    if group == "diag":
        if a.dim() == 2:
            a2, b2 = (a * a).sum(1), (b * b).sum(1)
        else:
            a2, b2 = a * a, b * b
        # The diagonal group's gradient is the diagonal of aa^T - bb^T; the diagonal matrix aa^T+bb^T restricted
        # to the algebra has spectral norm max(a^2 + b^2).
        Q.sub_(lr * (a2 - b2) * Q / ((a2 + b2).max() + tiny))
        return Q
    a2 = a if a.dim() == 2 else a.unsqueeze(1)
    b2 = b if b.dim() == 2 else b.unsqueeze(1)
    grad = a2 @ a2.mT - b2 @ b2.mT
    # ||aa^T + bb^T||_2 = ||[a, b]||_2^2: the largest eigenvalue of a small Gram matrix.
    M = torch.cat([a2, b2], dim=1)
    norm = torch.linalg.eigvalsh(M.mT @ M)[-1].clamp_min(0.0)
    if group == "triu":
        grad = grad.triu()
    Q.sub_((lr / (norm + tiny)) * (grad @ Q))
    return Q


def euclidean_step_(P: torch.Tensor, v: torch.Tensor, h: torch.Tensor, *, lr: float, tiny: float) -> torch.Tensor:
    r"""The Euclidean baseline, in place: gradient descent on :math:`P` itself,

    .. math::
        P \leftarrow P - \mu\,\lambda_{\min}(P)\, \frac{hh^\top - P^{-1}vv^\top P^{-1}}
                                              {\|hh^\top - P^{-1}vv^\top P^{-1}\|_2},

    the plain gradient of :math:`c` in :math:`P`. The paper leaves the Euclidean step size open; a step of
    spectral length :math:`\mu\lambda_{\min}(P)` (:math:`\mu < 1`) is the largest normalised one that keeps
    :math:`P` positive definite (a step normalised like the Lie-group one, by :math:`\|hh^\top\|`, leaves the
    SPD cone and diverges). ``P`` ``(n, n)``, ``v, h`` ``(n,)`` or ``(n, k)``. Returns ``P``."""
    v2 = v if v.dim() == 2 else v.unsqueeze(1)
    h2 = h if h.dim() == 2 else h.unsqueeze(1)
    w = torch.linalg.solve(P, v2)
    grad = h2 @ h2.mT - w @ w.mT
    grad = 0.5 * (grad + grad.mT)
    eig = torch.linalg.eigvalsh(grad)
    norm = eig.abs().max()
    lam_min = torch.linalg.eigvalsh(P)[0].clamp_min(0.0)
    P.sub_((lr * lam_min / (norm + tiny)) * grad)
    # Keep P symmetric against round-off; the gradient is symmetric in exact arithmetic.
    P.copy_(0.5 * (P + P.mT))
    return P


# --------------------------------------------------------------------------------------------------------------
# Kronecker-factored preconditioners for tensors of dimension <= 2 (higher dimensions are flattened to 2-D).

def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 0:
        return t.reshape(1, 1)
    if t.dim() == 1:
        return t.reshape(-1, 1)
    return t.reshape(t.shape[0], -1)


def kron_init(param: torch.Tensor, *, scale: float, max_size_triangular: int,
              dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Initial Kronecker factors for ``param``: one per axis of ``param`` viewed as a vector ``(m,)`` (0-D and
    1-D tensors) or a matrix ``(m, n)`` (higher dimensions are flattened after the first).

    A factor is a dense upper-triangular ``(s, s)`` matrix when the tensor has >= 2 dimensions and
    ``1 < s <= max_size_triangular``; otherwise a diagonal, stored as a vector ``(s,)``. The factors start at
    multiples of the identity with ``P_0 = scale * I``.
    """
    shape = _as_matrix(param).shape if param.dim() >= 2 else (param.numel(),)
    dtype = dtype or param.dtype
    root = scale ** (1.0 / (2 * len(shape)))
    factors = []
    for s in shape:
        if param.dim() >= 2 and 1 < s <= max_size_triangular:
            factors.append(root * torch.eye(s, dtype=dtype, device=param.device))
        else:
            factors.append(root * torch.ones(s, dtype=dtype, device=param.device))
    return factors


def _left(Q: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    return Q.unsqueeze(1) * X if Q.dim() == 1 else Q @ X


def _left_t(Q: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    return Q.unsqueeze(1) * X if Q.dim() == 1 else Q.mT @ X


def _left_inv_t(Q: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    if Q.dim() == 1:
        return X / Q.unsqueeze(1)
    return torch.linalg.solve_triangular(Q.mT, X, upper=False)


def kron_precondition(factors: list[torch.Tensor], G: torch.Tensor) -> torch.Tensor:
    r""":math:`P g`: :math:`Q_1^\top Q_1\, G\, Q_2^\top Q_2` for ``G`` of the parameter's shape (viewed as a
    matrix), :math:`Q_1^\top Q_1 g` for vectors."""
    X = G.reshape(-1, 1) if len(factors) == 1 else _as_matrix(G)
    X = _left_t(factors[0], _left(factors[0], X))
    if len(factors) == 2:
        X = _left_t(factors[1], _left(factors[1], X.mT)).mT
    return X.reshape(G.shape)


def kron_step_(factors: list[torch.Tensor], V: torch.Tensor, Hv: torch.Tensor, *, lr: float,
               tiny: float) -> None:
    r"""One Lie-group step for every Kronecker factor, in place, from one pair ``(V, Hv)`` of the parameter's
    shape.

    :math:`A = Q_1 H Q_2^\top`, :math:`B = Q_1^{-\top} V Q_2^{-1}`; factor :math:`Q_1` takes
    :math:`\Pi(AA^\top - BB^\top)`, :math:`Q_2` takes :math:`\Pi(A^\top A - B^\top B)`, each normalised by
    (a lower bound on) the spectral norm of the matching sum, diagonal ones by its largest entry.
    """
    if len(factors) == 1:
        A = _left(factors[0], Hv.reshape(-1, 1))
        B = _left_inv_t(factors[0], V.reshape(-1, 1))
        terms = [(A @ A.mT, B @ B.mT)] if factors[0].dim() == 2 else [((A * A).sum(1), (B * B).sum(1))]
    else:
        Q1, Q2 = factors
        A = _left(Q2, _left(Q1, _as_matrix(Hv)).mT).mT
        B = _left_inv_t(Q2, _left_inv_t(Q1, _as_matrix(V)).mT).mT
        terms = []
        for Q, (AA, BB) in ((Q1, (A @ A.mT, B @ B.mT)), (Q2, (A.mT @ A, B.mT @ B))):
            terms.append((AA, BB) if Q.dim() == 2 else (AA.diagonal(), BB.diagonal()))
    for Q, (AA, BB) in zip(factors, terms):
        if Q.dim() == 1:
            Q.sub_(lr * (AA - BB) * Q / ((AA + BB).max() + tiny))
        else:
            norm = spectral_norm_lower_bound(AA + BB)
            Q.sub_((lr / (norm + tiny)) * ((AA - BB).triu() @ Q))


# --------------------------------------------------------------------------------------------------------------
# The fitter and its functional driver.

class LieGroupHessianFitter:
    r"""Lie-group stochastic Hessian fitter: :math:`P = Q^\top Q \approx |H|^{-1}` from pairs :math:`(v, Hv)`.

    References: Stochastic Hessian Fittings with Lie Groups (Li), 2024.

    Each :meth:`update` takes one (or a batch of) pair(s) and applies the Lie-group step of the module docstring,
    :math:`Q \leftarrow Q - \mu\,\Pi(aa^\top - bb^\top)Q/\|aa^\top + bb^\top\|_2` with :math:`a = Qh`,
    :math:`b = Q^{-\top}v`, on the group ``group``: ``"GL"`` (all invertible matrices; :math:`Q` is generally
    non-symmetric), ``"triu"`` (invertible upper-triangular; the group PSGD uses) or ``"diag"`` (positive
    diagonal; a Jacobi-type preconditioner). ``method="euclidean"`` is the baseline the paper contrasts: plain
    gradient descent on :math:`P` itself (:func:`euclidean_step_`).

    Args:
        dim: ``n``, the size of the Hessian.
        group: ``"GL"``, ``"triu"``, ``"diag"`` or ``"euclidean"``.
        lr: :math:`\mu \in (0, 1]`, the normalised step size (the paper's default 0.1 in PSGD).
        init_scale: :math:`P_0 = ` ``init_scale`` :math:`\cdot I`.
        dtype: floating dtype of the fitted matrix.
        tiny: guards the normalisation against division by zero.

    Example:
        >>> import torch
        >>> from paperzoo.optim import LieGroupHessianFitter
        >>> H = torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64))
        >>> fit = LieGroupHessianFitter(2, group="triu", lr=0.5, dtype=torch.float64)
        >>> g = torch.Generator().manual_seed(0)
        >>> for _ in range(200):
        ...     v = torch.randn(2, generator=g, dtype=torch.float64)
        ...     _ = fit.update(v, H @ v)
        >>> bool(torch.allclose(fit.P @ H, torch.eye(2, dtype=torch.float64), atol=1e-6))
        True
    """

    @accepts(dim=Int(ge=1), group=Choice(*_METHODS), lr=Real(gt=0, le=1), init_scale=Real(gt=0),
             dtype=Choice(torch.float32, torch.float64), tiny=Real(ge=0, optional=True), example=lambda ctx: {"dim": 3})
    def __init__(self, dim: int, group: str = "triu", lr: float = 0.1, *, init_scale: float = 1.0,
                 dtype: torch.dtype = torch.float32, tiny: float | None = None):
        self.dim, self.group, self.lr = dim, group, float(lr)
        self.tiny = torch.finfo(dtype).tiny if tiny is None else float(tiny)
        if group == "diag":
            self.Q = math.sqrt(init_scale) * torch.ones(dim, dtype=dtype)
        elif group == "euclidean":
            self.Q = init_scale * torch.eye(dim, dtype=dtype)  # holds P itself
        else:
            self.Q = math.sqrt(init_scale) * torch.eye(dim, dtype=dtype)

    @property
    def P(self) -> torch.Tensor:
        """The fitted preconditioner ``(n, n)``."""
        if self.group == "euclidean":
            return self.Q
        if self.group == "diag":
            return torch.diag(self.Q * self.Q)
        return self.Q.mT @ self.Q

    def _pair(self, v, h):
        v = check_tensor("v", v)
        h = check_tensor("h", h)
        if v.shape != h.shape or v.shape[0] != self.dim or v.dim() > 2:
            raise ValueError(f"v and h must both have shape ({self.dim},) or ({self.dim}, k), "
                             f"got {tuple(v.shape)} and {tuple(h.shape)}")
        return v.to(self.Q.dtype), h.to(self.Q.dtype)

    def update(self, v: torch.Tensor, h: torch.Tensor) -> float:
        """Fit one pair ``v, h`` ``(n,)`` (or a batch ``(n, k)``); returns the residual ``||a - b|| / (||a|| +
        ||b||)`` before the step, zero exactly when the pair is consistent with the current ``P``."""
        v, h = self._pair(v, h)
        if self.group == "euclidean":
            w = torch.linalg.solve(self.Q, v)
            # For P = Q^T Q, a - b has norm ||P h - v||-like; the Euclidean analog compares P h with v.
            r = float((self.Q @ h - v).norm() / ((self.Q @ h).norm() + v.norm() + self.tiny))
            del w
            euclidean_step_(self.Q, v, h, lr=self.lr, tiny=self.tiny)
            return r
        a, b = fit_terms(self.Q, v, h, self.group)
        r = float((a - b).norm() / (a.norm() + b.norm() + self.tiny))
        lie_group_step_(self.Q, a, b, group=self.group, lr=self.lr, tiny=self.tiny)
        return r

    def criterion(self, v: torch.Tensor, h: torch.Tensor) -> float:
        r"""The sample criterion :math:`\frac1k\sum (h^\top P h + v^\top P^{-1} v)`."""
        v, h = self._pair(v, h)
        v2 = v if v.dim() == 2 else v.unsqueeze(1)
        h2 = h if h.dim() == 2 else h.unsqueeze(1)
        P = self.P
        return float(((h2 * (P @ h2)).sum() + (v2 * torch.linalg.solve(P, v2)).sum()) / v2.shape[1])


class HessianFitResult(NamedTuple):
    """Result of :func:`fit_inverse_hessian`: the fitted ``P`` ``(n, n)``, the factor ``Q`` (``P`` itself for the
    Euclidean method), iterations run, whether the residual reached ``tol``, the residual per iteration, and
    ``error`` per iteration (``||P H - I||_F / sqrt(n)``, only when ``H`` was given, else empty)."""

    P: torch.Tensor
    Q: torch.Tensor
    n_iter: int
    converged: bool
    residuals: list[float]
    errors: list[float]


def _example_fit(ctx) -> dict:
    # H = diag(1, 2, ..., n) for whatever n = dim the probe sets
    return {"hvp": lambda V: torch.arange(1, V.shape[0] + 1, dtype=V.dtype)[:, None] * V, "dim": 3, "max_iter": 20,
            "generator": torch.Generator().manual_seed(0)}


@accepts(hvp=Function(), dim=Int(ge=1), group=Choice(*_METHODS), lr=Real(gt=0, le=1), max_iter=Int(ge=1),
         tol=Real(ge=0), batch=Int(ge=1), init_scale=Real(gt=0), generator=Generator(),
         dtype=Choice(torch.float64, torch.float32), H=Tensor("n", "n", symmetric=True, optional=True),
         example=_example_fit)
def fit_inverse_hessian(hvp: Callable[[torch.Tensor], torch.Tensor], dim: int, *, group: str = "triu",
                        lr: float = 0.1, max_iter: int = 1000, tol: float = 1e-8, batch: int = 1,
                        init_scale: float = 1.0, generator: torch.Generator | None = None,
                        dtype: torch.dtype = torch.float64, H: torch.Tensor | None = None) -> HessianFitResult:
    r"""Fit :math:`P \approx |H|^{-1}` from Hessian-vector products, probing with :math:`v \sim N(0, I)`.

    References: Stochastic Hessian Fittings with Lie Groups (Li), 2024.

    Runs :class:`LieGroupHessianFitter` for at most ``max_iter`` iterations on ``batch`` probes each,
    ``hvp(V)`` mapping ``(n, batch)`` to ``(n, batch)``; stops once the pair residual (see
    :meth:`LieGroupHessianFitter.update`) falls below ``tol``. ``H`` ``(n, n)``, optional, is used only to
    record the error :math:`\|PH - I\|_F/\sqrt n`. Warns when ``tol`` is not reached (raise ``max_iter`` or
    ``lr``) and raises on NaN.
    """
    if H is not None:
        if H.shape != (dim, dim):
            raise ValueError(f"H must have shape ({dim}, {dim}) (dim = {dim}), got {tuple(H.shape)}")
        H = H.to(dtype)
    fitter = LieGroupHessianFitter(dim, group, lr, init_scale=init_scale, dtype=dtype)
    eye = torch.eye(dim, dtype=dtype)
    residuals, errors = [], []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        V = torch.randn(dim, batch, generator=generator, dtype=dtype)
        HV = hvp(V)
        if not isinstance(HV, torch.Tensor) or HV.shape != V.shape:
            got = tuple(HV.shape) if isinstance(HV, torch.Tensor) else type(HV).__name__
            raise ValueError(f"hvp must return a tensor of shape {tuple(V.shape)} (dim, batch), got {got}")
        r = fitter.update(V, HV.to(dtype))
        if not math.isfinite(r) or not bool(torch.isfinite(fitter.Q).all()):
            raise FloatingPointError(f"fit_inverse_hessian: NaN or inf at iteration {n_iter} (lower lr)")
        residuals.append(r)
        if H is not None:
            errors.append(float(torch.linalg.matrix_norm(fitter.P @ H - eye) / math.sqrt(dim)))
        if r < tol:
            converged = True
            break
    if not converged:
        warnings.warn(f"fit_inverse_hessian did not reach tol={tol} in max_iter={max_iter} iterations "
                      f"(last residual {residuals[-1]:.3g}); increase max_iter or lr", RuntimeWarning,
                      stacklevel=2)
    return HessianFitResult(fitter.P, fitter.Q, n_iter, converged, residuals, errors)
