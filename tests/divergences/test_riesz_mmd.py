import math

import numpy as np
import pytest
import scipy.stats
import torch

from paperzoo.divergences import (
    energy_distance,
    riesz_mmd_1d,
    riesz_mmd_1d_with_grad,
    riesz_slicing_constant,
    sliced_riesz_mmd,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _naive_1d(x, y, a, b):
    """The O(N^2) formula, written out with explicit pairwise absolute differences."""
    dxy = (x[:, None] - y[None, :]).abs()
    dxx = (x[:, None] - x[None, :]).abs()
    dyy = (y[:, None] - y[None, :]).abs()
    return a @ dxy @ b - 0.5 * a @ dxx @ a - 0.5 * b @ dyy @ b


@pytest.mark.parametrize("weighted", [False, True])
def test_1d_sorting_value_and_gradient_match_quadratic_formula(weighted):
    g = _gen(1)
    x = torch.randn(37, dtype=torch.float64, generator=g)
    y = torch.randn(23, dtype=torch.float64, generator=g) * 2 + 0.3
    a = torch.rand(37, dtype=torch.float64, generator=g) + 0.1 if weighted else torch.ones(37, dtype=torch.float64)
    b = torch.rand(23, dtype=torch.float64, generator=g) + 0.1 if weighted else torch.ones(23, dtype=torch.float64)
    a, b = a / a.sum(), b / b.sum()
    kw = dict(x_weights=a, y_weights=b) if weighted else {}

    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    ref = _naive_1d(xr, yr, a, b)
    ref_gx, ref_gy = torch.autograd.grad(ref, (xr, yr))

    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    val = riesz_mmd_1d(xs, ys, **kw)
    gx, gy = torch.autograd.grad(val, (xs, ys))
    torch.testing.assert_close(val, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gy, ref_gy, rtol=1e-12, atol=1e-14)

    v2, gx2, gy2 = riesz_mmd_1d_with_grad(x, y, **kw)
    torch.testing.assert_close(v2, ref.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gx2, ref_gx, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gy2, ref_gy, rtol=1e-12, atol=1e-14)


def test_1d_matches_scipy_energy_distance_and_exact_d1():
    g = _gen(2)
    x = torch.randn(50, dtype=torch.float64, generator=g)
    y = torch.randn(40, dtype=torch.float64, generator=g) + 1
    ref = scipy.stats.energy_distance(x.numpy(), y.numpy()) ** 2 / 2
    assert riesz_mmd_1d(x, y).item() == pytest.approx(ref, rel=1e-12)
    assert energy_distance(x[:, None], y[:, None]).item() == pytest.approx(ref, rel=1e-12)
    # d = 1: c_1 = 1 and both directions give the same 1-D problem, so slicing is exact.
    assert sliced_riesz_mmd(x[:, None], y[:, None], n_projections=3, generator=g).item() == pytest.approx(ref, rel=1e-12)


def test_1d_batched_and_ties():
    g = _gen(3)
    x = torch.randn(4, 30, dtype=torch.float64, generator=g).round(decimals=1)  # many ties
    y = torch.randn(4, 20, dtype=torch.float64, generator=g).round(decimals=1)
    out = riesz_mmd_1d(x, y)
    assert out.shape == (4,)
    a, b = torch.full((30,), 1 / 30, dtype=torch.float64), torch.full((20,), 1 / 20, dtype=torch.float64)
    ref = torch.stack([_naive_1d(x[i], y[i], a, b) for i in range(4)])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-14)
    assert riesz_mmd_1d(x[0], x[0]).item() == pytest.approx(0.0, abs=1e-15)


def test_float32_large_offset_is_accurate():
    g = _gen(4)
    x = torch.randn(2000, dtype=torch.float64, generator=g) + 1e3
    y = torch.randn(2000, dtype=torch.float64, generator=g) + 1e3 + 0.5
    ref = riesz_mmd_1d(x, y).item()
    assert riesz_mmd_1d(x.float(), y.float()).item() == pytest.approx(ref, rel=1e-3)


def test_slicing_constant_closed_forms():
    assert riesz_slicing_constant(1) == pytest.approx(1.0)
    assert riesz_slicing_constant(2) == pytest.approx(math.pi / 2)
    assert riesz_slicing_constant(3) == pytest.approx(2.0)
    # c_d = 1 / E|xi_1| for xi uniform on the sphere: check by Monte Carlo in d = 7.
    g = _gen(5)
    xi = torch.randn(400_000, 7, dtype=torch.float64, generator=g)
    xi = xi / xi.norm(dim=1, keepdim=True)
    assert riesz_slicing_constant(7) * xi[:, 0].abs().mean().item() == pytest.approx(1.0, rel=5e-3)
    # general r: ||e_1||^r = c_{d,r} E|xi_1|^r
    assert riesz_slicing_constant(7, r=0.5) * (xi[:, 0].abs() ** 0.5).mean().item() == pytest.approx(1.0, rel=5e-3)


