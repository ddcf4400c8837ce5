import math

import numpy as np
import ot
import pytest
import torch

from paperzoo.divergences.group_invariant import (gaussian_kernel, group_averaged_kernel, invariant_mmd2,
                                                  invariant_wasserstein1, orbit_augment, permutation_group,
                                                  rotation_group, sign_flip_group)


def _xy(n=12, m=9, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.randn(m, d, generator=g, dtype=torch.float64) + 0.3)


@pytest.mark.parametrize("group", [rotation_group(6), sign_flip_group(2), permutation_group(2)])
def test_groups_are_orthogonal_and_closed(group):
    k, d, _ = group.shape
    eye = torch.eye(d, dtype=group.dtype)
    torch.testing.assert_close(group.transpose(1, 2) @ group, eye.expand(k, d, d))
    products = (group[:, None] @ group[None]).reshape(-1, d, d)
    # every product is again an element: closure
    dist = (products[:, None] - group[None]).abs().amax((-1, -2)).amin(1)
    assert dist.max() < 1e-12
    torch.testing.assert_close(group[0], eye)


def test_group_sizes_and_rotation_values():
    assert rotation_group(8, dim=3, plane=(0, 2)).shape == (8, 3, 3)
    assert sign_flip_group(4, [0, 2]).shape == (4, 4, 4)
    assert permutation_group(3).shape == (6, 3, 3)
    r = rotation_group(4)[1]
    torch.testing.assert_close(r @ torch.tensor([1.0, 0.0], dtype=torch.float64),
                               torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_orbit_augment_layout():
    x, _ = _xy(n=3)
    G = rotation_group(4)
    aug = orbit_augment(x, G)
    assert aug.shape == (12, 2)
    torch.testing.assert_close(aug[:3], x)
    torch.testing.assert_close(aug[3:6], x @ G[1].T)


def test_group_averaged_kernel_is_invariant_and_symmetric():
    x, y = _xy(d=3)
    G = sign_flip_group(3)
    k_g = group_averaged_kernel(lambda a, b: gaussian_kernel(a, b, 0.8), G)
    K = k_g(x, y)
    for g in G:
        torch.testing.assert_close(k_g(x @ g.T, y), K)
        torch.testing.assert_close(k_g(x, y @ g.T), K)
    torch.testing.assert_close(k_g(y, x), K.T)


def test_trivial_group_equals_plain_estimators():
    x, y = _xy()
    trivial = torch.eye(2, dtype=torch.float64)[None]
    torch.testing.assert_close(invariant_wasserstein1(x, y, trivial), invariant_wasserstein1(x, y))
    for unbiased in (True, False):
        torch.testing.assert_close(invariant_mmd2(x, y, trivial, unbiased=unbiased),
                                   invariant_mmd2(x, y, unbiased=unbiased))


def test_w1_matches_pot_on_augmented_samples_and_closed_form():
    x, y = _xy()
    G = rotation_group(3)
    xa, ya = x.numpy(), y.numpy()
    ref = ot.emd2(np.full(12, 1 / 12), np.full(9, 1 / 9), ot.dist(xa, ya, metric="euclidean"))
    assert invariant_wasserstein1(x, y).item() == pytest.approx(ref, rel=1e-10)
    # translate y by a vector: W1(P, P + v) = |v| for the plain estimator
    v = torch.tensor([0.3, -0.4], dtype=torch.float64)
    assert invariant_wasserstein1(x, x + v).item() == pytest.approx(0.5, rel=1e-10)
    # an already G-invariant pair of samples (union of orbits) gives the same value with and without G
    xo, yo = orbit_augment(x[:4], G), orbit_augment(y[:3], G)
    assert invariant_wasserstein1(xo, yo, G).item() == pytest.approx(invariant_wasserstein1(xo, yo).item(),
                                                                       rel=1e-9)


def test_w1_is_invariant_to_acting_on_one_sample_and_differentiable():
    x, y = _xy()
    G = rotation_group(5)
    base = invariant_wasserstein1(x, y, G)
    torch.testing.assert_close(invariant_wasserstein1(x @ G[2].T, y, G), base)
    x = x.clone().requires_grad_(True)
    invariant_wasserstein1(x, y, G).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_mmd_unbiased_matches_naive_double_loop():
    x, y = _xy(n=5, m=4)
    G = rotation_group(3)
    s = 0.7

    def k(a, b):
        return sum(math.exp(-float(((g @ a - b) ** 2).sum()) / (2 * s * s)) for g in G) / len(G)

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    assert invariant_mmd2(x, y, G, bandwidth=s).item() == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    # biased = MMD^2 between the orbit-augmented samples with the plain kernel
    biased = invariant_mmd2(orbit_augment(x, G), orbit_augment(y, G), bandwidth=s, unbiased=False)
    assert invariant_mmd2(x, y, G, bandwidth=s, unbiased=False).item() == pytest.approx(biased.item(), rel=1e-10)


def test_custom_kernel_and_float32():
    x, y = _xy()
    lin = invariant_mmd2(x, y, kernel=lambda a, b: a @ b.T, unbiased=False)
    assert lin.item() == pytest.approx(float(((x.mean(0) - y.mean(0)) ** 2).sum()), rel=1e-10)
    out = invariant_mmd2(x.float(), y.float(), rotation_group(4, dtype=torch.float32))
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_bad_inputs():
    x, y = _xy()
    with pytest.raises(ValueError, match=r"group must have d = 2 \(from x\) in its shape \(G, d, d\), got shape \(4, 3, 3\)"):
        invariant_wasserstein1(x, y, sign_flip_group(3)[:4])
    with pytest.raises(ValueError, match="group must hold orthogonal matrices"):
        orbit_augment(x, 2 * rotation_group(3))
    with pytest.raises(ValueError, match=r"y must have d = 2 \(from x\) in its shape \(m, d\), got shape \(3, 3\)"):
        invariant_mmd2(x, torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="bandwidth must be > 0.0, got 0.0"):
        invariant_mmd2(x, y, bandwidth=0.0)
    with pytest.raises(ValueError, match="at least 2 points for the unbiased"):
        invariant_mmd2(x[:1], y)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        rotation_group(0)
    with pytest.raises(ValueError, match="plane must name two different coordinates"):
        rotation_group(3, plane=(1, 1))
    with pytest.raises(ValueError, match="coords must be distinct"):
        sign_flip_group(3, [0, 0])
    with pytest.raises(TypeError, match=r"y must have the dtype of x \(torch.float32\), got torch.float64"):
        invariant_wasserstein1(x.float(), y)
    with pytest.raises(ValueError, match="max_iter must be >= 1, got 0"):
        invariant_wasserstein1(x, y, max_iter=0)
    with pytest.raises(TypeError, match="kernel must be callable"):
        invariant_mmd2(x, y, kernel=3)


# --- what the declarations and the bodies reject or handle (issue 9) ------------------------------------------------

def test_group_dtype_must_match_and_builders_take_floating_dtypes():
    x, y = _xy()
    with pytest.raises(TypeError, match=r"group must have the dtype of x \(torch.float64\), got torch.float32"):
        invariant_mmd2(x, y, rotation_group(4, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"dtype must be one of \[torch.float64, torch.float32, torch.float16, "
                                         r"torch.bfloat16\], got torch.int64"):
        rotation_group(4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"dim must be <= 8, got 9"):
        permutation_group(9)
    with pytest.raises(ValueError, match=r"group must hold orthogonal matrices"):
        group_averaged_kernel(gaussian_kernel, 2 * rotation_group(3))  # checked when the kernel is built


def test_coincident_points_give_finite_estimates():
    x, y = _xy()
    same = x[:1].expand_as(x).clone()
    G = rotation_group(4)
    assert bool(torch.isfinite(invariant_wasserstein1(same, y, G)))
    assert bool(torch.isfinite(invariant_mmd2(same, y, G)))
    assert invariant_mmd2(same, same, unbiased=False).item() == pytest.approx(0.0, abs=1e-12)
