"""Polynomial-method low-rank attention and its norm threshold: when exp(QK^T/d) has an accurate low-rank factorization.

References: On Computational Limits and Provably Efficient Criteria of Visual Autoregressive Models: A Fine-Grained
Complexity Analysis (Ke, Li, Liang, Sha, Shi, Song), 2025; Fast Attention Requires Bounded Entries (Alman, Song), 2023.

Attention with queries :math:`Q`, keys :math:`K` (``(n, d)``) and values :math:`V` (``(n, d_v)``) is
:math:`\\operatorname{Att}(Q,K,V) = D^{-1} A V` with :math:`A = \\exp(s\\,QK^\\top)` entrywise, :math:`D =
\\operatorname{diag}(A\\mathbf 1)` and scale :math:`s` (``scale``; the papers use :math:`s = 1/d`). The fast route
replaces :math:`\\exp` on :math:`x = s\\langle q, k\\rangle` by its degree-``g`` Taylor polynomial
:math:`T_g(x) = \\sum_{j\\le g} x^j/j!`; by the multinomial theorem

.. math:: T_g(s\\langle q,k\\rangle) = \\sum_{|\\alpha|\\le g} \\frac{s^{|\\alpha|}}{\\alpha!} q^\\alpha k^\\alpha
          = \\langle\\phi(q), \\phi(k)\\rangle, \\qquad \\phi_\\alpha(u) = u^\\alpha \\sqrt{s^{|\\alpha|}/\\alpha!},

so :math:`\\tilde A = U_1 U_2^\\top` with :math:`U_1 = \\phi(Q)`, :math:`U_2 = \\phi(K)` of rank
:math:`r = \\binom{d+g}{g}` (:func:`polynomial_rank`), and :math:`\\tilde D^{-1}\\tilde A V = \\tilde D^{-1} U_1
(U_2^\\top V)` costs :math:`O(n r (d + d_v))` instead of :math:`O(n^2 (d + d_v))`.

The papers' criterion: with entries of :math:`Q, K` bounded by :math:`R` (so :math:`|x| \\le \\Gamma = s d R^2`,
``gamma``), a degree that keeps :math:`r` below :math:`n` reaches :math:`1/\\mathrm{poly}(n)` error only while
:math:`\\Gamma` is small (:math:`R = o(\\sqrt{\\log n})` with :math:`d = O(\\log n)`); at
:math:`R = \\Theta(\\sqrt{\\log n})`
SETH rules out any truly sub-quadratic attention (and, composed over VAR's scales, sub-quartic VAR inference).
:func:`taylor_error_bound` is the sufficient condition used here: the Lagrange remainder gives entrywise relative
error :math:`\\delta = \\Gamma^{g+1} e^{2\\Gamma}/(g+1)!`, hence output error at most
:math:`2\\delta/(1-\\delta)\\,\\|V\\|_\\infty`; :func:`critical_gamma` is the largest :math:`\\Gamma` at which that
bound
meets a target accuracy with a given degree.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Generator, Int, Real, Tensor, accepts

__all__ = ["polynomial_rank", "max_degree_for_rank", "taylor_features", "LowRankAttention", "fast_attention",
           "exact_attention", "taylor_error_bound", "critical_gamma", "bounded_sign_inputs",
           "polynomial_attention_error"]


def _example_qkv(ctx):
    n, d = ctx.size("n"), ctx.size("d")
    g = ctx.generator
    return {"Q": 0.5 * torch.randn(n, d, generator=g, dtype=ctx.dtype),
            "K": 0.5 * torch.randn(n, d, generator=g, dtype=ctx.dtype),
            "V": torch.randn(n, ctx.size("e"), generator=g, dtype=ctx.dtype), "degree": 3}


@accepts(d=Int(ge=1), degree=Int(ge=0), example=lambda ctx: {"d": 3, "degree": 2})
def polynomial_rank(d: int, degree: int) -> int:
    """Rank of the degree-``g`` polynomial-method factorization: the number of monomials :math:`\\binom{d+g}{g}`.

    References: On Computational Limits and Provably Efficient Criteria of Visual Autoregressive Models, 2025.

    Args:
        d: head dimension.
        degree: Taylor degree ``g``.

    Example:
        >>> polynomial_rank(3, 2)
        10
    """
    return math.comb(d + degree, degree)


@accepts(d=Int(ge=1), rank=Int(ge=1), example=lambda ctx: {"d": 3, "rank": 64})
def max_degree_for_rank(d: int, rank: int) -> int:
    """Largest Taylor degree whose factorization rank :math:`\\binom{d+g}{g}` is at most ``rank``.

    References: On Computational Limits and Provably Efficient Criteria of Visual Autoregressive Models, 2025.

    Args:
        d: head dimension.
        rank: rank budget (``n`` for "cheaper than the dense ``n x n`` matrix").

    Example:
        >>> max_degree_for_rank(3, 64)
        5
    """
    g = 0
    while math.comb(d + g + 1, g + 1) <= rank:
        g += 1
    return g


def _multi_indices(d: int, degree: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per degree j: the index multisets (m_j, j) and log(alpha!) of each."""
    out = []
    for j in range(degree + 1):
        combos = list(itertools.combinations_with_replacement(range(d), j))
        idx = torch.tensor(combos, dtype=torch.long).reshape(len(combos), j)
        counts = torch.zeros(len(combos), d, dtype=torch.float64)
        if j:
            counts.scatter_add_(1, idx, torch.ones(idx.shape, dtype=torch.float64))
        out.append((idx, torch.lgamma(counts + 1).sum(1)))
    return out