def test_exact_energy_distance_matches_numpy_pairwise_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(45, 5)) + 0.5
    a = rng.random(60); a /= a.sum()
    d = lambda u, v: np.linalg.norm(u[:, None] - v[None], axis=-1)  # noqa: E731
    b = np.full(45, 1 / 45)
    ref = a @ d(x, y) @ b - 0.5 * a @ d(x, x) @ a - 0.5 * b @ d(y, y) @ b
    got = energy_distance(torch.from_numpy(x), torch.from_numpy(y), x_weights=torch.from_numpy(a))
    assert got.item() == pytest.approx(ref, rel=1e-12)
    assert energy_distance(torch.from_numpy(x), torch.from_numpy(x)).item() == pytest.approx(0.0, abs=1e-14)


def test_sliced_approaches_exact_times_constant():
    g = _gen(6)
    x = torch.randn(300, 6, dtype=torch.float64, generator=g)
    y = torch.randn(250, 6, dtype=torch.float64, generator=g) * 1.5 + 0.5
    exact = energy_distance(x, y).item()
    est = sliced_riesz_mmd(x, y, n_projections=20_000, generator=g).item()
    assert est == pytest.approx(exact, rel=0.02)
    # Unbiasedness: the spread over independent slice draws shrinks like 1/sqrt(P) around the exact value.
    few = torch.tensor([sliced_riesz_mmd(x, y, n_projections=50, generator=g).item() for _ in range(200)])
    assert abs(few.mean().item() - exact) < 3 * few.std().item() / math.sqrt(200)


def test_sliced_gradient_and_dtypes():
    g = _gen(7)
    x = torch.randn(100, 4, generator=g, requires_grad=True)
    y = torch.randn(80, 4, generator=g)
    val = sliced_riesz_mmd(x, y, n_projections=64, generator=_gen(0))
    val.backward()
    assert val.dtype == torch.float32 and x.grad.shape == (100, 4) and torch.isfinite(x.grad).all()
    # autograd through the slices equals the chain rule over the sorting gradients
    xi = torch.randn(4, 64, generator=_gen(0), dtype=torch.float64)
    xi = (xi / xi.norm(dim=0, keepdim=True)).float()
    _, gx, _ = riesz_mmd_1d_with_grad((x.detach() @ xi).T, (y @ xi).T)
    manual = riesz_slicing_constant(4) / 64 * (gx.T @ xi.T)
    torch.testing.assert_close(x.grad, manual, rtol=1e-4, atol=1e-6)


def test_bad_inputs_raise_pinned_messages():
    x, y = torch.randn(5, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"y must have d = 3 \(from x\) in its shape \(M, d\), got shape \(4, 2\)"):
        energy_distance(x, torch.randn(4, 2))
    with pytest.raises(ValueError, match="x must have 2 dimension"):
        sliced_riesz_mmd(torch.randn(5), y, n_projections=3)
    with pytest.raises(ValueError, match="n_projections must be >= 1, got 0"):
        sliced_riesz_mmd(x, y, n_projections=0)
    with pytest.raises(ValueError, match="x_weights must sum to 1"):
        energy_distance(x, y, x_weights=torch.ones(5))
    with pytest.raises(ValueError, match=r"x_weights must have N = 5 \(from x\) in its shape \(N,\), got shape \(4,\)"):
        energy_distance(x, y, x_weights=torch.ones(4) / 4)
    with pytest.raises(ValueError, match="y_weights must be >= 0 entrywise"):
        riesz_mmd_1d(torch.randn(3), torch.randn(2), y_weights=torch.tensor([1.5, -0.5]))
    with pytest.raises(ValueError, match="x must be finite"):
        riesz_mmd_1d(torch.tensor([0.0, float("nan")]), torch.randn(2))
    with pytest.raises(TypeError, match=r"y must have the dtype of x \(torch.float32\), got torch.float64"):
        riesz_mmd_1d(torch.randn(3), torch.randn(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="d must be >= 1, got 0"):
        riesz_slicing_constant(0)
    with pytest.raises(ValueError, match="r must be < 2.0, got 2.0"):
        riesz_slicing_constant(3, r=2.0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        energy_distance(np.zeros((3, 2)), y)
