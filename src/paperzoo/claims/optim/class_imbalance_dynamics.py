"""Claim check for A Theoretical Analysis of the Learning Dynamics under Class Imbalance (Francazi et al., 2023).

Setup, fixed before the first run (:func:`paperzoo.data.imbalanced.imbalanced_gaussians`): two classes in
:math:`d = 100`, 2,000 majority points from :math:`\\mathcal N(0, I)` and 40 minority points from
:math:`\\mathcal N(4 e_1, I)` (1:50), a linear softmax classifier (``torch.nn.Linear(100, 2)``) started at zero
(both class losses :math:`\\ln 2`), full batch. GD minimises the mean cross-entropy, i.e. follows
:math:`\\sum_c \\pi_c \\nabla L_c`; PCNGD (:class:`paperzoo.optim.PCNGD`) follows
:math:`\\sum_c \\nabla L_c / \\|\\nabla L_c\\|`. Both got the learning-rate grid {0.03, 0.1, 0.3, 1, 3} and the
same step budget; each method's rate is the one with the smallest mean (over seeds) time until *both* class
losses are below :math:`\\ln(2)/2` (the budget when never).

Issue 8 rework. The earlier version chose the rates on the very datasets it then measured, from a fixed grid. Now
each method's rate is selected by :func:`paperzoo.core.evidence.tune` on 2 *tuning* datasets (the grid extended
past a winning edge) and the criterion is read on fresh *test* datasets (3 smoke / 5 full). The grid is now
{0.025, 0.08, 0.25, 0.8, 2.5} with the upper bound 2.5: the paper analyses the small-step (gradient-flow-like)
regime, and 2 / lambda_max of the loss Hessian at the zero start, GD's stability limit, is 2.56-2.65 on these data
(computed from the data before any run of this version). The registered grid's top value 3 lay beyond it; with
an unbounded extension both methods chose rates of 3-9 at which GD's first step overshoots (minority loss 0.69 ->
3.9) and PCNGD's constant-length steps oscillate, i.e. outside the regime of the claim. A method that wants a
larger rate than 2.5 is reported as being at the bound. The earlier version was reproduced (issue 3): there PCNGD
tied between lr 1 and 3 on the measured datasets and took 1, the first.
Part (i), "at most half GD's minority time", is a paired comparison over the test datasets of log10 minority
time with margin log10(2) beyond two standard errors. The discriminating control is the regime where the theory
predicts no minority effect: balanced classes (1,020 + 1,020 points, the same total), run through the same
tuning and criterion; it must fail.
"""

from __future__ import annotations

import math
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, paired_comparison, tune
from paperzoo.data.imbalanced import imbalanced_gaussians
from paperzoo.optim.pcngd import PCNGD, class_mean_losses

COUNTS = (2000, 40)
BALANCED = (1020, 1020)  # the control: the same number of points, no imbalance
NUM_TUNE = 2
LR_BOUNDS = (1e-3, 2.5)  # 2.5 < 2 / lambda_max(Hessian at the zero start) = 2.56-2.65 on these data
MARGIN = math.log10(2.0)
DIM = 100
LRS = (0.025, 0.08, 0.25, 0.8, 2.5)
THRESHOLD = math.log(2) / 2
EARLY = 10


def per_class_curves(X, y, method: str, lr: float, steps: int) -> torch.Tensor:
    """Per-class training losses before each step, shape ``(<= steps + 1, 2)``.

    A run stops once both classes are below THRESHOLD and the first EARLY steps are recorded: everything the
    criterion reads is known by then (a saving of most of the runtime, no change to any verdict input).
    """
    model = torch.nn.Linear(DIM, 2).to(X.dtype)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    prior = torch.bincount(y, minlength=2).to(X.dtype) / len(y)

    def closure():
        return class_mean_losses(torch.nn.functional.cross_entropy(model(X), y, reduction="none"), y, 2)

    curves = []
    if method == "pcngd":
        opt = PCNGD(model.parameters(), lr=lr)
        for t in range(steps):
            curves.append(opt.step(closure))
            if _done(curves, t):
                return torch.stack(curves)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for t in range(steps):
            opt.zero_grad()
            losses = closure()
            (prior * losses).sum().backward()  # = the mean cross-entropy over all examples
            opt.step()
            curves.append(losses.detach())
            if _done(curves, t):
                return torch.stack(curves)
    with torch.no_grad():
        curves.append(closure())
    return torch.stack(curves)


def _done(curves, t):
    return t >= EARLY and bool((curves[-1] <= THRESHOLD).all()) and bool(
        (torch.stack(curves) <= THRESHOLD).any(0).all())


def _first_below(curve: torch.Tensor, budget: int) -> int:
    hits = (curve <= THRESHOLD).nonzero()
    return int(hits[0]) if len(hits) else budget


def evaluate(method, lr, datasets, steps):
    rows = []
    for X, y in datasets:
        c = per_class_curves(X, y, method, lr, steps)
        rows.append(dict(t_majority=_first_below(c[:, 0], steps), t_minority=_first_below(c[:, 1], steps),
                         early_rise=bool((c[1:EARLY + 1, 1] > c[0, 1]).any()),
                         minority_peak=float(c[:EARLY + 1, 1].max()),
                         curve_minority=c[:EARLY + 1, 1].tolist()))
    return rows


