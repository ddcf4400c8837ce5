import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.metrics.pairwise import rbf_kernel

from paperzoo.divergences import (
    conditional_cs_divergence,
    cs_divergence,
    cs_ib_loss,
    cs_qmi,
    gaussian_cs_divergence,
)

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _quantile_sample(n, mean, std):
    """Deterministic 'sample' of N(mean, std^2): the n mid-quantiles, so Parzen estimates converge fast."""
    u = (np.arange(n) + 0.5) / n
    return torch.tensor(mean + std * scipy.stats.norm.ppf(u), dtype=F64)[:, None]


def test_parzen_estimate_converges_to_gaussian_closed_form():
    sigma = 0.2
    x, y = _quantile_sample(2000, 0.0, 1.0), _quantile_sample(2000, 1.0, 1.5)
    est = cs_divergence(x, y, sigma=sigma)
    # The Parzen estimate targets the smoothed densities N(mu, S + sigma^2).
    exact = gaussian_cs_divergence(torch.zeros(1, dtype=F64), torch.eye(1, dtype=F64) * (1 + sigma ** 2),
                                   torch.ones(1, dtype=F64), torch.eye(1, dtype=F64) * (2.25 + sigma ** 2))
    assert abs(est.item() - exact.item()) / exact.item() < 0.02


def test_parzen_estimate_2d_random_samples_close_to_closed_form():
    sigma = 0.3
    mean_q = torch.tensor([1.0, -0.5], dtype=F64)
    cov_q = torch.tensor([[1.5, 0.3], [0.3, 0.8]], dtype=F64)
    chol = torch.linalg.cholesky(cov_q)
    ests = []
    for seed in range(4):
        g = _gen(seed)
        x = torch.randn(1500, 2, generator=g, dtype=F64)
        y = mean_q + torch.randn(1500, 2, generator=g, dtype=F64) @ chol.T
        ests.append(cs_divergence(x, y, sigma=sigma).item())
    eye = torch.eye(2, dtype=F64)
    exact = gaussian_cs_divergence(torch.zeros(2, dtype=F64), eye * (1 + sigma ** 2), mean_q,
                                   cov_q + sigma ** 2 * eye).item()
    assert abs(np.mean(ests) - exact) / exact < 0.1


def test_gaussian_closed_form_1d_by_quadrature():
    grid = np.linspace(-20, 20, 200_001)
    p, q = scipy.stats.norm.pdf(grid, 0.3, 0.7), scipy.stats.norm.pdf(grid, -1.0, 1.9)
    ref = -np.log(np.trapezoid(p * q, grid) ** 2 / (np.trapezoid(p * p, grid) * np.trapezoid(q * q, grid)))
    got = gaussian_cs_divergence(torch.tensor([0.3], dtype=F64), torch.tensor([[0.49]], dtype=F64),
                                 torch.tensor([-1.0], dtype=F64), torch.tensor([[1.9 ** 2]], dtype=F64))
    assert got.item() == pytest.approx(ref, rel=1e-8)


def test_cs_divergence_matches_sklearn_gram_formula():
    g = _gen(1)
    x, y = torch.randn(50, 3, generator=g, dtype=F64), torch.randn(40, 3, generator=g, dtype=F64) + 0.5
    sigma = 0.8
    gamma = 1.0 / (4 * sigma ** 2)
    xn, yn = x.numpy(), y.numpy()
    ref = (np.log(rbf_kernel(xn, xn, gamma=gamma).mean()) + np.log(rbf_kernel(yn, yn, gamma=gamma).mean())
           - 2 * np.log(rbf_kernel(xn, yn, gamma=gamma).mean()))
    assert cs_divergence(x, y, sigma=sigma).item() == pytest.approx(ref, rel=1e-10)


def test_cs_divergence_symmetric_zero_on_equal_samples_and_nonnegative():
    g = _gen(2)
    x, y = torch.randn(60, 2, generator=g), torch.randn(70, 2, generator=g) * 2
    assert cs_divergence(x, y).item() == pytest.approx(cs_divergence(y, x).item(), rel=1e-5)
    assert cs_divergence(x, x).abs().item() < 1e-5
    assert cs_divergence(x, y).item() > 0


