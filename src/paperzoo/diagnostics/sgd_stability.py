"""Linear (mean-square) stability of SGD at a minimum from the per-sample Hessians, and a Hessian coherence measure.

References: A Precise Characterization of SGD Stability Using Loss Surface Geometry (Dexter, Ocejo, Keerthi, Gupta,
Acharya, Khanna), 2024.

Setting. The loss is the mean :math:`L(w) = \\frac1n \\sum_i \\ell_i(w)` over ``n`` samples; at a minimum :math:`w^*`
the per-sample Hessians are :math:`H_i` (``per_sample_hessians``, shape ``(n, d, d)``, symmetric, PSD for the
paper's results) and :math:`H = \\frac1n\\sum_i H_i`. SGD with step :math:`\\eta` (``lr``) and batch size :math:`B`
(``batch_size``), linearised at :math:`w^*`, moves the error :math:`e = w - w^*` by

.. math:: e_{k+1} = (I - \\eta H_{\\mathcal B_k}) e_k, \\qquad H_{\\mathcal B} = \\tfrac1B \\textstyle\\sum_{i\\in\\mathcal B} H_i .

Its second moment :math:`M_k = \\mathbb E[e_k e_k^\\top]` evolves by an exact linear map
:math:`M_{k+1} = \\mathcal T(M_k)` on :math:`d\\times d` matrices:

.. math:: \\mathcal T(M) = (I-\\eta H) M (I-\\eta H) + \\eta^2 c_B \\Big(\\tfrac1n\\textstyle\\sum_i H_i M H_i - H M H\\Big),

where :math:`c_B = 1/B` for batches drawn with replacement and :math:`c_B = (n-B)/(B(n-1))` for a uniformly random
B-subset (without replacement; the finite-population factor, 0 at :math:`B = n`, so full batch is GD exactly).
Equivalently :math:`\\mathcal T = (1-c_B)\\,\\mathcal T_{GD} + c_B\\,\\mathcal T_{1}` with
:math:`\\mathcal T_{GD}(M) = (I-\\eta H)M(I-\\eta H)` and :math:`\\mathcal T_1(M) = \\frac1n\\sum_i(I-\\eta H_i)M(I-\\eta H_i)`.
:math:`\\mathcal T` is self-adjoint for the Frobenius inner product and maps the PSD cone into itself, so its spectral
radius :math:`\\rho` is its largest eigenvalue, with a PSD eigenvector (Krein-Rutman), and linearised SGD is
mean-square stable (:math:`\\mathbb E\\|e_k\\|^2 \\to 0` from every start) iff :math:`\\rho < 1`: the necessary and
sufficient condition, in operator form.

Simple conditions (Rayleigh quotients of :math:`\\mathcal T` at :math:`M = vv^\\top`, our derivation): for every unit
:math:`v`, :math:`\\rho \\ge (1-\\eta v^\\top H v)^2 + \\eta^2 c_B \\operatorname{Var}_i(v^\\top H_i v)`. Hence
:math:`\\eta\\lambda_{\\max}(H) < 2` is necessary for stability (SGD is never more stable than GD), and the bound at
the top eigenvector of :math:`H` exceeding 1 certifies divergence (:func:`sgd_stability_condition`).

Coherence (the paper's measure, :func:`hessian_coherence`): :math:`S_{ij} = \\|H_i^{1/2} H_j^{1/2}\\|_F =
\\sqrt{\\operatorname{tr}(H_i H_j)}` and :math:`\\sigma = \\lambda_1(S) / \\max_i \\lambda_1(H_i)`, which lies in
:math:`[1, n\\sqrt d\\,]` for PSD :math:`H_i`; it is ``n`` times the alignment when all :math:`H_i` are equal rank-one
matrices and 1 when they are mutually orthogonal. At a fixed mean sharpness :math:`\\lambda_1(H)`, a less coherent
set (small :math:`\\sigma`) has larger, less aligned per-sample curvatures and destabilises SGD at a smaller
:math:`\\eta`; the GD rule :math:`\\eta < 2/\\lambda_1(H)` does not see the difference.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Flag, Generator, Int, Real, Tensor, accepts
from paperzoo.diagnostics.hessian import _top_eigenpairs

__all__ = ["SecondMomentOperator", "sgd_second_moment_operator", "StabilityRadius", "sgd_stability_radius",
           "HessianCoherence", "hessian_coherence", "StabilityCondition", "sgd_stability_condition",
           "LinearizedSGDRuns", "simulate_linearized_sgd", "batch_noise_factor"]


def _example_hessians(ctx):
    n, d = ctx.size("n"), ctx.size("d")
    A = torch.randn(n, d, 2, generator=ctx.generator, dtype=ctx.dtype)
    return {"per_sample_hessians": A @ A.transpose(-1, -2) / d, "lr": 0.2, "batch_size": 2}


_HESSIANS = Tensor("n", "d", "d", symmetric=True)


def _check_batch(n: int, batch_size: int, replacement: bool) -> None:
    if not replacement and batch_size > n:
        raise ValueError(f"batch_size must be <= n ({n}) when sampling without replacement, got {batch_size}")


def _noise_factor(n: int, batch_size: int, replacement: bool) -> float:
    if replacement:
        return 1.0 / batch_size
    if n == 1:
        return 0.0
    return (n - batch_size) / (batch_size * (n - 1))


@accepts(n=Int(ge=1), batch_size=Int(ge=1), replacement=Flag(),
         example=lambda ctx: {"n": 10, "batch_size": 3, "replacement": False})
def batch_noise_factor(n: int, batch_size: int, replacement: bool = False) -> float:
    """The minibatch noise factor :math:`c_B` of the second-moment map: :math:`\\operatorname{Cov}(H_{\\mathcal B})
    = c_B \\operatorname{Cov}_i(H_i)` entrywise.

    References: A Precise Characterization of SGD Stability Using Loss Surface Geometry (Dexter et al.), 2024.

    :math:`c_B = 1/B` with replacement; :math:`(n-B)/(B(n-1))` without (0 when ``n == 1``); ``batch_size <= n``
    without replacement.

    >>> batch_noise_factor(10, 10), batch_noise_factor(10, 1), batch_noise_factor(10, 4, replacement=True)
    (0.0, 1.0, 0.25)
    """
    _check_batch(n, batch_size, replacement)
    return _noise_factor(n, batch_size, replacement)


class SecondMomentOperator:
    """The exact linear map :math:`M_k \\mapsto M_{k+1}` of linearised SGD's second moment (see the module docstring),
    applied matrix-free to ``(..., d, d)`` matrices; built by :func:`sgd_second_moment_operator`.

    Attributes: ``hessians`` (n, d, d), ``mean_hessian`` (d, d), ``lr``, ``batch_size``, ``replacement``,
    ``noise_factor`` (:math:`c_B`), ``n``, ``d``.
    """

    def __init__(self, hessians: torch.Tensor, lr: float, batch_size: int, replacement: bool):
        self.hessians = hessians
        self.n, self.d = hessians.shape[0], hessians.shape[-1]
        self.mean_hessian = hessians.mean(0)
        self.lr, self.batch_size, self.replacement = float(lr), int(batch_size), bool(replacement)
        self.noise_factor = _noise_factor(self.n, self.batch_size, self.replacement)
        self._P = torch.eye(self.d, dtype=hessians.dtype, device=hessians.device) - self.lr * self.mean_hessian

    def __call__(self, M: torch.Tensor) -> torch.Tensor:
        if not isinstance(M, torch.Tensor) or M.dim() < 2 or tuple(M.shape[-2:]) != (self.d, self.d):
            shape = tuple(M.shape) if isinstance(M, torch.Tensor) else type(M).__name__
            raise ValueError(f"M must have shape (..., {self.d}, {self.d}), got {shape}")
        return self._apply(M)

    def _apply(self, M: torch.Tensor) -> torch.Tensor:
        H, P, eta, c = self.mean_hessian, self._P, self.lr, self.noise_factor
        out = P @ M @ P
        if c != 0.0:
            # (1/n) sum_i H_i M H_i, vectorised over samples and any leading batch dimensions of M.
            HiM = torch.einsum("iab,...bc->...iac", self.hessians, M)
            A = torch.einsum("...iac,icd->...ad", HiM, self.hessians) / self.n
            out = out + (eta * eta * c) * (A - H @ M @ H)
        return out

    def dense(self) -> torch.Tensor:
        """The ``(d*d, d*d)`` symmetric matrix of the map on row-major ``vec(M)`` (for small ``d``; tests)."""
        Hs, H, P, c, eta = self.hessians, self.mean_hessian, self._P, self.noise_factor, self.lr
        kron = lambda A, B: torch.einsum("ac,bd->abcd", A, B).reshape(self.d ** 2, self.d ** 2)  # noqa: E731
        per = torch.einsum("iac,ibd->abcd", Hs, Hs).reshape(self.d ** 2, self.d ** 2) / self.n
        return kron(P, P) + eta * eta * c * (per - kron(H, H))


@accepts(per_sample_hessians=_HESSIANS, lr=Real(ge=0), batch_size=Int(ge=1), replacement=Flag(),
         output="any", example=_example_hessians)
def sgd_second_moment_operator(per_sample_hessians: torch.Tensor, lr: float, batch_size: int, *,
                               replacement: bool = False) -> SecondMomentOperator:
    """The second-moment map :math:`\\mathcal T` of SGD linearised at a minimum (exact, matrix-free).

    References: A Precise Characterization of SGD Stability Using Loss Surface Geometry (Dexter et al.), 2024.

    :math:`\\mathcal T(M) = (I-\\eta H)M(I-\\eta H) + \\eta^2 c_B(\\frac1n\\sum_i H_iMH_i - HMH)`, with
    :math:`\\eta` = ``lr``, :math:`B` = ``batch_size``, :math:`c_B` from :func:`batch_noise_factor` and
    :math:`H_i` = ``per_sample_hessians[i]`` (shape ``(n, d, d)``, symmetric). One application costs
    :math:`O(n d^3)`.

    Args:
        per_sample_hessians: ``(n, d, d)`` symmetric per-sample Hessians at the minimum (loss = their mean).
        lr: step size ``>= 0``.
        batch_size: ``B >= 1`` (``<= n`` without replacement).
        replacement: batches of ``B`` i.i.d. uniform draws (True) or a uniform ``B``-subset (False, the default).

    Returns:
        A :class:`SecondMomentOperator`, callable on ``(..., d, d)`` matrices.

    Example:
        >>> import torch
        >>> Hs = torch.stack([torch.diag(torch.tensor([2.0, 0.0])), torch.diag(torch.tensor([0.0, 2.0]))]).double()
        >>> T = sgd_second_moment_operator(Hs, 0.5, 1)       # one sample per step: I - 0.5 H_i has entries 0 or 1
        >>> T(torch.eye(2, dtype=torch.float64))
        tensor([[0.5000, 0.0000],
                [0.0000, 0.5000]], dtype=torch.float64)
    """
    _check_batch(per_sample_hessians.shape[0], batch_size, replacement)
    return SecondMomentOperator(per_sample_hessians, lr, batch_size, replacement)


class StabilityRadius(NamedTuple):
    """Result of :func:`sgd_stability_radius`.

    Attributes:
        radius: spectral radius :math:`\\rho` of the second-moment map (stable iff ``< 1``).
        stable: ``radius < 1``.
        eigenvector: the top eigenvector as a symmetric ``(d, d)`` matrix of unit Frobenius norm, sign chosen so
            its trace is >= 0 (PSD up to solver accuracy): the second-moment direction that grows fastest.
        residual: ``||T(V) - rho V||_F`` (``0`` for the dense method up to rounding).
        n_iter: Lanczos steps (``0`` for ``method="dense"``).
        converged: whether the Lanczos residual met ``tol`` (always True for dense).
    """

    radius: float
    stable: bool
    eigenvector: torch.Tensor
    residual: float
    n_iter: int
    converged: bool


@accepts(per_sample_hessians=_HESSIANS, lr=Real(ge=0), batch_size=Int(ge=1), replacement=Flag(),
         dense=Flag(), max_iter=Int(ge=1), tol=Real(gt=0), generator=Generator(), example=_example_hessians)
def sgd_stability_radius(per_sample_hessians: torch.Tensor, lr: float, batch_size: int, *,
                         replacement: bool = False, dense: bool = False, max_iter: int = 300, tol: float = 1e-10,
                         generator: torch.Generator | None = None) -> StabilityRadius:
    """Spectral radius of linearised SGD's second-moment map: mean-square stable iff it is below 1.

    References: A Precise Characterization of SGD Stability Using Loss Surface Geometry (Dexter et al.), 2024.

    :math:`\\rho(\\mathcal T)` for :math:`\\mathcal T` of :func:`sgd_second_moment_operator`. Because
    :math:`\\mathcal T` is Frobenius-self-adjoint and PSD-cone preserving, :math:`\\rho = \\lambda_{\\max}(\\mathcal T)`
    on symmetric matrices; it is computed by Lanczos (full reorthogonalisation, Ritz residual
    :math:`\\le` ``tol`` :math:`\\cdot\\rho`) on :math:`\\mathrm{vec}` of symmetric matrices started from the
    identity (which overlaps the PSD top eigenvector), matrix-free, or with ``dense=True`` by ``eigh`` of the
    :math:`d^2\\times d^2` matrix. Warns when Lanczos does not converge (raise ``max_iter``).

    Args:
        per_sample_hessians: ``(n, d, d)`` symmetric; lr ``>= 0``; batch_size ``>= 1``; replacement: see
            :func:`sgd_second_moment_operator`.
        dense: use the explicit ``(d^2, d^2)`` matrix (exact, ``O(d^6)``: small ``d`` only).
        max_iter: Lanczos steps at most (clipped to ``d^2``); tol: relative residual ``> 0``.
        generator: for the start perturbation (and Lanczos restarts).

    Example:
        >>> import torch
        >>> Hs = torch.stack([torch.diag(torch.tensor([2.0, 0.0])), torch.diag(torch.tensor([0.0, 2.0]))]).double()
        >>> r = sgd_stability_radius(Hs, 1.5, 1)        # one sample per step: I - 1.5 H_i = diag(-2, 1) or diag(1, -2)
        >>> round(r.radius, 8), r.stable
        (2.5, False)
        >>> round(sgd_stability_radius(Hs, 1.5, 2).radius, 8)     # full batch = GD: (1 - 1.5)^2
        0.25
    """
    _check_batch(per_sample_hessians.shape[0], batch_size, replacement)
    T = SecondMomentOperator(per_sample_hessians, lr, batch_size, replacement)
    d, dtype = T.d, per_sample_hessians.dtype
    if dense:
        # Restricted to symmetric matrices (P_sym D P_sym; antisymmetric directions become 0 <= rho).
        idx = torch.arange(d * d, device=per_sample_hessians.device)
        swap = (idx % d) * d + idx // d
        Psym = 0.5 * (torch.eye(d * d, dtype=dtype, device=idx.device)
                      + torch.eye(d * d, dtype=dtype, device=idx.device)[swap])
        D = Psym @ T.dense() @ Psym
        evals, evecs = torch.linalg.eigh(0.5 * (D + D.T))
        k = evals.numel() - 1
        V = evecs[:, k].reshape(d, d)
        rho, n_iter, conv = float(evals[k]), 0, True
    else:
        def matvec(v: torch.Tensor) -> torch.Tensor:
            M = v.reshape(d, d)
            M = 0.5 * (M + M.T)
            out = T._apply(M)
            return (0.5 * (out + out.T)).reshape(-1)

        start = torch.eye(d, dtype=torch.float64)
        noise = torch.randn(d, d, generator=generator, dtype=torch.float64)
        start = (start / math.sqrt(d) + 1e-3 * (noise + noise.T)).to(per_sample_hessians.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = _top_eigenpairs(lambda v: matvec(v.to(dtype)).to(torch.float64), start.reshape(-1), 1,
                                  "largest", min(max_iter, d * d), tol, generator, torch.float64)
        if not res.converged:
            warnings.warn(f"sgd_stability_radius did not reach tol={tol} in max_iter={max_iter} Lanczos steps; "
                          "raise max_iter (or use dense=True for small d)", RuntimeWarning, stacklevel=2)
        rho, n_iter, conv = float(res.eigenvalues[0]), res.n_iter, res.converged
        V = res.eigenvectors[0].reshape(d, d).to(dtype)
    V = 0.5 * (V + V.T)
    V = V / torch.linalg.matrix_norm(V)
    if float(torch.trace(V)) < 0:
        V = -V
    residual = float(torch.linalg.matrix_norm(T._apply(V) - rho * V))
    if not math.isfinite(rho):
        raise ValueError("sgd_stability_radius got a non-finite eigenvalue (check per_sample_hessians)")
    return StabilityRadius(rho, rho < 1.0, V, residual, n_iter, conv)


class HessianCoherence(NamedTuple):
    """Result of :func:`hessian_coherence`.

    Attributes:
        coherence: :math:`\\sigma = \\lambda_1(S)/\\max_i\\lambda_1(H_i)`.
        s_top: :math:`\\lambda_1(S)`.
        max_sample_sharpness: :math:`\\max_i \\lambda_1(H_i)`.
        sharpness: :math:`\\lambda_1(H)` of the mean Hessian.
        S: the ``(n, n)`` matrix :math:`S_{ij} = \\sqrt{\\operatorname{tr}(H_iH_j)}`.
    """

    coherence: float
    s_top: float
    max_sample_sharpness: float
    sharpness: float
    S: torch.Tensor


@accepts(per_sample_hessians=Tensor("n", "d", "d", symmetric=True),
         example=lambda ctx: {"per_sample_hessians": _example_hessians(ctx)["per_sample_hessians"]})
def hessian_coherence(per_sample_hessians: torch.Tensor) -> HessianCoherence:
    """Coherence measure of per-sample Hessians: :math:`\\sigma = \\lambda_1(S)/\\max_i \\lambda_1(H_i)`.

    References: A Precise Characterization of SGD Stability Using Loss Surface Geometry (Dexter et al.), 2024.

    :math:`S_{ij} = \\|H_i^{1/2}H_j^{1/2}\\|_F = \\sqrt{\\operatorname{tr}(H_i H_j)}` (``n x n``) for PSD
    :math:`H_i` = ``per_sample_hessians[i]`` (shape ``(n, d, d)``); negative traces from non-PSD input are clamped
    to 0. Large :math:`\\sigma` (up to about ``n``): curvatures aligned; :math:`\\sigma = 1`: mutually orthogonal.
    All-zero Hessians raise ValueError (the ratio is undefined).

    Example:
        >>> import torch
        >>> e = torch.eye(3, dtype=torch.float64)
        >>> aligned = torch.stack([torch.outer(e[0], e[0])] * 4)
        >>> orthogonal = torch.stack([torch.outer(e[i % 3], e[i % 3]) for i in range(3)])
        >>> round(hessian_coherence(aligned).coherence, 8), round(hessian_coherence(orthogonal).coherence, 8)
        (4.0, 1.0)
    """
    n = per_sample_hessians.shape[0]
    flat = per_sample_hessians.reshape(n, -1)
    S = (flat @ flat.T).clamp_min(0).sqrt()
    S = 0.5 * (S + S.T)
    s_top = float(torch.linalg.eigvalsh(S)[-1])
    per = float(torch.linalg.eigvalsh(per_sample_hessians)[:, -1].max())
    if per <= 0:
        raise ValueError("per_sample_hessians must have a positive top eigenvalue for some sample, got "
                         f"max_i lambda_1(H_i) = {per!r}")
    sharp = float(torch.linalg.eigvalsh(per_sample_hessians.mean(0))[-1])
    return HessianCoherence(s_top / per, s_top, per, sharp, S)


class StabilityCondition(NamedTuple):
    """Result of :func:`sgd_stability_condition`.

    Attributes:
        sharpness: :math:`\\lambda_1(H)`.
        gd_stable: :math:`\\eta\\lambda_1(H) < 2` (necessary for SGD's stability; the GD rule).
        radius_lower_bound: :math:`(1-\\eta\\lambda_1)^2 + \\eta^2 c_B \\operatorname{Var}_i(v^\\top H_i v)` at the
            top eigenvector :math:`v` of :math:`H` (a lower bound on the exact radius).
        certified_unstable: the lower bound is ``>= 1`` (or ``not gd_stable``): SGD diverges in mean square.
        curvature_variance: :math:`\\operatorname{Var}_i(v^\\top H_i v)`.
        lr_bound: the smallest :math:`\\eta` at which the bound reaches 1:
            :math:`2\\lambda_1/(\\lambda_1^2 + c_B\\operatorname{Var}_i)` (``inf`` when both vanish).
        noise_factor: :math:`c_B`.
    """

    sharpness: float
    gd_stable: bool
    radius_lower_bound: float
    certified_unstable: bool
    curvature_variance: float
    lr_bound: float
    noise_factor: float


@accepts(per_sample_hessians=_HESSIANS, lr=Real(ge=0), batch_size=Int(ge=1), replacement=Flag(),
         infinite_ok=("lr_bound",), example=_example_hessians)
def sgd_stability_condition(per_sample_hessians: torch.Tensor, lr: float, batch_size: int, *,
                            replacement: bool = False) -> StabilityCondition:
    """Closed-form stability conditions of linearised SGD from sharpness, batch size and curvature spread.

    References: A Precise Characterization of SGD Stability Using Loss Surface Geometry (Dexter et al.), 2024 (the
    bound is our Rayleigh-quotient derivation, in the spirit of the paper's sufficient divergence condition).

    With :math:`v` the top eigenvector of :math:`H` (:math:`\\lambda_1`) and :math:`q_i = v^\\top H_i v`:
    :math:`\\rho \\ge (1-\\eta\\lambda_1)^2 + \\eta^2 c_B \\operatorname{Var}_i(q_i)`; so :math:`\\eta\\lambda_1 < 2` is
    necessary, and the bound :math:`\\ge 1`, i.e. :math:`\\eta \\ge 2\\lambda_1/(\\lambda_1^2 + c_B\\operatorname{Var}_i q_i)`,
    is sufficient for mean-square divergence. Shapes and arguments as in :func:`sgd_second_moment_operator`.

    Example:
        >>> import torch
        >>> Hs = torch.stack([torch.diag(torch.tensor([2.0, 0.0])), torch.diag(torch.tensor([0.0, 1.0]))]).double()
        >>> c = sgd_stability_condition(Hs, 1.5, 1)     # H = diag(1, 0.5): GD-stable below lr = 2
        >>> c.gd_stable, round(c.radius_lower_bound, 6), c.certified_unstable, round(c.lr_bound, 6)
        (True, 2.5, True, 1.0)
    """
    n = per_sample_hessians.shape[0]
    _check_batch(n, batch_size, replacement)
    c = _noise_factor(n, batch_size, replacement)
    evals, evecs = torch.linalg.eigh(per_sample_hessians.mean(0))
    lam, v = float(evals[-1]), evecs[:, -1]
    q = torch.einsum("a,iab,b->i", v, per_sample_hessians, v)
    var = float(((q - q.mean()) ** 2).mean())
    bound = (1.0 - lr * lam) ** 2 + lr * lr * c * var
    denom = lam * lam + c * var
    lr_bound = 2.0 * lam / denom if denom > 0 and lam > 0 else math.inf
    gd_stable = lr * lam < 2.0
    return StabilityCondition(lam, gd_stable, bound, bool(bound >= 1.0 or not gd_stable), var, lr_bound, c)


class LinearizedSGDRuns(NamedTuple):
    """Result of :func:`simulate_linearized_sgd`.

    Attributes:
        log_sq_norms: ``(steps + 1, n_runs)`` :math:`\\log\\|e_k\\|^2` per run (tracked in log space: no overflow).
        log_mean_sq_norm: ``(steps + 1,)`` :math:`\\log \\frac1R\\sum_r \\|e_{k,r}\\|^2` (log-mean-exp over runs).
        growth_rate: least-squares slope of ``log_mean_sq_norm`` over the second half of the steps: the estimate of
            :math:`\\log\\rho` (per step).
        typical_rate: the same slope of the mean over runs of :math:`\\log\\|e_k\\|^2` (twice the top Lyapunov
            exponent, :math:`\\le \\log\\rho`).
    """

    log_sq_norms: torch.Tensor
    log_mean_sq_norm: torch.Tensor
    growth_rate: float
    typical_rate: float


def _slope(y: torch.Tensor) -> float:
    k = y.shape[0]
    lo = k // 2
    t = torch.arange(lo, k, dtype=torch.float64)
    yy = y[lo:].to(torch.float64)
    tc = t - t.mean()
    return float((tc * (yy - yy.mean())).sum() / (tc * tc).sum())


def _simulate(Hs: torch.Tensor, lrs: torch.Tensor, batch_size: int, steps: int, n_runs: int, replacement: bool,
              generator: torch.Generator | None) -> torch.Tensor:
    """Unchecked kernel: ``(steps + 1, L, R)`` log squared norms for every learning rate in ``lrs`` (shape ``(L,)``)."""
    n, d = Hs.shape[0], Hs.shape[-1]
    L = lrs.shape[0]
    runs = L * n_runs
    Hflat = Hs.reshape(n, d * d)
    x = torch.randn(runs, d, generator=generator, dtype=Hs.dtype).to(Hs.device)
    x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
    eta = lrs.repeat_interleave(n_runs).to(Hs)[:, None]
    logn = torch.zeros(steps + 1, runs, dtype=torch.float64)
    acc = torch.zeros(runs, dtype=torch.float64)
    W = torch.zeros(runs, n, dtype=Hs.dtype, device=Hs.device)
    ones = torch.full((runs, batch_size), 1.0 / batch_size, dtype=Hs.dtype, device=Hs.device)
    for k in range(steps):
        if replacement:
            idx = torch.randint(0, n, (runs, batch_size), generator=generator).to(Hs.device)
        else:
            idx = torch.rand(runs, n, generator=generator).argsort(dim=1)[:, :batch_size].to(Hs.device)
        W.zero_()
        W.scatter_add_(1, idx, ones)
        HB = (W @ Hflat).reshape(runs, d, d)
        x = x - eta * torch.bmm(HB, x[:, :, None])[:, :, 0]
        nrm = torch.linalg.vector_norm(x, dim=1)
        # Renormalise every step; the log norm is accumulated (a run that hits exactly 0 stays at -inf).
        acc = acc + 2.0 * torch.log(nrm).to(torch.float64).cpu()
        x = x / nrm.clamp_min(torch.finfo(Hs.dtype).tiny)[:, None]
        logn[k + 1] = acc
    return logn.reshape(steps + 1, L, n_runs)


@accepts(per_sample_hessians=_HESSIANS, lr=Real(ge=0), batch_size=Int(ge=1), steps=Int(ge=2), n_runs=Int(ge=1),
         replacement=Flag(), generator=Generator(), output="any",
         example=lambda ctx: {**_example_hessians(ctx), "steps": 20, "n_runs": 8})
def simulate_linearized_sgd(per_sample_hessians: torch.Tensor, lr: float, batch_size: int, steps: int, *,
                            n_runs: int = 256, replacement: bool = False,
                            generator: torch.Generator | None = None) -> LinearizedSGDRuns:
    """Monte Carlo of linearised SGD :math:`e_{k+1} = (I-\\eta H_{\\mathcal B_k})e_k`, many runs at once.

    References: A Precise Characterization of SGD Stability Using Loss Surface Geometry (Dexter et al.), 2024.

    ``n_runs`` independent runs from uniformly random unit starts, each step drawing its own batch of
    ``batch_size`` indices (i.i.d. uniform with ``replacement``, else a uniform subset), vectorised over runs (no
    Python loop over runs or samples; one over steps). Norms are renormalised each step and accumulated in log
    space. :math:`\\mathbb E\\|e_k\\|^2 \\propto \\rho^k` asymptotically, so ``growth_rate`` estimates
    :math:`\\log\\rho` (:func:`sgd_stability_radius`); the Monte Carlo mean is dominated by rare runs when the
    per-run spread is large, so it underestimates :math:`\\log\\rho` at long horizons with few runs.

    Args:
        per_sample_hessians: ``(n, d, d)`` symmetric; lr, batch_size, replacement as in
            :func:`sgd_second_moment_operator`; steps ``>= 2``; n_runs ``>= 1``; generator: starts and batches.

    Example:
        >>> import torch
        >>> Hs = torch.stack([torch.diag(torch.tensor([2.0, 0.0])), torch.diag(torch.tensor([0.0, 2.0]))]).double()
        >>> sim = simulate_linearized_sgd(Hs, 0.25, 2, 10, n_runs=4, generator=torch.Generator().manual_seed(0))
        >>> round(sim.growth_rate, 6) == round(2 * math.log(0.75), 6)   # full batch: GD, rate log (1 - 0.25)^2
        True
    """
    _check_batch(per_sample_hessians.shape[0], batch_size, replacement)
    lrs = torch.tensor([float(lr)], dtype=torch.float64)
    logn = _simulate(per_sample_hessians, lrs, batch_size, steps, n_runs, replacement, generator)[:, 0]
    return _summarise(logn)


def _summarise(logn: torch.Tensor) -> LinearizedSGDRuns:
    R = logn.shape[-1]
    lm = torch.logsumexp(logn, dim=-1) - math.log(R)
    typical = logn.mean(-1)
    return LinearizedSGDRuns(logn, lm, _slope(lm), _slope(typical))
