import math

import pytest
import torch

from paperzoo.core import ClaimResult
from paperzoo.core.evidence import Control, fit_line, paired_comparison, select_on_grid, tune


def test_interior_best_is_not_extended():
    calls = []
    sel = select_on_grid(lambda v: (calls.append(v), (v - 0.3) ** 2)[1], [0.1, 0.3, 1.0])
    assert sel.best == 0.3 and sel.extensions == 0 and not sel.at_edge
    assert calls == [0.1, 0.3, 1.0]
    assert sel.grid == (0.1, 0.3, 1.0)


def test_low_edge_extends_geometrically_until_interior():
    sel = select_on_grid(lambda lr: abs(math.log10(lr) + 3.2), [1e-2, 1e-1, 1.0])
    assert sel.extensions == 2
    assert sel.best == pytest.approx(1e-3)
    assert [v for v, _ in sel.trace] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert not sel.at_edge


def test_high_edge_extends_and_maximize():
    sel = select_on_grid(lambda v: -abs(v - 7), [1, 2, 3], spacing="linear", minimize=False, max_extensions=6)
    assert sel.best == 7 and not sel.at_edge and sel.grid[-1] == 8


def test_bound_stops_extension_and_says_so():
    sel = select_on_grid(lambda lr: lr, [1e-2, 1e-1, 1.0], bounds=(1e-3, 1.0))
    assert sel.best == pytest.approx(1e-3) and sel.at_edge and sel.extensions == 1


def test_extension_limit_reports_edge():
    sel = select_on_grid(lambda lr: lr, [1.0, 2.0], max_extensions=2)
    assert sel.extensions == 2 and sel.at_edge


def test_output_of_best_run_is_kept_for_test_metrics():
    sel = select_on_grid(lambda v: {"val": (v - 2) ** 2, "test": 10 * v}, [1, 2, 3], score=lambda o: o["val"])
    assert sel.output == {"val": 0, "test": 20}
    assert sel.as_metrics()["trace"] == [[1, 1.0], [2, 0.0], [3, 1.0]]


def test_nan_score_loses():
    sel = select_on_grid(lambda v: float("nan") if v > 1 else v, [0.5, 1.0, 2.0], extend=False)
    assert sel.best == 0.5


def test_grid_errors():
    with pytest.raises(ValueError, match="grid must be strictly increasing"):
        select_on_grid(lambda v: v, [1.0, 1.0])
    with pytest.raises(ValueError, match="grid must be positive"):
        select_on_grid(lambda v: v, [0.0, 1.0])
    with pytest.raises(ValueError, match="grid must contain at least one value"):
        select_on_grid(lambda v: v, [])
    with pytest.raises(ValueError, match="spacing must be one of"):
        select_on_grid(lambda v: v, [1.0, 2.0], spacing="cubic")


