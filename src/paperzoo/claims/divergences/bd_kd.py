"""Claim check for BD-KD: Balancing the Divergences for Online Knowledge Distillation (Amara et al., 2022).

The paper's headline: in online distillation across a capacity gap, balancing forward and reverse KL per sample
on the student side (by the teacher-student entropy gap) gives a compact student that is both more accurate and
better calibrated than KL-only online distillation (DML).

Setup, fixed before the first run (a scaled-down analog of the paper's CIFAR experiments):

* data: scikit-learn digits, standardised, random 55 / 15 / 30 train / validation / test split per seed (5 seeds).
* networks: teacher MLP 64-128-128-10 (ReLU), student MLP 64-8-10 (ReLU); same initialisation and the same
  mini-batch order for both methods on a seed.
* training: online (both networks updated every step by
  :func:`~paperzoo.divergences.online_distillation_step`), Adam for both (lr tuned, below), batch 64, 40 epochs
  (smoke: 2), temperature 1, BD-KD balance 2, float32, one thread.
* BD-KD: ``method="bdkd"``; DML baseline: ``method="dml"`` (forward KL only for the student); the teacher's loss
  is the same in both.
* metrics: student test accuracy and ECE (15 equal-width bins) at the end of training.

Issue 8 rework (the earlier verdict was ``reproduced, weakly``: student ECE 0.0758 vs 0.0802 (DML), a gap smaller
than its seed spread, accuracy tied at 0.9177; seed means compared, both at lr 1e-3, untuned):

* **Tuned fairly.** The split is now 55 / 15 / 30 train / validation / test. Each method's Adam learning rate
  (shared by its teacher and student) is chosen by :func:`paperzoo.core.evidence.tune` from the same grid
  {3e-4, 1e-3, 3e-3} (extended past a winning edge within [1e-5, 0.1]) by the student's validation cross-entropy
  (a proper score, so neither accuracy nor calibration alone drives the choice) on seed 0; every seed is then
  trained at the chosen rate and scored on its held-out test split.
* **A win beyond noise, on both parts of the claim.** 5 seeds, paired (same split, initialisation and batch order
  for every method on a seed): the student ECE must be lower by a paired mean > 0.005 and > 2 SE, *and* the student
  accuracy higher by a paired mean > 0 and > 2 SE (the paper claims a student both better calibrated and more
  accurate; the earlier criterion only asked for accuracy "at least" DML's).
* **Control.** BD-KD without its key ingredient, the per-sample entropy-gap balancing: the student loss with
  ``balance = 1`` (forward plus reverse KL with equal weights on every sample), tuned the same way, through the same
  criterion against DML. If it passed too, the gain would come from adding the reverse KL, not from balancing.
* **Budget.** About 40 s on one core at full budget (21 online trainings of 40 epochs plus any grid extensions).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, tune
from paperzoo.data.digits import digits_split
from paperzoo.divergences import expected_calibration_error, online_distillation_step

CRITERION = (
    "Teacher 64-128-128-10, student 64-8-10, sklearn digits, equal epochs; each method's Adam lr chosen from "
    "{3e-4, 1e-3, 3e-3} (extended past a winning edge within [1e-5, 0.1]) by the student's validation "
    "cross-entropy on seed 0; on 5 seeds' held-out test splits, paired: the BD-KD student's test ECE (15 bins) is "
    "lower than the DML student's by a mean > 0.005 and > 2 SE, and its test accuracy higher by a mean > 0 and "
    "> 2 SE. Control: BD-KD with balance 1 (no per-sample balancing) through the same criterion; it must fail."
)
BASELINE = ("Deep Mutual Learning (forward-KL-only online distillation), same networks, optimiser, epochs and lr "
            "grid")
LRS = (3e-4, 1e-3, 3e-3)
LR_BOUNDS = (1e-5, 0.1)
ECE_MARGIN, ACC_MARGIN = 0.005, 0.0
N_SEEDS = 5
VARIANTS = {"bdkd": ("bdkd", 2.0), "dml": ("dml", 2.0), "balance1": ("bdkd", 1.0)}


def _mlp(widths, gen):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = torch.nn.Linear(a, b)
        with torch.no_grad():
            bound = a ** -0.5
            lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.uniform_(-bound, bound, generator=gen)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _run(data, method: str, seed: int, epochs: int, lr: float = 1e-3, balance: float = 2.0) -> dict:
    init = torch.Generator().manual_seed(seed)
    teacher, student = _mlp([64, 128, 128, 10], init), _mlp([64, 8, 10], init)
    opt_t = torch.optim.Adam(teacher.parameters(), lr=lr)
    opt_s = torch.optim.Adam(student.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed + 1)
    n, bs = data.train_x.shape[0], 64
    try:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=order)
            for start in range(0, n, bs):
                idx = perm[start:start + bs]
                online_distillation_step(teacher, student, data.train_x[idx], data.train_y[idx], opt_t, opt_s,
                                         method=method, balance=balance)
    except FloatingPointError:  # a diverged run loses the selection
        return {"student_val_nll": math.inf}
    with torch.no_grad():
        zs, zt = student(data.test_x), teacher(data.test_x)
        val_nll = float(torch.nn.functional.cross_entropy(student(data.val_x), data.val_y))
    correct = int((zs.argmax(1) == data.test_y).sum())
    return {"student_accuracy": correct / data.test_y.shape[0], "student_correct": correct,
            "student_ece": float(expected_calibration_error(zs.softmax(1), data.test_y, n_bins=15)),
            "teacher_accuracy": float((zt.argmax(1) == data.test_y).double().mean()), "student_val_nll": val_nll}


@claim(
    "bd-kd",
    statement=("Balancing forward and reverse KL per sample by the teacher-student entropy gap in online "
               "distillation gives a compact student that is both more accurate and better calibrated than "
               "KL-only online distillation (DML)."),
    criterion=CRITERION,
    baseline=BASELINE,
    threads=1,
)
def bdkd_student_more_accurate_and_calibrated(ctx: ClaimContext) -> ClaimResult:
    epochs = ctx.pick(smoke=2, full=40)
    start = time.perf_counter()
    seeds = [seed % (2 ** 31) for seed in ctx.seeds(N_SEEDS)]
    data = [digits_split(0.3, val_fraction=0.15, generator=torch.Generator().manual_seed(s)) for s in seeds]

    def evaluator(variant):
        method, balance = VARIANTS[variant]
        return lambda lr: _run(data[0], method, seeds[0], epochs, lr=lr, balance=balance)

    sel = tune({v: evaluator(v) for v in VARIANTS}, LRS, score=lambda r: r["student_val_nll"], bounds=LR_BOUNDS)
    runs = {}
    for v, (method, balance) in VARIANTS.items():
        runs[v] = [sel[v].output] + [_run(d, method, s, epochs, lr=sel[v].best, balance=balance)
                                     for d, s in zip(data[1:], seeds[1:])]

    def get(v, key):
        return [r.get(key, math.nan) for r in runs[v]]

    def criterion(v):
        ece = paired_comparison(get(v, "student_ece"), get("dml", "student_ece"), margin=ECE_MARGIN)
        acc = paired_comparison(get(v, "student_accuracy"), get("dml", "student_accuracy"), margin=ACC_MARGIN,
                                lower_is_better=False)
        return ece.wins and acc.wins, ece, acc

    passed, ece, acc = criterion("bdkd")
    control_passed, c_ece, c_acc = criterion("balance1")
    control = Control("BD-KD with balance 1 (forward + reverse KL, no per-sample balancing) through the same criterion",
                      control_passed, {"ece": c_ece.as_metrics(), "accuracy": c_acc.as_metrics(),
                                       "lr": sel["balance1"].best})
    edge = [v for v in VARIANTS if sel[v].at_edge]
    headline = (f"student test ECE {fmt_mean_std(get('bdkd', 'student_ece'))} (BD-KD, lr {sel['bdkd'].best:.2g}) vs "
                f"{fmt_mean_std(get('dml', 'student_ece'))} (DML, lr {sel['dml'].best:.2g}), paired gain "
                f"{ece.diff_mean:.4f} ± {ece.diff_se:.4f} SE (margin {ECE_MARGIN:g}); accuracy "
                f"{fmt_mean_std(get('bdkd', 'student_accuracy'))} vs {fmt_mean_std(get('dml', 'student_accuracy'))}, "
                f"paired gain {acc.diff_mean:.4f} ± {acc.diff_se:.4f} SE; {N_SEEDS} seeds; control balance 1: ECE "
                f"{fmt_mean_std(get('balance1', 'student_ece'))}, accuracy "
                f"{fmt_mean_std(get('balance1', 'student_accuracy'))}"
                + (f"; lr at a bound: {', '.join(edge)}" if edge else ""))

    def summary(v):
        out = {}
        for key in ("student_accuracy", "student_ece", "teacher_accuracy", "student_val_nll"):
            vals = get(v, key)
            out[key + "_mean"] = float(np.mean(vals))
            out[key + "_std"] = float(np.std(vals, ddof=1))
            out[key + "_per_seed"] = vals
        out["selection"] = sel[v].as_metrics()
        return out

    m, b = summary("bdkd"), summary("dml")
    m.update(paired_ece=ece.as_metrics(), paired_accuracy=acc.as_metrics(), epochs=epochs, seeds=N_SEEDS,
             seconds=time.perf_counter() - start)
    return ClaimResult.decide(passed, metrics=m, baseline=b, headline=headline, control=control)
