"""SRRW kernel, token and SA-SRRW: closed forms, limits, convergence, state round trip, theory, bad input."""

from __future__ import annotations

import pytest
import torch

from paperzoo.data.graphs import metropolis_hastings_chain, newman_watts_graph, stationary_distribution
from paperzoo.optim import SRRWToken, sa_srrw, sa_srrw_covariance, srrw_kernel, srrw_sampling_covariance

N = 12


@pytest.fixture(autouse=True)
def _one_thread():
    # every step is a handful of tiny tensor ops; intra-op threads only add overhead on the shared machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _chain(dtype=torch.float64, uniform=True):
    A = newman_watts_graph(N, 4, 0.3, generator=torch.Generator().manual_seed(0))
    mu = torch.full((N,), 1.0 / N, dtype=dtype) if uniform else torch.softmax(
        torch.randn(N, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 0).to(dtype)
    return metropolis_hastings_chain(A, mu, dtype=dtype), mu


def _visit_measures(B, dtype=torch.float64):
    return torch.softmax(torch.randn(B, N, generator=torch.Generator().manual_seed(2), dtype=dtype), -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_rows_sum_to_one_and_respect_edges(dtype):
    P, mu = _chain(dtype)
    K = srrw_kernel(P, mu, _visit_measures(4, dtype), torch.tensor([0.0, 1.0, 5.0, 50.0], dtype=dtype))
    assert K.shape == (4, N, N) and K.dtype == dtype
    assert torch.allclose(K.sum(-1), torch.ones(4, N, dtype=dtype), atol=1e-5)
    assert bool((K[:, P == 0] == 0).all()) and bool(torch.isfinite(K).all())


def test_kernel_limits_alpha_zero_and_x_equal_mu_give_base_chain():
    P, mu = _chain(uniform=False)
    assert torch.allclose(srrw_kernel(P, mu, _visit_measures(1)[0], 0.0), P, atol=1e-15)
    assert torch.allclose(srrw_kernel(P, mu, mu, 30.0), P, atol=1e-14)


def test_kernel_closed_form_and_stationary_law():
    P, mu = _chain(uniform=False)
    x, alpha = _visit_measures(1)[0], 2.5
    K = srrw_kernel(P, mu, x, alpha)
    w = (x / mu) ** -alpha
    assert torch.allclose(K, P * w / (P @ w)[:, None], atol=1e-14)
    # K[x] is reversible w.r.t. pi_i ~ mu_i w_i (P w)_i (Doshi et al., 2023)
    pi = mu * w * (P @ w)
    assert torch.allclose(stationary_distribution(K), pi / pi.sum(), atol=1e-12)


def test_token_moves_along_edges_and_samples_the_kernel_row():
    P, mu = _chain()
    W = 20_000
    token = SRRWToken(P, mu, 3.0, num_walkers=W, start=0, x0=_visit_measures(1)[0],
                      generator=torch.Generator().manual_seed(3))
    row = token.transition_probs()[0]
    nxt = token.step()
    assert bool((P[0, nxt] > 0).all())
    freq = torch.bincount(nxt, minlength=N).double() / W
    assert (freq - row).abs().max() < 4 * (0.25 / W) ** 0.5


def test_visit_measure_with_a_equal_one_is_running_frequency():
    P, mu = _chain()
    token = SRRWToken(P, mu, 1.0, num_walkers=3, gamma_exponent=1.0, generator=torch.Generator().manual_seed(4))
    counts = torch.zeros(3, N, dtype=torch.float64)
    for _ in range(200):
        counts[torch.arange(3), token.step()] += 1
    assert torch.allclose(token.x, (mu + counts) / 201, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 5.0])
def test_visit_measure_converges_to_target(alpha):
    P, mu = _chain(uniform=False)
    token = SRRWToken(P, mu, alpha, num_walkers=50, generator=torch.Generator().manual_seed(5))
    for _ in range(4000):
        token.step()
    err = (token.x - mu).abs().sum(1).mean()
    assert err < 0.15
    if alpha > 0:  # repellence pulls x to mu far faster than the base chain's O(gamma_n^{1/2}) fluctuations
        assert err < 0.05


def test_token_state_dict_round_trip_is_bit_identical():
    P, mu = _chain()
    g = torch.Generator().manual_seed(6)
    a = SRRWToken(P, mu, 2.0, num_walkers=5, generator=g)
    for _ in range(30):
        a.step()
    state, gstate = a.state_dict(), g.get_state()
    ref = torch.stack([a.step().clone() for _ in range(30)])
    g2 = torch.Generator()
    g2.set_state(gstate)
    b = SRRWToken(P, mu, 0.0, num_walkers=5, start=0, generator=g2)  # start given: draws nothing from g2
    b.load_state_dict(state)
    assert torch.equal(torch.stack([b.step().clone() for _ in range(30)]), ref)
    assert torch.equal(a.x, b.x) and a.n == b.n


@pytest.mark.parametrize("uniform", [True, False])
def test_sa_srrw_reaches_the_average_minimiser(uniform):
    P, mu = _chain(uniform=uniform)
    a = torch.randn(N, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    res = sa_srrw(lambda th, i: th - a[i], P, mu, torch.zeros(3, dtype=torch.float64), alpha=5.0,
                  max_iter=3000, num_walkers=8, record_every=1000, generator=torch.Generator().manual_seed(8))
    assert res.x.shape == (8, 3) and res.n_iter == 3000 and res.converged
    assert res.trace.shape == (3, 8, 3) and res.trace_visit.shape == (3, 8, N) and res.trace_steps.tolist() == [
        1000, 2000, 3000]
    assert (res.x.mean(0) - a.mean(0)).norm() < 0.05  # importance weighting: minimiser of (1/N) sum_i F_i
    if not uniform:
        plain = sa_srrw(lambda th, i: th - a[i], P, mu, torch.zeros(3, dtype=torch.float64), alpha=5.0,
                        max_iter=3000, num_walkers=8, importance_weighting=False,
                        generator=torch.Generator().manual_seed(8))
        assert (plain.x.mean(0) - mu @ a).norm() < 0.05  # without it: minimiser of sum_i mu_i F_i


def test_sa_srrw_float32_and_per_walker_alpha():
    P, mu = _chain(torch.float32)
    a = torch.randn(N, 2, generator=torch.Generator().manual_seed(9))
    res = sa_srrw(lambda th, i: th - a[i], P, mu, torch.zeros(2), alpha=torch.tensor([0.0, 10.0]),
                  max_iter=500, num_walkers=2, generator=torch.Generator().manual_seed(0))
    assert res.x.dtype == torch.float32 and res.visit_measure.shape == (2, N)


def _mc_asymptotic_covariance(P, mu, H):
    """Markov-chain CLT covariance of sum_k H(X_k) via the fundamental matrix Z = (I - P + 1 mu^T)^{-1}."""
    Z = torch.linalg.inv(torch.eye(N, dtype=P.dtype) - P + mu[None, :])
    Hc = H - mu @ H
    return Hc.T @ (mu[:, None] * (2 * Z - torch.eye(N, dtype=P.dtype))) @ Hc


def test_theory_alpha_zero_matches_base_chain_clt_and_decreases_as_alpha_squared():
    P, mu = _chain(uniform=False)
    H = torch.randn(N, 2, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    H = H - mu @ H
    sigma = _mc_asymptotic_covariance(P, mu, H)
    assert torch.allclose(sa_srrw_covariance(P, mu, H, 0.0, beta_exponent=0.9), sigma / 2, atol=1e-10)
    assert torch.allclose(sa_srrw_covariance(P, mu, H, 0.0, beta_exponent=1.0), sigma, atol=1e-10)
    J = torch.tensor([[-2.0, 0.5], [0.0, -1.0]], dtype=torch.float64)
    V = sa_srrw_covariance(P, mu, H, 3.0, jacobian=J)
    assert torch.allclose(J @ V + V @ J.T + sa_srrw_covariance(P, mu, H, 3.0) * 2, torch.zeros(2, 2,
                          dtype=torch.float64), atol=1e-10)
    tr = torch.tensor([float(sa_srrw_covariance(P, mu, H, al).trace()) for al in (0.0, 1.0, 1e2, 1e3)])
    assert bool((tr[1:] < tr[:-1]).all())
    assert 90 < float(tr[2] / tr[3]) < 101  # O(1/alpha^2) for large alpha


def test_theory_sampling_covariance_alpha_zero_is_visit_frequency_clt():
    P, mu = _chain(uniform=False)
    Vx = srrw_sampling_covariance(P, mu, 0.0, gamma_exponent=1.0)
    assert torch.allclose(Vx, _mc_asymptotic_covariance(P, mu, torch.eye(N, dtype=torch.float64)), atol=1e-10)
    big = srrw_sampling_covariance(P, mu, 1e3).trace() / srrw_sampling_covariance(P, mu, 1e4).trace()
    assert 9 < float(big) < 10.1  # O(1/alpha)


def test_errors():
    P, mu = _chain()
    x = _visit_measures(1)[0]
    with pytest.raises(ValueError, match="alpha must be >= 0.0, got -1.0"):
        srrw_kernel(P, mu, x, -1.0)
    with pytest.raises(ValueError, match="x must be > 0 entrywise"):
        srrw_kernel(P, mu, torch.zeros(N, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="P must be row-stochastic"):
        srrw_kernel(P * 2, mu, x, 1.0)
    with pytest.raises(ValueError, match=r"mu must have N = 12 \(from P\) in its shape \(N,\), got shape \(5,\)"):
        SRRWToken(P, mu[:5] / mu[:5].sum(), 1.0)
    with pytest.raises(ValueError, match="gamma_exponent must be > 0.5, got 0.5"):
        SRRWToken(P, mu, 1.0, gamma_exponent=0.5)
    with pytest.raises(ValueError, match="num_walkers must be >= 1, got 0"):
        SRRWToken(P, mu, 1.0, num_walkers=0)
    with pytest.raises(ValueError, match="start must be <= 11, got 12"):
        SRRWToken(P, mu, 1.0, start=12)
    with pytest.raises(ValueError, match="x0 must sum to 1"):
        SRRWToken(P, mu, 1.0, x0=torch.full((N,), 0.5, dtype=torch.float64))
    grad = lambda th, i: th  # noqa: E731
    with pytest.raises(ValueError, match="beta_exponent must be <= 1.0, got 1.5"):
        sa_srrw(grad, P, mu, torch.zeros(2, dtype=torch.float64), alpha=1.0, max_iter=10, beta_exponent=1.5)
    with pytest.raises(ValueError, match="max_iter must be >= 1, got 0"):
        sa_srrw(grad, P, mu, torch.zeros(2, dtype=torch.float64), alpha=1.0, max_iter=0)
    with pytest.raises(ValueError,
                       match=r"theta0 must have shape \(d,\) or \(num_walkers, d\) = \(3, d\), got \(2, 2\)"):
        sa_srrw(grad, P, mu, torch.zeros(2, 2, dtype=torch.float64), alpha=1.0, max_iter=5, num_walkers=3)
    with pytest.raises(ValueError, match=r"grad_fn must return a tensor of shape \(1, 2\) and dtype torch.float64, "
                                         r"got shape \(1, 1\)"):
        sa_srrw(lambda th, i: th[:, :1], P, mu, torch.zeros(2, dtype=torch.float64), alpha=1.0, max_iter=5)
    with pytest.raises(FloatingPointError, match="sa_srrw produced NaN or inf at iteration 5; decrease beta_scale"):
        sa_srrw(lambda th, i: th * float("nan"), P, mu, torch.zeros(2, dtype=torch.float64), alpha=1.0,
                max_iter=5)
    nonrev = 0.5 * torch.eye(N, dtype=torch.float64) + 0.5 * torch.roll(torch.eye(N, dtype=torch.float64), 1, 1)
    with pytest.raises(ValueError, match="P must be reversible with respect to mu"):
        sa_srrw_covariance(nonrev, mu, torch.zeros(N, 1, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="must be Hurwitz"):
        sa_srrw_covariance(P, mu, torch.zeros(N, 1, dtype=torch.float64), 1.0,
                           jacobian=-0.25 * torch.eye(1, dtype=torch.float64), beta_exponent=1.0)


def test_relational_errors_of_the_chain_and_the_walk():
    P, mu = _chain()
    x = _visit_measures(1)[0]
    with pytest.raises(ValueError, match=r"P must be row-stochastic \(rows summing to 1\), got a row sum of 2.0"):
        srrw_kernel(P * 2, mu, x, 1.0)
    skewed = torch.softmax(torch.arange(N, dtype=torch.float64), 0)
    with pytest.raises(ValueError, match=r"mu must be the stationary distribution of P \(mu P = mu\), got max"):
        srrw_kernel(P, skewed, x, 1.0)
    with pytest.raises(ValueError, match="mu must be > 0 entrywise"):
        SRRWToken(P, torch.cat([mu[:-1] + mu[-1] / (N - 1), mu.new_zeros(1)]), 1.0)
    with pytest.raises(ValueError, match="x must sum to 1, got 3.0"):
        srrw_kernel(P, mu, 3 * x, 1.0)
    with pytest.raises(ValueError, match=r"alpha must be a number or a tensor with one entry per row of x"):
        srrw_kernel(P, mu, _visit_measures(2), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"alpha must be a number or a tensor of shape \(num_walkers,\) = \(2,\)"):
        SRRWToken(P, mu, torch.ones(3, dtype=torch.float64), num_walkers=2)
    with pytest.raises(TypeError, match=r"alpha must have the dtype of P \(torch.float64\), got torch.float32"):
        SRRWToken(P, mu, torch.ones(2), num_walkers=2)
    with pytest.raises(ValueError, match=r"x0 must have shape \(12,\) or \(num_walkers, 12\) = \(3, 12\)"):
        SRRWToken(P, mu, 1.0, num_walkers=3, x0=_visit_measures(2))
    with pytest.raises(ValueError, match=r"start must be an int or a tensor of shape \(num_walkers,\) = \(2,\)"):
        SRRWToken(P, mu, 1.0, num_walkers=2, start=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"start must hold nodes in \[0, 11\], got a maximum of 12"):
        SRRWToken(P, mu, 1.0, num_walkers=2, start=torch.tensor([0, 12]))
    with pytest.raises(TypeError, match="start must have an integer dtype"):
        SRRWToken(P, mu, 1.0, num_walkers=2, start=torch.tensor([0.0, 1.0]))
    token = SRRWToken(P, mu, 1.0, num_walkers=2, start=torch.tensor([0, 3], dtype=torch.uint8))
    assert token.node.dtype == torch.long and token.node.tolist() == [0, 3]
    with pytest.raises(ValueError, match=r"grad_fn must return a tensor of shape \(1, 2\) and dtype torch.float64"):
        sa_srrw(lambda th, i: th.float(), P, mu, torch.zeros(2, dtype=torch.float64), alpha=1.0, max_iter=2)
    with pytest.raises(TypeError, match="grad_fn must be callable"):
        sa_srrw(None, P, mu, torch.zeros(2, dtype=torch.float64), alpha=1.0, max_iter=2)
    # a reducible chain (every state absorbing) has no finite asymptotic covariance
    eye, uniform = torch.eye(3, dtype=torch.float64), torch.full((3,), 1 / 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="P must be irreducible"):
        srrw_sampling_covariance(eye, uniform, 1.0)
    with pytest.raises(ValueError, match="P must be irreducible"):
        sa_srrw_covariance(eye, uniform, torch.zeros(3, 1, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match=r"H must have N = 12 \(from P\)"):
        sa_srrw_covariance(P, mu, torch.zeros(5, 1, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="jacobian must have d = 1"):
        sa_srrw_covariance(P, mu, torch.zeros(N, 1, dtype=torch.float64), 1.0,
                           jacobian=-torch.eye(2, dtype=torch.float64))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _random_reversible_chain(n, seed, lazy):
    """P_ij = w_ij / w_i for symmetric weights w (a random walk on a weighted graph): reversible w.r.t. mu ~ w_i."""
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, n, generator=g, dtype=torch.float64) + 0.05
    w = w + w.T
    if not lazy:
        w.fill_diagonal_(0.0)
    P = w / w.sum(1, keepdim=True)
    mu = w.sum(1) / w.sum()
    return P, mu, g


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 6), seed=st.integers(0, 10_000), alpha=st.floats(0.0, 200.0), lazy=st.booleans())
def test_property_kernel_is_a_stochastic_matrix_on_the_edges_of_p(n, seed, alpha, lazy):
    P, mu, g = _random_reversible_chain(n, seed, lazy)
    x = torch.softmax(3 * torch.randn(2, n, generator=g, dtype=torch.float64), -1)
    K = srrw_kernel(P, mu, x, alpha)
    assert bool(torch.isfinite(K).all()) and bool((K >= 0).all())
    assert torch.allclose(K.sum(-1), torch.ones(2, n, dtype=torch.float64), atol=1e-12)
    assert bool((K[:, P == 0] == 0).all())
    assert torch.allclose(srrw_kernel(P, mu, mu, alpha), P, atol=1e-12)  # K[mu] = P


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 6), seed=st.integers(0, 10_000), alpha=st.floats(0.0, 100.0),
       a=st.sampled_from([0.6, 0.8, 1.0]))
def test_property_sampling_covariance_is_psd_decreasing_and_conserves_mass(n, seed, alpha, a):
    P, mu, _ = _random_reversible_chain(n, seed, lazy=True)
    V = srrw_sampling_covariance(P, mu, alpha, gamma_exponent=a)
    assert torch.allclose(V, V.T, atol=1e-12)
    assert float(torch.linalg.eigvalsh(V)[0]) > -1e-10
    assert float(V.sum(1).abs().max()) < 1e-10  # x_n stays in the simplex: no variance along the all-ones vector
    assert float(srrw_sampling_covariance(P, mu, alpha + 1.0, gamma_exponent=a).trace()) <= float(V.trace()) + 1e-12


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 5), seed=st.integers(0, 10_000), alpha=st.floats(0.0, 50.0), walkers=st.integers(1, 3))
def test_property_sa_srrw_short_runs_stay_finite_and_in_the_simplex(n, seed, alpha, walkers):
    P, mu, g = _random_reversible_chain(n, seed, lazy=False)
    a = torch.randn(n, 2, generator=g, dtype=torch.float64)
    res = sa_srrw(lambda th, i: th - a[i], P, mu, torch.zeros(2, dtype=torch.float64), alpha=alpha, max_iter=20,
                  num_walkers=walkers, generator=g)
    assert bool(torch.isfinite(res.x).all()) and res.x.shape == (walkers, 2)
    assert bool((res.visit_measure > 0).all())
    assert torch.allclose(res.visit_measure.sum(1), torch.ones(walkers, dtype=torch.float64), atol=1e-12)
