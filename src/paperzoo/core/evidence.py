"""Primitives for claims that could have failed: fair tuning, wins beyond seed noise, discriminating controls.

Every claim check uses these instead of hand-rolled variants (DESIGN.md, evidence rules 1-3 and 7):

* :func:`select_on_grid` / :func:`tune` pick a hyperparameter on a *validation* score. When the best value sits
  on an edge of the grid, the grid is extended past that edge until the best value is interior, or a stated
  bound is hit (the :class:`Selection` then says ``at_edge=True``). Every evaluation is kept as the selection
  trace, and the output of the chosen run is returned so the claim can read its held-out test metrics (which
  selection never sees). :func:`tune` gives the method and every baseline the same grid size.
* :func:`paired_comparison` compares a method with a baseline over paired seeds. "Better" means the mean paired
  improvement exceeds both the stated margin and two standard errors: a win inside seed noise is not a win.
* :class:`Control` records the case the criterion must reject (the baseline through the same criterion, the
  method without its key ingredient, or a regime where theory predicts failure). When the control passes too,
  :meth:`paperzoo.core.ClaimResult.decide` returns ``inconclusive`` with the reason "criterion does not
  discriminate".

Example::

    >>> from paperzoo.core.evidence import paired_comparison, select_on_grid
    >>> sel = select_on_grid(lambda lr: (lr - 0.01) ** 2, [0.1, 1.0, 10.0], bounds=(1e-4, 10.0))
    >>> round(sel.best, 6), sel.at_edge, sel.extensions    # the grid was extended downwards twice
    (0.01, False, 2)
    >>> cmp = paired_comparison([1.0, 1.1, 0.9], [2.0, 2.2, 1.9], margin=0.1)
    >>> cmp.wins, round(cmp.diff_mean, 3)
    (True, 1.033)
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from paperzoo.core.accepts import Real, Tensor, accepts
from paperzoo.core.checks import check_choice, check_int, check_nonnegative

__all__ = ["LineFit", "fit_line", "Selection", "select_on_grid", "tune", "PairedComparison", "paired_comparison", "Control",
           "paired_control", "mean_std", "fmt_mean_std"]


def _fmt(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.4g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.3e}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("values must be non-empty")
    if not all(math.isfinite(v) for v in vals):  # a diverged run (inf/NaN): no spread to speak of
        with_inf = [v for v in vals if not math.isnan(v)]
        return (statistics.fmean(with_inf) if with_inf else math.nan), math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt_mean_std(values: Sequence[float]) -> str:
    """``"0.148 ± 0.092"`` for a list of per-seed values."""
    m, s = mean_std(values)
    return f"{_fmt(m)} ± {_fmt(s)}"


# -- hyperparameter selection -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Selection:
    """A hyperparameter chosen on a validation score.

    Attributes:
        best: the chosen value.
        score: its validation score.
        output: what ``evaluate(best)`` returned (the claim reads held-out test metrics from it).
        trace: ``(value, score)`` for every value evaluated, in grid order.
        initial_grid: the grid the claim wrote down.
        extensions: how many values were added past an edge.
        at_edge: the best value is still on an edge of the final grid (a bound or the extension limit was hit).
        minimize: whether lower scores are better.
    """

    best: Any
    score: float
    output: Any
    trace: tuple[tuple[Any, float], ...]
    initial_grid: tuple[Any, ...]
    extensions: int
    at_edge: bool
    minimize: bool = True

    @property
    def grid(self) -> tuple[Any, ...]:
        return tuple(v for v, _ in self.trace)

    def as_metrics(self) -> dict[str, Any]:
        """JSON-ready summary for a claim's metrics (the report shows the trace)."""
        return {"best": self.best, "val_score": self.score, "initial_grid": list(self.initial_grid),
                "extensions": self.extensions, "at_edge": self.at_edge,
                "trace": [[v, s] for v, s in self.trace]}


def _next_value(grid: list, side: str, spacing: str):
    a, b = (grid[0], grid[1]) if side == "low" else (grid[-1], grid[-2])
    if spacing == "log":
        return a * (a / b)
    return a + (a - b)


