import math

import numpy as np
import pytest
import torch
from scipy.stats import gaussian_kde
from sklearn.neighbors import KernelDensity

from paperzoo.divergences.kde import kde_log_density, kde_rate, kde_regime, kde_thresholds


def _data(n=200, d=3, m=17, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype), torch.randn(m, d, generator=g).to(dtype)


def test_matches_sklearn_kernel_density():
    data, x = _data()
    ours = kde_log_density(x, data, 0.7).numpy()
    ref = KernelDensity(kernel="gaussian", bandwidth=0.7).fit(data.numpy()).score_samples(x.numpy())
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_matches_scipy_gaussian_kde_in_1d():
    data, x = _data(n=150, d=1)
    h = 0.5
    # scipy's kernel variance is factor^2 * sample variance (ddof=1): choose the factor that gives h^2
    kde = gaussian_kde(data.numpy()[:, 0], bw_method=h / np.std(data.numpy()[:, 0], ddof=1))
    np.testing.assert_allclose(kde_log_density(x, data, h).numpy(), kde.logpdf(x.numpy()[:, 0]), rtol=1e-8)


def test_normalised_in_1d():
    data = torch.tensor([[-1.0], [0.3], [2.0]], dtype=torch.float64)
    grid = torch.linspace(-10, 12, 20001, dtype=torch.float64)[:, None]
    dens = kde_log_density(grid, data, 0.4).exp()
    assert abs(torch.trapezoid(dens, grid[:, 0]).item() - 1.0) < 1e-8


def test_single_point_closed_form_and_sweep_shape():
    data = torch.zeros(1, 4, dtype=torch.float64)
    x = torch.ones(2, 4, dtype=torch.float64)
    h = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    out = kde_log_density(x, data, h)
    assert out.shape == (3, 2)
    expected = -4 / (2 * h ** 2) - 4 * torch.log(h) - 2 * math.log(2 * math.pi)
    torch.testing.assert_close(out[:, 0], expected)


def test_batched_queries_and_float32_no_underflow():
    data, x = _data(d=50, m=6, dtype=torch.float32)
    out = kde_log_density(x.reshape(2, 3, 50), data, 0.05)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    torch.testing.assert_close(out.reshape(6), kde_log_density(x, data, 0.05))


def test_thresholds_hand_computed():
    # I(s) = 1/2 [log s - (1 - 1/s) + (1 - 1/s)^2]; at s = 2: 1/2 (log 2 - 1/4)
    alpha = 0.5 * (math.log(2) - 0.25)
    h_clt, h_g = kde_thresholds(alpha)
    assert h_g == pytest.approx(1.0, rel=1e-9)  # s = 1 + 1/h^2 = 2
    assert h_clt == pytest.approx(math.sqrt(2), rel=1e-9)
    # s = 3, sigma = 2: I = 1/2 (log 3 - 2/3 + 4/9), h_G = sigma / sqrt(2)
    alpha = 0.5 * (math.log(3) - 2 / 3 + 4 / 9)
    assert kde_rate(3.0) == pytest.approx(alpha)
    assert kde_thresholds(alpha, sigma=2.0)[1] == pytest.approx(math.sqrt(2), rel=1e-9)
    # larger alpha (more data) lowers both thresholds
    assert kde_thresholds(0.4)[1] < kde_thresholds(0.2)[1]


def test_regime_limits():
    g = torch.Generator().manual_seed(1)
    data = torch.randn(3000, 30, generator=g, dtype=torch.float64)
    x = torch.randn(50, 30, generator=g, dtype=torch.float64)
    h_clt, h_g = kde_thresholds(math.log(3000) / 30)
    reg = kde_regime(x, data, torch.tensor([0.3 * h_g, 3 * h_clt], dtype=torch.float64))
    assert reg.max_share.shape == (2, 50)
    assert reg.max_share[0].mean() > 0.9 and reg.max_share[1].mean() < 0.01
    assert reg.log_ratio_first[1].exp().median() == pytest.approx(1.0, abs=0.05)
    assert reg.log_ratio_second[1].exp().median() == pytest.approx(1.0, abs=0.1)
    assert reg.log_ratio_first[0].exp().median() < 1e-3
    torch.testing.assert_close(reg.log_density, kde_log_density(x, data, reg.h))


def test_bad_inputs():
    data, x = _data()
    with pytest.raises(ValueError, match="h must be > 0.0, got -1.0"):
        kde_log_density(x, data, -1.0)
    with pytest.raises(ValueError, match="h must be > 0 entrywise"):
        kde_log_density(x, data, torch.tensor([1.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"data must have d = 2 \(from x\) in its shape \(n, d\)"):
        kde_log_density(x[:, :2], data, 1.0)
    with pytest.raises(ValueError, match="data must have 2 dimension"):
        kde_log_density(x, data[0], 1.0)
    with pytest.raises(TypeError, match=r"data must have the dtype of x \(torch.float32\), got torch.float64"):
        kde_log_density(x.float(), data, 1.0)
    with pytest.raises(ValueError, match="alpha must be > 0.0, got 0.0"):
        kde_thresholds(0.0)
    with pytest.raises(ValueError, match="sigma must be > 0.0, got -2.0"):
        kde_regime(x, data, 1.0, sigma=-2.0)
    with pytest.raises(ValueError, match="data must be finite"):
        kde_log_density(x, data.clone().fill_(float("nan")), 1.0)


# --- what the declarations and the bodies reject or handle (issue 9) ------------------------------------------------

def test_thresholds_stop_at_float_resolution_and_refuse_an_unreachable_alpha():
    h_clt, h_g = kde_thresholds(0.3, tol=1e-30)  # a tol below the float resolution used to loop forever
    assert h_clt == pytest.approx(kde_thresholds(0.3)[0], rel=1e-12)
    with pytest.raises(ValueError, match=r"alpha must be below .* for m = 1.0 \(beyond it the level s of the threshold "
                                         r"equation overflows a float\), got 1000.0"):
        kde_thresholds(1000.0)


def test_bandwidth_sweeps_are_validated():
    data, x = _data()
    with pytest.raises(TypeError, match=r"h must have the dtype of x \(torch.float64\), got torch.float32"):
        kde_log_density(x, data, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"h must be a number or a 1-D tensor of bandwidths, got shape \(1, 2\)"):
        kde_log_density(x, data, torch.tensor([[0.5, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"h must not be empty \(H = 0\)"):
        kde_regime(x, data, torch.zeros(0, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must not be empty \(m = 0\)"):
        kde_log_density(x[:0], data, 1.0)


def test_coincident_data_gives_finite_regime_measurements():
    data, x = _data()
    reg = kde_regime(x, data[:1].expand_as(data).clone(), torch.tensor([0.05, 1.0], dtype=torch.float64))
    for field in reg:
        assert bool(torch.isfinite(field).all())
