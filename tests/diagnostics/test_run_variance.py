"""Tests for paperzoo.diagnostics.run_variance: the binomial model against Monte Carlo on independent Bernoulli
predictions, split-half correlation against scipy and against shared per-run offsets, ECE against an explicit loop,
pinned error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.run_variance import (binomial_accuracy_std, ensemble_calibration, per_example_correct_prob,
                                               split_half_correlation)


def _bernoulli_runs(runs, n, seed=0, offset_std=0.0):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, generator=g, dtype=torch.float64) ** 0.3  # mostly easy examples, some hard
    offset = offset_std * torch.randn(runs, 1, generator=g, dtype=torch.float64)
    u = torch.rand(runs, n, generator=g, dtype=torch.float64)
    return u < (p + offset).clamp(0, 1), p


def test_per_example_prob_matches_loop():
    c, _ = _bernoulli_runs(7, 13)
    expected = [sum(bool(c[r, i]) for r in range(7)) / 7 for i in range(13)]
    torch.testing.assert_close(per_example_correct_prob(c), torch.tensor(expected, dtype=torch.float64))


def test_binomial_std_matches_empirical_std_of_independent_bernoulli():
    runs, n = 4000, 400
    c, p = _bernoulli_runs(runs, n, seed=1)
    acc = c.double().mean(1)
    empirical = float(acc.std())
    se = empirical / math.sqrt(2 * (runs - 1))  # SE of a sample std of (near-)Gaussian values
    assert abs(binomial_accuracy_std(p) - empirical) < 3 * se
    # The plug-in p_hat of the same runs, bias-corrected, gives the same prediction.
    assert abs(binomial_accuracy_std(per_example_correct_prob(c), runs=runs) - empirical) < 3 * se


def test_binomial_closed_forms_and_bias_correction():
    assert binomial_accuracy_std(torch.full((100,), 0.5)) == pytest.approx(0.05, rel=1e-14)
    assert binomial_accuracy_std(torch.tensor([0.0, 1.0, 1.0])) == 0.0
    p = torch.rand(20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert binomial_accuracy_std(p, runs=5) ** 2 == pytest.approx(5 / 4 * binomial_accuracy_std(p) ** 2, rel=1e-12)
    # Monte Carlo: with R = 4 runs the corrected plug-in variance is unbiased for sum p(1-p)/n^2.
    g = torch.Generator().manual_seed(3)
    reps, runs, n = 400, 4, 50
    c = torch.rand(reps, runs, n, generator=g, dtype=torch.float64) < p.repeat(3)[:n]
    vals = torch.tensor([binomial_accuracy_std(per_example_correct_prob(c[m]), runs=runs) ** 2 for m in range(reps)])
    truth = binomial_accuracy_std(p.repeat(3)[:n]) ** 2
    assert abs(float(vals.mean()) - truth) < 3 * float(vals.std()) / math.sqrt(reps)


def test_binomial_float32_agrees_with_float64():
    p = torch.rand(30, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert binomial_accuracy_std(p.float()) == pytest.approx(binomial_accuracy_std(p), rel=1e-6)


def test_split_half_matches_scipy_pearson_and_fisher_ci():
    from scipy.stats import pearsonr

    c, _ = _bernoulli_runs(40, 101, seed=5, offset_std=0.02)
    res = split_half_correlation(c, confidence=0.9)
    a1 = c[:, 0::2].double().mean(1).numpy()
    a2 = c[:, 1::2].double().mean(1).numpy()
    ref = pearsonr(a1, a2)
    ci = ref.confidence_interval(0.9)
    assert res.r == pytest.approx(float(ref.statistic), abs=1e-12)
    assert (res.ci_low, res.ci_high) == pytest.approx((float(ci.low), float(ci.high)), abs=1e-10)
    assert res.n_runs == 40 and len(res.first) == 51 and len(res.second) == 50


def test_split_half_near_zero_for_independent_examples():
    runs = 300
    c, _ = _bernoulli_runs(runs, 600, seed=6)
    res = split_half_correlation(c, generator=torch.Generator().manual_seed(0))
    assert abs(res.r) < 3 / math.sqrt(runs - 3)
    assert res.ci_low < 0 < res.ci_high
    both = torch.cat([res.first, res.second]).sort().values
    assert torch.equal(both, torch.arange(600))


def test_split_half_near_one_for_shared_per_run_offset():
    c, _ = _bernoulli_runs(100, 2000, seed=7, offset_std=0.1)
    res = split_half_correlation(c)
    assert res.r > 0.9 and res.ci_low > 0.8


def _ece_loop(probs, labels, n_bins):
    mean = probs.double().mean(0)
    conf, pred = mean.max(-1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(labels))
                   if (lo < float(conf[i]) <= hi) or (b == 0 and float(conf[i]) == 0.0)]
        if members:
            acc = sum(int(pred[i] == labels[i]) for i in members) / len(members)
            avg = sum(float(conf[i]) for i in members) / len(members)
            total += len(members) / len(labels) * abs(acc - avg)
    return total


def test_ece_matches_explicit_loop():
    g = torch.Generator().manual_seed(8)
    probs = (2 * torch.randn(5, 300, 4, generator=g, dtype=torch.float64)).softmax(-1)
    labels = torch.randint(0, 4, (300,), generator=g)
    for bins in (1, 10, 15):
        res = ensemble_calibration(probs, labels, n_bins=bins)
        assert res.ece == pytest.approx(_ece_loop(probs, labels, bins), abs=1e-12)
        assert int(res.bin_count.sum()) == 300


def test_ece_small_for_calibrated_ensemble():
    # Labels drawn from the ensemble's own top-label confidence: calibrated by construction.
    g = torch.Generator().manual_seed(9)
    n = 20000
    probs = (3 * torch.randn(3, n, 2, generator=g, dtype=torch.float64)).softmax(-1)
    conf, pred = probs.mean(0).max(-1)
    labels = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < conf, pred, 1 - pred)
    assert ensemble_calibration(probs, labels).ece < 0.02
    # Flipped labels: badly miscalibrated.
    assert ensemble_calibration(probs, 1 - labels).ece > 0.3


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), runs=st.integers(4, 12), n=st.integers(4, 40))
def test_property_ranges(seed, runs, n):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(runs, n, generator=g) < torch.rand(n, generator=g)
    p = per_example_correct_prob(c)
    assert 0.0 <= binomial_accuracy_std(p) <= 0.5 / math.sqrt(n) + 1e-12
    try:
        res = split_half_correlation(c)
    except ValueError as e:
        assert "same accuracy in every run" in str(e)
    else:
        assert -1.0 <= res.ci_low <= res.r <= res.ci_high <= 1.0
    probs = torch.rand(runs, n, 3, generator=g, dtype=torch.float64)
    probs = probs / probs.sum(-1, keepdim=True)
    assert 0.0 <= ensemble_calibration(probs, torch.randint(0, 3, (n,), generator=g)).ece <= 1.0


def test_error_messages():
    good = torch.rand(6, 10, generator=torch.Generator().manual_seed(0)) < 0.5
    with pytest.raises(TypeError, match="correct must have dtype torch.bool"):
        per_example_correct_prob(good.long())
    with pytest.raises(ValueError, match=r"p must have entries <= 1, got a maximum of 1.5"):
        binomial_accuracy_std(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="p must be >= 0 entrywise"):
        binomial_accuracy_std(torch.tensor([-0.1, 0.5]))
    with pytest.raises(ValueError, match="runs must be >= 2"):
        binomial_accuracy_std(torch.tensor([0.5]), runs=1)
    with pytest.raises(ValueError, match="correct must have at least 4 runs \\(rows\\) for a confidence interval, "
                                         "got 3"):
        split_half_correlation(good[:3])
    with pytest.raises(ValueError, match="correct gives the same accuracy in every run on one half"):
        split_half_correlation(torch.ones(6, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="confidence must be < 1"):
        split_half_correlation(good, confidence=1.0)
    probs = torch.full((2, 3, 4), 0.25, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"labels must be < the number of classes of probs \(4\), got a maximum "
                                         r"of 4"):
        ensemble_calibration(probs, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="probs must sum to 1 over the last dimension"):
        ensemble_calibration(2 * probs, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        ensemble_calibration(probs, torch.tensor([0, 1, 2]), n_bins=0)
