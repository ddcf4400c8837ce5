"""sinkhorn_log against POT, its invariants, zero-mass bins, warnings, NaN, and the shared input checks."""

import doctest

import numpy as np
import ot
import pytest
import torch

import paperzoo.transport.sinkhorn as sinkhorn_module
from paperzoo.data.point_clouds import random_point_clouds
from paperzoo.transport import (
    ConvergenceWarning,
    OTResult,
    marginal_error,
    plan_from_potentials,
    sinkhorn_log,
    sinkhorn_newton_sparse,
)

SOLVERS = [sinkhorn_log, sinkhorn_newton_sparse]


@pytest.fixture(autouse=True)
def _one_thread():
    """Run on one thread: on a shared 2-core machine torch's thread pool makes these small kernels 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def problem(n=40, m=30, uniform=True, seed=0, dtype=torch.float64):
    return random_point_clouds(n, m, uniform=uniform, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def pot_plan(a, b, M, reg):
    return torch.from_numpy(ot.sinkhorn(a.numpy(), b.numpy(), M.numpy(), reg, method="sinkhorn_log",
                                        numItermax=100_000, stopThr=1e-15))


@pytest.mark.parametrize("uniform", [True, False])
def test_plan_matches_pot(uniform):
    p = problem(uniform=uniform)
    res = sinkhorn_log(p.a, p.b, p.M, 0.05, tol=1e-12)
    assert isinstance(res, OTResult) and res.converged
    assert torch.allclose(res.plan, pot_plan(p.a, p.b, p.M, 0.05), atol=1e-7, rtol=0)


def test_invariants_potentials_error_cost_history():
    p = problem(uniform=False, seed=3)
    reg, tol = 0.02, 1e-10
    res = sinkhorn_log(p.a, p.b, p.M, reg, tol=tol, check_every=1)
    assert res.plan.shape == (40, 30) and res.f.shape == (40,) and res.g.shape == (30,)
    assert torch.allclose(plan_from_potentials(res.f, res.g, p.M, reg), res.plan, rtol=1e-12, atol=0)
    assert res.marginal_error == pytest.approx(marginal_error(res.plan, p.a, p.b), rel=1e-9, abs=1e-18)
    assert res.marginal_error <= tol
    assert float(res.cost) == pytest.approx(float((res.plan * p.M).sum()), rel=1e-12)
    assert (res.n_sinkhorn, res.n_newton, res.n_cg) == (res.n_iter, 0, 0)
    assert int(res.history_iter[-1]) == res.n_iter and res.error_history[-1] <= tol
    assert bool((res.history_iter.diff() > 0).all())


def test_zero_mass_bins():
    p = problem(n=12, m=10, uniform=False, seed=1)
    a, b = p.a.clone(), p.b.clone()
    a[[0, 5]] = 0
    b[3] = 0
    a, b = a / a.sum(), b / b.sum()
    for solver in SOLVERS:
        res = solver(a, b, p.M, 0.01)
        assert res.converged and bool(torch.isfinite(res.plan).all())
        assert bool((res.plan[[0, 5]] == 0).all()) and bool((res.plan[:, 3] == 0).all())
        assert bool(torch.isneginf(res.f[[0, 5]]).all()) and bool(torch.isneginf(res.g[3]))
        assert torch.allclose(plan_from_potentials(res.f, res.g, p.M, 0.01), res.plan, rtol=1e-10, atol=0)
        keep_a, keep_b = a > 0, b > 0
        ref = pot_plan(a[keep_a], b[keep_b], p.M[keep_a][:, keep_b], 0.01)
        assert torch.allclose(res.plan[keep_a][:, keep_b], ref, atol=1e-7, rtol=0)


def test_nonconvergence_warns():
    p = problem()
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        res = sinkhorn_log(p.a, p.b, p.M, 0.005, max_iter=3)
    assert not res.converged and res.n_iter == 3 and res.marginal_error > 1e-9


@pytest.mark.parametrize("solver", SOLVERS)
def test_nan_is_detected(solver):
    a = b = torch.full((4,), 0.25, dtype=torch.float64)
    M = torch.full((4, 4), 1e300, dtype=torch.float64)  # (g - M) / reg overflows to -inf, then inf - inf
    with pytest.raises(FloatingPointError, match="NaN"):
        solver(a, b, M, 1e-300)


@pytest.mark.parametrize("solver", SOLVERS)
def test_float32_smoke(solver):
    p64 = problem(n=30, m=30, uniform=False, seed=2)
    M64 = torch.rand(30, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(2))  # random costs
    p32, M32 = problem(n=30, m=30, uniform=False, seed=2, dtype=torch.float32), M64.float()
    res = solver(p32.a, p32.b, M32, 0.01, tol=1e-5)
    ref = sinkhorn_log(p64.a, p64.b, M64, 0.01, tol=1e-12)
    assert res.plan.dtype == torch.float32 and res.f.dtype == torch.float32 and res.converged
    assert torch.allclose(res.plan.double(), ref.plan, atol=1e-5, rtol=0)


def _inputs():
    a = torch.full((3,), 1 / 3, dtype=torch.float64)
    b = torch.full((4,), 1 / 4, dtype=torch.float64)
    return a, b, torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def _bad(**over):
    a, b, M = _inputs()
    args = dict(a=a, b=b, M=M, reg=0.1)
    args.update(over)
    return args


BAD = [
    (_bad(a=torch.tensor([0.5, 0.7, -0.2], dtype=torch.float64)), ValueError, r"a must be >= 0 entrywise"),
    (_bad(b=torch.tensor([0.5, 0.5, 0.5, -0.5], dtype=torch.float64)), ValueError, r"b must be >= 0 entrywise"),
    (_bad(b=torch.full((4,), 0.5, dtype=torch.float64)), ValueError,
     r"b must have the same total mass as a \(relative tolerance mass_rtol=1e-06\), got sum\(a\)=1\.0, sum\(b\)=2\.0"),
    (_bad(a=torch.zeros(3, dtype=torch.float64)), ValueError, r"a must have positive total mass, got sum\(a\)=0\.0"),
    (_bad(M=torch.tensor([[0.0, 1, 2, float("nan")]] * 3, dtype=torch.float64)), ValueError,
     r"M must be finite, got tensor of shape \(3, 4\) with NaN or inf entries"),
    (_bad(M=torch.tensor([[0.0, 1, 2, float("inf")]] * 3, dtype=torch.float64)), ValueError, r"M must be finite"),
    (_bad(a=torch.tensor([0.5, float("nan"), 0.5], dtype=torch.float64)), ValueError, r"a must be finite"),
    (_bad(M=torch.zeros(3, 5, dtype=torch.float64)), ValueError,
     r"M must have shape \(3, 4\) \(len\(a\), len\(b\)\), got \(3, 5\)|"
     r"M must have m = 4 \(from b\) in its shape \((\.\.\., )?n, m\), got shape \(3, 5\)"),
    (_bad(M=torch.zeros(12, dtype=torch.float64)), ValueError,
     r"M must have (2|2 or 3) dimension\(s\)( \((\.\.\., )?n, m\))?, got shape \(12,\)"),
    # sinkhorn_log takes batches (a (B, n)); sinkhorn_newton_sparse does not
    (_bad(a=torch.full((2, 3, 1), 1 / 3, dtype=torch.float64)), ValueError, r"a must have 1( or 2)? dimension\(s\)"),
    (_bad(a=torch.full((3, 1), 1 / 3, dtype=torch.float64)), ValueError,
     r"M must have shape \(\.\.\., len\(a\), len\(b\)\)|a must have 1 dimension\(s\)|M must have n = 1 \(from a\)"),
    (_bad(reg=0.0), ValueError, r"reg must be > 0\.0, got 0\.0"),
    (_bad(reg=-1.0), ValueError, r"reg must be > 0\.0, got -1\.0"),
    (_bad(reg=float("nan")), ValueError, r"reg must be finite"),
    (_bad(reg="0.1"), TypeError, r"reg must be a real number, got str"),
    (_bad(a=[1 / 3, 1 / 3, 1 / 3]), TypeError, r"a must be a torch\.Tensor, got list"),
    (_bad(M=np.zeros((3, 4))), TypeError, r"M must be a torch\.Tensor, got ndarray"),
    (_bad(b=torch.ones(4, dtype=torch.int64)), TypeError, r"b must have a floating dtype, got torch\.int64"),
    (_bad(b=torch.full((4,), 0.25, dtype=torch.float32)), TypeError,
     r"b must have the dtype of a \(torch\.float64\), got torch\.float32"),
]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("args, exc, match", BAD)
def test_bad_inputs_raise(solver, args, exc, match):
    with pytest.raises(exc, match=match):
        solver(args["a"], args["b"], args["M"], args["reg"])


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(max_iter=0), ValueError, r"max_iter must be >= 1, got 0"),
    (dict(max_iter=1.5), TypeError, r"max_iter must be an integer, got float"),
    (dict(tol=-1e-9), ValueError, r"tol must be >= 0\.0, got -1e-09"),
    (dict(check_every=0), ValueError, r"check_every must be >= 1, got 0"),
    (dict(mass_rtol=-1.0), ValueError, r"mass_rtol must be >= 0\.0"),
])
def test_bad_options_raise(kwargs, exc, match):
    a, b, M = _inputs()
    with pytest.raises(exc, match=match):
        sinkhorn_log(a, b, M, 0.1, **kwargs)


def test_docstring_examples_run():
    for fn in (sinkhorn_log,):
        doctest.run_docstring_examples(fn, {}, name=fn.__name__, optionflags=doctest.ELLIPSIS)
    failures, _ = doctest.testmod(sinkhorn_module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
