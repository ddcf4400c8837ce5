"""GFM and GFM+: gradient-free methods for nonsmooth nonconvex stochastic problems, from function values only.

References: Faster Gradient-Free Algorithms for Nonsmooth Nonconvex Stochastic Optimization (Chen, Xu, Luo), 2023.

Both methods minimise :math:`f(x) = \\mathbb{E}_\\xi[F(x;\\xi)]` through its uniform smoothing
:math:`f_\\delta(x) = \\mathbb{E}_{u \\sim \\mathrm{Unif}(B)}[f(x + \\delta u)]`, whose gradient lies in the
:math:`\\delta`-Goldstein subdifferential of :math:`f`; a point with :math:`\\|\\nabla f_\\delta(x)\\| \\le
\\epsilon` is therefore :math:`(\\delta, \\epsilon)`-Goldstein stationary. The gradient of :math:`f_\\delta` is
estimated from two function values,

.. math::
    g(x; w, \\xi) = \\frac{d}{2\\delta}\\,\\bigl(F(x + \\delta w; \\xi) - F(x - \\delta w; \\xi)\\bigr)\\, w,
    \\qquad w \\sim \\mathrm{Unif}(S^{d-1}),

an unbiased estimate of :math:`\\nabla f_\\delta(x)`. GFM (Lin, Zheng and Jordan, 2022, the paper's baseline)
steps along mini-batch averages of it; GFM+ (the paper's Algorithm) replaces them by a SPIDER-style recursive
estimator that reuses the same :math:`(w, \\xi)` at two consecutive iterates, which is what improves the
zeroth-order complexity from :math:`O(d^{3/2}\\epsilon^{-4})` to :math:`O(d^{3/2}\\epsilon^{-3})` calls.

The stochastic oracle is a pair of callables: ``F(x, xi)`` evaluates the component functions at a batch of
points ``x`` of shape ``(m, d)`` with one sample each (``xi``, first dimension ``m``) and returns shape ``(m,)``;
``sample(m, generator)`` draws ``m`` samples as a tensor (so that batches can be concatenated).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Function, Generator, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_int, check_nonnegative, check_positive, check_tensor

__all__ = ["ZerothOrderResult", "uniform_sphere", "two_point_estimate", "smoothed_gradient", "solve_gfm",
           "solve_gfm_plus"]

Oracle = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Sampler = Callable[[int, torch.Generator], torch.Tensor]


class ZerothOrderResult(NamedTuple):
    """Result of :func:`solve_gfm` and :func:`solve_gfm_plus`.

    Attributes:
        x: the last iterate, shape ``(d,)``.
        x_out: the paper's output, an iterate drawn uniformly from :math:`x_0, \\dots, x_{T-1}`, shape ``(d,)``.
        n_iter: iterations run.
        n_evals: function evaluations used (each component evaluation at one point counts once).
        converged: whether the estimator norm met ``tol`` (always ``False`` with ``tol=0``).
        estimate_norm: :math:`\\|v_t\\|` of the gradient estimate used at every iteration, shape ``(n_iter,)``.
        trace: iterates :math:`x_0, x_k, x_{2k}, \\dots` for ``record_every=k``, shape ``(n_records, d)``
            (empty without ``record_every``).
        trace_evals: function evaluations spent before each recorded iterate, shape ``(n_records,)``.
    """

    x: torch.Tensor
    x_out: torch.Tensor
    n_iter: int
    n_evals: int
    converged: bool
    estimate_norm: torch.Tensor
    trace: torch.Tensor
    trace_evals: torch.Tensor


def _example_oracle(ctx) -> dict:
    # f(x) = E|x - xi|_1 with xi ~ N(0, 1)
    return {"F": lambda x, xi: (x - xi[:, None]).abs().sum(1),
            "sample": lambda m, g: torch.randn(m, generator=g, dtype=ctx.dtype)}


@accepts(n=Int(ge=1), d=Int(ge=1), generator=Generator(), dtype=Choice(torch.float64, torch.float32),
         example=lambda ctx: {"n": 4, "d": 3})
def uniform_sphere(n: int, d: int, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` directions drawn uniformly from the unit sphere :math:`S^{d-1}`, shape ``(n, d)``."""
    w = torch.randn(n, d, generator=generator, dtype=dtype)
    return w / torch.linalg.vector_norm(w, dim=1, keepdim=True)


def _example_two_point(ctx) -> dict:
    m, d = ctx.size("m"), ctx.size("d")
    w = torch.randn(m, d, generator=ctx.generator, dtype=ctx.dtype)
    return {"F": _example_oracle(ctx)["F"], "w": w / w.norm(dim=1, keepdim=True),
            "xi": torch.randn(m, generator=ctx.generator, dtype=ctx.dtype), "delta": 0.1}


