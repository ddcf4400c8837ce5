"""Learning a simplex from Gaussian-noisy uniform samples through its characteristic function.

References: Sample Complexity Bounds for Learning High-dimensional Simplices in Noisy Regimes (Saberi, Najafi,
Motahari, Khalaj), 2023.

Model (the paper's): a simplex :math:`S \\subset \\mathbb R^K` with vertices :math:`v_0, \\dots, v_K` (the rows of
``vertices``, shape ``(K + 1, K)``); observations :math:`y = \\sum_j \\phi_j v_j + z` with
:math:`\\phi \\sim \\mathrm{Dirichlet}(1, \\dots, 1)` (uniform on :math:`S`) and :math:`z \\sim N(0, \\sigma^2 I_K)`.
The paper proves that :math:`n \\ge (K^2/\\varepsilon^2)\\, e^{\\Omega(K/\\mathrm{SNR}^2)}` samples suffice to learn
:math:`S` to :math:`\\ell_2` accuracy :math:`\\varepsilon`; its recovery step works in the Fourier domain, where the
noise multiplies the characteristic function by :math:`e^{-\\sigma^2\\|\\omega\\|^2/2}`.

The pieces here:

* :func:`simplex_characteristic_function`: the exact :math:`\\varphi_S(\\omega) = \\mathbb E\\, e^{i\\omega^\\top x}`
  of the uniform law on :math:`S`. By the Hermite-Genocchi formula it is :math:`K!` times the divided difference of
  :math:`\\exp` at the nodes :math:`z_j = i\\,\\omega^\\top v_j`, computed stably (coincident nodes included) as the
  top-right entry of the exponential of the bidiagonal matrix with diagonal :math:`z` and ones above it (Opitz).
* :func:`deconvolved_characteristic_function`: :math:`\\hat\\varphi(\\omega) = e^{\\sigma^2\\|\\omega\\|^2/2}\\,
  \\frac1n\\sum_i e^{i\\omega^\\top y_i}`, unbiased for :math:`\\varphi_S(\\omega)`, with per-sample variance
  :math:`e^{\\sigma^2\\|\\omega\\|^2} - |\\varphi_S(\\omega)|^2`: the noise divides the effective sample size at
  frequency :math:`\\omega` by :math:`e^{\\sigma^2\\|\\omega\\|^2}`. At the frequencies that resolve a simplex of
  radius :math:`r` (:math:`\\|\\omega\\|^2 \\approx K / r^2`) that factor is :math:`e^{K/\\mathrm{SNR}^2}` with
  :math:`\\mathrm{SNR} = r/\\sigma`: the paper's exponent.
* :func:`fit_simplex_fourier`: a minimum-distance estimator in the Fourier domain (a practical stand-in for the
  paper's compression-based estimator, which is not computable): minimise over vertices :math:`V`
  :math:`L(V) = \\frac1m\\sum_k |\\varphi_V(\\omega_k) e^{-\\sigma^2\\|\\omega_k\\|^2/2} - \\psi_n(\\omega_k)|^2`
  with :math:`\\psi_n` the empirical characteristic function of the noisy samples (equivalently the deconvolved
  distance weighted by the inverse variance factor :math:`e^{-\\sigma^2\\|\\omega\\|^2}`), by Levenberg-Marquardt
  from ``init``.
* :func:`vertex_matching_error`: the RMS vertex distance under the best vertex permutation.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Generator, Int, OneOf, Real, Tensor, accepts

__all__ = [
    "regular_simplex", "sample_noisy_simplex", "simplex_characteristic_function", "DeconvolvedCF",
    "deconvolved_characteristic_function", "SimplexFit", "fit_simplex_fourier", "vertex_matching_error",
]


def _check_vertices(name: str, vertices: torch.Tensor) -> None:
    if vertices.shape[-2] != vertices.shape[-1] + 1:
        raise ValueError(f"{name} must have shape (K + 1, K) (one row per vertex), got {tuple(vertices.shape)}")


@accepts(K=Int(ge=1), radius=Real(gt=0), generator=Generator(), example=lambda ctx: {"K": 3})
def regular_simplex(K: int, *, radius: float = 1.0, dtype: torch.dtype = torch.float64,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Vertices of a regular simplex in R^K centred at 0 with circumradius ``radius``, shape ``(K + 1, K)``.

    References: Sample Complexity Bounds for Learning High-dimensional Simplices in Noisy Regimes, 2023 (the model).

    The centred standard basis of :math:`\\mathbb R^{K+1}` expressed in an orthonormal basis of the hyperplane
    :math:`\\mathbf 1^\\perp`; with ``generator`` the simplex is also rotated by a Haar-random orthogonal matrix.

    Example:
        >>> V = regular_simplex(3)
        >>> V.shape, round(float(V.norm(dim=1).max()), 6), round(float(V.sum(0).abs().max()), 6)
        (torch.Size([4, 3]), 1.0, 0.0)
    """
    E = torch.eye(K + 1, dtype=dtype) - 1.0 / (K + 1)
    Q, _ = torch.linalg.qr(E[:, :K])  # orthonormal basis of 1-perp (E's first K columns span it)
    V = E @ Q
    V = V * (radius / V.norm(dim=1, keepdim=True))
    if generator is not None:
        R, Rr = torch.linalg.qr(torch.randn(K, K, generator=generator, dtype=dtype))
        V = V @ (R * torch.sign(torch.diagonal(Rr)))
    return V


