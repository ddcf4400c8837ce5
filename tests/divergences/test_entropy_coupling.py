"""Tests for paperzoo.divergences.entropy_coupling (Minimum Entropy Coupling with Bottleneck, 2024)."""

import itertools
import math

import pytest
import torch

from paperzoo.divergences import (ebim_greedy, entropy, greedy_mec, majorization_meet, mec_b,
                                  discrete_mutual_information)

D = torch.float64


def _dirichlet(n, seed):
    g = torch.Generator().manual_seed(seed)
    e = -torch.rand(n, generator=g, dtype=D).log()
    return e / e.sum()


def _h2(x):
    return 0.0 if x in (0.0, 1.0) else -(x * math.log2(x) + (1 - x) * math.log2(1 - x))


def test_entropy_and_mutual_information_closed_forms():
    assert float(entropy(torch.full((8,), 1 / 8, dtype=D))) == pytest.approx(3.0)
    assert float(entropy(torch.tensor([1.0, 0.0], dtype=D))) == 0.0
    assert float(entropy(torch.tensor([0.5, 0.5], dtype=D), base=math.e)) == pytest.approx(math.log(2))
    p, q = _dirichlet(4, 0), _dirichlet(3, 1)
    assert float(discrete_mutual_information(p[:, None] * q[None, :])) == pytest.approx(0.0, abs=1e-12)
    assert float(discrete_mutual_information(torch.diag(p))) == pytest.approx(float(entropy(p)))


@pytest.mark.parametrize("seed", range(6))
def test_greedy_mec_marginals_and_bounds(seed):
    n, m = 3 + seed, 8 - seed
    p, q = _dirichlet(n, seed), _dirichlet(m, 100 + seed)
    P = greedy_mec(p, q)
    torch.testing.assert_close(P.sum(1), p, atol=1e-12, rtol=0)
    torch.testing.assert_close(P.sum(0), q, atol=1e-12, rtol=0)
    H = float(entropy(P))
    lower = float(entropy(majorization_meet(p, q)))
    assert max(float(entropy(p)), float(entropy(q))) <= lower + 1e-12
    assert lower - 1e-12 <= H <= lower + math.log2(math.e)  # Compton (2022)
    assert H <= float(entropy(p)) + float(entropy(q)) + 1e-12  # never worse than the independent coupling
    assert int((P > 0).sum()) <= n + m - 1


def test_greedy_mec_is_optimal_on_2x2_by_brute_force():
    # Couplings of two binary marginals form a segment; entropy is concave, so the minimum is at an endpoint.
    for seed in range(5):
        p, q = _dirichlet(2, seed), _dirichlet(2, 50 + seed)
        lo, hi = max(0.0, float(p[0] + q[0] - 1)), min(float(p[0]), float(q[0]))
        ts = torch.linspace(lo, hi, 2001, dtype=D)
        J = torch.stack([ts, p[0] - ts, q[0] - ts, 1 - p[0] - q[0] + ts], 1).clamp(min=0)
        Hs = -(J * torch.where(J > 0, J, torch.ones_like(J)).log2()).sum(1)
        assert float(entropy(greedy_mec(p, q))) == pytest.approx(float(Hs.min()), abs=1e-9)


def _best_deterministic(p, R):
    n = len(p)
    best = 0.0
    for labels in itertools.product(range(n), repeat=n):
        masses = torch.zeros(n, dtype=D).index_add_(0, torch.tensor(labels), p)
        H = float(entropy(masses))
        if H <= R + 1e-12:
            best = max(best, H)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_ebim_budget_guarantee_and_brute_force(seed):
    p = _dirichlet(5, seed)
    Hx = float(entropy(p))
    h2 = _h2(float(p.sort(descending=True).values[1]))
    for f in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2):
        R = f * Hx
        res = ebim_greedy(p, R, refine=True)
        torch.testing.assert_close(res.joint.sum(1), p, atol=1e-12, rtol=0)  # a valid encoder of p_X
        I = float(res.mutual_information)
        assert float(res.rate) <= R + 1e-9 and I <= float(res.rate) + 1e-9
        assert res.guarantee == pytest.approx(h2)
        assert min(R, Hx) - I <= h2 + 1e-9  # the paper's guarantee, against the upper bound on I*
        assert I >= float(res.deterministic_mutual_information) - 1e-12
        assert float(res.deterministic_mutual_information) == pytest.approx(
            float(ebim_greedy(p, R).mutual_information))
        if f in (0.4, 0.8):
            assert float(res.deterministic_mutual_information) <= _best_deterministic(p, R) + 1e-9
    assert ebim_greedy(p, 0.0).mutual_information.abs() < 1e-9
    assert float(ebim_greedy(p, Hx + 0.1).mutual_information) == pytest.approx(Hx)


def test_ebim_paper_example():
    # p_X = [0.7, 0.2, 0.1] (the paper's Figure 2), traced by hand through Algorithm 1.
    p = torch.tensor([0.1, 0.7, 0.2], dtype=D)
    # R = 0.9: merging the two least likely symbols gives H(0.7, 0.3) = h(0.3) <= R: stop there.
    res = ebim_greedy(p, 0.9)
    assert float(res.mutual_information) == pytest.approx(_h2(0.3)) and res.n_merges == 1
    torch.testing.assert_close(res.joint[:, res.joint.sum(0).argsort()],
                               torch.tensor([[0.1, 0.0], [0.0, 0.7], [0.2, 0.0]], dtype=D))
    # R = 0.75: h(0.3) > R, so the two most likely merge: H(0.9, 0.1) = h(0.1) <= R.
    res = ebim_greedy(p, 0.75)
    assert float(res.mutual_information) == pytest.approx(_h2(0.1)) and res.n_merges == 1
    assert res.guarantee == pytest.approx(_h2(0.2))
    # Theorem 3 move spends the rest of the budget
    ref = ebim_greedy(p, 0.75, refine=True)
    assert float(ref.rate) == pytest.approx(0.75, abs=1e-9)
    assert float(ref.mutual_information) > float(res.mutual_information)


