"""Sliced Wasserstein distance by Monte Carlo, and its control-variate estimators (CV-SW).

References: Sliced Wasserstein Estimation with Control Variates, 2024 (Nguyen and Ho, ICLR).

For measures ``mu = sum_i a_i delta_{x_i}`` and ``nu = sum_j b_j delta_{y_j}`` on ``R^d`` the sliced
Wasserstein distance is ``SW_p^p(mu, nu) = E_{theta ~ U(S^{d-1})} W_p^p(theta#mu, theta#nu)`` and the plain
Monte Carlo estimate with ``L`` directions ``theta_1..theta_L`` is ``(1/L) sum_l W_l`` with
``W_l = W_p^p(theta_l#mu, theta_l#nu)``, each a 1-D problem solved by sorting (quantile functions).

Control variates (p = 2 only; the construction the abstract states, in the official code's form). Fit Gaussians
to the projected measures, ``N(theta^T m_mu, theta^T S_mu theta)`` and ``N(theta^T m_nu, theta^T S_nu theta)``
with the weighted means ``m`` and covariances ``S`` of the point clouds. Their W_2^2 is ``(theta^T (m_mu - m_nu))^2 +
(sqrt(theta^T S_mu theta) - sqrt(theta^T S_nu theta))^2``, whose expectation over the sphere has no closed form;
the two control variates are a lower and an upper bound of it whose expectations do:

* lower: ``C_low(theta) = (theta^T (m_mu - m_nu))^2``, ``E C_low = ||m_mu - m_nu||^2 / d``;
* upper: ``C_up(theta) = C_low(theta) + theta^T S_mu theta + theta^T S_nu theta``,
  ``E C_up = (||m_mu - m_nu||^2 + tr S_mu + tr S_nu) / d``  (from ``E theta theta^T = I / d``).

The estimator is ``(1/L) sum_l W_l - gamma_hat ((1/L) sum_l C_l - E C)`` with the coefficient estimated from
the same ``L`` directions, the control centred at its closed-form mean ``E C`` (not at its sample mean):

    gamma_hat = sum_l (W_l - mean(W)) (C_l - E C) / sum_l (C_l - E C)^2,

which is how the official code computes it (``LCVSW`` / ``UCVSW`` in github.com/khainb/CV-SW @ faee4a83,
``GradientFlow/utils.py``; the tests compare with numbers produced by that code). Both bounds cost
``O((n + m) d)`` on top of the projections, because ``theta^T S theta`` is the variance of the projected sample,
so no ``d x d`` matrix is formed.

Deviations and notes:

* Only the abstract of the paper could be read here; the estimator follows the official code.
* We return the estimate of ``SW_2^2``; the official functions return its square root.
* Weighted measures and ``n != m`` are supported (the official code: uniform weights, ``n = m``).
* Estimating ``gamma_hat`` from the same directions makes the CV estimator biased by ``O(1/L)``; the tests check
  that this bias is inside Monte Carlo error bars at ``L = 50``.
* ``gamma_hat`` is not detached, so gradients flow through it (as in the official code). A control that equals its
  mean for every direction (e.g. equal means with the lower bound) gives ``gamma_hat = 0``, i.e. plain Monte
  Carlo; the official code adds ``1e-24`` to the denominator instead, with the same result.
* Only 2-D point clouds ``(n, d)`` are accepted (no batch dimension).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(100, 5, generator=g), torch.randn(120, 5, generator=g) + 1.0
    >>> sw = sliced_wasserstein(x, y, n_projections=200, generator=g)
    >>> cv = sliced_wasserstein_cv(x, y, n_projections=200, variant="upper", generator=g)
    >>> bool(abs(sw - cv) < 0.3)
    True
"""

from __future__ import annotations

import torch

from paperzoo.core.accepts import Choice, Generator, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_choice, check_int, check_number, check_tensor

__all__ = [
    "sliced_wasserstein",
    "sliced_wasserstein_cv",
    "projected_wasserstein",
    "random_projections",
]


_X = Tensor("n", "d", degenerate=("coincident",))
_Y = Tensor("m", "d", degenerate=("coincident",))
_A = Tensor("n", positive_mass=True, degenerate=("zero_mass",), optional=True)
_B = Tensor("m", positive_mass=True, degenerate=("zero_mass",), optional=True)