def test_conditional_cs_matches_explicit_gram_formula_and_vanishes_at_equality():
    g = _gen(3)
    x = torch.randn(30, 2, generator=g, dtype=F64)
    y = torch.randn(30, generator=g, dtype=F64)
    yh = y + 0.3 * torch.randn(30, generator=g, dtype=F64)
    sx, sy = 1.3, 0.7
    xn, y1, y2 = x.numpy(), y.numpy()[:, None], yh.numpy()[:, None]
    K = rbf_kernel(xn, xn, gamma=1 / (2 * sx ** 2))
    L1, L2 = rbf_kernel(y1, y1, gamma=1 / (2 * sy ** 2)), rbf_kernel(y2, y2, gamma=1 / (2 * sy ** 2))
    L21 = rbf_kernel(y2, y1, gamma=1 / (2 * sy ** 2))
    den = K.sum(1) ** 2

    def t(L):
        return np.log(((K * L).sum(1) / den).sum())

    ref = t(L1) + t(L2) - 2 * t(L21)
    got = conditional_cs_divergence(x, y, yh, sigma_x=sx, sigma_y=sy)
    assert got.item() == pytest.approx(ref, rel=1e-10)
    assert conditional_cs_divergence(x, y, y).item() == pytest.approx(0.0, abs=1e-12)


def test_conditional_cs_grows_with_prediction_error_and_is_finite_far_apart():
    g = _gen(4)
    x = torch.randn(100, 3, generator=g)
    y = x[:, 0]
    vals = [conditional_cs_divergence(x, y, y + s).item() for s in (0.1, 0.5, 2.0)]
    assert vals[0] < vals[1] < vals[2]
    far = conditional_cs_divergence(x, y, y + 1e3)
    assert torch.isfinite(far) and far.item() > 1e4


def test_cs_qmi_matches_gram_formula_dependence_and_normalisation():
    g = _gen(5)
    x = torch.randn(80, 2, generator=g, dtype=F64)
    t = torch.tanh(x[:, :1]) + 0.1 * torch.randn(80, 1, generator=g, dtype=F64)
    sx, st = 1.0, 0.5
    Kx = rbf_kernel(x.numpy(), gamma=1 / (2 * sx ** 2))
    Kt = rbf_kernel(t.numpy(), gamma=1 / (2 * st ** 2))
    n = 80
    ref = np.log((Kx * Kt).sum() / n ** 2 * Kx.sum() * Kt.sum() / n ** 4 / (Kx.sum(1) @ Kt.sum(1) / n ** 3) ** 2)
    got = cs_qmi(x, t, sigma_x=sx, sigma_t=st)
    assert got.item() == pytest.approx(ref, rel=1e-10)
    indep = cs_qmi(x, torch.randn(80, 1, generator=g, dtype=F64), sigma_x=sx, sigma_t=st)
    assert 0 <= indep.item() < got.item()
    norm_self = cs_qmi(x, x, sigma_x=sx, sigma_t=sx, normalized=True)
    assert norm_self.item() == pytest.approx(1.0, rel=1e-10)


def test_cs_ib_loss_combines_terms_and_backpropagates():
    g = _gen(6)
    x = torch.randn(64, 4, generator=g)
    w = torch.randn(4, 3, generator=g, requires_grad=True)
    t = torch.tanh(x @ w)
    y_hat = t.sum(1)
    y = x[:, 0]
    out = cs_ib_loss(x, y, y_hat, t, beta=0.5)
    assert out.loss.item() == pytest.approx(out.prediction.item() + 0.5 * out.compression.item(), rel=1e-5)
    out.loss.backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_preserved(dtype):
    g = _gen(7)
    x = torch.randn(20, 2, generator=g).to(dtype)
    assert cs_divergence(x, x + 1).dtype == dtype
    assert cs_ib_loss(x, x[:, 0], x[:, 1], x, beta=0.1).loss.dtype == dtype


