import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import comb, factorial

from paperzoo.diagnostics.attention_lowrank import (
    bounded_sign_inputs, critical_gamma, exact_attention, fast_attention, max_degree_for_rank,
    polynomial_attention_error, polynomial_rank, taylor_error_bound, taylor_features)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: intra-op threads only add contention


def _qkv(n=12, m=9, d=3, e=2, scale=0.6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, d, generator=g, dtype=dtype), scale * torch.randn(m, d, generator=g, dtype=dtype),
            torch.randn(m, e, generator=g, dtype=dtype))


def test_features_reproduce_taylor_polynomial_entrywise():
    Q, K, _ = _qkv(d=4)
    for degree in range(6):
        A = taylor_features(Q, degree) @ taylor_features(K, degree).T
        X = (Q @ K.T).numpy() / 4
        ref = sum(X ** j / math.factorial(j) for j in range(degree + 1))
        np.testing.assert_allclose(A.numpy(), ref, rtol=1e-12, atol=1e-13)
        assert taylor_features(Q, degree).shape[1] == comb(4 + degree, degree, exact=True)


def test_features_explicit_monomials_with_custom_scale():
    # Independent route: per multi-index alpha, q^alpha sqrt(s^|alpha| / alpha!) (explicit Python loop, tiny case).
    q = torch.tensor([[0.7, -1.3]], dtype=torch.float64)
    s, g = 0.37, 3
    expected = []
    for j in range(g + 1):
        for a in range(j, -1, -1):
            alpha = (a, j - a)
            expected.append(q[0, 0] ** alpha[0] * q[0, 1] ** alpha[1] * math.sqrt(s ** j / (factorial(alpha[0])
                                                                                             * factorial(alpha[1]))))
    got = taylor_features(q, g, scale=s)[0]
    np.testing.assert_allclose(sorted(got.tolist()), sorted(float(x) for x in expected), rtol=1e-13)


def test_exact_attention_matches_explicit_softmax():
    Q, K, V = _qkv()
    ref = torch.softmax(Q @ K.T / 3, dim=1) @ V
    torch.testing.assert_close(exact_attention(Q, K, V), ref, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(exact_attention(Q, K, V, scale=0.2), torch.softmax(0.2 * Q @ K.T, 1) @ V,
                               rtol=1e-12, atol=1e-13)


def test_fast_attention_equals_dense_polynomial_route_and_converges():
    Q, K, V = _qkv()
    X = Q @ K.T / 3
    for degree in (1, 2, 4):
        P = sum(X ** j / math.factorial(j) for j in range(degree + 1))
        res = fast_attention(Q, K, V, degree)
        torch.testing.assert_close(res.output, (P @ V) / P.sum(1, keepdim=True), rtol=1e-12, atol=1e-13)
        assert res.rank == polynomial_rank(3, degree) and res.degree == degree and res.min_row_sum > 0
        dense_err = polynomial_attention_error(Q, K, V, degree)
        assert abs(dense_err - float((res.output - exact_attention(Q, K, V)).abs().max())) < 1e-13
    assert float((fast_attention(Q, K, V, 12).output - exact_attention(Q, K, V)).abs().max()) < 1e-12


def test_fast_attention_float32():
    Q, K, V = _qkv(dtype=torch.float32)
    out = fast_attention(Q, K, V, 6).output
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, exact_attention(Q, K, V), rtol=1e-4, atol=1e-5)


def test_rank_counts_brute_force():
    for d, g in itertools.product(range(1, 6), range(0, 6)):
        n_mono = sum(1 for a in itertools.product(range(g + 1), repeat=d) if sum(a) <= g)
        assert polynomial_rank(d, g) == n_mono
    for d, r in itertools.product(range(1, 8), (1, 7, 64, 1000)):
        g = max_degree_for_rank(d, r)
        assert polynomial_rank(d, g) <= r and (polynomial_rank(d, g + 1) > r)


def test_taylor_bound_dominates_entrywise_relative_error():
    x = np.linspace(-1.0, 1.0, 20001)
    for gamma, g in ((0.5, 3), (1.0, 5), (2.0, 8)):
        T = sum((gamma * x) ** j / math.factorial(j) for j in range(g + 1))
        delta = np.max(np.abs(T - np.exp(gamma * x)) / np.exp(gamma * x))
        bound = taylor_error_bound(gamma, g)
        assert 2 * delta / (1 - delta) <= bound
    assert taylor_error_bound(0.0, 3) == 0.0
    assert taylor_error_bound(50.0, 2) == math.inf


@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 40), d=st.integers(1, 5), R2=st.floats(0.01, 2.5), g=st.integers(1, 8),
       seed=st.integers(0, 2 ** 20))
def test_bound_covers_measured_error_on_bounded_inputs(n, d, R2, g, seed):
    Q, K, V = bounded_sign_inputs(n, d, math.sqrt(R2), generator=torch.Generator().manual_seed(seed))
    assert float((Q @ K.T / d).abs().max()) <= R2 * (1 + 1e-12)
    err = polynomial_attention_error(Q, K, V, g)
    assert err <= taylor_error_bound(R2, g) + 1e-12


def test_critical_gamma_brackets_target():
    for g, eps in ((3, 0.05), (6, 1 / 256), (8, 1 / 4096)):
        gc = critical_gamma(g, eps)
        assert taylor_error_bound(gc, g) <= eps < taylor_error_bound(gc * (1 + 1e-6), g)


def test_nonpositive_row_sum_warns():
    Q = torch.full((2, 1), 3.0, dtype=torch.float64)
    K = torch.tensor([[-3.0], [-3.0]], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="approximate row sum"):
        fast_attention(Q, K, torch.ones(2, 1, dtype=torch.float64), 1)


def test_error_messages():
    Q, K, V = _qkv()
    with pytest.raises(ValueError, match="degree must be >= 0, got -1"):
        fast_attention(Q, K, V, -1)
    with pytest.raises(ValueError, match="K"):
        fast_attention(Q, K[:, :2], V, 2)
    with pytest.raises(ValueError, match="eps must be < 1"):
        critical_gamma(3, 1.0)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        taylor_error_bound(-1.0, 2)
    with pytest.raises(TypeError, match="dtype"):
        fast_attention(Q, K.float(), V, 2)
