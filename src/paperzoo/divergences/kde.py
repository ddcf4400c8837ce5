"""Gaussian kernel density estimator and its high-dimensional regimes (CLT, heavy-tailed, extreme-value).

References: Kernel Density Estimators in Large Dimensions, 2024 (Biroli, Mézard).

Estimator. For data ``y_1..y_n`` in ``R^d`` (``data``, shape ``(n, d)``) and bandwidth ``h`` (``h``), the
Gaussian-kernel density estimate at ``x`` (``x``, shape ``(..., m, d)``, a batch of query points) is

    rho_h(x) = 1 / (n h^d) sum_i K((x - y_i) / h),   K(u) = (2 pi)^{-d/2} exp(-|u|^2 / 2),

evaluated in the log domain, ``log rho_h(x) = logsumexp_i(-|x - y_i|^2 / (2 h^2)) - log n - d log h
- d/2 log(2 pi)``, so that it stays finite when every kernel term underflows (small ``h``, large ``d``).
:func:`kde_log_density` does this; ``h`` may be a 1-D tensor of bandwidths (a sweep costs one distance matrix).

Regimes (the paper's scaling ``n = exp(alpha d)``, ``d -> infinity``, Gaussian data ``rho = N(0, sigma^2 I_d)``,
``x`` drawn from ``rho``). Write the kernel terms ``w_i = exp(-d e_i / (2 h^2))`` with ``e_i = |x - y_i|^2 / d``.
For fixed ``x`` with ``|x|^2 = m d sigma^2`` the ``e_i`` obey a large-deviation law ``P(e) ~ exp(-d I(e))``, and
the ``k``-th moment ``E[w^k]`` is dominated by the level ``e_k*(h)`` selected by the tilt ``t = k / (2 h^2)``.
That level is present in a sample of ``n`` points only while ``I(e_k*) < alpha`` (the random-energy-model
argument the paper uses). With ``s = 1 + 2 t sigma^2`` the rate at the tilted level is

    I(s) = 1/2 [ log s - (1 - 1/s) + m (1 - 1/s)^2 ],

which increases with ``s`` from ``I(1) = 0``. Hence

* ``h_G(alpha)``: the first moment's level is lost (``k = 1``): ``I(1 + sigma^2 / h^2) = alpha``. Below it the sum
  is carried by a few nearest points (extreme-value statistics, ``max_i w_i / sum_i w_i = O(1)``).
* ``h_CLT(alpha)``: the second moment's level is lost (``k = 2``): ``I(1 + 2 sigma^2 / h^2) = alpha``, so
  ``h_CLT = sqrt(2) h_G``. Below it the variance of ``rho_h(x)`` is carried by events absent from typical data
  sets and the fluctuations are alpha-stable instead of Gaussian.

:func:`kde_thresholds` solves both equations (bisection on ``s``). :func:`kde_regime` measures, per query point
and bandwidth, the share of the largest kernel term and the moment ratios
``R_k = sum_i w_i^k / (n E[w^k | x])`` against their exact Gaussian expectations
``E[w^k | x] = (h^2 / (h^2 + k sigma^2))^{d/2} exp(-k |x|^2 / (2 (h^2 + k sigma^2)))``. In the large-``d`` limit
``R_k -> 1`` above the ``k``-th threshold and ``R_k -> 0`` exponentially fast below it; at finite ``d`` the
crossing ``R_k = 1/2`` locates the transition (``R_1``: ``h_G``; ``R_2``: ``h_CLT``).
For the Gaussian kernel ``w_i(h)^2 = w_i(h / sqrt 2)``, so ``R_2(h) = R_1(h / sqrt 2)`` exactly: the two
crossings carry the same information, mirroring ``h_CLT = sqrt(2) h_G``.

Deviations: the threshold formulas above were derived here by the large-deviation (random-energy-model) argument
the paper applies to Gaussian data, written with ``m = |x|^2 / (d sigma^2)`` (``m = 1`` for typical ``x``); we could
not consult the paper's printed equations, so the equation numbers are not cited. The moment-ratio diagnostic
``R_k`` is our choice of finite-size measurement of the transitions (the paper characterises them through the
limiting distribution of ``rho_h``).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> data, x = torch.randn(1000, 3, generator=g, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)
    >>> true = -1.5 * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
    >>> bool((kde_log_density(x, data, 0.4) - true).abs() < 0.2)
    True
    >>> h_clt, h_g = kde_thresholds(0.3)
    >>> round(h_clt / h_g, 6) == round(2 ** 0.5, 6)
    True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Probe, Real, Spec, Tensor, accepts
from paperzoo.core.checks import check_number, check_tensor

__all__ = ["kde_log_density", "kde_thresholds", "kde_rate", "kde_regime", "KDERegime"]


def _bandwidths(h, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``h`` as a 1-D tensor of positive bandwidths on ``like``'s dtype/device, and whether it was a scalar."""
    if isinstance(h, torch.Tensor) and h.dim() == 1:
        check_tensor("h", h)
        if h.numel() == 0 or bool((h <= 0).any()):
            raise ValueError(f"h must be > 0 entrywise and non-empty, got {h.tolist()}")
        return h.to(dtype=like.dtype, device=like.device), False
    value = check_number("h", h, low=0.0, low_inclusive=False)
    return torch.tensor([value], dtype=like.dtype, device=like.device), True