@accepts(F=Function(), x=Tensor("m", "d"), w=Tensor("m", "d"), xi=Tensor(ndims=tuple(range(1, 9)), dtype="any"),
         delta=Real(gt=0), example=_example_two_point)
def two_point_estimate(F: Oracle, x: torch.Tensor, w: torch.Tensor, xi: torch.Tensor, delta: float) -> torch.Tensor:
    """The two-point estimates :math:`g(x_i; w_i, \\xi_i)`, one per row.

    Args:
        F: the oracle (see the module docstring).
        x: points, shape ``(m, d)``.
        w: unit directions, shape ``(m, d)``.
        xi: samples, first dimension ``m``.
        delta: smoothing radius :math:`\\delta > 0`.

    Returns:
        Shape ``(m, d)``.
    """
    m, d = x.shape
    if xi.dim() == 0 or xi.shape[0] != m:
        raise ValueError(f"xi must have m = {m} rows (one sample per point of x), got shape {tuple(xi.shape)}")
    values = F(torch.cat([x + delta * w, x - delta * w]), torch.cat([xi, xi]))
    if values.shape != (2 * m,):
        raise ValueError(f"F must return shape ({2 * m},) for {2 * m} points, got {tuple(values.shape)}")
    return (d / (2 * delta)) * (values[:m] - values[m:]).unsqueeze(1) * w


@accepts(F=Function(), sample=Function(), x=Tensor("d"), delta=Real(gt=0), n_samples=Int(ge=1), generator=Generator(),
         chunk=Int(ge=1), example=lambda ctx: {**_example_oracle(ctx), "delta": 0.1, "n_samples": 64, "chunk": 16})
def smoothed_gradient(F: Oracle, sample: Sampler, x: torch.Tensor, delta: float, *, n_samples: int = 10_000,
                      generator: torch.Generator | None = None, chunk: int = 4096) -> torch.Tensor:
    """Monte-Carlo estimate of :math:`\\nabla f_\\delta(x)` from ``n_samples`` two-point estimates, shape ``(d,)``.

    Its error has standard deviation about :math:`\\sqrt{d}\\,L/\\sqrt{n}` for an :math:`L`-Lipschitz :math:`F`;
    a measurement, not a step of either method.
    """
    check_tensor("x", x, ndim=1)
    delta = check_positive("delta", delta)
    n_samples = check_int("n_samples", n_samples, low=1)
    total = torch.zeros_like(x)
    done = 0
    while done < n_samples:
        m = min(chunk, n_samples - done)
        w = uniform_sphere(m, x.numel(), generator=generator, dtype=x.dtype)
        total += two_point_estimate(F, x.expand(m, -1), w, sample(m, generator), delta).sum(0)
        done += m
    return total / n_samples


def _check_common(x0, delta, lr, max_iter, max_evals, tol, record_every):
    check_tensor("x0", x0, ndim=1)
    max_evals = None if max_evals is None else check_int("max_evals", max_evals, low=1)
    return (check_positive("delta", delta), check_positive("lr", lr), check_int("max_iter", max_iter, low=1),
            max_evals, check_nonnegative("tol", tol), check_int("record_every", record_every, low=0))


def _finish(name, x, iterates_seen, n_iter, n_evals, converged, norms, trace, trace_evals, tol, knob, generator):
    if not norms:
        raise ValueError("max_evals must allow at least one iteration")
    if tol > 0 and not converged:
        warnings.warn(f"{name} did not reach an estimator norm <= tol={tol} in {n_iter} iterations; {knob}",
                      RuntimeWarning, stacklevel=3)
    x_out = iterates_seen.item
    trace_t = torch.stack(trace) if trace else x.new_zeros(0, x.numel())
    return ZerothOrderResult(x, x_out, n_iter, n_evals, converged, torch.stack(norms),
                             trace_t, torch.tensor(trace_evals, dtype=torch.int64))


class _Reservoir:
    """Keeps one uniformly drawn element of a stream (the paper's uniformly random output) in O(d) memory."""

    def __init__(self, generator):
        self.generator, self.count, self.item = generator, 0, None

    def add(self, x):
        self.count += 1
        if float(torch.rand(1, generator=self.generator, dtype=torch.float64)) * self.count < 1.0:
            self.item = x


def _check_finite(name, x, t):
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"{name} produced NaN or inf at iteration {t}; decrease lr")


@accepts(F=Function(), x0=Tensor("d"), sample=Function(), delta=Real(gt=0), lr=Real(gt=0), batch_size=Int(ge=1),
         max_iter=Int(ge=1), max_evals=Int(ge=1, optional=True), tol=Real(ge=0), record_every=Int(ge=0),
         generator=Generator(),
         example=lambda ctx: {**_example_oracle(ctx), "delta": 0.1, "lr": 0.02, "max_iter": 20, "record_every": 5})
