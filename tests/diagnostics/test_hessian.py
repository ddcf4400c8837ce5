"""Hessian diagnostics against dense eigendecompositions of small problems."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.hessian import (class_wise_hessian_extremes, hvp_operator, lanczos, top_eigenvalue)


def _sym(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (M + M.T) / 2


def test_lanczos_extremes_and_full_spectrum():
    A = _sym(40)
    evals = torch.linalg.eigvalsh(A)
    full = lanczos(lambda v: A @ v, 40, 40, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(full.eigenvalues, evals, rtol=1e-8, atol=1e-8)
    assert float(full.weights.sum()) == pytest.approx(1.0)
    part = lanczos(lambda v: A @ v, 40, 25, generator=torch.Generator().manual_seed(1))
    assert float(part.eigenvalues[0]) == pytest.approx(float(evals[0]), rel=1e-3)
    assert float(part.eigenvalues[-1]) == pytest.approx(float(evals[-1]), rel=1e-3)


def test_top_eigenvalue_power_iteration():
    A = torch.diag(torch.tensor([5.0, 1.0, -2.0, 0.5], dtype=torch.float64))
    res = top_eigenvalue(lambda v: A @ v, 4, max_iter=500, tol=1e-12, generator=torch.Generator().manual_seed(0))
    assert res.converged and res.eigenvalue == pytest.approx(5.0, rel=1e-8)
    with pytest.warns(RuntimeWarning, match="raise max_iter"):
        top_eigenvalue(lambda v: A @ v, 4, max_iter=2, tol=0.0, generator=torch.Generator().manual_seed(0))


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()


def _dense_hessian(model, loss_fn):
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])

    def f(flat):
        chunks = torch.split(flat, sizes)
        out = torch.func.functional_call(model, {n: c.view(s) for (n, _), c, s in
                                                 zip(model.named_parameters(), chunks, shapes)}, ())
        return out

    return torch.autograd.functional.hessian(lambda flat: loss_fn(flat, f), flat0)


def test_hvp_and_class_wise_extremes_match_dense_hessian():
    model = _model()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(30, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (30,), generator=g)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    sizes = [p.numel() for p in params]
    names = [name for name, _ in model.named_parameters()]
    for c in (0, 2):
        xc, yc = x[y == c], y[y == c]

        def loss_flat(flat):
            chunks = torch.split(flat, sizes)
            state = {nm: ch.view(p.shape) for nm, ch, p in zip(names, chunks, params)}
            return F.cross_entropy(torch.func.functional_call(model, state, (xc,)), yc)

        flat0 = torch.cat([p.detach().reshape(-1) for p in params])
        H = torch.autograd.functional.hessian(loss_flat, flat0)
        matvec, dim = hvp_operator(lambda: F.cross_entropy(model(xc), yc), params)
        assert dim == n
        v = torch.randn(n, generator=g, dtype=torch.float64)
        torch.testing.assert_close(matvec(v), H @ v, rtol=1e-9, atol=1e-10)
        evals = torch.linalg.eigvalsh(H)
        ext = class_wise_hessian_extremes(model, F.cross_entropy, x, y, [c], num_iters=n,
                                          generator=torch.Generator().manual_seed(0))
        assert ext[c][0] == pytest.approx(float(evals[-1]), rel=1e-6, abs=1e-9)
        assert ext[c][1] == pytest.approx(float(evals[0]), rel=1e-6, abs=1e-9)


def test_hessian_errors():
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        lanczos(lambda v: v, 0)
    with pytest.raises(ValueError, match="params must contain at least one tensor"):
        hvp_operator(lambda: torch.tensor(0.0), [])
    model = _model()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="classes must be present in y, got class 2"):
        class_wise_hessian_extremes(model, F.cross_entropy, x, y, [2])
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        class_wise_hessian_extremes(model, F.cross_entropy, x, y[:3])


def test_matvec_output_errors_name_matvec():
    for fn in (lanczos, top_eigenvalue):
        with pytest.raises(ValueError, match=r"matvec must return a tensor of the shape of its input \(4,\), "
                                             r"got \(4, 1\)"):
            fn(lambda v: v.unsqueeze(-1), 4)
        with pytest.raises(ValueError, match="matvec must return finite values, got NaN or inf entries at step"):
            fn(lambda v: v * float("nan"), 4)
        with pytest.raises(TypeError, match="matvec must return a torch.Tensor, got list"):
            fn(lambda v: v.tolist(), 4)
        with pytest.raises(TypeError, match="dtype must be a floating dtype, got torch.int64"):
            fn(lambda v: v, 4, dtype=torch.int64)
        with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64, got torch.float16"):
            fn(lambda v: v, 4, dtype=torch.float16)
        with pytest.raises(TypeError, match="matvec must be callable"):
            fn(None, 4)
    with pytest.raises(ValueError, match="device must be a torch.device or a device string"):
        lanczos(lambda v: v, 4, device="not-a-device")
    with pytest.raises(ValueError, match="breakdown_tol must be >= 0.0"):
        lanczos(lambda v: v, 4, breakdown_tol=-1.0)


def test_lanczos_and_power_at_float32():
    A = torch.diag(torch.tensor([-2.0, 0.5, 1.0, 3.0]))
    res = lanczos(lambda v: A @ v, 4, 4, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    assert res.eigenvalues.dtype == torch.float32
    torch.testing.assert_close(res.eigenvalues, torch.tensor([-2.0, 0.5, 1.0, 3.0]), rtol=1e-4, atol=1e-4)
    top = top_eigenvalue(lambda v: A @ v, 4, max_iter=500, tol=1e-7, dtype=torch.float32,
                         generator=torch.Generator().manual_seed(0))
    assert top.vector.dtype == torch.float32 and top.eigenvalue == pytest.approx(3.0, rel=1e-4)


def test_hvp_operator_errors():
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="loss_fn must return a scalar tensor, got shape \\(3,\\)"):
        hvp_operator(lambda: w ** 2, [w])
    with pytest.raises(ValueError, match="loss_fn must return a scalar tensor, got float"):
        hvp_operator(lambda: 1.0, [w])
    with pytest.raises(ValueError, match="loss_fn must return a finite loss, got nan"):
        hvp_operator(lambda: (w * float("nan")).sum(), [w])
    with pytest.raises(ValueError, match="loss_fn must return a loss computed from params, got a tensor"):
        hvp_operator(lambda: w.detach().sum(), [w])
    copy = w.detach().clone().requires_grad_(True)
    with pytest.raises(ValueError, match="loss_fn must return a loss computed from params, got one that uses none"):
        hvp_operator(lambda: (w ** 3).sum(), [copy])
    with pytest.raises(ValueError, match=r"params\[0\] must require grad"):
        hvp_operator(lambda: (w ** 3).sum(), [w.detach()])
    with pytest.raises(ValueError, match=r"params\[0\] must be finite"):
        hvp_operator(lambda: (w ** 3).sum(), [torch.full((3,), float("nan"), requires_grad=True)])
    matvec, n = hvp_operator(lambda: (w ** 3).sum(), [w])
    with pytest.raises(ValueError, match=r"v must be a tensor of shape \(3,\)"):
        matvec(torch.ones(4, dtype=torch.float64))
    # A parameter the loss does not use has zero rows; a loss linear in params has a zero Hessian.
    u = torch.ones(2, dtype=torch.float64, requires_grad=True)
    matvec, n = hvp_operator(lambda: (w ** 3).sum(), [w, u])
    assert n == 5 and matvec(torch.ones(5, dtype=torch.float64)).tolist() == [6.0] * 3 + [0.0] * 2
    matvec, _ = hvp_operator(lambda: (2 * w).sum(), [w])
    assert matvec(torch.ones(3, dtype=torch.float64)).tolist() == [0.0] * 3


def test_class_wise_errors():
    model = _model()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 0, 1, 1])
    with pytest.raises(TypeError, match=r"x must have the dtype of the model's parameters \(torch.float64\)"):
        class_wise_hessian_extremes(model, F.cross_entropy, x.float(), y)
    with pytest.raises(TypeError, match="y must have an integer dtype"):
        class_wise_hessian_extremes(model, F.cross_entropy, x, y.double())
    with pytest.raises(ValueError, match="y must have entries >= 0"):
        class_wise_hessian_extremes(model, F.cross_entropy, x, torch.tensor([0, 0, 1, -1]))
    with pytest.raises(ValueError, match=r"classes\[0\] must be >= 0"):
        class_wise_hessian_extremes(model, F.cross_entropy, x, y, [-1])
    with pytest.raises(ValueError, match="x must be finite"):
        class_wise_hessian_extremes(model, F.cross_entropy, torch.full_like(x, float("nan")), y)
    with pytest.raises(ValueError, match="model must have finite parameters"):
        broken = _model()
        with torch.no_grad():
            broken[0].weight[0, 0] = float("nan")
        class_wise_hessian_extremes(broken, F.cross_entropy, x, y)
    frozen = _model().requires_grad_(False)
    with pytest.raises(ValueError, match="model must have parameters that require grad, got none"):
        class_wise_hessian_extremes(frozen, F.cross_entropy, x, y)
    # classes as a tuple (the claims' TAIL) and coincident inputs (a rank-deficient Hessian, Lanczos breaks down)
    ext = class_wise_hessian_extremes(model, F.cross_entropy, x[:1].expand(4, 3), y, (1,), num_iters=10)
    assert list(ext) == [1] and ext[1][0] >= ext[1][1]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_lanczos_full_run_matches_eigvalsh(n, seed):
    """n Lanczos steps (or fewer, on breakdown) on a random symmetric matrix give its extreme eigenvalues, Ritz values
    inside the spectrum and weights summing to one."""
    A = _sym(n, seed)
    evals = torch.linalg.eigvalsh(A)
    res = lanczos(lambda v: A @ v, n, n, generator=torch.Generator().manual_seed(seed))
    assert 1 <= res.n_iter <= n and res.eigenvalues.shape == (res.n_iter,)
    scale = float(evals.abs().max()) + 1.0
    assert float(res.eigenvalues[0]) >= float(evals[0]) - 1e-9 * scale
    assert float(res.eigenvalues[-1]) <= float(evals[-1]) + 1e-9 * scale
    if res.n_iter == n:
        torch.testing.assert_close(res.eigenvalues, evals, rtol=1e-7, atol=1e-7 * scale)
    assert float(res.weights.sum()) == pytest.approx(1.0, abs=1e-10)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_power_iteration_bounded_by_spectral_radius(n, seed):
    A = _sym(n, seed)
    radius = float(torch.linalg.eigvalsh(A).abs().max())
    with warnings.catch_warnings():  # two eigenvalues of equal magnitude (+-lambda) need not converge: not checked
        warnings.simplefilter("ignore", RuntimeWarning)
        res = top_eigenvalue(lambda v: A @ v, n, max_iter=2000, tol=1e-10,
                             generator=torch.Generator().manual_seed(seed))
    assert abs(res.eigenvalue) <= radius * (1 + 1e-9) + 1e-12
    assert res.vector.shape == (n,) and float(res.vector.norm()) == pytest.approx(1.0)
