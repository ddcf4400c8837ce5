"""Tests for paperzoo.diagnostics.heavy_tail_sgd: alpha-stable noise, the Euler scheme and its coupled stability."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.heavy_tail_sgd import (heavy_tailed_langevin, strongly_convex_stability_bound,
                                                 symmetric_stable_noise, wasserstein_stability)
from paperzoo.diagnostics.heavy_tail_sgd import _stable

BCE = torch.nn.functional.binary_cross_entropy_with_logits
MSE = torch.nn.functional.mse_loss


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _linear(d, value=0.0):
    model = torch.nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def _logistic_data(n, d, seed):
    g = _gen(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (torch.rand(n, 1, generator=g, dtype=torch.float64) < torch.sigmoid(x @ torch.ones(d, 1,
                                                                                         dtype=torch.float64))).double()
    return x, y


# -- noise -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8])
def test_noise_matches_scipy_levy_stable_cdf_and_the_characteristic_function(alpha):
    x = symmetric_stable_noise(40000, 1, alpha, generator=_gen(1))[:, 0].numpy()
    pts = np.array([-3.0, -1.0, -0.3, 0.0, 0.5, 2.0])
    ref = scipy.stats.levy_stable.cdf(pts, alpha, 0.0)
    emp = (x[:, None] <= pts[None, :]).mean(0)
    np.testing.assert_allclose(emp, ref, atol=0.01)   # 4.4 standard errors of an empirical cdf at N = 40000
    u = np.array([0.25, 0.5, 1.0, 2.0])
    ecf = np.cos(u[None, :] * x[:, None]).mean(0)
    np.testing.assert_allclose(ecf, np.exp(-u ** alpha), atol=0.02)


def test_noise_alpha_one_is_cauchy_and_alpha_two_is_normal_with_variance_two():
    c = symmetric_stable_noise(40000, 1, 1.0, generator=_gen(2))[:, 0].numpy()
    assert scipy.stats.kstest(c, scipy.stats.cauchy.cdf).pvalue > 1e-3
    z = symmetric_stable_noise(40000, 1, 2.0, generator=_gen(3))[:, 0].numpy()
    assert scipy.stats.kstest(z, scipy.stats.norm(scale=math.sqrt(2.0)).cdf).pvalue > 1e-3


def test_noise_shape_dtype_reproducible_and_finite():
    a = symmetric_stable_noise(500, 7, 1.1, dtype=torch.float32, generator=_gen(4))
    b = symmetric_stable_noise(500, 7, 1.1, dtype=torch.float32, generator=_gen(4))
    assert a.shape == (500, 7) and a.dtype == torch.float32 and torch.equal(a, b) and torch.isfinite(a).all()


# -- the Euler scheme ------------------------------------------------------------------------------------------------

def _explicit_langevin(loss_fn, w0, x, y, alpha, sigma, lr, n_steps, n_chains, wd, generator):
    """One chain at a time, gradients by torch.autograd on the model itself (the independent route)."""
    thetas = [w0.clone() for _ in range(n_chains)]
    for _ in range(n_steps):
        xi = _stable(n_chains, w0.numel(), alpha, torch.float64, generator)
        for c in range(n_chains):
            w = thetas[c].clone().requires_grad_(True)
            loss = loss_fn(x @ w[:, None], y)
            (gw,) = torch.autograd.grad(loss, w)
            thetas[c] = (w - lr * (gw + wd * w)).detach() + sigma * lr ** (1 / alpha) * xi[c]
    return torch.stack(thetas)


def test_langevin_matches_an_explicit_per_chain_loop_on_logistic_regression():
    x, y = _logistic_data(30, 4, 5)
    run = heavy_tailed_langevin(_linear(4, 0.1), BCE, x, y, alpha=1.4, sigma=0.3, lr=0.1, n_steps=6, n_chains=2,
                                weight_decay=0.2, generator=_gen(6))
    ref = _explicit_langevin(BCE, torch.full((4,), 0.1, dtype=torch.float64), x, y, 1.4, 0.3, 0.1, 6, 2, 0.2, _gen(6))
    torch.testing.assert_close(run.params, ref, rtol=1e-12, atol=1e-12)
    assert run.n_iter == 6 and run.finite and run.params.shape == (2, 4)


def test_langevin_gaussian_case_has_the_ornstein_uhlenbeck_stationary_variance():
    # MSE on x = 1, y = 0: theta <- (1 - 2 lr) theta + sigma lr^(1/2) xi, xi ~ N(0, 2): var = 2 sigma^2 lr / (1 - r^2).
    lr, sigma = 0.1, 0.5
    run = heavy_tailed_langevin(_linear(1), MSE, torch.ones(3, 1, dtype=torch.float64),
                                torch.zeros(3, 1, dtype=torch.float64), alpha=2.0, sigma=sigma, lr=lr, n_steps=60,
                                n_chains=20000, generator=_gen(7))
    r = 1 - 2 * lr
    expected = 2 * sigma ** 2 * lr / (1 - r ** 2)
    assert abs(float(run.params.var()) / expected - 1) < 0.03


def test_langevin_warns_on_non_finite_iterates():
    with pytest.warns(RuntimeWarning, match="non-finite iterates"):
        run = heavy_tailed_langevin(_linear(1, 1.0), MSE, torch.ones(3, 1, dtype=torch.float64),
                                    torch.zeros(3, 1, dtype=torch.float64), alpha=2.0, sigma=0.0, lr=50.0,
                                    n_steps=200, n_chains=2)
    assert not run.finite


def test_langevin_does_not_modify_the_model():
    model = _linear(3, 0.7)
    x, y = _logistic_data(10, 3, 8)
    heavy_tailed_langevin(model, BCE, x, y, alpha=1.5, sigma=1.0, lr=0.1, n_steps=5, n_chains=2, generator=_gen(0))
    assert torch.equal(model.weight, torch.full((1, 3), 0.7, dtype=torch.float64))


# -- coupled stability -----------------------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(lr=st.floats(0.02, 0.45), shift=st.floats(-3.0, 3.0), alpha=st.floats(1.0, 2.0), n_steps=st.integers(2, 30))
def test_synchronous_quadratic_difference_is_the_deterministic_closed_form(lr, shift, alpha, n_steps):
    # MSE on x = 1: both runs see the same noise, d_k = (1 - 2 lr) d_{k-1} - 2 lr (mean y - mean y'), d_0 = 0.
    x = torch.ones(4, 1, dtype=torch.float64)
    y, y2 = torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)
    y2[0] = shift
    s = wasserstein_stability(_linear(1), MSE, x, y, x, y2, alpha=alpha, sigma=0.7, lr=lr, n_steps=n_steps,
                              n_chains=5, checkpoints=n_steps, generator=_gen(9))
    r, c = 1 - 2 * lr, 2 * lr * shift / 4
    d, cur = [], 0.0
    for _ in range(n_steps):
        cur = r * cur + c
        d.append(abs(cur))
    np.testing.assert_allclose(s.path.numpy(), d, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(s.per_chain.numpy(), d[-1], rtol=1e-8, atol=1e-12)
    assert s.steps.tolist() == list(range(1, n_steps + 1))


def test_synchronous_logistic_matches_two_explicit_runs_with_the_same_noise():
    x, y = _logistic_data(20, 3, 10)
    x2, y2 = x.clone(), y.clone()
    x2[0], y2[0] = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64), 1.0 - y[0]
    s = wasserstein_stability(_linear(3), BCE, x, y, x2, y2, alpha=1.3, sigma=0.4, lr=0.2, n_steps=15, n_chains=3,
                              weight_decay=0.5, checkpoints=3, generator=_gen(11))
    # The synchronous scheme draws one (C, P) noise block per step, as the explicit loop does.
    a = _explicit_langevin(BCE, torch.zeros(3, dtype=torch.float64), x, y, 1.3, 0.4, 0.2, 15, 3, 0.5, _gen(11))
    b = _explicit_langevin(BCE, torch.zeros(3, dtype=torch.float64), x2, y2, 1.3, 0.4, 0.2, 15, 3, 0.5, _gen(11))
    torch.testing.assert_close(s.per_chain, torch.linalg.vector_norm(a - b, dim=1), rtol=1e-10, atol=1e-12)
    assert s.distance == pytest.approx(float(torch.linalg.vector_norm(a - b, dim=1).mean()), rel=1e-10)
    assert s.steps.tolist() == [5, 10, 15] and s.finite


def test_synchronous_distance_obeys_the_strongly_convex_contraction_bound_at_every_step():
    n, d, lam = 40, 3, 0.5
    x, y = _logistic_data(n, d, 12)
    x2, y2 = x.clone(), y.clone()
    x2[0], y2[0] = -3 * x[0], 1.0 - y[0]
    bound = strongly_convex_stability_bound(float(x[0].norm() + x2[0].norm()), lam, n)
    for alpha in (1.1, 2.0):
        s = wasserstein_stability(_linear(d), BCE, x, y, x2, y2, alpha=alpha, sigma=1.0, lr=0.2, n_steps=80,
                                  n_chains=32, weight_decay=lam, checkpoints=80, generator=_gen(13))
        assert float(s.per_chain.max()) <= bound and float(s.path.max()) <= bound and s.finite


def test_identical_datasets_give_zero_synchronous_and_positive_independent_distance():
    x, y = _logistic_data(15, 2, 14)
    kw = dict(alpha=1.5, sigma=0.5, lr=0.1, n_steps=20, n_chains=16, weight_decay=0.5, generator=_gen(15))
    assert wasserstein_stability(_linear(2), BCE, x, y, x, y, **kw).distance == 0.0
    s = wasserstein_stability(_linear(2), BCE, x, y, x, y, coupling="independent", **kw)
    assert s.distance > 0.05 and s.stderr > 0


def test_time_ratio_uses_the_checkpoint_nearest_half_the_run():
    x = torch.ones(4, 1, dtype=torch.float64)
    y, y2 = torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)
    y2[0] = 4.0
    s = wasserstein_stability(_linear(1), MSE, x, y, x, y2, alpha=1.5, sigma=0.0, lr=0.05, n_steps=60, n_chains=1,
                              checkpoints=10, generator=_gen(16))
    assert s.steps.tolist() == list(range(6, 61, 6))
    assert s.time_ratio == pytest.approx(float(s.path[-1] / s.path[4]), rel=1e-12)   # step 30 = K / 2
    assert s.stderr == math.inf


def test_strongly_convex_bound_closed_form():
    assert strongly_convex_stability_bound(3.0, 0.25, 60) == pytest.approx(0.2)


# -- errors ----------------------------------------------------------------------------------------------------------

def test_errors_name_the_argument():
    x, y = _logistic_data(6, 2, 17)
    with pytest.raises(ValueError, match=r"targets must have as many rows as inputs \(6\), got 5"):
        heavy_tailed_langevin(_linear(2), BCE, x, y[:5], alpha=1.5, sigma=0.1, lr=0.1, n_steps=2, n_chains=2)
    with pytest.raises(ValueError, match="inputs_alt and targets_alt must have the shapes of inputs and targets"):
        wasserstein_stability(_linear(2), BCE, x, y, x[:5], y[:5], alpha=1.5, sigma=0.1, lr=0.1, n_steps=2,
                              n_chains=2)
    with pytest.raises(ValueError, match=r"checkpoints must be <= n_steps \(2\), got 3"):
        wasserstein_stability(_linear(2), BCE, x, y, x, y, alpha=1.5, sigma=0.1, lr=0.1, n_steps=2, n_chains=2,
                              checkpoints=3)
    with pytest.raises(ValueError, match="alpha must be <= 2.0, got 2.5"):
        symmetric_stable_noise(3, 2, 2.5)
    with pytest.raises(ValueError, match="alpha"):
        heavy_tailed_langevin(_linear(2), BCE, x, y, alpha=0.8, sigma=0.1, lr=0.1, n_steps=2, n_chains=2)
    with pytest.raises(ValueError, match="coupling"):
        wasserstein_stability(_linear(2), BCE, x, y, x, y, alpha=1.5, sigma=0.1, lr=0.1, n_steps=2, n_chains=2,
                              coupling="reflection")
    frozen = _linear(2)
    frozen.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="model must have parameters that require grad, got none"):
        heavy_tailed_langevin(frozen, BCE, x, y, alpha=1.5, sigma=0.1, lr=0.1, n_steps=2, n_chains=2)