def test_mec_b_marginals_and_markov_chain():
    p, q = _dirichlet(6, 7), _dirichlet(4, 8)
    for R in (0.5, 1.0, 2.0):
        out = mec_b(p, q, R)
        torch.testing.assert_close(out.joint.sum(1), p, atol=1e-12, rtol=0)
        torch.testing.assert_close(out.joint.sum(0), q, atol=1e-12, rtol=0)
        torch.testing.assert_close(out.decoder.sum(0), q, atol=1e-12, rtol=0)
        I_xt = float(discrete_mutual_information(out.encoder))
        assert float(out.mutual_information) <= I_xt + 1e-9 <= R + 2e-9  # data processing
    # with an unconstrained budget and q = p, MEC-B is a relabelling: I(X;Y) = H(X)
    out = mec_b(p, p.flip(0), 10.0)
    assert float(out.mutual_information) == pytest.approx(float(entropy(p)))


def test_bad_inputs():
    p = torch.tensor([0.5, 0.5], dtype=D)
    with pytest.raises(ValueError, match=r"p must sum to 1 \(atol=1e-06\), got sum\(p\)=0.9"):
        greedy_mec(torch.tensor([0.4, 0.5], dtype=D), p)
    with pytest.raises(ValueError, match="p_x must be >= 0 entrywise"):
        ebim_greedy(torch.tensor([1.5, -0.5], dtype=D), 1.0)
    with pytest.raises(ValueError, match="R must be >= 0.0, got -1.0"):
        ebim_greedy(p, -1.0)
    with pytest.raises(ValueError, match="base must be > 1.0, got 1.0"):
        entropy(p, base=1.0)
    with pytest.raises(ValueError, match="joint must have 2 dimension"):
        discrete_mutual_information(p)
    with pytest.raises(TypeError, match="q must have the dtype of p"):
        greedy_mec(p, p.float())
    with pytest.raises(TypeError, match="p must be a torch.Tensor"):
        entropy([0.5, 0.5])


# --- what the declarations and the bodies reject or handle (issue 9) ------------------------------------------------

def test_entropy_rejects_a_vector_that_is_not_a_distribution():
    # summing to 1.5 used to give 2.556 bits
    with pytest.raises(ValueError, match=r"p must sum to 1 \(atol=1e-06\), got sum\(p\)=1.5"):
        entropy(torch.tensor([0.5, 0.5, 0.5], dtype=D))
    with pytest.raises(ValueError, match=r"p must be >= 0 entrywise"):
        entropy(torch.tensor([1.5, -0.5], dtype=D))
    # any shape: a joint distribution (matrix) summing to 1 is a distribution
    assert float(entropy(torch.full((2, 2), 0.25, dtype=D))) == pytest.approx(2.0)


def test_discrete_mutual_information_with_zero_mass_rows():
    joint = torch.tensor([[0.5, 0.0], [0.0, 0.0], [0.0, 0.5]], dtype=D)
    assert float(discrete_mutual_information(joint)) == pytest.approx(1.0)


def test_mixed_dtypes_are_refused():
    p = torch.tensor([0.5, 0.5], dtype=D)
    with pytest.raises(TypeError, match=r"q must have the dtype of p \(torch.float64\), got torch.float32"):
        majorization_meet(p, p.float())
    with pytest.raises(TypeError, match=r"q_y must have the dtype of p_x \(torch.float64\), got torch.float32"):
        mec_b(p, p.float(), 0.5)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _simplex(values):
    p = torch.tensor(values, dtype=D)
    return p / p.sum()


_masses = st.lists(st.one_of(st.just(0.0), st.floats(0.01, 1.0)), min_size=1, max_size=6).filter(lambda v: sum(v) > 0)


@settings(max_examples=25, deadline=None)
@given(_masses)
def test_entropy_is_finite_and_within_its_bounds(values):
    p = _simplex(values)
    h = float(entropy(p))
    assert 0.0 <= h <= math.log2(len(values)) + 1e-12


@settings(max_examples=25, deadline=None)
@given(_masses, _masses)
def test_greedy_coupling_keeps_both_marginals(pv, qv):
    p, q = _simplex(pv), _simplex(qv)
    P = greedy_mec(p, q)
    assert bool(torch.isfinite(P).all()) and bool((P >= 0).all())
    torch.testing.assert_close(P.sum(1), p, atol=1e-12, rtol=0)
    torch.testing.assert_close(P.sum(0), q, atol=1e-12, rtol=0)
    assert float(entropy(P)) >= float(entropy(majorization_meet(p, q))) - 1e-9


@settings(max_examples=25, deadline=None)
@given(_masses, st.floats(0.0, 3.0))
def test_ebim_meets_its_budget(values, R):
    res = ebim_greedy(_simplex(values), R)
    assert float(res.rate) <= max(R, 0.0) + 1e-9
    assert bool(torch.isfinite(res.joint).all())
