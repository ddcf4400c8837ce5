"""Hessian diagnostics against dense eigendecompositions of small problems."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.hessian import (class_wise_hessian_extremes, gauss_newton_operator, gradient_eigenspace_overlap,
                                          hessian_operator, hutchinson_trace, hvp_operator, lanczos, sharpness_threshold,
                                          spectral_density, stability_ratio, top_eigenpairs, top_eigenvalue)


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


# -- curvature toolkit: model-level operators against dense Hessians, eigenpairs, trace, density, overlap --------


def _mlp_problem(seed=3, n_points=40):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_points, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n_points,), generator=g)
    return model, x, y


def _flat_fn(model, x):
    """``theta0`` and ``theta -> model outputs`` on the flat parameter vector (the dense reference route)."""
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]

    def out(flat):
        state = {nm: c.view(p.shape) for (nm, p), c in zip(named, torch.split(flat, sizes))}
        return torch.func.functional_call(model, state, (x,))

    return torch.cat([p.detach().reshape(-1) for _, p in named]), out


def _dense_H_and_G(model, loss_fn, x, y):
    theta0, out = _flat_fn(model, x)
    H = torch.func.hessian(lambda th: loss_fn(out(th), y))(theta0)
    J = torch.func.jacrev(out)(theta0).reshape(-1, theta0.numel())
    out0 = out(theta0).detach()
    H_out = torch.func.hessian(lambda z: loss_fn(z.view(out0.shape), y))(out0.reshape(-1))
    return H, J.T @ H_out @ J


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_model_operators_match_dense_hessian_and_gauss_newton(loss):
    model, x, y = _mlp_problem()
    if loss == "ce":
        loss_fn, targets = F.cross_entropy, y
    else:
        loss_fn, targets = F.mse_loss, torch.randn(x.shape[0], 3, generator=torch.Generator().manual_seed(5),
                                                     dtype=torch.float64)
    H, G = _dense_H_and_G(model, loss_fn, x, targets)
    n = H.shape[0]
    V = torch.randn(4, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for mode in ("auto", "forward", "reverse") if loss == "ce" else ("auto", "reverse"):
        hv, dim = hessian_operator(model, loss_fn, x, targets, mode=mode)
        assert dim == n
        torch.testing.assert_close(hv(V[0]), H @ V[0], rtol=0, atol=1e-10)
        torch.testing.assert_close(hv(V), V @ H, rtol=0, atol=1e-10)  # a (b, n) block, vmapped
    gv, _ = gauss_newton_operator(model, loss_fn, x, targets)
    torch.testing.assert_close(gv(V[0]), G @ V[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(gv(V), V @ G, rtol=0, atol=1e-10)
    # the double-backprop operator agrees, and G is PSD while H of this tanh net is not equal to it
    old, _ = hvp_operator(lambda: loss_fn(model(x), targets), list(model.parameters()))
    torch.testing.assert_close(old(V[1]), H @ V[1], rtol=0, atol=1e-10)
    assert float(torch.linalg.eigvalsh(G)[0]) > -1e-10 and float((H - G).abs().max()) > 1e-6


def test_gauss_newton_equals_hessian_for_a_linear_model():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    hv, n = hessian_operator(model, F.cross_entropy, x, y)
    gv, _ = gauss_newton_operator(model, F.cross_entropy, x, y)
    V = torch.randn(3, n, dtype=torch.float64)
    torch.testing.assert_close(gv(V), hv(V), rtol=0, atol=1e-12)


def test_float32_operators_keep_dtype():
    model, x, y = _mlp_problem()
    model, x = model.float(), x.float()
    hv, n = hessian_operator(model, F.cross_entropy, x, y)
    v = torch.randn(n)
    assert hv(v).dtype == torch.float32
    H, _ = _dense_H_and_G(model.double(), F.cross_entropy, x.double(), y)
    torch.testing.assert_close(hv(v).double(), H @ v.double(), rtol=1e-4, atol=1e-5)


def test_top_eigenpairs_match_eigh():
    A = _sym(30, seed=4)
    evals, evecs = torch.linalg.eigh(A)
    for which, order in (("largest", evals.flip(0)), ("smallest", evals),
                         ("magnitude", evals[torch.argsort(-evals.abs())])):
        res = top_eigenpairs(lambda v: A @ v, 30, 4, which=which, generator=torch.Generator().manual_seed(0))
        assert res.converged and res.n_iter <= 30 and res.eigenvectors.shape == (4, 30)
        torch.testing.assert_close(res.eigenvalues, order[:4], rtol=0, atol=1e-9)
        # each Ritz vector is an eigenvector (up to sign), and they are orthonormal
        torch.testing.assert_close(res.eigenvectors @ A @ res.eigenvectors.T, torch.diag(res.eigenvalues),
                                   rtol=0, atol=1e-8)
        torch.testing.assert_close(res.eigenvectors @ res.eigenvectors.T, torch.eye(4, dtype=torch.float64),
                                   rtol=0, atol=1e-10)
        assert float(res.residuals.max()) <= 1e-8 * float(evals.abs().max())


def test_top_eigenpairs_hessian_of_mlp_and_a_repeated_eigenvalue():
    model, x, y = _mlp_problem()
    H, _ = _dense_H_and_G(model, F.cross_entropy, x, y)
    evals = torch.linalg.eigvalsh(H)
    hv, n = hessian_operator(model, F.cross_entropy, x, y)
    res = top_eigenpairs(hv, n, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.eigenvalues, evals.flip(0)[:3], rtol=0, atol=1e-9)
    # eigenvalue 2 of multiplicity 3: one Krylov space sees it once; the restart after breakdown finds the rest
    A = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0, 0.5], dtype=torch.float64))
    res = top_eigenpairs(lambda v: A @ v, 5, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.eigenvalues, torch.full((3,), 2.0, dtype=torch.float64), rtol=0, atol=1e-10)
    with pytest.warns(RuntimeWarning, match="top_eigenpairs did not reach tol=0.0 in max_iter=3"):
        top_eigenpairs(lambda v: _sym(30, 4) @ v, 30, 2, max_iter=3, tol=0.0)


def test_hutchinson_trace_within_its_standard_error():
    model, x, y = _mlp_problem()
    H, _ = _dense_H_and_G(model, F.cross_entropy, x, y)
    hv, n = hessian_operator(model, F.cross_entropy, x, y)
    one = hutchinson_trace(hv, n, 200, batch_size=100, generator=torch.Generator().manual_seed(0))
    single = hutchinson_trace(hv, n, 20, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(single.samples, one.samples[:20], rtol=0, atol=1e-10)  # same probes, one at a time
    exact = float(torch.trace(H))
    assert one.num_samples == 200 and one.std_error > 0
    assert abs(one.trace - exact) <= 3 * one.std_error
    # the standard error matches the closed-form Rademacher variance 2 (||H||_F^2 - sum_j H_jj^2) / m
    sd = (2 * (float((H ** 2).sum()) - float((torch.diag(H) ** 2).sum())) / 200) ** 0.5
    assert one.std_error == pytest.approx(sd, rel=0.3)


def test_spectral_density_integrates_to_one_with_mean_trace_over_n():
    A = _sym(40, seed=7)
    evals = torch.linalg.eigvalsh(A)
    sd = spectral_density(lambda v: A @ v, 40, 30, 40, 4001, 0.05, generator=torch.Generator().manual_seed(0))
    assert sd.nodes.shape == (30, 40) and sd.weights.shape == (30, 40)
    torch.testing.assert_close(sd.weights.sum(1), torch.ones(30, dtype=torch.float64), rtol=0, atol=1e-10)
    assert float(torch.trapezoid(sd.density, sd.grid)) == pytest.approx(1.0, abs=1e-6)
    per_probe = (sd.weights * sd.nodes).sum(1)  # = q^T A q for each unit start vector q
    mean = float(torch.trapezoid(sd.grid * sd.density, sd.grid))
    assert mean == pytest.approx(float(per_probe.mean()), abs=1e-6)
    se = float(per_probe.std()) / 30 ** 0.5
    assert abs(mean - float(torch.trace(A)) / 40) <= 3 * se
    # full Lanczos: the nodes are the eigenvalues themselves
    torch.testing.assert_close(sd.nodes[0], evals, rtol=0, atol=1e-8)
    # default grid and sigma, and a breakdown (diagonal with repeats) padded with zero-weight nodes
    D = torch.diag(torch.tensor([1.0, 1.0, 3.0], dtype=torch.float64))
    sd = spectral_density(lambda v: D @ v, 3, 2, 3)
    assert sd.nodes.shape == (2, 3) and sd.grid.shape == (1000,) and sd.sigma == pytest.approx(0.02)
    assert float(torch.trapezoid(sd.density, sd.grid)) == pytest.approx(1.0, abs=1e-3)


def test_gradient_overlap_and_stability():
    V = torch.eye(4, dtype=torch.float64)[:2]
    g = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(gradient_eigenspace_overlap(g, V), torch.tensor([0.5, 1.0], dtype=torch.float64))
    # the gradient of the MLP loss against its dense top eigenspace: ||P g||^2 / ||g||^2 from eigh
    model, x, y = _mlp_problem()
    H, _ = _dense_H_and_G(model, F.cross_entropy, x, y)
    theta0, out = _flat_fn(model, x)
    grad = torch.func.grad(lambda th: F.cross_entropy(out(th), y))(theta0)
    evecs = torch.linalg.eigh(H).eigenvectors[:, -3:]
    hv, n = hessian_operator(model, F.cross_entropy, x, y)
    top = top_eigenpairs(hv, n, 3, generator=torch.Generator().manual_seed(0))
    expected = float((evecs.T @ grad).square().sum() / grad.square().sum())
    assert float(gradient_eigenspace_overlap(grad, top.eigenvectors)) == pytest.approx(expected, abs=1e-9)
    assert sharpness_threshold(0.01) == 200.0 and stability_ratio(250.0, 0.01) == 1.25


def test_curvature_errors():
    model, x, y = _mlp_problem()
    with pytest.raises(ValueError, match=r"targets must have 40 rows \(one per row of inputs\), got shape \(39,\)"):
        hessian_operator(model, F.cross_entropy, x, y[:39])
    with pytest.raises(TypeError, match=r"inputs must have the dtype of the model's parameters \(torch.float64\)"):
        gauss_newton_operator(model, F.cross_entropy, x.float(), y)
    with pytest.raises(ValueError, match="loss_fn must return a scalar tensor, got shape \\(40,\\)"):
        hessian_operator(model, lambda o, t: F.cross_entropy(o, t, reduction="none"), x, y)
    with pytest.raises(ValueError, match="model must have parameters that require grad, got none"):
        hessian_operator(_mlp_problem()[0].requires_grad_(False), F.cross_entropy, x, y)
    with pytest.raises(ValueError, match="mode must be one of"):
        hessian_operator(model, F.cross_entropy, x, y, mode="twice")
    hv, n = hessian_operator(model, F.cross_entropy, x, y)
    with pytest.raises(ValueError, match=rf"v must be a tensor of shape \({n},\) or \(b, {n}\)"):
        hv(torch.ones(n + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="k must be <= n \\(4\\), got 5"):
        top_eigenpairs(lambda v: v, 4, 5)
    with pytest.raises(ValueError, match="which must be one of"):
        top_eigenpairs(lambda v: v, 4, 1, which="biggest")
    with pytest.raises(ValueError, match="num_samples must be >= 2, got 1"):
        hutchinson_trace(lambda v: v, 4, 1)
    with pytest.raises(ValueError, match=r"matvec must return a tensor of the shape of its input \(3, 4\)"):
        hutchinson_trace(lambda v: v[0], 4, 6, batch_size=3)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        spectral_density(lambda v: v, 4, sigma=0.0)
    with pytest.raises(TypeError, match=r"grid must have dtype torch.float64"):
        spectral_density(lambda v: v, 4, grid=torch.linspace(0, 1, 5))
    V = torch.eye(3, dtype=torch.float64)[:2]
    with pytest.raises(ValueError, match="eigenvectors must have orthonormal rows \\(V V\\^T = I\\), got a deviation"):
        gradient_eigenspace_overlap(torch.ones(3, dtype=torch.float64), 2 * V)
    with pytest.raises(ValueError, match="gradient must be nonzero"):
        gradient_eigenspace_overlap(torch.zeros(3, dtype=torch.float64), V)
    with pytest.raises(ValueError, match="lr must be > 0"):
        sharpness_threshold(0.0)
    with pytest.raises(ValueError, match="top_eigenvalue must be finite"):
        stability_ratio(float("nan"), 0.1)


def test_pyhessian_agrees_on_top_eigenvalue_and_trace():
    from pyhessian import hessian as PyHessian

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    H, _ = _dense_H_and_G(model.double(), F.cross_entropy, x.double(), y)
    model = model.float()
    exact_top, exact_trace = float(torch.linalg.eigvalsh(H)[-1]), float(torch.trace(H))
    torch.manual_seed(1)  # PyHessian draws its vectors from the global generator
    ph = PyHessian(model, F.cross_entropy, data=(x, y), cuda=False)
    ph_top = ph.eigenvalues(maxIter=500, tol=1e-6, top_n=1)[0][0]
    ph_samples = ph.trace(maxIter=300, tol=0.0)
    model.zero_grad(set_to_none=True)
    hv, n = hessian_operator(model, F.cross_entropy, x, y)
    ours = top_eigenpairs(hv, n, 1, tol=1e-6, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    assert float(ours.eigenvalues[0]) == pytest.approx(exact_top, rel=1e-4)
    assert ph_top == pytest.approx(exact_top, rel=1e-3)
    assert float(ours.eigenvalues[0]) == pytest.approx(ph_top, rel=2e-3)
    tr = hutchinson_trace(hv, n, 300, batch_size=100, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    ph_mean = sum(ph_samples) / len(ph_samples)
    assert len(ph_samples) == 300
    assert abs(tr.trace - exact_trace) <= 3 * tr.std_error
    assert abs(ph_mean - exact_trace) <= 3 * tr.std_error  # same estimator, same number of probes, same spread
