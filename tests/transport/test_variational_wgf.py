"""Tests for the variational JKO scheme and the Gaussian closed forms it is checked against."""

import math

import numpy as np
import ot
import pytest
import torch

from paperzoo.data.gaussians import (
    gaussian_kl,
    gaussian_ot_map,
    gaussian_symkl,
    gaussian_w2,
    ou_gaussian_marginal,
    random_spd,
)
from paperzoo.transport import density_jko, variational_jko
from paperzoo.transport.variational_wgf import PositiveCritic, entropy_variational, kl_variational

D64 = torch.float64


def _gauss(d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g, dtype=D64), random_spd(d, low=0.3, high=2.0, generator=g)


# ----------------------------------------------------------------------------- Gaussian closed forms


def test_gaussian_w2_and_map_match_pot():
    m1, S1 = _gauss(4, 0)
    m2, S2 = _gauss(4, 1)
    w2 = gaussian_w2(m1, S1, m2, S2)
    ref = ot.gaussian.bures_wasserstein_distance(m1.numpy(), m2.numpy(), S1.numpy(), S2.numpy())
    assert float(w2) == pytest.approx(float(ref) ** 2, rel=1e-8)
    A, b = gaussian_ot_map(m1, S1, m2, S2)
    A_ref, b_ref = ot.gaussian.bures_wasserstein_mapping(m1.numpy()[None], m2.numpy()[None], S1.numpy(), S2.numpy())
    np.testing.assert_allclose(A.numpy(), A_ref, atol=1e-8)
    np.testing.assert_allclose(b.numpy(), np.ravel(b_ref), atol=1e-8)
    # the map pushes N(m1, S1) onto N(m2, S2) and its cost is W2^2
    torch.testing.assert_close(A @ S1 @ A.T, S2)
    torch.testing.assert_close(A @ m1 + b, m2)
    cost = ((A - torch.eye(4, dtype=D64)) @ S1 @ (A - torch.eye(4, dtype=D64)).T).trace() + ((A @ m1 + b - m1) ** 2).sum()
    assert float(cost) == pytest.approx(float(w2), rel=1e-10)


def test_gaussian_kl_matches_torch_distributions():
    m1, S1 = _gauss(3, 2)
    m2, S2 = _gauss(3, 3)
    P = torch.distributions.MultivariateNormal(m1, S1)
    Q = torch.distributions.MultivariateNormal(m2, S2)
    assert float(gaussian_kl(m1, S1, m2, S2)) == pytest.approx(float(torch.distributions.kl_divergence(P, Q)))
    assert float(gaussian_symkl(m1, S1, m1, S1)) == pytest.approx(0.0, abs=1e-12)