@accepts(vertices=Tensor("v", "K"), n=Int(ge=1), sigma=Real(ge=0), generator=Generator(),
         example=lambda ctx: {"vertices": regular_simplex(2, dtype=ctx.dtype), "n": 5, "sigma": 0.1})
def sample_noisy_simplex(vertices: torch.Tensor, n: int, sigma: float, *,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples of the noisy-simplex model: uniform points of the simplex plus N(0, sigma^2 I) noise, shape (n, K).

    References: Sample Complexity Bounds for Learning High-dimensional Simplices in Noisy Regimes, 2023.

    :math:`y_i = \\sum_j \\phi_{ij} v_j + \\sigma z_i`, :math:`\\phi_i \\sim \\mathrm{Dirichlet}(\\mathbf 1)` (normalised
    exponentials), :math:`z_i \\sim N(0, I_K)`; ``vertices`` shape ``(K + 1, K)``.

    Example:
        >>> y = sample_noisy_simplex(regular_simplex(2), 4, 0.0, generator=torch.Generator().manual_seed(0))
        >>> y.shape
        torch.Size([4, 2])
    """
    _check_vertices("vertices", vertices)
    K = vertices.shape[1]
    e = -torch.log1p(-torch.rand(n, K + 1, generator=generator, dtype=vertices.dtype))
    phi = e / e.sum(1, keepdim=True)
    z = torch.randn(n, K, generator=generator, dtype=vertices.dtype)
    return phi @ vertices + sigma * z


_TAYLOR_RADIUS = 10.0  # beyond it the series loses ~e^radius of relative precision: use the matrix exponential


def _taylor_terms(rho: float) -> int:
    """Smallest Q with rho^Q / Q! <= 1e-18 (the series' tail beyond Q, relative to 1 / (N - 1)!, is below
    rho^Q / Q! / (1 - rho / (Q + 1)) since |h_q| <= C(q + N - 1, N - 1) rho^q), plus a margin of 2."""
    q, term = 0, 1.0
    while term > 1e-18 or q <= rho:
        q += 1
        term *= rho / q
    return q + 2


def _exp_divided_difference(z: torch.Tensor) -> torch.Tensor:
    """exp[z_0, ..., z_{N-1}] over the last axis (complex), coincident nodes allowed.

    Centred at c = mean(z), exp[z] = e^c sum_q h_q(z - c) / (q + N - 1)!, h_q the complete homogeneous symmetric
    polynomials, built for all prefixes at once by h_q^(k) = sum_{k' <= k} w_k' h_{q-1}^(k') (one cumsum per q).
    The terms' absolute sum is e^rho / (N - 1)! for nodes within rho of c, so rounding stays ~e^rho eps; wider
    node sets go through the (slower) matrix exponential of the bidiagonal matrix (Opitz).
    """
    N = z.shape[-1]
    c = z.mean(-1, keepdim=True)
    w = z - c
    rho = float(w.detach().abs().max()) if w.numel() else 0.0
    if rho > _TAYLOR_RADIUS:
        ones = torch.ones(z.shape[:-1] + (N - 1,), dtype=z.dtype, device=z.device)
        return torch.linalg.matrix_exp(torch.diag_embed(z) + torch.diag_embed(ones, 1))[..., 0, N - 1]
    terms = _taylor_terms(rho)
    h = torch.ones_like(w)  # h_0 for every prefix
    total = h[..., -1] / math.factorial(N - 1)
    fact = float(math.factorial(N - 1))
    for q in range(1, terms):
        h = torch.cumsum(w * h, -1)
        fact *= q + N - 1
        total = total + h[..., -1] / fact
    return torch.exp(c[..., 0]) * total


def _nodes(vertices: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    return 1j * torch.einsum("mk,...jk->...mj", omega, vertices).to(_ctype(vertices.dtype))  # (..., m, K + 1)


def _simplex_cf(vertices: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """Unchecked kernel: vertices (..., K + 1, K), omega (m, K) -> complex (..., m)."""
    return math.factorial(vertices.shape[-1]) * _exp_divided_difference(_nodes(vertices, omega))


def _ctype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


@accepts(vertices=Tensor("v", "K"), omega=Tensor("m", "K"),
         example=lambda ctx: {"vertices": regular_simplex(2, dtype=ctx.dtype),
                              "omega": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype)})
def simplex_characteristic_function(vertices: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """Characteristic function of the uniform distribution on a simplex, exact, at frequencies ``omega``.

    References: Sample Complexity Bounds for Learning High-dimensional Simplices in Noisy Regimes, 2023 (the
    Fourier view of the noisy class); the Hermite-Genocchi formula and Opitz's bidiagonal-exponential identity.

    :math:`\\varphi_S(\\omega) = \\mathbb E_{x \\sim U(S)} e^{i\\omega^\\top x} = K!\\, \\exp[z_0, \\dots, z_K]`,
    :math:`z_j = i\\,\\omega^\\top v_j`, the divided difference equal to the entry ``(0, K)`` of
    :math:`\\exp(\\mathrm{diag}(z) + N)` (``N`` the ones above the diagonal), evaluated by a centred Taylor series
    (nodes within 10 of their mean) or that matrix exponential: stable when nodes coincide.

    Args:
        vertices: shape ``(K + 1, K)``, one vertex per row.
        omega: shape ``(m, K)``.

    Returns:
        complex tensor of shape ``(m,)`` (complex128 for float64 input).

    Example:
        >>> V = torch.tensor([[0.0], [1.0]], dtype=torch.float64)  # the segment [0, 1]
        >>> w = torch.tensor([[2.0]], dtype=torch.float64)
        >>> abs(complex(simplex_characteristic_function(V, w)[0]) - (complex(math.cos(2), math.sin(2)) - 1) / 2j) < 1e-12
        True
    """
    _check_vertices("vertices", vertices)
    return _simplex_cf(vertices, omega)


class DeconvolvedCF(NamedTuple):
    """Result of :func:`deconvolved_characteristic_function`.

    Attributes:
        value: complex ``(m,)``, the noise-corrected empirical characteristic function (unbiased for phi_S).
        stderr: ``(m,)``, its estimated standard error from the samples.
        amplification: ``(m,)``, the factor exp(sigma^2 ||omega||^2 / 2) applied to the raw empirical one.
        n_samples: n.
    """

    value: torch.Tensor
    stderr: torch.Tensor
    amplification: torch.Tensor
    n_samples: int


@accepts(samples=Tensor("n", "K"), omega=Tensor("m", "K"), sigma=Real(ge=0),
         example=lambda ctx: {"samples": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype),
                              "omega": torch.randn(3, 2, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.3})
def deconvolved_characteristic_function(samples: torch.Tensor, omega: torch.Tensor, sigma: float) -> DeconvolvedCF:
    """Deconvolved empirical characteristic function of Gaussian-noisy samples.

    References: Sample Complexity Bounds for Learning High-dimensional Simplices in Noisy Regimes, 2023 (the
    Fourier-based recovery of a distribution from additive Gaussian noise).

    :math:`\\hat\\varphi(\\omega) = e^{\\sigma^2\\|\\omega\\|^2/2}\\frac1n\\sum_i e^{i\\omega^\\top y_i}`; since
    :math:`\\mathbb E e^{i\\omega^\\top y} = \\varphi_S(\\omega) e^{-\\sigma^2\\|\\omega\\|^2/2}` it is unbiased for
    :math:`\\varphi_S`, and each sample contributes variance :math:`e^{\\sigma^2\\|\\omega\\|^2} - |\\varphi_S|^2`.

    Args:
        samples: shape ``(n, K)``, the noisy observations ``y``.
        omega: shape ``(m, K)``.
        sigma: the noise standard deviation (known), >= 0.

    Example:
        >>> y = torch.zeros(5, 1, dtype=torch.float64)
        >>> r = deconvolved_characteristic_function(y, torch.tensor([[1.0]], dtype=torch.float64), 1.0)
        >>> round(float(r.value.real[0]), 6), round(float(r.amplification[0]), 6)
        (1.648721, 1.648721)
    """
    n = samples.shape[0]
    e = torch.exp(1j * (samples @ omega.T).to(torch.complex128 if samples.dtype == torch.float64
                                               else torch.complex64))
    amp = torch.exp(0.5 * sigma**2 * (omega**2).sum(1))
    raw = e.mean(0)
    spread = (e - raw).abs().pow(2).sum(0) / max(n - 1, 1)
    return DeconvolvedCF(amp * raw, amp * torch.sqrt(spread / n), amp, n)


class SimplexFit(NamedTuple):
    """Result of :func:`fit_simplex_fourier`.

    Attributes:
        vertices: ``(..., K + 1, K)``, the fitted vertices.
        loss: ``(...)``, the final mean squared Fourier residual of each problem.
        n_iter: Levenberg-Marquardt iterations used (the most over the batch).
        converged: ``(...)`` bool, whether each problem met ``tol`` before ``max_iter``.
    """

    vertices: torch.Tensor
    loss: torch.Tensor
    n_iter: int
    converged: torch.Tensor


def _cf_and_node_derivatives(vertices: torch.Tensor, omega: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """phi (..., m) and d phi / d z_j (..., m, K + 1): the derivative of a divided difference in one node is the
    divided difference with that node repeated, read off a (K + 2)-square bidiagonal exponential."""
    z = _nodes(vertices, omega)
    return math.factorial(vertices.shape[-1]) * _exp_divided_difference(z), _node_derivatives(z)


def _node_derivatives(z: torch.Tensor) -> torch.Tensor:
    """d phi / d z_j (..., m, K + 1) from the nodes z (..., m, K + 1) (the fit's hot loop: phi is not recomputed)."""
    K = z.shape[-1] - 1
    idx = torch.tensor([list(range(j + 1)) + list(range(j, K + 1)) for j in range(K + 1)], device=z.device)
    return math.factorial(K) * _exp_divided_difference(z[..., idx])  # nodes (..., m, K + 1, K + 2)


def _residual(V, omega, damp, psi):
    return _simplex_cf(V, omega) * damp - psi


@accepts(samples=Tensor(..., "n", "K", max_batch_dims=1), omega=Tensor("m", "K"),
         sigma=OneOf(Real(ge=0), Tensor("b", nonnegative=True)),
         init=Tensor(..., "v", "K", max_batch_dims=1), max_iter=Int(ge=1), tol=Real(gt=0),
         example=lambda ctx: {"samples": sample_noisy_simplex(regular_simplex(2, dtype=ctx.dtype), 50, 0.1,
                                                              generator=ctx.generator),
                              "omega": torch.randn(8, 2, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.1,
                              "init": regular_simplex(2, dtype=ctx.dtype), "max_iter": 20})
def fit_simplex_fourier(samples: torch.Tensor, omega: torch.Tensor, sigma, init: torch.Tensor, *,
                        max_iter: int = 100, tol: float = 1e-9) -> SimplexFit:
    """Minimum-distance simplex estimator in the Fourier domain, from Gaussian-noisy samples with known sigma.

    References: Sample Complexity Bounds for Learning High-dimensional Simplices in Noisy Regimes, 2023 (the noisy
    class :math:`f_S * G_\\sigma` in the Fourier domain; the paper's own estimator is compression-based and not
    computable, this is a practical one built on the same identity).

    Minimises :math:`L(V) = \\frac1m\\sum_k |\\varphi_V(\\omega_k) e^{-\\sigma^2\\|\\omega_k\\|^2/2} -
    \\psi_n(\\omega_k)|^2`, :math:`\\psi_n(\\omega) = \\frac1n\\sum_i e^{i\\omega^\\top y_i}`, over the vertex matrix
    :math:`V` by Levenberg-Marquardt with the exact Jacobian
    :math:`\\partial\\varphi_V/\\partial v_{jd} = i\\omega_d\\, K!\\,\\exp[z_0..z_j, z_j..z_K]`, each problem of a
    leading batch dimension with its own damping and stopping. The objective is not convex: the fit finds the local
    minimum near ``init``.

    Args:
        samples: ``(n, K)`` or ``(B, n, K)`` noisy observations.
        omega: ``(m, K)`` frequencies.
        sigma: noise standard deviation, >= 0: a number, or shape ``(B,)`` (one per problem).
        init: ``(K + 1, K)`` or ``(B, K + 1, K)`` starting vertices.
        max_iter: iterations.
        tol: stop a problem when an accepted step is below ``tol * (1 + ||V||)`` or lowers its cost by less than
            ``tol`` relative.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> V = regular_simplex(2)
        >>> y = sample_noisy_simplex(V, 2000, 0.1, generator=g)
        >>> w = torch.randn(32, 2, generator=g, dtype=torch.float64)
        >>> fit = fit_simplex_fourier(y, w, 0.1, V + 0.1)
        >>> bool(vertex_matching_error(fit.vertices, V) < 0.1), bool(fit.converged)
        (True, True)
    """
    _check_vertices("init", init)
    if samples.dim() != init.dim():
        raise ValueError(f"init must have a batch dimension exactly when samples has one, got samples of shape "
                         f"{tuple(samples.shape)} and init of shape {tuple(init.shape)}")
    if samples.dim() == 3 and samples.shape[0] != init.shape[0]:
        raise ValueError(f"init must have the batch size of samples ({samples.shape[0]}), got {init.shape[0]}")
    if isinstance(sigma, torch.Tensor) and (samples.dim() != 3 or sigma.shape[0] != samples.shape[0]):
        raise ValueError(f"sigma as a tensor must have shape (B,) with B the batch size of samples, got shape "
                         f"{tuple(sigma.shape)} for samples of shape {tuple(samples.shape)}")
    return _fit_lm(samples, omega, sigma, init, max_iter, tol)


def _fit_lm(samples, omega, sigma, init, max_iter, tol) -> SimplexFit:
    batched = samples.dim() == 3
    Y, V = (samples, init.clone()) if batched else (samples[None], init[None].clone())
    B, K = V.shape[0], V.shape[-1]
    s2 = (sigma**2 if isinstance(sigma, torch.Tensor) else torch.full((B,), float(sigma) ** 2, dtype=V.dtype))
    psi = torch.exp(1j * (Y @ omega.T).to(_ctype(V.dtype))).mean(-2)  # (B, m)
    damp = torch.exp(-0.5 * s2[:, None] * (omega**2).sum(1))  # (B, m)
    lam = torch.full((B,), 1e-3, dtype=V.dtype)
    done = torch.zeros(B, dtype=torch.bool)
    r = _residual(V, omega, damp, psi)
    cost = r.abs().pow(2).sum(-1)
    eye = torch.eye((K + 1) * K, dtype=V.dtype)
    it = 0
    for it in range(1, max_iter + 1):
        act = (~done).nonzero().flatten()  # finished problems drop out of the computation
        Va, ra, ca, la, da, pa = V[act], r[act], cost[act], lam[act], damp[act], psi[act]
        dphi = _node_derivatives(_nodes(Va, omega))  # (b, m, K + 1)
        Jc = (da[..., None, None] * dphi[..., None] * (1j * omega.to(dphi.dtype))[None, :, None, :]).flatten(-2)
        J = torch.cat([Jc.real, Jc.imag], -2)  # (b, 2m, P)
        rr = torch.cat([ra.real, ra.imag], -1)
        H = J.transpose(-1, -2) @ J
        g = (J.transpose(-1, -2) @ rr[..., None])[..., 0]
        Hd = torch.diagonal(H, dim1=-2, dim2=-1)
        A = H + la[:, None, None] * torch.diag_embed(Hd + 1e-12 * Hd.mean(-1, keepdim=True)) + 1e-300 * eye
        step = -torch.linalg.solve(A, g[..., None])[..., 0]
        V_new = Va + step.view_as(Va)
        r_new = _residual(V_new, omega, da, pa)
        cost_new = r_new.abs().pow(2).sum(-1)
        accept = cost_new <= ca
        flat = ca - cost_new <= tol * ca  # relative decrease below tol (scipy's ftol)
        V[act] = torch.where(accept[:, None, None], V_new, Va)
        r[act] = torch.where(accept[:, None], r_new, ra)
        cost[act] = torch.where(accept, cost_new, ca)
        lam[act] = torch.where(accept, la / 3, la * 4)
        small = step.norm(dim=-1) <= tol * (1 + V[act].flatten(1).norm(dim=-1))
        done[act] = (accept & (small | flat)) | (lam[act] > 1e12)  # lam blows up only where no step decreases cost
        if bool(done.all()):
            break
    if not bool(torch.isfinite(V).all()):
        raise ValueError("fit_simplex_fourier produced NaN vertices; rescale omega (smaller frequencies) or init")
    if not bool(done.all()):
        warnings.warn(f"fit_simplex_fourier: {int((~done).sum())} of {B} problems did not converge in {max_iter} "
                      "iterations; raise max_iter", RuntimeWarning, stacklevel=3)
    loss = cost / omega.shape[0]
    if not batched:
        return SimplexFit(V[0], loss[0], it, done[0])
    return SimplexFit(V, loss, it, done)


@accepts(estimate=Tensor(..., "v", "K", max_batch_dims=1), truth=Tensor("v", "K"),
         example=lambda ctx: {"estimate": regular_simplex(2, dtype=ctx.dtype) + 0.1 * torch.randn(
                                  2, 3, 2, generator=ctx.generator, dtype=ctx.dtype),
                              "truth": regular_simplex(2, dtype=ctx.dtype)})
def vertex_matching_error(estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """RMS vertex distance between two simplices under the best matching of their vertices.

    References: Sample Complexity Bounds for Learning High-dimensional Simplices in Noisy Regimes, 2023 (vertex
    recovery; the paper measures TV / l2 distance of the densities, this is the parameter-space distance).

    :math:`\\min_\\pi \\big(\\frac1{K+1}\\sum_j \\|\\hat v_{\\pi(j)} - v_j\\|^2\\big)^{1/2}` over all :math:`(K+1)!`
    permutations (exact; meant for small ``K``, at most 7).

    Args:
        estimate: ``(K + 1, K)`` or ``(B, K + 1, K)``.
        truth: ``(K + 1, K)``.

    Returns:
        tensor of shape ``()`` or ``(B,)``.

    Example:
        >>> V = regular_simplex(2)
        >>> float(vertex_matching_error(V.flip(0), V)) < 1e-12
        True
    """
    _check_vertices("truth", truth)
    if truth.shape[0] > 8:
        raise ValueError(f"truth must have at most 8 vertices (K <= 7) for exact matching, got {truth.shape[0]}")
    perms = torch.tensor(list(itertools.permutations(range(truth.shape[0]))), device=truth.device)
    d2 = ((estimate[..., :, None, :] - truth[None, :, :]) ** 2).sum(-1)  # (..., i_est, j_true)
    cols = torch.arange(truth.shape[0], device=truth.device)
    cost = d2[..., perms, cols].mean(-1)  # (..., P): estimate vertex perms[p, j] matched to truth j
    return cost.min(-1).values.sqrt()