def _features(U: torch.Tensor, degree: int, scale: float) -> torch.Tensor:
    n, d = U.shape
    cols = []
    for j, (idx, log_fact) in enumerate(_multi_indices(d, degree)):
        mono = U[:, idx].prod(-1) if j else torch.ones(n, 1, dtype=U.dtype, device=U.device)
        w = torch.exp(0.5 * (j * math.log(scale) - log_fact)).to(U.dtype).to(U.device)
        cols.append(mono * w)
    return torch.cat(cols, 1)


@accepts(U=Tensor("n", "d"), degree=Int(ge=0, le=12), scale=Real(gt=0, optional=True),
         example=lambda ctx: {"U": torch.randn(ctx.size("n"), ctx.size("d"), generator=ctx.generator,
                                               dtype=ctx.dtype), "degree": 2})
def taylor_features(U: torch.Tensor, degree: int, *, scale: float | None = None) -> torch.Tensor:
    """Monomial feature map of the polynomial method: :math:`\\phi(q)^\\top\\phi(k) = T_g(s\\,q^\\top k)`.

    References: On Computational Limits and Provably Efficient Criteria of Visual Autoregressive Models, 2025.

    Columns :math:`\\phi_\\alpha(u) = u^\\alpha\\sqrt{s^{|\\alpha|}/\\alpha!}` over all multi-indices
    :math:`|\\alpha| \\le g`
    (graded order), so :math:`\\phi(Q)\\phi(K)^\\top = T_g(s\\,QK^\\top)` entrywise.

    Args:
        U: ``(n, d)`` queries or keys.
        degree: Taylor degree ``g`` (at most 12).
        scale: :math:`s`; ``None`` means ``1/d``.

    Returns:
        ``(n, r)`` features, :math:`r = \\binom{d+g}{g}`.

    Example:
        >>> import torch
        >>> q, k = torch.randn(1, 3, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)
        >>> x = float(q @ k.T) / 3
        >>> val = float(taylor_features(q, 2) @ taylor_features(k, 2).T)
        >>> abs(val - (1 + x + x * x / 2)) < 1e-12
        True
    """
    return _features(U, degree, 1.0 / U.shape[1] if scale is None else scale)


class LowRankAttention(NamedTuple):
    """Result of :func:`fast_attention`: the output, the factorization rank and the smallest approximate row sum."""

    output: torch.Tensor
    rank: int
    degree: int
    min_row_sum: float


@accepts(Q=Tensor("n", "d"), K=Tensor("m", "d"), V=Tensor("m", "e"), degree=Int(ge=0, le=12),
         scale=Real(gt=0, optional=True), output="any", example=_example_qkv)