def test_tune_requires_equal_grid_sizes():
    with pytest.raises(ValueError, match="same size"):
        tune({"a": lambda v: v, "b": lambda v: v}, {"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]}, extend=False)
    out = tune({"a": lambda v: (v - 2) ** 2, "b": lambda v: (v - 3) ** 2}, [1.0, 2.0, 3.0, 4.0])
    assert out["a"].best == 2.0 and out["b"].best == 3.0


def test_paired_win_needs_margin_and_two_standard_errors():
    # MARS vs AdamW in the review: 0.148 +- 0.092 vs 0.166 +- 0.117 over 3 seeds, 2 of 3 seeds better.
    noisy = paired_comparison([0.05, 0.15, 0.244], [0.04, 0.2, 0.258])
    assert not noisy.wins and noisy.diff_mean > 0
    clear = paired_comparison([1.0, 1.1, 0.9], [2.0, 2.2, 1.9], margin=0.1)
    assert clear.wins
    assert not paired_comparison([1.0, 1.1, 0.9], [2.0, 2.2, 1.9], margin=2.0).wins
    higher = paired_comparison([0.9, 0.91, 0.92], [0.8, 0.8, 0.81], lower_is_better=False)
    assert higher.wins and higher.diff_mean == pytest.approx(0.1066666, rel=1e-4)
    assert "3 seeds" in clear.headline("loss", "M", "B")


def test_paired_nan_counts_as_loss():
    assert not paired_comparison([float("nan"), 1.0, 1.0], [2.0, 2.0, 2.0]).wins
    assert paired_comparison([1.0, 1.0, 1.0], [float("nan"), 2.0, 2.0]).diff_mean == math.inf


def test_paired_errors():
    with pytest.raises(ValueError, match="same number of seeds"):
        paired_comparison([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 3 paired seeds"):
        paired_comparison([1, 2], [1, 2])
    with pytest.raises(ValueError, match="margin must be >= 0"):
        paired_comparison([1, 2, 3], [1, 2, 3], margin=-1)


def test_passing_control_makes_the_verdict_inconclusive():
    res = ClaimResult.decide(True, metrics={}, headline="a vs b",
                             control=Control("baseline through the same criterion", passed=True))
    assert res.verdict.value == "inconclusive"
    assert res.reason.startswith("criterion does not discriminate")
    assert res.control["passed"] is True
    ok = ClaimResult.decide(True, metrics={}, control=Control("method without momentum", passed=False))
    assert ok.verdict.value == "reproduced"
    failed = ClaimResult.decide(False, metrics={}, control=Control("x", passed=True))
    assert failed.verdict.value == "not_reproduced"


def test_headline_is_one_line_and_control_needs_description():
    with pytest.raises(ValueError, match="headline must be a single line"):
        ClaimResult.decide(True, metrics={}, headline="a\nb")
    with pytest.raises(ValueError, match="description must be a non-empty string"):
        Control("", passed=False)


def test_paired_control_runs_the_same_paired_test():
    from paperzoo.core.evidence import paired_control

    ctrl, cmp = paired_control("ablation", [1.0, 1.1, 0.9], [2.0, 2.2, 1.9], margin=0.1, extra=1)
    assert ctrl.passed and cmp.wins and ctrl.metrics["extra"] == 1 and ctrl.metrics["values"] == [1.0, 1.1, 0.9]
    res = ClaimResult.decide(True, metrics={}, control=ctrl)
    assert res.verdict.value == "inconclusive"
    ctrl, _ = paired_control("ablation", [2.0, 2.2, 1.9], [2.0, 2.2, 1.9], margin=0.1)
    assert not ctrl.passed and ctrl.metrics["vs_baseline"]["wins"] is False


def test_mean_std_of_diverged_runs_does_not_crash():
    # smb's full run crashed formatting a headline with a diverged (inf) SGD loss.
    from paperzoo.core.evidence import fmt_mean_std, mean_std

    assert mean_std([1.0, math.inf, 2.0])[0] == math.inf and math.isnan(mean_std([1.0, math.inf])[1])
    assert fmt_mean_std([math.inf, math.inf, math.inf]) == "inf ± nan"
    assert math.isnan(mean_std([math.nan])[0])
    assert fmt_mean_std([1.0, 3.0]) == "2 ± 1.414"


def test_fit_line_matches_scipy_linregress_and_its_t_interval():
    from scipy import stats

    g = torch.Generator().manual_seed(0)
    u = torch.rand(12, generator=g, dtype=torch.float64)
    v = 2.5 * u - 1.0 + 0.3 * torch.randn(12, generator=g, dtype=torch.float64)
    f = fit_line(u, v, level=0.9)
    ref = stats.linregress(u.numpy(), v.numpy())
    assert f.slope == pytest.approx(ref.slope, rel=1e-12)
    assert f.intercept == pytest.approx(ref.intercept, rel=1e-12)
    assert f.stderr == pytest.approx(ref.stderr, rel=1e-12)
    assert f.r2 == pytest.approx(ref.rvalue**2, rel=1e-12)
    half = stats.t.ppf(0.95, 10) * ref.stderr
    assert (f.ci_low, f.ci_high) == pytest.approx((ref.slope - half, ref.slope + half), rel=1e-12)
    assert f.n_points == 12 and f.level == 0.9


def test_fit_line_two_points_has_no_interval_and_constant_u_is_refused():
    f = fit_line(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 4.0]))
    assert (f.slope, f.intercept) == (2.0, -2.0)
    assert math.isnan(f.stderr) and math.isnan(f.ci_low) and math.isnan(f.ci_high)
    with pytest.raises(ValueError, match="u must hold at least two distinct values"):
        fit_line(torch.ones(4), torch.arange(4.0))
    with pytest.raises(ValueError, match="v must be finite"):
        fit_line(torch.arange(3.0), torch.tensor([0.0, math.inf, 1.0]))