def _check_points(x, data) -> None:
    check_tensor("x", x)
    check_tensor("data", data, ndim=2)
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., m, d), got shape {tuple(x.shape)}")
    if data.shape[0] < 1:
        raise ValueError(f"data must hold at least one point, got shape {tuple(data.shape)}")
    if x.shape[-1] != data.shape[-1]:
        raise ValueError(f"x and data must have the same dimension d, got {x.shape[-1]} and {data.shape[-1]}")
    if x.dtype != data.dtype or x.device != data.device:
        raise ValueError(f"x and data must share dtype and device, got {x.dtype}/{x.device} and "
                         f"{data.dtype}/{data.device}")


def _sq_distances(x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """``|x_j - y_i|^2``, shape ``(..., m, n)``; clamped at 0 against the round-off of the expansion."""
    d2 = (x * x).sum(-1, keepdim=True) - 2.0 * x @ data.T + (data * data).sum(-1)
    return d2.clamp_min(0.0)


class Bandwidths(Spec):
    """A bandwidth ``> 0``: a number, or a 1-D tensor ``(H,)`` of them (a sweep) with the dtype of the call.

    ``like`` names the tensor argument whose dtype the tensor probes take.
    """

    def __init__(self, *, like: str, symbol: str = "H", example=None):
        self.like = like
        self._number = Real(gt=0, example=example)
        self._tensor = Tensor(symbol)

    def check(self, name, value, binding):
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            if value.dim() != 1:
                raise ValueError(f"{name} must be a number or a 1-D tensor of bandwidths, got shape "
                                 f"{tuple(value.shape)}")
            self._tensor.check(name, value, binding)
            if bool((value <= 0).any()):
                raise ValueError(f"{name} must be > 0 entrywise, got a minimum of {float(value.min())!r}")
            return
        self._number.check(name, value, binding)

    def example(self, ctx):
        return self._number.example(ctx)

    def probes(self, name, value):
        out = self._number.probes(name, value)
        v, like = float(value), self.like

        def sweep(entries):
            return lambda kw: {**kw, name: torch.tensor(entries, dtype=kw[like].dtype, device=kw[like].device)}

        out += [Probe(name, "1-D sweep", True, sweep([v, 2 * v])),
                Probe(name, "sweep with a zero entry", False, sweep([v, 0.0])),
                Probe(name, "sweep with a NaN entry", False, sweep([v, math.nan])),
                Probe(name, "empty sweep", False, sweep([])),
                Probe(name, "2-D sweep", False, sweep([[v, 2 * v]]))]
        return out


_QUERIES = Tensor(..., "m", "d", degenerate=("coincident",))
_DATA = Tensor("n", "d", degenerate=("coincident",))


@accepts(x=_QUERIES, data=_DATA, h=Bandwidths(like="x"))
def kde_log_density(x: torch.Tensor, data: torch.Tensor, h) -> torch.Tensor:
    """Log of the Gaussian kernel density estimate ``rho_h(x)`` (see the module docstring).

    Args:
        x: query points, shape ``(..., m, d)``.
        data: the sample ``y``, shape ``(n, d)``; same dtype and device as ``x``.
        h: bandwidth ``> 0``, a number or a 1-D tensor of shape ``(H,)``.

    Returns:
        ``(..., m)`` for a scalar ``h``; ``(H, ..., m)`` for a tensor of bandwidths.
    """
    _check_points(x, data)
    hs, scalar = _bandwidths(h, x)
    n, d = data.shape
    d2 = _sq_distances(x, data)
    shape = (-1,) + (1,) * d2.dim()
    log_terms = -d2.unsqueeze(0) / (2.0 * hs.reshape(shape) ** 2)
    out = (torch.logsumexp(log_terms, dim=-1) - math.log(n) - d * torch.log(hs).reshape(shape[:-1])
           - 0.5 * d * math.log(2.0 * math.pi))
    return out[0] if scalar else out


@accepts(s=Real(ge=1), m=Real(ge=0))
def kde_rate(s, m: float = 1.0) -> float:
    """Large-deviation rate ``I(s) = 1/2 [log s - (1 - 1/s) + m (1 - 1/s)^2]`` of the tilted level (``s >= 1``)."""
    return _rate(float(s), float(m))


def _rate(s: float, m: float) -> float:
    u = 1.0 - 1.0 / s
    return 0.5 * (math.log(s) - u + m * u * u)


@accepts(alpha=Real(gt=0), sigma=Real(gt=0), m=Real(ge=0), tol=Real(gt=0))
def kde_thresholds(alpha, *, sigma: float = 1.0, m: float = 1.0, tol: float = 1e-12) -> tuple[float, float]:
    """Predicted bandwidths ``(h_CLT(alpha), h_G(alpha))`` for Gaussian data ``N(0, sigma^2 I_d)``.

    ``h_G`` solves ``I(1 + sigma^2 / h^2) = alpha`` and ``h_CLT`` solves ``I(1 + 2 sigma^2 / h^2) = alpha``
    (module docstring), so ``h_CLT = sqrt(2) h_G``.

    Args:
        alpha: ``log(n) / d``, ``> 0``.
        sigma: standard deviation of each data coordinate, ``> 0``.
        m: ``|x|^2 / (d sigma^2)`` of the query point (1 for a typical draw from the data law), ``>= 0``.
        tol: relative tolerance of the bisection on ``s``.
    """
    alpha, sigma, m, tol = float(alpha), float(sigma), float(m), float(tol)
    lo, hi = 1.0, 2.0
    while _rate(hi, m) < alpha:  # I grows like log(s)/2: doubling brackets the root quickly
        lo, hi = hi, hi * 2.0
        if math.isinf(hi):
            raise ValueError(f"alpha must be below {_rate(lo, m)!r} for m = {m!r} (beyond it the level s of the "
                             f"threshold equation overflows a float), got {alpha!r}")
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):  # adjacent floats: a tol below the float resolution cannot be met any better
            break
        lo, hi = (mid, hi) if _rate(mid, m) < alpha else (lo, mid)
    s = 0.5 * (lo + hi)
    h_g = sigma / math.sqrt(s - 1.0)
    return math.sqrt(2.0) * h_g, h_g


