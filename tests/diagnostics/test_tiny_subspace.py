"""subspace_overlap / random_subspace / SubspaceTracker: closed forms, dense eigh, Monte Carlo, PyHessian."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.tiny_subspace import (SubspaceTracker, random_subspace, subspace_overlap,
                                                subspace_tracker)


class _Quadratic(torch.nn.Module):
    """``forward`` returns the parameter itself; with ``_quad_loss`` the loss is 1/2 t^T A t - b^T t (Hessian A)."""

    def __init__(self, theta):
        super().__init__()
        self.theta = torch.nn.Parameter(theta.clone())

    def forward(self, x):
        return self.theta + 0 * x.sum()


def _quad_problem(D=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64)).Q
    lam = torch.linspace(10.0, 0.1, D, dtype=torch.float64)  # distinct eigenvalues, descending
    A = Q @ torch.diag(lam) @ Q.T
    return A, Q, lam, g


def _quad_loss(A, b):
    return lambda out, target: 0.5 * out @ A @ out - b @ out + 0 * target.sum()


def _data(D):
    return torch.zeros(1, D, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)


def test_quadratic_eigenspace_equals_dense_eigh_and_overlap_formula():
    A, Q, lam, g = _quad_problem()
    D, k = A.shape[0], 3
    theta, b = torch.randn(D, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64)
    model = _Quadratic(theta)
    tr_ = subspace_tracker(model, _quad_loss(A, b), _data(D), k, generator=torch.Generator().manual_seed(1))
    tr_(0)
    res = tr_.result()
    evals, evecs = torch.linalg.eigh(A)
    top = evecs[:, -k:].flip(-1).T  # (k, D), largest first
    torch.testing.assert_close(res.eigenvalues[0], evals[-k:].flip(0), rtol=0, atol=1e-10)
    assert abs(float(subspace_overlap(res.eigenvectors[0], top.contiguous())) - 1.0) < 1e-10
    grad = A @ theta - b
    torch.testing.assert_close(res.gradients[0], grad, rtol=0, atol=1e-12)
    expected = (top @ grad).square().cumsum(0) / grad.square().sum()
    torch.testing.assert_close(res.cumulative_overlap[0], expected, rtol=0, atol=1e-10)
    assert float(res.gradient_overlap[0]) == pytest.approx(float(expected[-1]), abs=1e-10)
    assert float(res.losses[0]) == pytest.approx(float(0.5 * theta @ A @ theta - b @ theta), rel=1e-12)
    assert bool(res.converged.all())


@pytest.mark.parametrize("inside", [True, False])
def test_gradient_in_the_subspace_has_overlap_one_orthogonal_zero(inside):
    A, Q, lam, g = _quad_problem(seed=2)
    D, k = A.shape[0], 4
    theta = torch.randn(D, generator=g, dtype=torch.float64)
    # Q's columns are the eigenvectors (descending eigenvalues): the gradient A theta - b is put in the top-k span
    # or in its orthogonal complement.
    c = torch.randn(D, generator=g, dtype=torch.float64)
    c[k:] = 0.0 if inside else c[k:]
    c[:k] = c[:k] if inside else 0.0
    b = A @ theta - Q @ c
    tr_ = SubspaceTracker(_Quadratic(theta), _quad_loss(A, b), _data(D), k, generator=torch.Generator().manual_seed(0))
    tr_.record(3)
    f = float(tr_.result().gradient_overlap[0])
    assert f == pytest.approx(1.0 if inside else 0.0, abs=1e-10)


def _dense_hessian(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for p in model.parameters()]
    sizes = [p.numel() for p in params]
    shapes = [p.shape for p in params]

    def flat_loss(flat):
        ps = [c.view(s) for c, s in zip(torch.split(flat, sizes), shapes)]
        return F.cross_entropy(torch.func.functional_call(model, dict(zip(names, ps)), (x,)), y)

    flat = torch.cat([p.reshape(-1) for p in params])
    return torch.func.hessian(flat_loss)(flat), torch.func.grad(flat_loss)(flat)


def test_mlp_tracker_matches_dense_hessian_along_training():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)
    k = 3
    tracker = subspace_tracker(model, F.cross_entropy, (x, y), k, every=5, tol=1e-10,
                               generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    dense = []
    for step in range(12):
        if step % 5 == 0:
            H, grad = _dense_hessian(model, x, y)
            evals, evecs = torch.linalg.eigh(H)
            dense.append((evals[-k:].flip(0), evecs[:, -k:].flip(-1).T.contiguous(), grad))
        assert tracker(step) == (step % 5 == 0)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    res = tracker.result()
    assert res.steps.tolist() == [0, 5, 10] and len(tracker) == 3
    for t, (ev, V, grad) in enumerate(dense):
        torch.testing.assert_close(res.eigenvalues[t], ev, rtol=0, atol=1e-8)
        assert abs(float(subspace_overlap(res.eigenvectors[t], V)) - 1.0) < 1e-8
        torch.testing.assert_close(res.gradients[t], grad, rtol=0, atol=1e-12)
        ref = float((V @ grad).square().sum() / grad.square().sum())
        assert float(res.gradient_overlap[t]) == pytest.approx(ref, abs=1e-8)
    # the subspace-overlap matrix is the pairwise subspace_overlap, symmetric with a unit diagonal
    O = res.subspace_overlap
    for s in range(3):
        for t in range(3):
            ref = float(subspace_overlap(dense[s][1], dense[t][1]))
            assert float(O[s, t]) == pytest.approx(ref, abs=1e-8)
    torch.testing.assert_close(O, O.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(O.diagonal(), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-10)


def test_subspace_overlap_identical_orthogonal_and_random_level():
    E = torch.eye(6, dtype=torch.float64)
    U = random_subspace(6, 2, generator=torch.Generator().manual_seed(0))
    assert float(subspace_overlap(U, U)) == pytest.approx(1.0, abs=1e-12)
    R = torch.linalg.qr(torch.randn(2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)).Q
    assert float(subspace_overlap(U, (R @ U).contiguous())) == pytest.approx(1.0, abs=1e-12)  # a basis change
    assert float(subspace_overlap(E[:3], E[3:])) == 0.0
    # two independent uniformly random k-dim subspaces of R^n: mean overlap k/n, within 3 SE over M draws
    n, k, M = 50, 5, 400
    g = torch.Generator().manual_seed(2)
    A = random_subspace(n, k, count=M, generator=g)
    B = random_subspace(n, k, count=M, generator=g)
    vals = subspace_overlap(A, B)
    assert vals.shape == (M,)
    se = float(vals.std()) / math.sqrt(M)
    assert abs(float(vals.mean()) - k / n) < 3 * se
    # and against a fixed subspace (broadcast), the same level
    vals = subspace_overlap(A, random_subspace(n, k, generator=g))
    assert abs(float(vals.mean()) - k / n) < 3 * float(vals.std()) / math.sqrt(M)


def test_random_subspace_is_orthonormal_and_isotropic():
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float64):
        V = random_subspace(9, 4, generator=g, dtype=dtype)
        assert V.dtype == dtype and V.shape == (4, 9)
        torch.testing.assert_close(V @ V.T, torch.eye(4, dtype=dtype), rtol=0, atol=1e-5)
    # E[P] = (k/n) I for a uniform subspace: the mean projector over many draws
    n, k, M = 6, 2, 3000
    P = random_subspace(n, k, count=M, generator=g)
    assert P.shape == (M, k, n)
    mean_P = torch.einsum("mkn,mkj->nj", P, P) / M
    torch.testing.assert_close(mean_P, torch.eye(n, dtype=torch.float64) * k / n, rtol=0, atol=0.03)


def test_tracker_random_overlap_is_at_chance_level():
    D = 30
    g = torch.Generator().manual_seed(4)
    A = torch.diag(torch.cat([torch.tensor([100.0]), torch.linspace(1.0, 0.5, D - 1)])).double()  # Lanczos: 2 steps
    theta, b = torch.randn(D, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64)
    tracker = SubspaceTracker(_Quadratic(theta), _quad_loss(A, b), _data(D), 1, tol=1e-6,
                              generator=torch.Generator().manual_seed(5))
    for step in range(150):
        tracker.record(step)  # same parameters: a fresh random subspace each time
    r = tracker.result().random_overlap
    assert abs(float(r.mean()) - 1 / D) < 3 * float(r.std()) / math.sqrt(len(r))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), k=st.integers(1, 12), seed=st.integers(0, 2 ** 16))
def test_overlap_is_symmetric_in_unit_interval(n, k, seed):
    k = min(k, n)
    g = torch.Generator().manual_seed(seed)
    U, V = random_subspace(n, k, generator=g), random_subspace(n, k, generator=g)
    a, b = float(subspace_overlap(U, V)), float(subspace_overlap(V, U))
    assert a == pytest.approx(b, abs=1e-12)
    assert -1e-12 <= a <= 1 + 1e-12
    if k == n:
        assert a == pytest.approx(1.0, abs=1e-10)


def test_pyhessian_top_eigenspace_agrees():
    from pyhessian import hessian as PyHessian

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(1)
    ph = PyHessian(model, F.cross_entropy, data=(x, y), cuda=False)
    ph_vals, ph_vecs = ph.eigenvalues(maxIter=1000, tol=1e-7, top_n=2)
    model.zero_grad(set_to_none=True)
    V_ph = torch.stack([torch.cat([t.reshape(-1) for t in v]) for v in ph_vecs])
    V_ph = torch.linalg.qr(V_ph.T).Q.T.contiguous()  # its vectors are orthonormal only to its tolerance
    tracker = subspace_tracker(model, F.cross_entropy, (x, y), 2, tol=1e-5, generator=torch.Generator().manual_seed(0))
    tracker(0)
    res = tracker.result()
    torch.testing.assert_close(res.eigenvalues[0].double(), torch.tensor(ph_vals, dtype=torch.float64), rtol=2e-3,
                               atol=0)
    assert float(subspace_overlap(res.eigenvectors[0], V_ph)) > 0.99


def test_error_messages():
    E = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"V must have orthonormal rows \(W W\^T = I\), got a deviation of 3$"):
        subspace_overlap(E[:2], 2 * E[:2])
    with pytest.raises(ValueError, match=r"U must have at most n = 2 rows \(an orthonormal set\), got 3"):
        subspace_overlap(torch.ones(3, 2, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"k must be <= n \(3\), got 4"):
        random_subspace(3, 4)
    with pytest.raises(TypeError, match=r"dtype must be torch.float32 or torch.float64, got torch.float16"):
        random_subspace(3, 2, dtype=torch.float16)
    model = torch.nn.Linear(2, 2).double()
    data = (torch.randn(5, 2, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1]))
    with pytest.raises(ValueError, match=r"k must be <= the number of trainable parameters \(6\), got 7"):
        subspace_tracker(model, F.cross_entropy, data, 7)
    with pytest.raises(ValueError, match=r"k must be >= 1, got 0"):
        subspace_tracker(model, F.cross_entropy, data, 0)
    with pytest.raises(ValueError, match=r"every must be >= 1, got 0"):
        subspace_tracker(model, F.cross_entropy, data, 2, every=0)
    with pytest.raises(ValueError, match=r"data must be a pair \(inputs, targets\), got 3 values"):
        subspace_tracker(model, F.cross_entropy, data + (data[1],), 2)
    with pytest.raises(TypeError, match=r"data\[0\] must have the dtype of the model's parameters \(torch.float64\), "
                       r"got torch.float32"):
        subspace_tracker(model, F.cross_entropy, (data[0].float(), data[1]), 2)
    tracker = subspace_tracker(model, F.cross_entropy, data, 2, every=2)
    with pytest.raises(ValueError, match=r"tracker has recorded no checkpoint yet"):
        tracker.result()
    with pytest.raises(ValueError, match=r"step must be an int >= 0, got -1"):
        tracker(-1)
    with pytest.raises(ValueError, match=r"step must be an int >= 0, got 1.5"):
        tracker.record(1.5)
    assert tracker(1) is False and len(tracker) == 0
    tracker(2)
    with pytest.raises(ValueError, match=r"step must increase from one checkpoint to the next \(last 2\), got 2"):
        tracker.record(2)
    frozen = torch.nn.Linear(2, 2).double().requires_grad_(False)
    with pytest.raises(ValueError, match=r"model must have parameters that require grad, got none"):
        subspace_tracker(frozen, F.cross_entropy, data, 1)