def fast_attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, degree: int, *,
                   scale: float | None = None) -> LowRankAttention:
    """Fast attention by the polynomial method: :math:`\\tilde D^{-1} U_1 (U_2^\\top V)`, degree-``g`` Taylor factors.

    References: On Computational Limits and Provably Efficient Criteria of Visual Autoregressive Models, 2025.

    :math:`U_1 = \\phi(Q)`, :math:`U_2 = \\phi(K)` (:func:`taylor_features`), :math:`\\tilde D =
    \\operatorname{diag}(U_1 (U_2^\\top \\mathbf 1))`; never forms the ``(n, m)`` matrix. Time :math:`O((n+m) r (d+e))`.
    Warns when an approximate row sum is not positive (odd degree far outside the accurate range).

    Args:
        Q: ``(n, d)`` queries.
        K: ``(m, d)`` keys.
        V: ``(m, e)`` values.
        degree: Taylor degree ``g``.
        scale: :math:`s`; ``None`` means ``1/d``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> Q, K, V = (0.3 * torch.randn(16, 4, generator=g, dtype=torch.float64) for _ in range(3))
        >>> res = fast_attention(Q, K, V, 4)
        >>> res.rank, bool((res.output - exact_attention(Q, K, V)).abs().max() < 1e-6)
        (70, True)
    """
    s = 1.0 / Q.shape[1] if scale is None else scale
    U1, U2 = _features(Q, degree, s), _features(K, degree, s)
    num = U1 @ (U2.T @ V)
    den = U1 @ U2.sum(0)
    min_row = float(den.min())
    if not min_row > 0:
        warnings.warn(f"fast_attention: an approximate row sum is {min_row:.3g} <= 0; the entries are too large for "
                      f"degree {degree} (raise degree or shrink Q, K)", RuntimeWarning, stacklevel=2)
    return LowRankAttention(num / den[:, None], U1.shape[1], degree, min_row)


@accepts(Q=Tensor("n", "d"), K=Tensor("m", "d"), V=Tensor("m", "e"), scale=Real(gt=0, optional=True),
         example=lambda ctx: {k: v for k, v in _example_qkv(ctx).items() if k != "degree"})
def exact_attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """Exact softmax attention :math:`D^{-1}\\exp(sQK^\\top)V` (``torch.nn.functional.scaled_dot_product_attention``).

    References: Fast Attention Requires Bounded Entries, 2023.

    Args:
        Q: ``(n, d)`` queries.
        K: ``(m, d)`` keys.
        V: ``(m, e)`` values.
        scale: :math:`s`; ``None`` means ``1/d`` (not torch's default ``1/sqrt(d)``).

    Example:
        >>> import torch
        >>> Q = K = torch.zeros(2, 3, dtype=torch.float64)
        >>> exact_attention(Q, K, torch.eye(2, 3, dtype=torch.float64))[0]
        tensor([0.5000, 0.5000, 0.0000], dtype=torch.float64)
    """
    s = 1.0 / Q.shape[1] if scale is None else scale
    return torch.nn.functional.scaled_dot_product_attention(Q[None], K[None], V[None], scale=s)[0]


def _taylor_error_bound(gamma: float, degree: int) -> float:
    if gamma == 0.0:
        return 0.0
    log_delta = (degree + 1) * math.log(gamma) + 2 * gamma - math.lgamma(degree + 2)
    delta = math.exp(min(log_delta, 700.0))
    return math.inf if delta >= 1 else 2 * delta / (1 - delta)


@accepts(gamma=Real(ge=0), degree=Int(ge=0), example=lambda ctx: {"gamma": 0.5, "degree": 4},
         infinite_ok=("result",))
def taylor_error_bound(gamma: float, degree: int) -> float:
    """Output-error bound of degree-``g`` Taylor attention, logits in :math:`[-\\Gamma, \\Gamma]`, unit-bounded ``V``.

    References: Fast Attention Requires Bounded Entries, 2023 (the bound-to-output step).

    :math:`\\delta = \\Gamma^{g+1}e^{2\\Gamma}/(g+1)!` bounds :math:`|T_g(x) - e^x|/e^x` on :math:`|x|\\le\\Gamma`
    (Lagrange
    remainder over the smallest :math:`e^x`); row-normalising entries with relative error :math:`\\le\\delta` moves each
    output by at most :math:`2\\delta/(1-\\delta)`. Returns ``inf`` when :math:`\\delta \\ge 1`.

    Args:
        gamma: :math:`\\Gamma = s\\,d\\,R^2`, the bound on :math:`|s\\langle q,k\\rangle|`.
        degree: Taylor degree ``g``.

    Example:
        >>> round(taylor_error_bound(0.5, 4), 6)
        0.001417
    """
    return _taylor_error_bound(float(gamma), degree)