def test_ou_marginal_endpoints_and_ode():
    m0, S0 = _gauss(3, 4)
    m, S = _gauss(3, 5)
    mt, St = ou_gaussian_marginal(m0, S0, m, S, 0.0)
    torch.testing.assert_close(mt, m0)
    torch.testing.assert_close(St, S0)
    mt, St = ou_gaussian_marginal(m0, S0, m, S, 200.0)
    torch.testing.assert_close(mt, m)
    torch.testing.assert_close(St, S)
    # moments of dX = -S^{-1}(X - m) dt + sqrt(2) dW: dmean/dt = -A(mean - m), dcov/dt = -A cov - cov A + 2 I
    A, t, h = torch.linalg.inv(S), 0.3, 1e-5
    (mp, Sp), (mm, Sm) = ou_gaussian_marginal(m0, S0, m, S, t + h), ou_gaussian_marginal(m0, S0, m, S, t - h)
    mt, St = ou_gaussian_marginal(m0, S0, m, S, t)
    torch.testing.assert_close((mp - mm) / (2 * h), -A @ (mt - m), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close((Sp - Sm) / (2 * h), -A @ St - St @ A + 2 * torch.eye(3, dtype=D64), atol=1e-6,
                               rtol=1e-6)


def test_gaussian_bad_inputs():
    m, S = _gauss(2, 6)
    with pytest.raises(ValueError, match=r"S1 must have shape \(3, 3\) \(len\(m1\) squared\), got \(2, 2\)"):
        gaussian_w2(torch.zeros(3, dtype=D64), S, m, S)
    with pytest.raises(ValueError, match="S1 must be positive definite"):
        gaussian_ot_map(m, -S, m, S)
    with pytest.raises(ValueError, match=r"t must be >= 0.0, got -1.0"):
        ou_gaussian_marginal(m, S, m, S, -1.0)


# ----------------------------------------------------------------------------- variational formulas


def test_kl_variational_at_optimal_critic_equals_closed_form():
    g = torch.Generator().manual_seed(0)
    m1, S1 = _gauss(2, 7)
    m2, S2 = m1 + 0.3, 1.2 * S1
    P = torch.distributions.MultivariateNormal(m1, S1)
    G = torch.distributions.MultivariateNormal(m2, S2)
    x = m1 + torch.randn(100_000, 2, generator=g, dtype=D64) @ torch.linalg.cholesky(S1).T
    z = m2 + torch.randn(100_000, 2, generator=g, dtype=D64) @ torch.linalg.cholesky(S2).T
    ratio = lambda u: torch.exp(P.log_prob(u) - G.log_prob(u))  # noqa: E731
    exact = float(gaussian_kl(m1, S1, m2, S2))
    assert float(kl_variational(ratio(x), ratio(z))) == pytest.approx(exact, abs=0.01)
    # any other positive critic gives a lower value (a lower bound, up to Monte Carlo error)
    assert float(kl_variational(1.5 * ratio(x), 1.5 * ratio(z))) < exact - 0.05  # expected gap log 1.5 - 0.5
    # negative entropy = E_P log gamma + KL(P || Gamma); closed form -0.5 log det(2 pi e S1)
    neg_ent = float(entropy_variational(ratio(x), ratio(z), G.log_prob(x)))
    assert neg_ent == pytest.approx(-0.5 * float(torch.logdet(2 * math.pi * math.e * S1)), abs=0.03)


def test_positive_critic_is_positive():
    torch.manual_seed(0)
    h = PositiveCritic(3)
    assert bool((h(torch.randn(50, 3)) >= 0).all())
    assert h(torch.randn(50, 3)).shape == (50,)


def test_variational_bad_inputs():
    h = torch.ones(5)
    with pytest.raises(ValueError, match=r"floor must be > 0.0, got 0.0"):
        kl_variational(h, h, floor=0.0)
    with pytest.raises(ValueError, match=r"log_ref_p must have the shape of h_p \(5,\), got \(4,\)"):
        entropy_variational(h, h, torch.zeros(4))


# ----------------------------------------------------------------------------- JKO schemes


def _quadratic(y):
    return 0.5 * (y**2).sum(-1)


@pytest.mark.parametrize("solver", [variational_jko, density_jko])
def test_jko_moves_towards_target_and_is_reproducible(solver):
    def run():
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        x0 = 0.5 * torch.randn(256, 2, generator=g) + 2.0
        return solver(x0, _quadratic, step_size=0.05, n_steps=2, n_iter=25, batch_size=128, generator=g), x0

    res, x0 = run()
    assert res.trajectory.shape == (3, 256, 2) and res.objective_history.shape == (2, 25)
    torch.testing.assert_close(res.times, torch.tensor([0.0, 0.05, 0.1], dtype=D64))
    mt, St = ou_gaussian_marginal(torch.full((2,), 2.0, dtype=D64), 0.25 * torch.eye(2, dtype=D64),
                                  torch.zeros(2, dtype=D64), torch.eye(2, dtype=D64), 0.1)
    # the flow towards N(0, I) contracts the mean and spreads the covariance (0.25 I -> cov_t)
    assert float(res.x.mean(0).norm()) < float(x0.mean(0).norm())
    assert float(torch.cov(res.x.T).trace()) > float(torch.cov(x0.T).trace())
    assert float((res.x.mean(0).double() - mt).norm()) < 0.15
    again, _ = run()
    torch.testing.assert_close(res.x, again.x, rtol=0, atol=0)


def test_variational_jko_float64_and_entropy_history():
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(128, 3, generator=g, dtype=D64)
    res = variational_jko(x0, _quadratic, n_steps=1, n_iter=5, generator=g)
    assert res.x.dtype == D64 and torch.isfinite(res.entropy_history).all()


def test_jko_bad_inputs():
    x = torch.zeros(10, 2)
    with pytest.raises(ValueError, match=r"step_size must be > 0.0, got 0.0"):
        variational_jko(x, _quadratic, step_size=0.0)
    with pytest.raises(ValueError, match=r"n_inner must be >= 1, got 0"):
        variational_jko(x, _quadratic, n_inner=0)
    with pytest.raises(ValueError, match=r"x must have 2 dimension\(s\) \(n, d\), got shape \(10,\)"):
        density_jko(torch.zeros(10), _quadratic)
    with pytest.raises(TypeError, match="potential must be callable, got int"):
        density_jko(x, 3)
    with pytest.raises(FloatingPointError, match="decrease lr or increase step_size"):
        variational_jko(torch.randn(16, 2), lambda y: (y**2).sum(-1) * float("nan"), n_steps=1, n_iter=1)