def _example_measures(ctx, n_projections: int = 8) -> dict:
    """Weights and explicit directions of an example call (the generic specs build ``x`` and ``y``)."""
    a = torch.rand(ctx.size("n"), generator=ctx.generator, dtype=ctx.dtype) + 0.1
    b = torch.rand(ctx.size("m"), generator=ctx.generator, dtype=ctx.dtype) + 0.1
    theta = torch.randn(n_projections, ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype)
    return {"a": a / a.sum(), "b": b / b.sum(), "projections": theta / theta.norm(dim=1, keepdim=True)}


@accepts(n_projections=Int(ge=1), dim=Int(ge=1),
         dtype=Choice(torch.float32, torch.float64, torch.float16, torch.bfloat16), generator=Generator(),
         example=lambda ctx: {"n_projections": 4, "dim": 3, "dtype": ctx.dtype})
def random_projections(n_projections: int, dim: int, *, dtype=torch.float32, device=None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n_projections, dim)`` i.i.d. directions uniform on the unit sphere ``S^{dim-1}`` (normalised Gaussians)."""
    n_projections = check_int("n_projections", n_projections, low=1)
    dim = check_int("dim", dim, low=1)
    gen_device = generator.device if generator is not None else device
    theta = torch.randn(n_projections, dim, dtype=dtype, device=gen_device, generator=generator)
    theta = theta / theta.norm(dim=1, keepdim=True)
    return theta.to(device) if device is not None else theta


def _check_weights(name: str, w, n: int, like: torch.Tensor) -> torch.Tensor:
    if w is None:
        return None
    check_tensor(name, w, ndim=1, nonnegative=True)
    if w.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one weight per point), got {tuple(w.shape)}")
    if w.dtype != like.dtype:
        raise TypeError(f"{name} must have the dtype of x ({like.dtype}), got {w.dtype}")
    if w.device != like.device:
        raise ValueError(f"{name} must be on the device of x ({like.device}), got {w.device}")
    total = float(w.sum())
    if total <= 0:
        raise ValueError(f"{name} must have positive total mass, got sum({name})={total!r}")
    return w / w.sum()


def _check_inputs(x, y, a, b, p, projections, n_projections):
    check_tensor("x", x, ndim=2)
    check_tensor("y", y, ndim=2)
    if y.dtype != x.dtype:
        raise TypeError(f"y must have the dtype of x ({x.dtype}), got {y.dtype}")
    if y.device != x.device:
        raise ValueError(f"y must be on the device of x ({x.device}), got {y.device}")
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"y must have {x.shape[1]} columns (the dimension of x), got shape {tuple(y.shape)}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError(f"x and y must have at least one point, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    p = check_number("p", p, low=1.0)
    a = _check_weights("a", a, x.shape[0], x)
    b = _check_weights("b", b, y.shape[0], x)
    if projections is not None:
        check_tensor("projections", projections, ndim=2)
        if projections.shape[1] != x.shape[1]:
            raise ValueError(f"projections must have shape (L, {x.shape[1]}), got {tuple(projections.shape)}")
    elif n_projections is None:
        raise ValueError("n_projections must be given when projections is None")
    else:
        check_int("n_projections", n_projections, low=1)
    return a, b, p


def _quantile_wasserstein(u: torch.Tensor, v: torch.Tensor, a, b, p: float) -> torch.Tensor:
    """``W_p^p`` between 1-D measures in each row: ``u`` (L, n), ``v`` (L, m); returns (L,)."""
    n, m = u.shape[1], v.shape[1]
    if a is None and b is None and n == m:
        # Equal-size uniform case: the monotone coupling pairs the k-th smallest points.
        diff = torch.sort(u, dim=1).values - torch.sort(v, dim=1).values
        return diff.abs().pow(p).mean(dim=1)
    if a is None:
        a = u.new_full((n,), 1.0 / n)
    if b is None:
        b = v.new_full((m,), 1.0 / m)
    # W_p^p = int_0^1 |F^{-1}(t) - G^{-1}(t)|^p dt: both quantile functions are piecewise constant, so the
    # integral is exact on the merged breakpoints of the two CDFs.
    u_sorted, iu = torch.sort(u, dim=1)
    v_sorted, iv = torch.sort(v, dim=1)
    cu = torch.cumsum(a[iu], dim=1)  # (L, n)
    cv = torch.cumsum(b[iv], dim=1)  # (L, m)
    qs, order = torch.sort(torch.cat([cu, cv], dim=1), dim=1, stable=True)  # (L, n + m)
    dt = torch.diff(qs, dim=1, prepend=torch.zeros_like(qs[:, :1]))
    # Each interval takes the quantiles at its right end, F^{-1}(t) = x_(k) with k = #{cdf values < t}. In the
    # stable merge those counts are running counts of each side (a tie puts the u-breakpoint first and gives the
    # later one an interval of length 0), which avoids two binary searches.
    from_u = order < n
    before_u = torch.cumsum(from_u, dim=1)
    position = torch.arange(1, n + m + 1, device=u.device)
    ku = (before_u - from_u.long()).clamp_(max=n - 1)
    kv = (position - before_u - (~from_u).long()).clamp_(max=m - 1)
    qu = torch.gather(u_sorted, 1, ku)
    qv = torch.gather(v_sorted, 1, kv)
    return ((qu - qv).abs().pow(p) * dt).sum(dim=1)


@accepts(x=_X, y=_Y, projections=Tensor("L", "d"), p=Real(ge=1), a=_A, b=_B,
         example=lambda ctx: _example_measures(ctx))
def projected_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: torch.Tensor, *, p: float = 2,
                          a: torch.Tensor | None = None, b: torch.Tensor | None = None) -> torch.Tensor:
    """Per-direction ``W_p^p(theta_l#mu, theta_l#nu)``, shape (L,).

    Args:
        x: (n, d) support of ``mu``.
        y: (m, d) support of ``nu``.
        projections: (L, d) directions (rows; normalised by the caller).
        p: order, >= 1.
        a: (n,) weights of ``x`` or None for uniform (normalised to mass 1).
        b: (m,) weights of ``y`` or None for uniform.
    """
    a, b, p = _check_inputs(x, y, a, b, p, projections, None)
    return _quantile_wasserstein(projections @ x.T, projections @ y.T, a, b, p)


def _directions(x, projections, n_projections, generator):
    if projections is not None:
        return projections
    return random_projections(n_projections, x.shape[1], dtype=x.dtype, device=x.device, generator=generator)


@accepts(x=_X, y=_Y, n_projections=Int(ge=1, optional=True), p=Real(ge=1), a=_A, b=_B, generator=Generator(),
         projections=Tensor("L", "d", optional=True),
         example=lambda ctx: {**_example_measures(ctx), "n_projections": 8})
def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, *, n_projections: int | None = None, p: float = 2,
                       a: torch.Tensor | None = None, b: torch.Tensor | None = None,
                       generator: torch.Generator | None = None,
                       projections: torch.Tensor | None = None) -> torch.Tensor:
    """Monte Carlo estimate of ``SW_p^p(mu, nu)`` (the p-th power; POT returns its p-th root).

    ``(1/L) sum_l W_p^p(theta_l#mu, theta_l#nu)`` with ``theta_l`` uniform on the sphere. Differentiable in
    ``x`` and ``y``.

    Args:
        x: (n, d) support of ``mu``.
        y: (m, d) support of ``nu``, same dtype and device.
        n_projections: number of random directions ``L`` (ignored when ``projections`` is given).
        p: order, >= 1.
        a: (n,) nonnegative weights of ``x`` (normalised), None for uniform.
        b: (m,) nonnegative weights of ``y`` (normalised), None for uniform.
        generator: seeded torch.Generator for the directions.
        projections: (L, d) explicit unit directions (rows), e.g. to match another implementation.

    Returns:
        0-dim tensor, ``SW_p^p``.
    """
    a, b, p = _check_inputs(x, y, a, b, p, projections, n_projections)
    theta = _directions(x, projections, n_projections, generator)
    return _quantile_wasserstein(theta @ x.T, theta @ y.T, a, b, p).mean()


def _moments(z: torch.Tensor, w):
    """Weighted mean (d,) and total variance ``tr S`` of the rows of ``z`` (n, d)."""
    if w is None:
        mean = z.mean(dim=0)
        return mean, (z - mean).pow(2).sum(dim=1).mean()
    mean = w @ z
    return mean, w @ (z - mean).pow(2).sum(dim=1)


def _projected_var(proj: torch.Tensor, w):
    """``theta_l^T S theta_l`` as the weighted variance of the projections ``proj`` (L, n); returns (L,)."""
    if w is None:
        return (proj - proj.mean(dim=1, keepdim=True)).pow(2).mean(dim=1)
    return (proj - (proj @ w)[:, None]).pow(2) @ w


@accepts(x=_X, y=_Y, n_projections=Int(ge=2, optional=True), variant=Choice("lower", "upper"), a=_A, b=_B,
         generator=Generator(), projections=Tensor("L", "d", optional=True),
         example=lambda ctx: {**_example_measures(ctx), "n_projections": 8})
def sliced_wasserstein_cv(x: torch.Tensor, y: torch.Tensor, *, n_projections: int | None = None,
                          variant: str = "lower", a: torch.Tensor | None = None, b: torch.Tensor | None = None,
                          generator: torch.Generator | None = None,
                          projections: torch.Tensor | None = None) -> torch.Tensor:
    """Control-variate Monte Carlo estimate of ``SW_2^2(mu, nu)`` (CV-SW, Nguyen and Ho 2024).

    ``(1/L) sum_l W_l - gamma_hat ((1/L) sum_l C_l - E C)`` with ``W_l = W_2^2(theta_l#mu, theta_l#nu)``,
    ``C = C_low`` (``variant='lower'``: ``(theta^T (m_mu - m_nu))^2``, mean ``||m_mu - m_nu||^2 / d``) or
    ``C = C_up`` (``variant='upper'``: ``C_low + theta^T S_mu theta + theta^T S_nu theta``, mean
    ``(||m_mu - m_nu||^2 + tr S_mu + tr S_nu) / d``) and ``gamma_hat = sum_l (W_l - mean W)(C_l - E C) /
    sum_l (C_l - E C)^2`` (the control centred at its closed-form mean ``E C``, as in the official code).

    Args:
        x: (n, d) support of ``mu``.
        y: (m, d) support of ``nu``, same dtype and device.
        n_projections: number of random directions ``L`` (>= 2 so ``gamma_hat`` is defined).
        variant: ``'lower'`` or ``'upper'`` bound control variate.
        a: (n,) nonnegative weights of ``x`` (normalised), None for uniform.
        b: (m,) nonnegative weights of ``y`` (normalised), None for uniform.
        generator: seeded torch.Generator for the directions.
        projections: (L, d) explicit unit directions (rows).

    Returns:
        0-dim tensor, the CV estimate of ``SW_2^2``.
    """
    a, b, _ = _check_inputs(x, y, a, b, 2, projections, n_projections)
    check_choice("variant", variant, ("lower", "upper"))
    theta = _directions(x, projections, n_projections, generator)
    if theta.shape[0] < 2:  # only an explicit projections can get here: the declaration has n_projections >= 2
        raise ValueError(f"projections must have at least 2 rows (directions) for a control variate, got "
                         f"{theta.shape[0]}")
    w, controls = _cv_parts(x, y, theta, a, b)
    return _cv_combine(w, *controls[variant])


def _cv_parts(x, y, theta, a, b):
    """Per-direction ``W_2^2`` (L,) and, per variant, the control variate (L,) with its closed-form mean."""
    d = x.shape[1]
    px, py = theta @ x.T, theta @ y.T
    w = _quantile_wasserstein(px, py, a, b, 2.0)
    mx, tx = _moments(x, a)
    my, ty = _moments(y, b)
    c_low = ((mx - my) @ theta.T).pow(2)
    e_low = (mx - my).pow(2).sum() / d
    c_up = c_low + _projected_var(px, a) + _projected_var(py, b)
    e_up = e_low + (tx + ty) / d
    return w, {"lower": (c_low, e_low), "upper": (c_up, e_up)}


def _cv_combine(w, c, expected):
    """``mean(W) - gamma_hat (mean(C) - E C)``, ``gamma_hat = sum (W - mean W)(C - E C) / sum (C - E C)^2``.

    ``C`` is centred at its closed-form mean ``expected`` in both sums, as in the official code.
    """
    dc = c - expected
    ss_c = dc.pow(2).sum()
    # ss_c = 0 means C_l = E C for every direction: the correction term is zero whatever gamma is, so gamma = 0.
    tiny = torch.finfo(w.dtype).tiny
    gamma = torch.where(ss_c > tiny, ((w - w.mean()) * dc).sum() / ss_c.clamp_min(tiny), torch.zeros_like(ss_c))
    return w.mean() - gamma * dc.mean()
