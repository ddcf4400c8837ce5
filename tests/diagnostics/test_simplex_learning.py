"""Tests for paperzoo.diagnostics.simplex_learning: closed forms, quadrature, autograd, scipy routes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.simplex_learning import (
    _cf_and_node_derivatives,
    _exp_divided_difference,
    _simplex_cf,
    deconvolved_characteristic_function,
    fit_simplex_fourier,
    regular_simplex,
    sample_noisy_simplex,
    simplex_characteristic_function,
    vertex_matching_error,
)

D = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: intra-op threads only add contention


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _distinct_node_formula(z: np.ndarray) -> complex:
    """K! sum_j e^{z_j} / prod_{l != j} (z_j - z_l): the divided difference for distinct nodes."""
    K = len(z) - 1
    return math.factorial(K) * sum(np.exp(z[j]) / np.prod([z[j] - z[l] for l in range(K + 1) if l != j])
                                   for j in range(K + 1))


def test_segment_closed_form():
    V = torch.tensor([[-0.3], [1.2]], dtype=D)
    w = torch.linspace(-4, 4, 9, dtype=D)[:, None]
    got = simplex_characteristic_function(V, w).numpy()
    t = w[:, 0].numpy()
    want = np.where(t == 0, 1.0, (np.exp(1.2j * t) - np.exp(-0.3j * t)) / (1j * t * 1.5 + (t == 0)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


def test_distinct_nodes_formula_and_matrix_exponential():
    g = _gen(1)
    for K in (2, 3, 4):
        V = torch.randn(K + 1, K, generator=g, dtype=D)
        w = torch.randn(6, K, generator=g, dtype=D) * 1.5
        got = simplex_characteristic_function(V, w).numpy()
        z = 1j * (w @ V.T).numpy()
        want = np.array([_distinct_node_formula(zk) for zk in z])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
        ones = torch.ones(6, K, dtype=torch.complex128)
        Z = torch.tensor(z)
        opitz = math.factorial(K) * torch.linalg.matrix_exp(torch.diag_embed(Z) + torch.diag_embed(ones, 1))[:, 0, K]
        np.testing.assert_allclose(got, opitz.numpy(), rtol=0, atol=1e-12)


def test_wide_nodes_take_the_matrix_exponential_branch():
    g = _gen(2)
    V = 4.0 * torch.randn(3, 2, generator=g, dtype=D)
    w = 5.0 * torch.randn(5, 2, generator=g, dtype=D)  # node spread well beyond the Taylor radius
    z = 1j * (w @ V.T).numpy()
    assert np.abs(z - z.mean(1, keepdims=True)).max() > 10
    want = np.array([_distinct_node_formula(zk) for zk in z])
    np.testing.assert_allclose(simplex_characteristic_function(V, w).numpy(), want, rtol=0, atol=1e-9)


def test_coincident_nodes_are_stable():
    # omega orthogonal to an edge: two nodes coincide; exp[z, z] = e^z, exp[z, z, z] = e^z / 2.
    z = torch.tensor([[0.7j, 0.7j], [0.2j, 0.2j]], dtype=torch.complex128)
    np.testing.assert_allclose(_exp_divided_difference(z).numpy(), np.exp(z[:, 0].numpy()), atol=1e-14)
    z3 = torch.full((1, 3), -0.4j, dtype=torch.complex128)
    np.testing.assert_allclose(_exp_divided_difference(z3).numpy(), np.exp(-0.4j) / 2, atol=1e-14)


def test_triangle_quadrature():
    from scipy.integrate import dblquad

    V = torch.tensor([[0.0, 0.0], [1.0, 0.2], [0.3, 0.9]], dtype=D)
    w = torch.tensor([[1.3, -2.1]], dtype=D)
    got = complex(simplex_characteristic_function(V, w)[0])
    A = (V[1:] - V[0]).numpy()  # x = v0 + a A[0] + b A[1], a, b >= 0, a + b <= 1; density 2 in (a, b)
    om, v0 = w[0].numpy(), V[0].numpy()

    def part(f):
        return dblquad(lambda b, a: 2 * f(om @ (v0 + a * A[0] + b * A[1])), 0, 1, 0, lambda a: 1 - a,
                       epsabs=1e-12, epsrel=1e-12)[0]

    assert abs(got - complex(part(np.cos), part(np.sin))) < 1e-10


def test_monte_carlo_and_noisy_sampler_moments():
    g = _gen(3)
    V = regular_simplex(3, generator=g)
    n = 200_000
    y = sample_noisy_simplex(V, n, 0.0, generator=g)
    w = torch.randn(4, 3, generator=g, dtype=D)
    mc = torch.exp(1j * (y @ w.T).to(torch.complex128)).mean(0)
    assert (mc - simplex_characteristic_function(V, w)).abs().max() < 5 / math.sqrt(n)
    sigma = 0.4
    y = sample_noisy_simplex(V, n, sigma, generator=g)
    c = V.mean(0)
    cov = (V - c).T @ (V - c) / (4 * 5) + sigma**2 * torch.eye(3, dtype=D)
    assert (y.mean(0) - c).abs().max() < 5 * math.sqrt(float(cov.diagonal().max()) / n)
    assert (torch.cov(y.T) - cov).abs().max() < 0.01


def test_deconvolved_cf_unbiased_and_stderr():
    g = _gen(4)
    V = regular_simplex(2, generator=g)
    w = torch.randn(5, 2, generator=g, dtype=D)
    sigma, n = 0.5, 100_000
    y = sample_noisy_simplex(V, n, sigma, generator=g)
    r = deconvolved_characteristic_function(y, w, sigma)
    truth = simplex_characteristic_function(V, w)
    assert ((r.value - truth).abs() / r.stderr).max() < 5
    # stderr against an explicit per-frequency loop, and the predicted per-sample variance e^{s^2|w|^2} - |phi|^2
    for k in range(2):
        vals = [complex(np.exp(1j * float(y[i] @ w[k]))) for i in range(2000)]
        sub = deconvolved_characteristic_function(y[:2000], w[k:k + 1], sigma)
        amp = math.exp(0.5 * sigma**2 * float(w[k] @ w[k]))
        want = amp * np.sqrt(np.sum(np.abs(np.array(vals) - np.mean(vals)) ** 2) / 1999 / 2000)
        assert abs(float(sub.stderr[0]) - want) < 1e-12
        var_pred = math.exp(sigma**2 * float(w[k] @ w[k])) - abs(complex(truth[k])) ** 2
        assert abs(float(r.stderr[k]) ** 2 * n / var_pred - 1) < 0.05


def test_node_derivatives_match_autograd():
    g = _gen(5)
    V = regular_simplex(3, generator=g) + 0.1 * torch.randn(4, 3, generator=g, dtype=D)
    w = torch.randn(7, 3, generator=g, dtype=D)
    _, dphi = _cf_and_node_derivatives(V, w)
    analytic = dphi[:, :, None] * (1j * w.to(torch.complex128))[:, None, :]  # (m, K + 1, K)
    for part in (torch.real, torch.imag):
        jac = torch.autograd.functional.jacobian(lambda v: part(_simplex_cf(v, w)), V)  # (m, K + 1, K)
        np.testing.assert_allclose(jac.numpy(), part(analytic).numpy(), rtol=0, atol=1e-11)


def _problem(K=2, n=3000, sigma=0.2, seed=6, m=32):
    g = _gen(seed)
    V = regular_simplex(K, generator=g)
    y = sample_noisy_simplex(V, n, sigma, generator=g)
    w = torch.randn(m, K, generator=g, dtype=D)
    init = V + 0.1 * torch.randn(K + 1, K, generator=g, dtype=D)
    return V, y, w, init


def test_fit_matches_scipy_least_squares():
    from scipy.optimize import least_squares

    V, y, w, init = _problem()
    sigma = 0.2
    fit = fit_simplex_fourier(y, w, sigma, init, tol=1e-12)
    assert bool(fit.converged)
    psi = torch.exp(1j * (y @ w.T).to(torch.complex128)).mean(0)
    damp = torch.exp(-0.5 * sigma**2 * (w**2).sum(1))

    def resid(p):
        r = _simplex_cf(torch.tensor(p, dtype=D).view(3, 2), w) * damp - psi
        return torch.cat([r.real, r.imag]).numpy()

    ref = least_squares(resid, init.flatten().numpy(), xtol=1e-14, ftol=1e-14, gtol=1e-14)
    np.testing.assert_allclose(fit.vertices.flatten().numpy(), ref.x, rtol=0, atol=1e-6)
    assert abs(float(fit.loss) - 2 * ref.cost / w.shape[0]) < 1e-12
    assert float(vertex_matching_error(fit.vertices, V)) < 0.1


def test_fit_batched_equals_unbatched_and_per_problem_sigma():
    V, y, w, init = _problem(seed=7)
    y2 = sample_noisy_simplex(V, 3000, 0.5, generator=_gen(8))
    single = [fit_simplex_fourier(y, w, 0.2, init), fit_simplex_fourier(y2, w, 0.5, init)]
    batch = fit_simplex_fourier(torch.stack([y, y2]), w, torch.tensor([0.2, 0.5], dtype=D),
                                torch.stack([init, init]))
    for b, s in enumerate(single):
        np.testing.assert_allclose(batch.vertices[b].numpy(), s.vertices.numpy(), rtol=0, atol=1e-9)
    assert bool(batch.converged.all())


def test_fit_noiseless_recovery_improves_with_n():
    errs = []
    for n in (500, 20_000):
        V, y, w, init = _problem(n=n, sigma=0.0, seed=9)
        errs.append(float(vertex_matching_error(fit_simplex_fourier(y, w, 0.0, init).vertices, V)))
    assert errs[1] < errs[0] / 2 and errs[1] < 0.03


def test_fit_warns_without_convergence():
    V, y, w, init = _problem()
    with pytest.warns(RuntimeWarning, match="did not converge in 1 iterations; raise max_iter"):
        fit = fit_simplex_fourier(y, w, 0.2, init, max_iter=1)
    assert not bool(fit.converged)


def test_vertex_matching_error_against_linear_sum_assignment():
    from scipy.optimize import linear_sum_assignment

    g = _gen(10)
    for K in (2, 3, 4):
        A = torch.randn(5, K + 1, K, generator=g, dtype=D)
        B = torch.randn(K + 1, K, generator=g, dtype=D)
        got = vertex_matching_error(A, B)
        for i in range(5):
            C = ((A[i][:, None] - B[None]) ** 2).sum(-1).numpy()
            r, c = linear_sum_assignment(C)
            assert abs(float(got[i]) - math.sqrt(C[r, c].mean())) < 1e-12


def test_regular_simplex_geometry():
    V = regular_simplex(4, radius=2.0, generator=_gen(11))
    d = torch.cdist(V, V)[~torch.eye(5, dtype=torch.bool)]
    assert float(d.max() - d.min()) < 1e-12
    np.testing.assert_allclose(V.norm(dim=1).numpy(), 2.0, atol=1e-12)
    assert float(V.mean(0).abs().max()) < 1e-12


@settings(max_examples=25, deadline=None)
@given(K=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_cf_properties(K, seed):
    g = _gen(seed)
    V = torch.randn(K + 1, K, generator=g, dtype=D)
    w = torch.randn(5, K, generator=g, dtype=D)
    phi = simplex_characteristic_function(V, w)
    perm = torch.randperm(K + 1, generator=g)
    np.testing.assert_allclose(simplex_characteristic_function(V[perm], w).numpy(), phi.numpy(), atol=1e-11)
    np.testing.assert_allclose(simplex_characteristic_function(V, -w).numpy(), phi.conj().resolve_conj().numpy(),
                               atol=1e-11)
    assert float(phi.abs().max()) <= 1 + 1e-10
    shift = torch.randn(K, generator=g, dtype=D)  # translation multiplies by e^{i w.shift}
    np.testing.assert_allclose(simplex_characteristic_function(V + shift, w).numpy(),
                               (phi * torch.exp(1j * (w @ shift).to(torch.complex128))).numpy(), atol=1e-11)
    assert abs(complex(simplex_characteristic_function(V, torch.zeros(1, K, dtype=D))[0]) - 1) < 1e-14


def test_errors():
    V = regular_simplex(2)
    w = torch.randn(3, 2, dtype=D)
    y = sample_noisy_simplex(V, 10, 0.1, generator=_gen(12))
    with pytest.raises(ValueError, match=r"vertices must have shape \(K \+ 1, K\) \(one row per vertex\), got \(2, 2\)"):
        simplex_characteristic_function(V[:2], w)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        sample_noisy_simplex(V, 5, -1.0)
    with pytest.raises(ValueError, match="init must have a batch dimension exactly when samples has one"):
        fit_simplex_fourier(y[None], w, 0.1, V)
    with pytest.raises(ValueError, match=r"init must have the batch size of samples \(2\), got 3"):
        fit_simplex_fourier(torch.stack([y, y]), w, 0.1, torch.stack([V, V, V]))
    with pytest.raises(ValueError, match=r"sigma as a tensor must have shape \(B,\)"):
        fit_simplex_fourier(torch.stack([y, y]), w, torch.tensor([0.1, 0.2, 0.3], dtype=D), torch.stack([V, V]))
    with pytest.raises(ValueError, match="truth must have at most 8 vertices"):
        vertex_matching_error(torch.zeros(9, 8, dtype=D), torch.zeros(9, 8, dtype=D))
    with pytest.raises(TypeError, match="omega must have the dtype of vertices"):
        simplex_characteristic_function(V, w.float())


def test_taylor_branch_near_its_radius_matches_matrix_exponential():
    # nodes spread just inside the Taylor radius (10): the truncated series against Opitz's matrix exponential
    z = 1j * torch.tensor([[-9.5, -3.0, 0.4, 9.0], [-0.2, 0.1, 0.3, 0.35]], dtype=D)
    z = z.to(torch.complex128)
    assert float((z - z.mean(1, keepdim=True)).abs().max()) < 10
    ones = torch.ones(2, 3, dtype=torch.complex128)
    want = torch.linalg.matrix_exp(torch.diag_embed(z) + torch.diag_embed(ones, 1))[:, 0, 3]
    np.testing.assert_allclose(_exp_divided_difference(z).numpy(), want.numpy(), rtol=0, atol=1e-12)