def select_on_grid(
    evaluate: Callable[[Any], Any],
    grid: Sequence[Any],
    *,
    score: Callable[[Any], float] | None = None,
    minimize: bool = True,
    extend: bool = True,
    spacing: str = "log",
    bounds: tuple[float, float] | None = None,
    max_extensions: int = 4,
) -> Selection:
    """Pick the value of ``grid`` whose validation score is best, extending the grid past an edge that wins.

    Args:
        evaluate: ``evaluate(value)`` trains/evaluates at one hyperparameter value; returns a validation score, or
            any object from which ``score`` extracts one (keep test metrics in it: they are never looked at here).
        grid: the pre-registered values, sorted ascending (numbers when ``extend``; anything otherwise).
        score: maps ``evaluate``'s output to the validation score (default: the output itself).
        minimize: lower scores are better (default) or higher.
        extend: when the best value is the first or last of the grid, add the next value past that edge (the same
            ratio, ``spacing="log"``, or step, ``"linear"``, as the two outermost values) and re-select.
        spacing: ``"log"`` or ``"linear"`` extension.
        bounds: ``(low, high)`` no extension goes past; the selection then reports ``at_edge=True``.
        max_extensions: at most this many values are added in total.

    Returns:
        A :class:`Selection`. Ties go to the earliest value in grid order.
    """
    values = list(grid)
    if not values:
        raise ValueError("grid must contain at least one value")
    check_choice("spacing", spacing, ("log", "linear"))
    max_extensions = check_int("max_extensions", max_extensions, low=0)
    if extend:
        if len(values) < 2:
            raise ValueError(f"grid must have at least 2 values to be extended, got {len(values)}")
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
            raise TypeError("grid values must be numbers when extend=True")
        if any(b <= a for a, b in zip(values, values[1:])):
            raise ValueError(f"grid must be strictly increasing, got {values}")
        if spacing == "log" and values[0] <= 0:
            raise ValueError(f"grid must be positive for spacing='log', got {values}")
        if bounds is not None and not (bounds[0] <= values[0] and values[-1] <= bounds[1]):
            raise ValueError(f"grid must lie inside bounds {bounds}, got {values}")
    get_score = score if score is not None else (lambda out: out)

    def run(value) -> tuple[Any, Any, float]:
        out = evaluate(value)
        score_ = float(get_score(out))
        if math.isnan(score_):
            score_ = math.inf if minimize else -math.inf  # a diverged run loses; it is still in the trace
        return value, out, score_

    trace = [run(v) for v in values]  # (value, output, score) in grid order
    extensions = 0
    while True:
        # Ties go to the earliest value in grid order.
        b = min(range(len(trace)), key=lambda i: (trace[i][2] if minimize else -trace[i][2], i))
        on_edge = len(trace) > 1 and b in (0, len(trace) - 1)
        if not (extend and on_edge) or extensions >= max_extensions:
            break
        side = "low" if b == 0 else "high"
        new = _next_value([v for v, _, _ in trace], side, spacing)
        if isinstance(values[0], int) and isinstance(values[1], int) and spacing == "linear":
            new = int(new)
        if bounds is not None and not (bounds[0] <= new <= bounds[1]):
            break
        if side == "low":
            trace.insert(0, run(new))
        else:
            trace.append(run(new))
        extensions += 1
    best, output, best_score = trace[b]
    return Selection(best, best_score, output, tuple((v, sc) for v, _, sc in trace), tuple(values), extensions,
                     bool(on_edge and extend), minimize)


def tune(
    evaluators: Mapping[str, Callable[[Any], Any]],
    grids: Mapping[str, Sequence[Any]] | Sequence[Any],
    **options: Any,
) -> dict[str, Selection]:
    """:func:`select_on_grid` for a method and its baselines with the same grid size (equal tuning effort).

    Args:
        evaluators: ``{name: evaluate}``, one per optimizer/method being compared.
        grids: one grid shared by all, or ``{name: grid}`` (grids of different ranges but the same length).
        **options: passed to :func:`select_on_grid` (``score``, ``minimize``, ``bounds``, ...).
    """
    if not evaluators:
        raise ValueError("evaluators must name at least one method")
    if isinstance(grids, Mapping):
        missing = set(evaluators) - set(grids)
        if missing:
            raise ValueError(f"grids must give a grid for every evaluator, missing {sorted(missing)}")
        sizes = {name: len(grids[name]) for name in evaluators}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"grids must have the same size for every method (equal tuning effort), got {sizes}")
        per = {name: grids[name] for name in evaluators}
    else:
        per = {name: grids for name in evaluators}
    return {name: select_on_grid(fn, per[name], **options) for name, fn in evaluators.items()}