def solve_gfm(F: Oracle, x0: torch.Tensor, *, sample: Sampler, delta: float, lr: float, batch_size: int = 1,
              max_iter: int = 1000, max_evals: int | None = None, tol: float = 0.0, record_every: int = 0,
              generator: torch.Generator | None = None) -> ZerothOrderResult:
    """GFM: stochastic gradient descent on :math:`f_\\delta` with mini-batched two-point estimates.

    References: Faster Gradient-Free Algorithms for Nonsmooth Nonconvex Stochastic Optimization (Chen, Xu, Luo),
    2023 (the baseline, from Lin, Zheng and Jordan, Gradient-Free Methods for Deterministic and Stochastic
    Nonsmooth Nonconvex Optimization, 2022).

    .. math::
        x_{t+1} = x_t - \\eta\\, \\frac1b \\sum_{i=1}^b g(x_t; w_{t,i}, \\xi_{t,i})

    Symbols: :math:`\\delta` = ``delta``, :math:`\\eta` = ``lr``, :math:`b` = ``batch_size`` (GFM's analysis uses
    :math:`b = 1`). Costs :math:`2b` function evaluations per iteration.

    Args:
        F, sample: the stochastic oracle (module docstring).
        x0: start, shape ``(d,)``.
        delta: smoothing radius :math:`\\delta > 0`.
        lr: step size :math:`\\eta > 0`.
        batch_size: :math:`b \\ge 1`.
        max_iter: iterations :math:`T`.
        max_evals: also stop before an iteration that would exceed this many function evaluations.
        tol: stop when the mini-batch estimate's norm is ``<= tol`` (a noisy test unless ``batch_size`` is
            large); ``0`` runs all iterations without a test or warning.
        record_every: keep every ``k``-th iterate in ``trace`` (``0``: none).
        generator: drives directions, samples and the random output.

    Example:
        >>> F = lambda x, xi: (x - xi[:, None]).abs().sum(1)  # f(x) = E|x - xi|_1, xi ~ N(0, 1)
        >>> sample = lambda m, g: torch.randn(m, generator=g, dtype=torch.float64)
        >>> res = solve_gfm(F, torch.full((3,), 2.0, dtype=torch.float64), sample=sample, delta=0.1, lr=0.02,
        ...                 max_iter=500, generator=torch.Generator().manual_seed(0))
        >>> bool(res.x.abs().max() < 0.5), res.n_evals
        (True, 1000)
    """
    delta, lr, max_iter, max_evals, tol, record_every = _check_common(x0, delta, lr, max_iter, max_evals, tol,
                                                                      record_every)
    batch_size = check_int("batch_size", batch_size, low=1)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    d = x0.numel()
    x = x0.clone()
    seen, norms, trace, trace_evals = _Reservoir(generator), [], [], []
    n_evals, converged, n_iter = 0, False, 0
    for t in range(max_iter):
        if max_evals is not None and n_evals + 2 * batch_size > max_evals:
            break
        if record_every and t % record_every == 0:
            trace.append(x.clone())
            trace_evals.append(n_evals)
        seen.add(x)
        n_iter = t + 1
        w = uniform_sphere(batch_size, d, generator=generator, dtype=x.dtype)
        v = two_point_estimate(F, x.expand(batch_size, -1), w, sample(batch_size, generator), delta).mean(0)
        n_evals += 2 * batch_size
        norms.append(torch.linalg.vector_norm(v))
        if tol > 0 and float(norms[-1]) <= tol:
            converged = True
            break
        x = x - lr * v
        _check_finite("solve_gfm", x, t)
    return _finish("solve_gfm", x, seen, n_iter, n_evals, converged, norms, trace, trace_evals, tol,
                   "increase max_iter or batch_size, or tune lr", generator)


@accepts(F=Function(), x0=Tensor("d"), sample=Function(), delta=Real(gt=0), lr=Real(gt=0), big_batch=Int(ge=1),
         batch_size=Int(ge=1), period=Int(ge=1), max_iter=Int(ge=1), max_evals=Int(ge=1, optional=True),
         tol=Real(ge=0), record_every=Int(ge=0), generator=Generator(),
         example=lambda ctx: {**_example_oracle(ctx), "delta": 0.1, "lr": 0.02, "big_batch": 8, "batch_size": 2,
                              "period": 3, "max_iter": 20, "record_every": 5})