class KDERegime(NamedTuple):
    """Per-bandwidth, per-query regime measurements, each of shape ``(H, ..., m)``.

    Attributes:
        log_density: ``log rho_h(x)``.
        max_share: ``max_i w_i / sum_i w_i``, the share of the estimate carried by the nearest data point.
        log_ratio_first: ``log R_1 = log(sum_i w_i / (n E[w | x]))``; ``~ 0`` above ``h_G``.
        log_ratio_second: ``log R_2 = log(sum_i w_i^2 / (n E[w^2 | x]))``; ``~ 0`` above ``h_CLT``.
        h: the bandwidths, shape ``(H,)``.
    """

    log_density: torch.Tensor
    max_share: torch.Tensor
    log_ratio_first: torch.Tensor
    log_ratio_second: torch.Tensor
    h: torch.Tensor


@accepts(x=_QUERIES, data=_DATA, h=Bandwidths(like="x"), sigma=Real(gt=0))
def kde_regime(x: torch.Tensor, data: torch.Tensor, h, *, sigma: float = 1.0) -> KDERegime:
    """Measure which statistical regime the Gaussian KDE is in at each query point and bandwidth.

    The moment ratios compare with the exact expectations under ``y ~ N(0, sigma^2 I_d)`` (module docstring);
    ``max_share`` and ``log_density`` are meaningful for any data.

    Args:
        x: query points, shape ``(..., m, d)``.
        data: the sample, shape ``(n, d)``.
        h: bandwidth ``> 0`` or a 1-D tensor of bandwidths ``(H,)``.
        sigma: standard deviation of the Gaussian data law, ``> 0``.

    Returns:
        :class:`KDERegime` with fields of shape ``(H, ..., m)`` (``H = 1`` for a scalar ``h``).
    """
    _check_points(x, data)
    sigma = check_number("sigma", sigma, low=0.0, low_inclusive=False)
    hs, _ = _bandwidths(h, x)
    n, d = data.shape
    d2 = _sq_distances(x, data).unsqueeze(0)
    shape = (-1,) + (1,) * (d2.dim() - 1)
    h2 = hs.reshape(shape) ** 2
    log_w = -d2 / (2.0 * h2)
    lse1 = torch.logsumexp(log_w, dim=-1)
    lse2 = torch.logsumexp(2.0 * log_w, dim=-1)
    max_share = torch.exp(log_w.amax(-1) - lse1)
    x2 = (x * x).sum(-1).unsqueeze(0)
    h2 = h2.squeeze(-1)

    def log_moment(k: float) -> torch.Tensor:
        v = h2 + k * sigma ** 2
        return 0.5 * d * torch.log(h2 / v) - k * x2 / (2.0 * v)

    log_n = math.log(n)
    log_density = lse1 - log_n - d * torch.log(hs).reshape(shape[:-1]) - 0.5 * d * math.log(2.0 * math.pi)
    return KDERegime(log_density, max_share, lse1 - log_n - log_moment(1.0), lse2 - log_n - log_moment(2.0), hs)

