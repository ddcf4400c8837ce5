import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.double_descent import knn_noisy_label_agreement, mlp_width_sweep


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny full-batch training: intra-op threads only add synchronisation (30x slower on a loaded machine).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _task(seed, n=120, d=6, classes=4, noise=0.25, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, classes, (n,), generator=g)
    centers = 2 * torch.randn(classes, d, generator=g, dtype=dtype)
    h = centers[true] + torch.randn(n, d, generator=g, dtype=dtype)
    given_ = true.clone()
    flip = torch.rand(n, generator=g) < noise
    given_[flip] = (true[flip] + torch.randint(1, classes, (int(flip.sum()),), generator=g)) % classes
    return h, given_, true


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 8])
def test_matches_sklearn_cosine_knn(seed, k):
    from sklearn.neighbors import KNeighborsClassifier

    h, y, t = _task(seed)
    noisy = (y != t).numpy()
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(h.numpy()[~noisy], y.numpy()[~noisy])
    ref = knn.predict(h.numpy()[noisy])
    res = knn_noisy_label_agreement(h, y, t, k=k)
    np.testing.assert_array_equal(res.predictions.numpy(), ref)
    assert res.agreement == pytest.approx(float(np.mean(ref == t.numpy()[noisy])), abs=1e-15)
    assert (res.n_noisy, res.n_clean) == (int(noisy.sum()), int((~noisy).sum()))


def test_matches_explicit_loop_with_ties_to_smallest_class():
    h, y, t = _task(3, classes=3)
    k = 4  # even k: vote ties happen
    hn = h.numpy() / np.linalg.norm(h.numpy(), axis=1, keepdims=True)
    clean = np.flatnonzero((y == t).numpy())
    preds = []
    for i in np.flatnonzero((y != t).numpy()):
        dist = 1 - hn[clean] @ hn[i]
        nn_labels = y.numpy()[clean[np.argsort(dist, kind="stable")[:k]]]
        counts = np.bincount(nn_labels, minlength=3)
        preds.append(int(np.flatnonzero(counts == counts.max())[0]))
    np.testing.assert_array_equal(knn_noisy_label_agreement(h, y, t, k=k).predictions.numpy(), preds)


def test_cosine_is_scale_invariant_and_float32_agrees():
    h, y, t = _task(4)
    scale = torch.rand(len(y), 1, dtype=h.dtype) * 10 + 0.1
    a = knn_noisy_label_agreement(h, y, t)
    assert torch.equal(knn_noisy_label_agreement(h * scale, y, t).predictions, a.predictions)
    assert torch.equal(knn_noisy_label_agreement(h.float(), y, t).predictions, a.predictions)


def test_separated_noise_gives_full_agreement_and_collapsed_noise_none():
    h, y, t = _task(5)
    noisy = y != t
    assert knn_noisy_label_agreement(h, y, t).agreement > 0.9  # features follow the true class
    # A memorising feature map: every noisy point sits on a clean point of its given (wrong) class.
    h2 = h.clone()
    clean_idx = torch.nonzero(~noisy).flatten()
    for i in torch.nonzero(noisy).flatten():
        h2[i] = h[clean_idx[y[clean_idx] == y[i]]].mean(0)
    assert knn_noisy_label_agreement(h2, y, t).agreement < 0.1


def test_no_noisy_points_is_nan():
    h, _, t = _task(6)
    res = knn_noisy_label_agreement(h, t, t)
    assert np.isnan(res.agreement) and res.n_noisy == 0 and res.predictions.numel() == 0


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_row_permutation_invariance(seed):
    h, y, t = _task(seed % 50, n=60)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    assert knn_noisy_label_agreement(h[perm], y[perm], t[perm]).agreement == pytest.approx(
        knn_noisy_label_agreement(h, y, t).agreement, abs=1e-12)


def test_errors():
    h, y, t = _task(7, n=30)
    with pytest.raises(ValueError, match=r"k must be <= the number of clean points \(\d+\), got 1000"):
        knn_noisy_label_agreement(h, y, t, k=1000)
    with pytest.raises(ValueError, match="labels"):
        knn_noisy_label_agreement(h, y[:-1], t)
    with pytest.raises(TypeError, match="labels"):
        knn_noisy_label_agreement(h, y.double(), t)
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn_noisy_label_agreement(h, y, t, k=0)
    with pytest.raises(ValueError, match="widths"):
        mlp_width_sweep(h, y, t, h, t, [], steps=1)


def _sweep_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 5, generator=g)
    t = (x[:, 0] + x[:, 1] > 0).long()
    y = t.clone()
    y[:10] = 1 - y[:10]
    return x, y, t, g


def test_sweep_shapes_interpolation_and_determinism():
    x, y, t, _ = _sweep_data()
    runs = [mlp_width_sweep(x, y, t, x[:40], t[:40], [2, 64], steps=200, lr=2e-2,
                            generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    s = runs[0]
    assert s == runs[1]
    assert s.widths == [2, 64] and len(s.test_error) == len(s.knn_agreement) == 2
    assert s.interpolated == [e == 0.0 for e in s.train_error] and s.interpolated[-1]
    assert all(0 <= v <= 1 for v in (*s.train_error, *s.test_error, *s.knn_agreement))
    assert s.train_error[0] > s.train_error[1]


def test_sweep_warns_without_interpolation():
    x, y, t, g = _sweep_data()
    with pytest.warns(RuntimeWarning, match="does not interpolate"):
        mlp_width_sweep(x, y, t, x, t, [4], steps=1, generator=g)


def test_sweep_error_rates_match_independent_evaluation():
    # One width: retrain with the same generator draws through plain torch and compare the recorded numbers.
    x, y, t, _ = _sweep_data()
    with pytest.warns(RuntimeWarning, match="does not interpolate"):
        s = mlp_width_sweep(x, y, t, x, t, [8], steps=50, lr=1e-2, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    w1 = (torch.rand(8, 5, generator=g) * 2 - 1) / 5 ** 0.5
    b1 = (torch.rand(8, generator=g) * 2 - 1) / 5 ** 0.5
    w2 = (torch.rand(2, 8, generator=g) * 2 - 1) / 8 ** 0.5
    b2 = (torch.rand(2, generator=g) * 2 - 1) / 8 ** 0.5
    params = [p.requires_grad_() for p in (w1, b1, w2, b2)]
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(50):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(torch.relu(x @ w1.T + b1) @ w2.T + b2, y).backward()
        opt.step()
    with torch.no_grad():
        h = torch.relu(x @ w1.T + b1)
        logits = h @ w2.T + b2
    assert s.train_error[0] == pytest.approx(float((logits.argmax(1) != y).double().mean()), abs=1e-12)
    assert s.test_error[0] == pytest.approx(float((logits.argmax(1) != t).double().mean()), abs=1e-12)
    assert s.knn_agreement[0] == pytest.approx(knn_noisy_label_agreement(h, y, t).agreement, abs=1e-12)