def solve_gfm_plus(F: Oracle, x0: torch.Tensor, *, sample: Sampler, delta: float, lr: float, big_batch: int,
                   batch_size: int, period: int, max_iter: int = 1000, max_evals: int | None = None,
                   tol: float = 0.0, record_every: int = 0,
                   generator: torch.Generator | None = None) -> ZerothOrderResult:
    """GFM+: gradient-free descent with a recursive (SPIDER-style) variance-reduced estimate of
    :math:`\\nabla f_\\delta`.

    References: Faster Gradient-Free Algorithms for Nonsmooth Nonconvex Stochastic Optimization (Chen, Xu, Luo),
    2023 (Algorithm 2, GFM+).

    .. math::
        v_t = \\begin{cases}
            \\frac{1}{b'} \\sum_{i=1}^{b'} g(x_t; w_i, \\xi_i) & t \\bmod m = 0 \\\\
            v_{t-1} + \\frac1b \\sum_{i=1}^{b} \\bigl(g(x_t; w_i, \\xi_i) - g(x_{t-1}; w_i, \\xi_i)\\bigr)
                & \\text{otherwise}
        \\end{cases}, \\qquad x_{t+1} = x_t - \\eta v_t

    with fresh :math:`(w_i, \\xi_i)` every iteration, shared by the two points of a difference. The paper's
    output is an iterate drawn uniformly at random (``x_out``); its theorem takes :math:`b` and :math:`m` of the
    order of :math:`\\sqrt{b'}`. Costs :math:`2b'` evaluations at a refresh and :math:`4b` otherwise.

    Symbols: :math:`\\delta` = ``delta``, :math:`\\eta` = ``lr``, :math:`b'` = ``big_batch``, :math:`b` =
    ``batch_size``, :math:`m` = ``period``.

    Args:
        F, sample: the stochastic oracle (module docstring).
        x0: start, shape ``(d,)``.
        delta: smoothing radius :math:`\\delta > 0`.
        lr: step size :math:`\\eta > 0`.
        big_batch: :math:`b' \\ge 1`, samples at a refresh.
        batch_size: :math:`b \\ge 1`, samples per recursive correction.
        period: :math:`m \\ge 1`, iterations between refreshes.
        max_iter: iterations :math:`T`.
        max_evals: also stop before an iteration that would exceed this many function evaluations.
        tol: stop when a refresh estimate has norm ``<= tol``; ``0`` runs all iterations without a test or warning.
        record_every: keep every ``k``-th iterate in ``trace`` (``0``: none).
        generator: drives directions, samples and the random output.

    Example:
        >>> F = lambda x, xi: (x - xi[:, None]).abs().sum(1)
        >>> sample = lambda m, g: torch.randn(m, generator=g, dtype=torch.float64)
        >>> res = solve_gfm_plus(F, torch.full((3,), 2.0, dtype=torch.float64), sample=sample, delta=0.1,
        ...                      lr=0.05, big_batch=16, batch_size=4, period=4, max_iter=200,
        ...                      generator=torch.Generator().manual_seed(0))
        >>> bool(res.x.abs().max() < 0.5)
        True
    """
    delta, lr, max_iter, max_evals, tol, record_every = _check_common(x0, delta, lr, max_iter, max_evals, tol,
                                                                      record_every)
    big_batch = check_int("big_batch", big_batch, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    period = check_int("period", period, low=1)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    d = x0.numel()
    x, x_prev, v = x0.clone(), None, None
    seen, norms, trace, trace_evals = _Reservoir(generator), [], [], []
    n_evals, converged, n_iter = 0, False, 0
    for t in range(max_iter):
        if max_evals is not None and n_evals + (2 * big_batch if t % period == 0 else 4 * batch_size) > max_evals:
            break
        if record_every and t % record_every == 0:
            trace.append(x.clone())
            trace_evals.append(n_evals)
        seen.add(x)
        n_iter = t + 1
        if t % period == 0:
            w = uniform_sphere(big_batch, d, generator=generator, dtype=x.dtype)
            v = two_point_estimate(F, x.expand(big_batch, -1), w, sample(big_batch, generator), delta).mean(0)
            n_evals += 2 * big_batch
            norms.append(torch.linalg.vector_norm(v))
            if tol > 0 and float(norms[-1]) <= tol:
                converged = True
                break
        else:
            w = uniform_sphere(batch_size, d, generator=generator, dtype=x.dtype)
            xi = sample(batch_size, generator)
            # One oracle call for both points: the same (w, xi) at x_t and x_{t-1} is what cancels the noise.
            both = two_point_estimate(F, torch.cat([x.expand(batch_size, -1), x_prev.expand(batch_size, -1)]),
                                      torch.cat([w, w]), torch.cat([xi, xi]), delta)
            v = v + (both[:batch_size] - both[batch_size:]).mean(0)
            n_evals += 4 * batch_size
            norms.append(torch.linalg.vector_norm(v))
        x_prev, x = x, x - lr * v
        _check_finite("solve_gfm_plus", x, t)
    return _finish("solve_gfm_plus", x, seen, n_iter, n_evals, converged, norms, trace, trace_evals, tol,
                   "increase max_iter or big_batch, or tune lr", generator)
