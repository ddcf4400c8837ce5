"""Tests for paperzoo.diagnostics.ito_chains: Ito chains with non-Gaussian noise, exact OU laws, exact W2 to a
Gaussian, and the paper's bound exponent."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from paperzoo.diagnostics.ito_chains import (euler_maruyama_ou_law, gaussian_w2, ito_chain_bound_exponent,
                                             ito_chain_w2_curve, ou_marginal, simulate_ito_chain, standard_noise,
                                             wasserstein2_to_gaussian)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---- exact W2 between an empirical measure and a Gaussian ----

def test_w2_to_gaussian_matches_piecewise_quadrature():
    x = torch.randn(300, generator=_gen(0), dtype=torch.float64) * 1.4 + 0.3
    m, s = -0.2, 0.8
    xs, n = np.sort(x.numpy()), 300
    cuts = np.arange(n + 1) / n
    total = sum(integrate.quad(lambda p, v=xs[i]: (v - stats.norm.ppf(p, m, s)) ** 2, cuts[i], cuts[i + 1],
                               epsabs=1e-13, epsrel=1e-12)[0] for i in range(n))
    assert wasserstein2_to_gaussian(x, m, s) == pytest.approx(math.sqrt(total), rel=1e-8)


def test_w2_to_gaussian_point_mass_closed_form():
    # W2^2(delta_c, N(m, s^2)) = (c - m)^2 + s^2
    assert wasserstein2_to_gaussian(torch.full((7,), 1.5, dtype=torch.float64), -0.5, 0.7) == pytest.approx(
        math.hypot(2.0, 0.7), rel=1e-12)


def test_w2_to_gaussian_agrees_with_pot_on_a_fine_quantile_grid():
    import ot

    x = torch.rand(400, generator=_gen(1), dtype=torch.float64) * 3.0
    m, s = 1.0, 0.5
    q = stats.norm.ppf((np.arange(200_000) + 0.5) / 200_000, m, s)  # the Gaussian, discretised finely
    ref = math.sqrt(ot.wasserstein_1d(x.numpy(), q, p=2))
    assert wasserstein2_to_gaussian(x, m, s) == pytest.approx(ref, rel=2e-3)


def test_w2_of_a_large_gaussian_sample_approaches_the_gaussian_closed_form():
    x = 1.0 + 2.0 * torch.randn(200_000, generator=_gen(2), dtype=torch.float64)
    assert wasserstein2_to_gaussian(x, 0.0, 1.5) == pytest.approx(gaussian_w2(1.0, 2.0, 0.0, 1.5), abs=0.02)
    assert wasserstein2_to_gaussian(x, 1.0, 2.0) < 0.02


@settings(max_examples=25, deadline=None)
@given(shift=st.floats(-5, 5), scale=st.floats(0.1, 5), seed=st.integers(0, 2**16))
def test_w2_to_gaussian_is_affine_equivariant(shift, scale, seed):
    x = torch.randn(50, generator=_gen(seed), dtype=torch.float64) + 0.3
    base = wasserstein2_to_gaussian(x, 0.1, 0.9)
    moved = wasserstein2_to_gaussian(scale * x + shift, scale * 0.1 + shift, scale * 0.9)
    assert moved == pytest.approx(scale * base, rel=1e-7, abs=1e-9)


def test_gaussian_w2_closed_form():
    assert gaussian_w2(0.0, 1.0, 3.0, 5.0) == 5.0


# ---- noise laws ----

@pytest.mark.parametrize("kind,skew,exkurt", [("gaussian", 0.0, 0.0), ("uniform", 0.0, -1.2),
                                              ("rademacher", 0.0, -2.0), ("exponential", 2.0, 6.0)])
def test_standard_noise_moments(kind, skew, exkurt):
    xi = standard_noise(kind, 400_000, 1, generator=_gen(3)).flatten().numpy()
    assert xi.mean() == pytest.approx(0.0, abs=0.01)
    assert xi.var() == pytest.approx(1.0, abs=0.01)
    assert stats.skew(xi) == pytest.approx(skew, abs=0.05)
    assert stats.kurtosis(xi) == pytest.approx(exkurt, abs=0.25)


def test_standard_noise_dtype_and_shape():
    xi = standard_noise("uniform", 3, 4, generator=_gen(0), dtype=torch.float32)
    assert xi.shape == (3, 4) and xi.dtype == torch.float32
    assert float(xi.abs().max()) <= math.sqrt(3.0)


# ---- the chain ----

def test_chain_matches_an_explicit_python_loop_with_state_dependent_noise():
    drift = lambda x: -x + 0.3 * torch.sin(x)  # noqa: E731
    diffusion = lambda x: 1.0 + 0.5 * torch.tanh(x)  # noqa: E731
    x0 = torch.randn(6, 2, generator=_gen(4), dtype=torch.float64)
    eta, gamma, k = 0.1, 0.5, 5
    run = simulate_ito_chain(drift, diffusion, x0, eta, k, gamma=gamma, noise="exponential", generator=_gen(5))
    g = _gen(5)
    rows = [x0[i].clone() for i in range(6)]
    for _ in range(k):
        u = torch.rand(6, 2, generator=g, dtype=torch.float64)
        xi = -torch.log1p(-u) - 1.0
        for i in range(6):  # one chain at a time, one coordinate at a time
            for j in range(2):
                v = rows[i][j].item()
                rows[i][j] = v + eta * (-v + 0.3 * math.sin(v)) + eta ** 0.75 * (1 + 0.5 * math.tanh(v)) * xi[i, j]
    assert torch.allclose(run.final, torch.stack(rows), rtol=1e-12, atol=1e-12)
    assert run.n_steps == k and not run.diverged


def test_euler_maruyama_ou_law_matches_moment_recursion():
    eta, theta, sigma, x0 = 0.07, 1.3, 0.9, 1.7
    m, v = x0, 0.0
    for k in range(1, 30):
        m, v = (1 - theta * eta) * m, (1 - theta * eta) ** 2 * v + sigma**2 * eta
        law = euler_maruyama_ou_law(x0, eta, k, theta=theta, sigma=sigma)
        assert law.mean == pytest.approx(m, rel=1e-12) and law.std == pytest.approx(math.sqrt(v), rel=1e-12)


def test_euler_maruyama_law_tends_to_the_ou_marginal():
    law = ou_marginal(2.0, 1.0, theta=1.0, sigma=math.sqrt(2.0))
    assert law.mean == pytest.approx(2 / math.e) and law.std ** 2 == pytest.approx(1 - math.exp(-2))
    em = euler_maruyama_ou_law(2.0, 1e-5, 100_000)
    assert gaussian_w2(*em, *law) < 1e-4


def test_gaussian_chain_sample_law_is_the_euler_maruyama_law():
    n, eta, k = 100_000, 0.1, 10
    run = simulate_ito_chain(lambda x: -x, lambda x: torch.full_like(x, math.sqrt(2.0)),
                             torch.full((n, 1), 2.0, dtype=torch.float64), eta, k, generator=_gen(6))
    em = euler_maruyama_ou_law(2.0, eta, k)
    floor = wasserstein2_to_gaussian(em.mean + em.std * torch.randn(n, generator=_gen(7), dtype=torch.float64),
                                     em.mean, em.std)
    assert wasserstein2_to_gaussian(run.final[:, 0], em.mean, em.std) < 3 * floor + 1e-3


def test_chain_warns_and_stops_on_divergence():
    with pytest.warns(RuntimeWarning, match="left the finite range at step"):
        run = simulate_ito_chain(lambda x: x * 1e200, lambda x: torch.zeros_like(x),
                                 torch.ones(3, 1, dtype=torch.float64), 1.0, 10)
    assert run.diverged and run.n_steps < 10


# ---- the bound exponent ----

@pytest.mark.parametrize("gamma,alpha,beta,gaussian,theta,r", [
    (0.0, None, 0.0, True, 0.5, 0.25), (0.0, None, 0.0, False, 0.25, 0.125), (1.0, None, 0.0, True, 1.0, 0.75),
    (1.0, None, 1.0, False, 1.0, 0.75), (0.0, 0.0, 0.0, True, 0.0, 0.0), (0.0, 0.1, 0.0, True, 0.1, 0.05)])
def test_bound_exponent_table(gamma, alpha, beta, gaussian, theta, r):
    b = ito_chain_bound_exponent(gamma, alpha=alpha, beta=beta, gaussian=gaussian)
    assert b.theta == pytest.approx(theta) and b.exponent == pytest.approx(r)


# ---- the W2 curve ----

def test_w2_curve_of_gaussian_chain_follows_the_closed_form():
    law = ou_marginal(2.0, 1.0)
    etas = torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64)
    c = ito_chain_w2_curve(lambda x: -x, lambda x: torch.full_like(x, math.sqrt(2.0)), 2.0, etas, 1.0, law.mean,
                           law.std, n_particles=100_000, generator=_gen(8))
    exact = [gaussian_w2(*euler_maruyama_ou_law(2.0, e, k), *law) for e, k in zip(c.etas, c.n_steps)]
    assert c.n_steps == [2, 4, 8] and c.decreasing and not c.diverged
    assert np.allclose(c.w2, exact, atol=0.012)
    assert c.fit.slope == pytest.approx(1.0, abs=0.25)


def test_w2_curve_input_errors():
    law = ou_marginal(1.0, 1.0)
    one = lambda x: torch.ones_like(x)  # noqa: E731
    with pytest.raises(ValueError, match=r"horizon / eta must be a positive integer, got horizon 1.0 and eta 0.3"):
        ito_chain_w2_curve(lambda x: -x, one, 1.0, torch.tensor([0.5, 0.3], dtype=torch.float64), 1.0, *law)
    with pytest.raises(ValueError, match=r"etas must hold at least 2 step sizes, got 1"):
        ito_chain_w2_curve(lambda x: -x, one, 1.0, torch.tensor([0.5], dtype=torch.float64), 1.0, *law)
    with pytest.raises(ValueError, match=r"etas must lie in \(0, 1\], got 0.0"):
        ito_chain_w2_curve(lambda x: -x, one, 1.0, torch.tensor([0.5, 0.0], dtype=torch.float64), 1.0, *law)
    with pytest.raises(ValueError, match=r"noise must be one of \['gaussian', 'uniform', 'rademacher', "):
        ito_chain_w2_curve(lambda x: -x, one, 1.0, torch.tensor([0.5, 0.25], dtype=torch.float64), 1.0, *law,
                           noise="cauchy")


def test_declared_argument_errors():
    with pytest.raises(ValueError, match=r"eta must be > 0.0, got -1.0"):
        simulate_ito_chain(lambda x: x, lambda x: x, torch.ones(2, 1), -1.0, 2)
    with pytest.raises(ValueError, match=r"gamma must be <= 1.0, got 2.0"):
        simulate_ito_chain(lambda x: x, lambda x: x, torch.ones(2, 1), 0.1, 2, gamma=2.0)
    with pytest.raises(TypeError, match=r"drift must be callable, got int"):
        simulate_ito_chain(3, lambda x: x, torch.ones(2, 1), 0.1, 2)
    with pytest.raises(ValueError, match=r"std must be >= 0.0, got -1.0"):
        wasserstein2_to_gaussian(torch.ones(3), 0.0, -1.0)
    with pytest.raises(TypeError, match=r"gaussian must be a bool, got int"):
        ito_chain_bound_exponent(0.0, gaussian=1)
