"""Neural-collapse measures against exact collapse, an explicit per-class loop, invariances and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.neural_collapse import class_mean_geometry, neural_collapse_metrics, simplex_etf

_FLOAT_FIELDS = ("nc1", "within_class_ratio", "equinorm_means", "equinorm_classifier", "equiangular_means",
                 "max_angle_means", "equiangular_classifier", "max_angle_classifier", "etf_distance_means",
                 "etf_distance_classifier", "nc3_self_duality", "nc4_agreement", "ncc_accuracy")


def _data(counts, d, seed=0, spread=1.0):
    """Gaussian classes around random centres; ``counts`` samples per class, labels shuffled."""
    g = torch.Generator().manual_seed(seed)
    C = len(counts)
    y = torch.repeat_interleave(torch.arange(C), torch.tensor(counts))
    y = y[torch.randperm(len(y), generator=g)]
    centres = 2.0 * torch.randn(C, d, generator=g, dtype=torch.float64)
    H = centres[y] + spread * torch.randn(len(y), d, generator=g, dtype=torch.float64)
    W = torch.randn(C, d, generator=g, dtype=torch.float64)
    b = torch.randn(C, generator=g, dtype=torch.float64)
    return H, y, W, b


# -- exact collapse --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("C, d", [(2, 1), (3, 2), (5, 5), (6, 11)])
def test_simplex_etf_is_exact(C, d):
    for generator in (None, torch.Generator().manual_seed(3)):
        E = simplex_etf(C, d, generator=generator)
        assert E.shape == (C, d) and E.dtype == torch.float64
        etf_gram = (torch.eye(C, dtype=torch.float64) - 1.0 / C) * C / (C - 1)
        torch.testing.assert_close(E @ E.T, etf_gram, rtol=0, atol=1e-14)
        torch.testing.assert_close(E.sum(0), torch.zeros(d, dtype=torch.float64), rtol=0, atol=1e-14)
    assert simplex_etf(4, 5, dtype=torch.float32).dtype == torch.float32


def test_exact_collapse_gives_zero_measures():
    C, d = 5, 8
    E = simplex_etf(C, d, generator=torch.Generator().manual_seed(0))
    y = torch.arange(10 * C) % C
    shift = torch.linspace(-1.0, 2.0, d, dtype=torch.float64)
    H = 2.5 * E[y] + shift  # every feature on its class mean; the means a scaled, translated ETF
    M = 2.5 * E
    res = neural_collapse_metrics(H, y, W=M)
    assert res.nc1 < 1e-24 and res.within_class_ratio < 1e-24
    for name in ("equinorm_means", "equinorm_classifier", "equiangular_means", "max_angle_means",
                 "equiangular_classifier", "max_angle_classifier", "etf_distance_means", "etf_distance_classifier"):
        assert getattr(res, name) < 1e-12, name
    assert res.nc3_self_duality < 1e-24
    assert res.nc4_agreement == 1.0 and res.ncc_accuracy == 1.0
    assert res.num_classes == C and res.sigma_b_rank == C - 1 and res.counts.tolist() == [10] * C

    geo = class_mean_geometry(H, y)
    torch.testing.assert_close(geo.centred_means, M, rtol=0, atol=1e-13)
    off = ~torch.eye(C, dtype=torch.bool)
    torch.testing.assert_close(geo.cosines[off], torch.full((C * (C - 1),), -1.0 / (C - 1), dtype=torch.float64),
                               rtol=0, atol=1e-13)
    torch.testing.assert_close(geo.angles[off], torch.full((C * (C - 1),), math.acos(-1.0 / (C - 1)),
                                                           dtype=torch.float64), rtol=0, atol=1e-7)
    assert float(geo.angles.diagonal().abs().max()) == 0.0


def test_near_collapse_is_small_and_away_from_collapse_is_not():
    C, d = 4, 6
    E = simplex_etf(C, d)
    y = torch.arange(200) % C
    noise = torch.randn(200, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    near = neural_collapse_metrics(E[y] + 1e-3 * noise, y, W=E)
    far = neural_collapse_metrics(E[y] + 1.0 * noise, y, W=E)
    assert near.nc1 < 1e-5 < 1e-1 < far.nc1
    assert near.etf_distance_means < 1e-2 < far.etf_distance_means


# -- the explicit per-class loop -------------------------------------------------------------------------------

def _loop_reference(H, y, W, b, weighting):
    """Every measure written out class by class in numpy (the definitions, no shared code)."""
    H, y, W, b = H.numpy(), y.numpy(), W.numpy(), b.numpy()
    N, d = H.shape
    C = W.shape[0]
    means = np.zeros((C, d))
    for c in range(C):
        means[c] = H[y == c].mean(axis=0)
    mu_G = H.mean(axis=0) if weighting == "samples" else means.mean(axis=0)
    Sigma_W = np.zeros((d, d))
    for c in range(C):
        R = H[y == c] - means[c]
        Sigma_W += R.T @ R / (N if weighting == "samples" else C * len(R))
    Sigma_B = np.zeros((d, d))
    for c in range(C):
        Sigma_B += np.outer(means[c] - mu_G, means[c] - mu_G) / C
    out = {"nc1": np.trace(Sigma_W @ np.linalg.pinv(Sigma_B, rcond=1e-12, hermitian=True)) / C,
           "within_class_ratio": np.trace(Sigma_W) / np.trace(Sigma_B)}
    M = means - mu_G
    etf = (np.eye(C) - np.ones((C, C)) / C) * C / (C - 1)
    for name, X in (("means", M), ("classifier", W)):
        norms = np.array([np.linalg.norm(X[c]) for c in range(C)])
        out[f"equinorm_{name}"] = norms.std() / norms.mean()
        cosines = [X[c] @ X[k] / (norms[c] * norms[k]) for c in range(C) for k in range(c + 1, C)]
        out[f"equiangular_{name}"] = np.std(cosines)
        out[f"max_angle_{name}"] = np.mean([abs(v + 1.0 / (C - 1)) for v in cosines])
        G = np.array([[X[c] @ X[k] for k in range(C)] for c in range(C)])
        out[f"etf_distance_{name}"] = np.linalg.norm(C * G / np.trace(G) - etf)
    out["nc3_self_duality"] = np.sum((W / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2)
    distances = np.stack([np.sum((H - means[c]) ** 2, axis=1) for c in range(C)], axis=1)
    ncc = distances.argmin(axis=1)
    out["nc4_agreement"] = np.mean(ncc == (H @ W.T + b).argmax(axis=1))
    out["ncc_accuracy"] = np.mean(ncc == y)
    return out


@pytest.mark.parametrize("counts", [[30, 30, 30, 30], [60, 25, 10, 5, 40]])
@pytest.mark.parametrize("weighting", ["samples", "classes"])
def test_matches_per_class_loop(counts, weighting):
    H, y, W, b = _data(counts, d=7, seed=len(counts), spread=1.5)
    res = neural_collapse_metrics(H, y, W, b, weighting=weighting)
    ref = _loop_reference(H, y, W, b, weighting)
    for name, value in ref.items():
        assert getattr(res, name) == pytest.approx(float(value), rel=1e-10, abs=1e-12), name
    # sum_c n_c M_c = 0 ("samples") or sum_c M_c = 0 ("classes"): rank C - 1 either way.
    assert res.sigma_b_rank == len(counts) - 1
    assert res.counts.tolist() == counts


def test_weightings_agree_on_balanced_classes_and_differ_on_imbalanced():
    for counts, same in (([20, 20, 20], True), ([50, 8, 20], False)):
        H, y, W, b = _data(counts, d=5, seed=7)
        a = neural_collapse_metrics(H, y, W, b, weighting="samples")
        c = neural_collapse_metrics(H, y, W, b, weighting="classes")
        assert (a.nc1 == pytest.approx(c.nc1, rel=1e-12)) is same
        assert (a.etf_distance_means == pytest.approx(c.etf_distance_means, rel=1e-12)) is same
    geo = class_mean_geometry(H, y, weighting="classes")
    torch.testing.assert_close(geo.global_mean, geo.means.mean(0))
    torch.testing.assert_close(class_mean_geometry(H, y).global_mean, H.mean(0))


def test_wide_features_and_float32():
    H, y, W, b = _data([15, 12, 9], d=40, seed=2)  # d > N per class: Sigma_W singular, fine
    res64 = neural_collapse_metrics(H, y, W, b)
    ref = _loop_reference(H, y, W, b, "samples")
    assert res64.nc1 == pytest.approx(float(ref["nc1"]), rel=1e-10)
    res32 = neural_collapse_metrics(H.float(), y, W.float(), b.float())
    for name in ("nc1", "within_class_ratio", "etf_distance_means", "nc3_self_duality"):
        assert getattr(res32, name) == pytest.approx(getattr(res64, name), rel=1e-4), name


# -- invariances -----------------------------------------------------------------------------------------------

def test_invariant_to_rotation_scaling_and_translation():
    H, y, W, b = _data([25, 40, 15, 30], d=6, seed=3)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9)))
    shift = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    # The last layer moved alike, so that the model's decisions (NC4) are the same: logits scaled by 0.74.
    W2 = 0.2 * W @ Q
    b2 = 0.74 * b - W2 @ shift
    for weighting in ("samples", "classes"):
        base = neural_collapse_metrics(H, y, W, b, weighting=weighting)
        moved = neural_collapse_metrics(3.7 * H @ Q + shift, y, W2, b2, weighting=weighting)
        for name in _FLOAT_FIELDS:
            assert getattr(moved, name) == pytest.approx(getattr(base, name), rel=1e-9, abs=1e-12), name


# -- scikit-learn's nearest centroid ---------------------------------------------------------------------------

def test_ncc_matches_sklearn_nearest_centroid():
    from sklearn.neighbors import NearestCentroid

    H, y, W, b = _data([40, 30, 50, 20], d=5, seed=4, spread=2.0)
    pred = torch.from_numpy(NearestCentroid().fit(H.numpy(), y.numpy()).predict(H.numpy()))
    res = neural_collapse_metrics(H, y, W, b)
    assert 0.5 < res.ncc_accuracy < 1.0  # overlapping classes: a real test of the rule
    assert res.ncc_accuracy == float((pred == y).double().mean())
    one_hot = torch.nn.functional.one_hot(pred, 4).double()
    assert neural_collapse_metrics(H, y, logits=one_hot).nc4_agreement == 1.0  # the same decision on every sample
    assert neural_collapse_metrics(H, y, W, b, logits=one_hot).nc4_agreement == 1.0  # logits take precedence
    agree = float((pred == (H @ W.T + b).argmax(1)).double().mean())
    assert res.nc4_agreement == agree < 1.0


# -- errors ----------------------------------------------------------------------------------------------------

def test_errors_are_pinned():
    H, y, W, b = _data([5, 6, 7], d=4, seed=5)
    with pytest.raises(ValueError, match=r"y must have entries in \[0, 2\] \(C = 3 from W\), got entries in "
                                         r"\[0, 3\]"):
        neural_collapse_metrics(H, torch.where(y == 2, 3, y), W)
    with pytest.raises(ValueError, match=r"y must have entries in \[0, 2\] \(C = 3 from y\), got entries in "
                                         r"\[-1, 2\]"):
        neural_collapse_metrics(H, torch.where(y == 0, -1, y), num_classes=None)
    with pytest.raises(ValueError, match=r"y must contain every class at least once \(a class mean is needed\), "
                                         r"got no samples of class\(es\) \[1\] of C = 3"):
        neural_collapse_metrics(H, torch.where(y == 1, 0, y), W)
    with pytest.raises(ValueError, match=r"y must contain every class at least once .* \[3, 4\] of C = 5"):
        neural_collapse_metrics(H, y, num_classes=5)
    with pytest.raises(ValueError, match=r"W must have d = 4 \(from H\) in its shape \(c, d\), got shape \(3, 5\)"):
        neural_collapse_metrics(H, y, torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"y must have n = 18 \(from H\) in its shape \(n,\), got shape \(17,\)"):
        neural_collapse_metrics(H, y[:-1])
    with pytest.raises(ValueError, match=r"logits must have c = 3 \(from W\)"):
        neural_collapse_metrics(H, y, W, logits=torch.zeros(18, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"W must give the number of classes of num_classes \(4\), got 3"):
        neural_collapse_metrics(H, y, W, num_classes=4)
    with pytest.raises(ValueError, match=r"b must come with W \(it is the bias of the last layer W\)"):
        neural_collapse_metrics(H, y, b=b)
    with pytest.raises(ValueError, match=r"y must contain at least 2 classes .* got 1 from y"):
        neural_collapse_metrics(H, torch.zeros(18, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"H must have class means that differ"):
        neural_collapse_metrics(torch.ones(18, 4, dtype=torch.float64), y)
    with pytest.raises(TypeError, match=r"y must have an integer dtype, got torch.float64"):
        neural_collapse_metrics(H, y.double())
    with pytest.raises(TypeError, match=r"W must have the dtype of H \(torch.float64\), got torch.float32"):
        neural_collapse_metrics(H, y, W.float())
    with pytest.raises(ValueError, match=r"weighting must be one of \['samples', 'classes'\], got 'class'"):
        neural_collapse_metrics(H, y, weighting="class")
    with pytest.raises(ValueError, match=r"d must be >= C - 1 = 4 \(a simplex of C points spans C - 1 "
                                         r"dimensions\), got 3"):
        simplex_etf(5, 3)
    with pytest.raises(ValueError, match=r"C must be >= 2, got 1"):
        simplex_etf(1, 3)


# -- properties ------------------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(C=st.integers(2, 5), extra_d=st.integers(-1, 4), per_class=st.integers(1, 6), seed=st.integers(0, 2 ** 16),
       scale=st.floats(1e-3, 1e3), weighting=st.sampled_from(["samples", "classes"]))
def test_property_nonnegative_and_scale_invariant(C, extra_d, per_class, seed, scale, weighting):
    g = torch.Generator().manual_seed(seed)
    d = C + extra_d
    counts = torch.randint(1, per_class + 1, (C,), generator=g)
    y = torch.repeat_interleave(torch.arange(C), counts)
    H = torch.randn(len(y), d, generator=g, dtype=torch.float64) + 3.0 * torch.randn(C, d, generator=g,
                                                                                    dtype=torch.float64)[y]
    W = torch.randn(C, d, generator=g, dtype=torch.float64)
    res = neural_collapse_metrics(H, y, W, weighting=weighting)
    assert res.nc1 >= 0 and res.within_class_ratio >= 0 and res.nc3_self_duality >= 0
    assert 0 <= res.nc4_agreement <= 1 and 1 <= res.sigma_b_rank <= min(C, d)
    scaled = neural_collapse_metrics(scale * H, y, W, weighting=weighting)
    for name in ("nc1", "within_class_ratio", "etf_distance_means", "nc3_self_duality", "equinorm_means"):
        assert getattr(scaled, name) == pytest.approx(getattr(res, name), rel=1e-8, abs=1e-12), name