def test_bad_inputs():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="sigma must be > 0.0, got -1.0"):
        cs_divergence(x, x, sigma=-1.0)
    with pytest.raises(ValueError, match=r"y must have 2 columns \(as x\), got shape \(10, 3\)"):
        cs_divergence(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"y_hat must have shape \(10,\) \(as y\), got \(9,\)"):
        conditional_cs_divergence(x, torch.randn(10), torch.randn(9))
    with pytest.raises(ValueError, match=r"t must have 10 rows \(as x\), got shape \(8, 1\)"):
        cs_qmi(x, torch.randn(8, 1))
    with pytest.raises(ValueError, match="beta must be >= 0.0, got -0.1"):
        cs_ib_loss(x, x[:, 0], x[:, 1], x, beta=-0.1)
    with pytest.raises(ValueError, match="x must be finite"):
        cs_divergence(torch.tensor([[float("nan")], [0.0]]), x[:, :1])
    with pytest.raises(ValueError, match=r"x must have 1 or 2 dimension\(s\), got shape \(2, 2, 2\)"):
        cs_qmi(torch.randn(2, 2, 2), x)
    with pytest.raises(ValueError, match=r"cov_q must have d = 2 \(from mean_p\) in its shape \(d, d\), got shape \(1, 1\)"):
        gaussian_cs_divergence(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(1))


# --- what the declarations and the bodies reject or handle (issue 9) ------------------------------------------------

def test_gaussian_cs_divergence_needs_symmetric_positive_definite_covariances():
    m, eye = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    asym = torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64)  # used to be read from its lower triangle
    with pytest.raises(ValueError, match=r"cov_p must be symmetric, got an asymmetry of 0.5"):
        gaussian_cs_divergence(m, asym, m, eye)
    with pytest.raises(ValueError, match=r"cov_q must be symmetric positive definite, got a matrix whose Cholesky "
                                         r"factorisation fails \(smallest eigenvalue -1.0\)"):
        gaussian_cs_divergence(m, eye, m, -eye)  # used to crash inside torch.linalg.cholesky


def test_mixed_float32_float64_inputs_are_refused():
    x64 = torch.randn(6, 2, dtype=torch.float64)
    x32 = x64.float()
    with pytest.raises(TypeError, match=r"y must have the dtype of x \(torch.float64\), got torch.float32"):
        cs_divergence(x64, x32)
    with pytest.raises(TypeError, match=r"y_hat must have the dtype of x \(torch.float64\), got torch.float32"):
        conditional_cs_divergence(x64, x64[:, 0], x32[:, 0])
    with pytest.raises(TypeError, match=r"t must have the dtype of x \(torch.float64\), got torch.float32"):
        cs_qmi(x64, x32)
    with pytest.raises(TypeError, match=r"cov_p must have the dtype of mean_p \(torch.float64\), got torch.float32"):
        gaussian_cs_divergence(x64[0], torch.eye(2), x64[1], torch.eye(2, dtype=torch.float64))


def test_normalized_qmi_of_a_constant_sample_is_zero_not_nan():
    x = torch.ones(8, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    value = cs_qmi(x, t, normalized=True)
    assert value.item() == 0.0
    value.backward()
    assert bool(torch.isfinite(t.grad).all())
    assert cs_qmi(x, t).item() == pytest.approx(0.0, abs=1e-12)


def test_empty_samples_are_refused():
    with pytest.raises(ValueError, match=r"y must not be empty, got shape \(0, 2\)"):
        cs_divergence(torch.randn(3, 2), torch.randn(0, 2))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.floats(0.05, 5.0), st.integers(0, 2 ** 16))
def test_cs_divergence_is_finite_nonnegative_and_symmetric(n, m, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    x = 10 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = 10 * torch.randn(m, 2, generator=g, dtype=torch.float64)
    d = cs_divergence(x, y, sigma=sigma)
    assert bool(torch.isfinite(d)) and d.item() >= -1e-9
    assert d.item() == pytest.approx(cs_divergence(y, x, sigma=sigma).item(), rel=1e-9, abs=1e-9)