# -- paired comparison over seeds -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Method vs baseline on paired seeds; ``improvement_i`` is positive when the method is better on seed i.

    Attributes:
        method, baseline: the per-seed values.
        improvement: ``baseline_i - method_i`` (``lower_is_better``) or ``method_i - baseline_i``.
        diff_mean, diff_se: mean and standard error of the improvement.
        margin: the stated margin the mean improvement must exceed.
        wins: ``diff_mean > margin`` and ``diff_mean > 2 * diff_se``.
    """

    method: tuple[float, ...]
    baseline: tuple[float, ...]
    improvement: tuple[float, ...]
    diff_mean: float
    diff_se: float
    margin: float
    lower_is_better: bool
    wins: bool

    @property
    def n(self) -> int:
        return len(self.method)

    def headline(self, metric: str, method: str, baseline: str) -> str:
        """``"val loss 0.148 ± 0.092 (MARS) vs 0.166 ± 0.117 (AdamW), 3 seeds, paired gain 0.018 ± 0.03 SE"``."""
        return (f"{metric} {fmt_mean_std(self.method)} ({method}) vs {fmt_mean_std(self.baseline)} ({baseline}), "
                f"{self.n} seeds, paired gain {_fmt(self.diff_mean)} ± {_fmt(self.diff_se)} SE"
                f" (margin {_fmt(self.margin)})")

    def as_metrics(self) -> dict[str, Any]:
        return {"method": list(self.method), "baseline": list(self.baseline), "gain_mean": self.diff_mean,
                "gain_se": self.diff_se, "margin": self.margin, "lower_is_better": self.lower_is_better,
                "wins": self.wins}


def paired_comparison(
    method: Sequence[float],
    baseline: Sequence[float],
    *,
    margin: float = 0.0,
    lower_is_better: bool = True,
    min_seeds: int = 3,
) -> PairedComparison:
    """Does the method beat the baseline beyond seed noise? (DESIGN.md, evidence rule 2.)

    Args:
        method, baseline: one value per seed, paired (seed i of both shares data, initialisation and batches).
        margin: the mean improvement must exceed this (>= 0, in the metric's units), as well as two standard errors.
        lower_is_better: whether lower values of the metric are better.
        min_seeds: fewer pairs than this raise ``ValueError`` (default 3).
    """
    m = [float(v) for v in method]
    b = [float(v) for v in baseline]
    if len(m) != len(b):
        raise ValueError(f"method and baseline must have the same number of seeds, got {len(m)} and {len(b)}")
    min_seeds = check_int("min_seeds", min_seeds, low=2)
    if len(m) < min_seeds:
        raise ValueError(f"method must have at least {min_seeds} paired seeds, got {len(m)}")
    margin = check_nonnegative("margin", margin)
    # A diverged (NaN) run is a loss for whoever diverged, never a silent NaN in the comparison.
    bad = math.inf if lower_is_better else -math.inf
    m = [bad if math.isnan(v) else v for v in m]
    b = [bad if math.isnan(v) else v for v in b]
    gain = [(bi - mi) if lower_is_better else (mi - bi) for mi, bi in zip(m, b)]
    gain = [0.0 if math.isnan(g) else g for g in gain]  # both diverged on this seed: no gain either way
    finite = [g for g in gain if math.isfinite(g)]
    mean = statistics.fmean(gain) if len(finite) == len(gain) or not (math.inf in gain and -math.inf in gain) else 0.0
    se = statistics.stdev(finite) / math.sqrt(len(gain)) if len(finite) >= 2 else 0.0
    wins = bool(mean > margin and mean > 2.0 * se)
    return PairedComparison(tuple(m), tuple(b), tuple(gain), mean, se, float(margin), bool(lower_is_better), wins)


# -- discriminating control --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Control:
    """A case the claim's criterion must reject (DESIGN.md, evidence rule 3).

    Attributes:
        description: what the control is ("AdamW through the same criterion", "Lion without decay", ...).
        passed: whether the control passed the claim's criterion. If it did, the criterion does not discriminate
            and the claim is ``inconclusive``.
        metrics: the control's measurements.
    """

    description: str
    passed: bool
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.description, str) or not self.description.strip():
            raise ValueError(f"description must be a non-empty string, got {self.description!r}")
        object.__setattr__(self, "passed", bool(self.passed))
        object.__setattr__(self, "metrics", dict(self.metrics))

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "passed": self.passed, "metrics": dict(self.metrics)}


def paired_control(
    description: str,
    control: Sequence[float],
    baseline: Sequence[float],
    *,
    margin: float = 0.0,
    lower_is_better: bool = True,
    min_seeds: int = 3,
    **metrics: Any,
) -> tuple[Control, PairedComparison]:
    """The control that goes through the claim's own paired criterion: ``control`` (per-seed values of the method
    without its key ingredient, say) against the same ``baseline`` values with the same margin.

    Returns the :class:`Control` (``passed`` when the control wins too) and its :class:`PairedComparison` (for the
    headline). ``metrics`` are added to the control's metrics beside ``values`` and ``vs_baseline``.

    >>> ctrl, cmp = paired_control("MARS with gamma = 0", [1.9, 2.1, 2.0], [2.0, 2.2, 1.9], margin=0.05)
    >>> ctrl.passed, round(cmp.diff_mean, 3)
    (False, 0.033)
    """
    cmp = paired_comparison(control, baseline, margin=margin, lower_is_better=lower_is_better, min_seeds=min_seeds)
    return Control(description, cmp.wins, dict(values=list(cmp.method), vs_baseline=cmp.as_metrics(), **metrics)), cmp


class LineFit(NamedTuple):
    """Result of :func:`fit_line`: :math:`v \\approx \\text{slope}\\cdot u + \\text{intercept}` by least squares.

    Attributes:
        slope, intercept: the fitted line.
        stderr: standard error of the slope from the residuals (NaN with fewer than 3 points).
        ci_low, ci_high: the two-sided Student-t interval on the slope at ``level`` (``n - 2`` degrees of
            freedom; NaN with fewer than 3 points).
        r2: coefficient of determination (1 when ``v`` is constant).
        n_points: points used.
        level: confidence level of the interval.
    """

    slope: float
    intercept: float
    stderr: float
    ci_low: float
    ci_high: float
    r2: float
    n_points: int
    level: float


@accepts(u=Tensor("n", dtype="any"), v=Tensor("n"), level=Real(gt=0, lt=1),
         example=lambda ctx: {"u": torch.arange(1.0, 5.0, dtype=ctx.dtype),
                              "v": torch.tensor([0.1, 0.9, 2.2, 2.9], dtype=ctx.dtype)})
def fit_line(u: torch.Tensor, v: torch.Tensor, *, level: float = 0.95) -> LineFit:
    """Least-squares line with a t-interval on its slope: the one fit behind every rate and exponent in paperzoo.

    With :math:`\\bar u, \\bar v` the means, :math:`S_{uu} = \\sum (u_i - \\bar u)^2`,
    :math:`\\hat s = \\sum (u_i - \\bar u)(v_i - \\bar v) / S_{uu}`, :math:`r_i = v_i - \\bar v - \\hat s (u_i - \\bar u)`
    and :math:`\\mathrm{se} = \\sqrt{\\sum r_i^2 / ((n - 2) S_{uu})}`, the interval is
    :math:`\\hat s \\pm t_{n-2,(1+\\text{level})/2}\\,\\mathrm{se}`. A power law is fitted by passing logarithms
    (:func:`paperzoo.optim.fit_loglog_slope`, :func:`paperzoo.diagnostics.fit_power_law`,
    :func:`paperzoo.diagnostics.loglog_slope`).

    Args:
        u, v: shape ``(n,)``, finite, ``u`` with at least 2 distinct values; computed in float64.
        level: confidence level in ``(0, 1)``.

    Example:
        >>> f = fit_line(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 3.0, 5.0]))
        >>> round(f.slope, 6), round(f.intercept, 6), f.stderr
        (2.0, 1.0, 0.0)
    """
    u, v = u.double(), v.double()
    um, vm = u.mean(), v.mean()
    du, dv = u - um, v - vm
    suu = float((du**2).sum())
    if suu == 0.0:
        raise ValueError(f"u must hold at least two distinct values for a line fit, got {u.tolist()!r:.80}")
    slope = float((du * dv).sum()) / suu
    resid = dv - slope * du
    sse, sst = float((resid**2).sum()), float((dv**2).sum())
    n = u.numel()
    r2 = 1.0 - sse / sst if sst > 0 else 1.0
    if n < 3:
        return LineFit(slope, float(vm) - slope * float(um), math.nan, math.nan, math.nan, r2, n, level)
    from scipy.special import stdtrit  # lighter to import than scipy.stats

    se = math.sqrt(sse / (n - 2) / suu)
    half = float(stdtrit(n - 2, 0.5 + level / 2)) * se
    return LineFit(slope, float(vm) - slope * float(um), se, slope - half, slope + half, r2, n, level)