def _summary(rows, lr):
    t_min = torch.tensor([r["t_minority"] for r in rows], dtype=torch.float64)
    t_maj = torch.tensor([r["t_majority"] for r in rows], dtype=torch.float64)
    both = torch.maximum(t_min, t_maj)
    return dict(lr=lr, time_both=float(both.mean()), time_minority_mean=float(t_min.mean()),
                time_minority_std=float(t_min.std()), time_majority_mean=float(t_maj.mean()),
                time_majority_std=float(t_maj.std()),
                minority_rises_early_all_seeds=all(r["early_rise"] for r in rows),
                minority_rises_early_any_seed=any(r["early_rise"] for r in rows),
                minority_peak_first_steps=[r["minority_peak"] for r in rows],
                minority_curve_first_steps_seed0=rows[0]["curve_minority"])


def experiment(counts, seeds, steps):
    """Tune both methods on the first NUM_TUNE datasets, read the criterion on the others."""
    datasets = [imbalanced_gaussians(counts, DIM, separation=4.0, generator=torch.Generator().manual_seed(s))
                for s in seeds]
    tuning, testing = datasets[:NUM_TUNE], datasets[NUM_TUNE:]

    def evaluator(method):
        return lambda lr: _summary(evaluate(method, lr, tuning, steps), lr)

    sel = tune({m: evaluator(m) for m in ("pcngd", "gd")}, LRS, score=lambda r: r["time_both"], bounds=LR_BOUNDS)
    test = {m: evaluate(m, sel[m].best, testing, steps) for m in sel}
    log_t = {m: [math.log10(max(r["t_minority"], 1)) for r in rows] for m, rows in test.items()}
    faster = paired_comparison(log_t["pcngd"], log_t["gd"], margin=MARGIN)
    rises = {m: [r["early_rise"] for r in rows] for m, rows in test.items()}
    passed = faster.wins and all(rises["gd"]) and not any(rises["pcngd"])
    summary = {m: dict(_summary(test[m], sel[m].best), selection=sel[m].as_metrics()) for m in test}
    return passed, faster, summary, sel


@claim(
    "class-imbalance-dynamics",
    statement="Under class imbalance, gradient descent first raises the minority class's loss and learns it late, "
              "while per-class normalized gradient descent (PCNGD) decreases every class's loss from the start "
              "and balances per-class progress.",
    criterion="2 Gaussian classes in d = 100 (2,000 at N(0, I), 40 at N(4 e_1, I)), linear softmax model from zero, "
              "full batch, 300 (smoke) / 2,000 (full) steps; lr per method tuned on 2 tuning datasets by the mean "
              "time until both class losses are <= ln(2)/2, grid {0.025, 0.08, 0.25, 0.8, 2.5} extended past a "
              "winning edge within [1e-3, 2.5] (2.5 < GD's stability limit 2/lambda_max at the start); criterion on "
              "3 (smoke) / 5 (full) fresh test datasets. Passes if (i) "
              "PCNGD's minority time-to-threshold beats GD's on log10 scale by a paired margin of log10(2) (at "
              "most half) beyond 2 SE, and (ii) at the chosen lrs GD's minority loss exceeds its initial value "
              "within the first 10 steps on every test dataset while PCNGD's does on none. Control: balanced "
              "classes (1,020 + 1,020) through the same tuning and criterion; it must fail.",
    baseline="full-batch GD (torch.optim.SGD) on the mean cross-entropy, same grid size, budget, data and init",
    threads=1,  # many small steps: thread hand-offs dominate on a loaded machine
)
def minority_learned_early(ctx: ClaimContext) -> ClaimResult:
    steps = ctx.pick(smoke=300, full=2_000)
    seeds = ctx.seeds(NUM_TUNE + ctx.pick(smoke=3, full=5))
    start = time.perf_counter()
    passed, faster, summary, sel = experiment(COUNTS, seeds, steps)
    c_passed, c_faster, c_summary, _ = experiment(BALANCED, seeds, steps)
    seconds = time.perf_counter() - start
    control = Control("balanced classes (1,020 + 1,020 points) through the same tuning and criterion", c_passed,
                      dict(paired_log10_minority_time=c_faster.as_metrics(),
                           gd_rises_early_all=c_summary["gd"]["minority_rises_early_all_seeds"],
                           pcngd_rises_early_any=c_summary["pcngd"]["minority_rises_early_any_seed"],
                           lrs={m: c_summary[m]["lr"] for m in c_summary}))
    pc, gd = summary["pcngd"], summary["gd"]
    metrics = dict(pc, counts=list(COUNTS), dim=DIM, steps=steps, num_tune=NUM_TUNE,
                   num_test=len(seeds) - NUM_TUNE, threshold=THRESHOLD, margin_log10=MARGIN,
                   paired_log10_minority_time=faster.as_metrics(), seconds=round(seconds, 2))
    baseline = dict(gd)
    edge = [m for m, s in sel.items() if s.at_edge]
    headline = (f"minority time to ln2/2: {pc['time_minority_mean']:.1f} ± {pc['time_minority_std']:.1f} (PCNGD, "
                f"lr {pc['lr']:g}) vs {gd['time_minority_mean']:.1f} ± {gd['time_minority_std']:.1f} steps (GD, "
                f"lr {gd['lr']:g}), {len(seeds) - NUM_TUNE} test datasets, paired log10 gain {faster.diff_mean:.2f} "
                f"± {faster.diff_se:.2f} SE (margin {MARGIN:.3f}); minority loss rises early: GD "
                f"{'all' if gd['minority_rises_early_all_seeds'] else 'not all'}, PCNGD "
                f"{'some' if pc['minority_rises_early_any_seed'] else 'none'}"
                + (f"; lr at a grid bound: {', '.join(edge)}" if edge else ""))
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