@accepts(degree=Int(ge=0), eps=Real(gt=0, lt=1), tol=Real(gt=0), example=lambda ctx: {"degree": 4, "eps": 0.01})
def critical_gamma(degree: int, eps: float, *, tol: float = 1e-10) -> float:
    """Largest :math:`\\Gamma` at which :func:`taylor_error_bound` guarantees output error ``eps`` with degree ``g``.

    References: On Computational Limits and Provably Efficient Criteria of Visual Autoregressive Models, 2025.

    Bisection on the (increasing) bound; with ``degree = max_degree_for_rank(d, n)`` and ``eps = 1/n`` this is the
    sufficient-condition threshold below which a rank-``<= n`` factorization is ``1/n``-accurate.

    Args:
        degree: Taylor degree ``g``.
        eps: target output error (``0 < eps < 1``).
        tol: bisection tolerance on :math:`\\Gamma`.

    Example:
        >>> gc = critical_gamma(4, 0.01)
        >>> taylor_error_bound(gc, 4) <= 0.01 < taylor_error_bound(gc * 1.01, 4)
        True
    """
    lo, hi = 0.0, 1.0
    while _taylor_error_bound(hi, degree) <= eps:
        lo, hi = hi, 2 * hi
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _taylor_error_bound(mid, degree) <= eps else (lo, mid)
    return lo


@accepts(n=Int(ge=1), d=Int(ge=1), R=Real(ge=0), generator=Generator(),
         example=lambda ctx: {"n": 8, "d": 3, "R": 1.0})
def bounded_sign_inputs(n: int, d: int, R: float, *,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Worst-case bounded inputs: :math:`Q, K = R\\cdot` Rademacher ``(n, d)``, :math:`V \\sim U[-1, 1]^{n\\times d}`.

    References: Fast Attention Requires Bounded Entries, 2023.

    Every entry of ``Q, K`` has modulus exactly :math:`R`, so the logits :math:`\\langle q,k\\rangle/d` reach
    :math:`\\pm R^2` for aligned sign rows (about :math:`n^2 2^{1-d}` such pairs): the bound :math:`\\Gamma = R^2`
    is hit
    when :math:`d \\lesssim 2\\log_2 n`.

    Example:
        >>> Q, K, V = bounded_sign_inputs(8, 3, 2.0, generator=torch.Generator().manual_seed(0))
        >>> bool((Q.abs() == 2.0).all()), V.shape
        (True, torch.Size([8, 3]))
    """
    def sign():
        return torch.randint(0, 2, (n, d), generator=generator).to(torch.float64) * 2 - 1

    Q, K = R * sign(), R * sign()
    V = torch.rand(n, d, generator=generator, dtype=torch.float64) * 2 - 1
    return Q, K, V


def _polynomial_attention_error(Q, K, V, degree, scale, reference=None):
    X = (Q @ K.T).mul_(scale)
    P = torch.ones_like(X)
    for j in range(degree, 0, -1):  # Horner: T_g(x) = 1 + x(1 + x/2(1 + ... )), in place (n x m temporaries)
        P.mul_(X).div_(j).add_(1)
    ref = exact_attention(Q, K, V, scale=scale) if reference is None else reference
    return float(((P @ V) / P.sum(1, keepdim=True) - ref).abs().max())


@accepts(Q=Tensor("n", "d"), K=Tensor("m", "d"), V=Tensor("m", "e"), degree=Int(ge=0),
         scale=Real(gt=0, optional=True), example=_example_qkv)
def polynomial_attention_error(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, degree: int, *,
                               scale: float | None = None) -> float:
    """Max-abs output error of degree-``g`` Taylor attention against exact attention, by the dense route.

    References: On Computational Limits and Provably Efficient Criteria of Visual Autoregressive Models, 2025.

    Evaluates :math:`T_g(sQK^\\top)` entrywise (Horner), which equals :math:`U_1U_2^\\top` of :func:`fast_attention`
    exactly in exact arithmetic, so the error of a rank-:math:`\\binom{d+g}{g}` factorization can be measured for
    degrees whose features would not fit in memory. :math:`O(n m g)` time.

    Example:
        >>> import torch
        >>> Q, K, V = bounded_sign_inputs(32, 4, 0.5, generator=torch.Generator().manual_seed(0))
        >>> e = polynomial_attention_error(Q, K, V, 3)
        >>> abs(e - float((fast_attention(Q, K, V, 3).output - exact_attention(Q, K, V)).abs().max())) < 1e-12
        True
    """
    return _polynomial_attention_error(Q, K, V, degree, 1.0 / Q.shape[1] if scale is None else scale)
