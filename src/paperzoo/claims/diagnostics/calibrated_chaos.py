"""Claim check for Calibrated Chaos: Variance Between Runs of Neural Network Training is Harmless and Inevitable
(Jordan, 2023).

The paper's prediction: the run-to-run spread of test accuracy is what the independent-example (binomial) model
predicts from per-example correctness probabilities, std ~ sqrt(sum_i p_i (1 - p_i)) / n, i.e. it is test-set
sampling noise, and the accuracy on the test distribution barely varies between runs; consequently the
accuracies of the same runs on two disjoint halves of the test set are uncorrelated.

Setup, fixed before the first run: scikit-learn digits (:func:`paperzoo.data.digits_split`, half the images as the
test set, n ~ 900), R one-hidden-layer MLPs (64 -> 64 ReLU -> 10) trained as one batched model (stacked weights,
each run its own initialisation and its own mini-batch order), plain SGD, lr 0.1, batch 32, 30 epochs (smoke: R =
32 runs, 6 epochs; full: R = 96 runs, 30 epochs). 3 seeds of the whole experiment (each its own split and runs).
Per seed: observed std = sample std (ddof 1) of the R test accuracies; prediction =
:func:`paperzoo.diagnostics.run_variance.binomial_accuracy_std` of the per-example p_i of the same runs
(``runs=R``, bias-corrected); ratio = observed / predicted; split-half correlation r with the even/odd split.

Criterion: pass iff (1) the mean over seeds of the ratio is within +-25% of 1 and every seed's ratio is in
[0.6, 1.6] (the sample std of R = 96 runs has relative SE ~0.07), and (2) the Fisher-z average over seeds of the
split-half correlation is below 0.3 in absolute value.

Control (a per-run shift injected): half the runs trained with lr 0.1 / 20 (same epochs), so that the runs fall
into two groups whose distribution-level accuracies differ. The same criterion must fail (observed std far above
the binomial prediction, split-half correlation near 1).

Reported as well: the ensemble's ECE (:func:`ensemble_calibration`) and the implied distribution-level std
sqrt(max(0, observed^2 - predicted^2)).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.data.digits import digits_split, single_thread
from paperzoo.diagnostics.run_variance import (binomial_accuracy_std, ensemble_calibration,
                                               per_example_correct_prob, split_half_correlation)

LR = 0.1
CONTROL_LR_FACTOR = 1 / 20
BATCH = 32
HIDDEN = 64
RATIO_TOL = 0.25
RATIO_RANGE = (0.6, 1.6)
R_MAX = 0.3
CRITERION = (
    "sklearn digits, half as test set, R one-hidden-layer MLPs (64 hidden, SGD lr 0.1, batch 32, 30 epochs; R = 96 "
    "runs with their own init and batch order), 3 seeds: the sample std of test accuracy over runs divided by the "
    "binomial prediction sqrt(sum_i p_i(1-p_i) * R/(R-1))/n has mean over seeds within +-25% of 1 and each seed in "
    "[0.6, 1.6], and the Fisher-averaged split-half (even/odd examples) correlation of accuracies across runs has "
    "|r| < 0.3. Control: half the runs with lr / 20 (a per-run shift); it must fail."
)


def _train_runs(data, runs: int, epochs: int, lrs: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Train ``runs`` MLPs at once (stacked weights); return test-set softmax probabilities, shape (R, n, 10)."""
    x, y = data.train_x, data.train_y
    n, d = x.shape
    k = 10
    b1, b2 = 1 / math.sqrt(d), 1 / math.sqrt(HIDDEN)  # torch.nn.Linear's default uniform ranges
    w1 = ((torch.rand(runs, d, HIDDEN, generator=g) * 2 - 1) * b1).requires_grad_()
    c1 = ((torch.rand(runs, 1, HIDDEN, generator=g) * 2 - 1) * b1).requires_grad_()
    w2 = ((torch.rand(runs, HIDDEN, k, generator=g) * 2 - 1) * b2).requires_grad_()
    c2 = ((torch.rand(runs, 1, k, generator=g) * 2 - 1) * b2).requires_grad_()
    params = [w1, c1, w2, c2]
    lr = lrs.view(runs, 1, 1)

    def forward(inputs):  # inputs (R, B, d)
        return torch.baddbmm(c2, torch.relu(torch.baddbmm(c1, inputs, w1)), w2)

    steps = n // BATCH
    for _ in range(epochs):
        order = torch.rand(runs, n, generator=g).argsort(1)  # each run its own data order
        for s in range(steps):
            idx = order[:, s * BATCH:(s + 1) * BATCH]
            out = forward(x[idx])
            # Sum over runs of each run's mean loss: the runs' gradients stay separate.
            loss = torch.nn.functional.cross_entropy(out.reshape(-1, k), y[idx].reshape(-1)) * runs
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, gr in zip(params, grads):
                    p.sub_(lr * gr)
    with torch.no_grad():
        return forward(data.test_x.expand(runs, -1, -1)).double().softmax(-1)


def _measure(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    correct = probs.argmax(-1) == labels
    runs = correct.shape[0]
    acc = correct.double().mean(1)
    observed = float(acc.std())
    predicted = binomial_accuracy_std(per_example_correct_prob(correct), runs=runs)
    split = split_half_correlation(correct)
    cal = ensemble_calibration(probs.double(), labels)
    return {"mean_accuracy": float(acc.mean()), "observed_std": observed, "binomial_std": predicted,
            "ratio": observed / predicted, "split_half_r": split.r, "split_half_ci": [split.ci_low, split.ci_high],
            "ensemble_ece": cal.ece, "ensemble_accuracy": float(cal.correct.double().mean()),
            "distribution_level_std": math.sqrt(max(0.0, observed ** 2 - predicted ** 2))}


def _criterion(rows: list[dict]) -> tuple[bool, float, float]:
    ratios = [r["ratio"] for r in rows]
    mean_ratio = float(np.mean(ratios))
    pooled_r = math.tanh(float(np.mean([math.atanh(max(-0.999999, min(0.999999, r["split_half_r"])))
                                        for r in rows])))
    ok = (abs(mean_ratio - 1) <= RATIO_TOL and all(RATIO_RANGE[0] <= v <= RATIO_RANGE[1] for v in ratios)
          and abs(pooled_r) < R_MAX)
    return ok, mean_ratio, pooled_r


@claim(
    "calibrated-chaos",
    statement=("The run-to-run std of test accuracy matches the independent-example binomial prediction "
               "sqrt(sum_i p_i(1-p_i))/n, and accuracies on two disjoint test halves are uncorrelated across runs: "
               "the variance is test-set noise, not variation of distribution-level accuracy."),
    criterion=CRITERION,
    baseline="the binomial (independent-example) prediction from per-example correctness probabilities",
    threads=1,
)
def run_variance_is_binomial(ctx: ClaimContext) -> ClaimResult:
    runs = ctx.pick(smoke=32, full=96)
    epochs = ctx.pick(smoke=6, full=30)
    rows, control_rows = [], []
    with single_thread():
        for seed in ctx.seeds(3):
            g = torch.Generator().manual_seed(seed)
            data = digits_split(0.5, generator=g)
            probs = _train_runs(data, runs, epochs, torch.full((runs,), LR), g)
            rows.append(_measure(probs, data.test_y))
            lrs = torch.full((runs,), LR)
            lrs[runs // 2:] *= CONTROL_LR_FACTOR
            probs = _train_runs(data, runs, epochs, lrs, torch.Generator().manual_seed(seed + 1))
            control_rows.append(_measure(probs, data.test_y))
    passed, mean_ratio, pooled_r = _criterion(rows)
    control_passed, control_ratio, control_r = _criterion(control_rows)

    def col(rs, key):
        return [r[key] for r in rs]

    control = Control(f"half the runs with lr x {CONTROL_LR_FACTOR:g} (an injected per-run shift) through the same "
                      "criterion", control_passed,
                      {"ratio": col(control_rows, "ratio"), "mean_ratio": control_ratio,
                       "split_half_r_pooled": control_r, "per_seed": control_rows})
    headline = (f"R = {runs} runs, 3 seeds: observed/binomial std ratio {fmt_mean_std(col(rows, 'ratio'))} "
                f"(tol +-{RATIO_TOL:.0%}; observed {fmt_mean_std([100 * v for v in col(rows, 'observed_std')])}% vs "
                f"predicted {fmt_mean_std([100 * v for v in col(rows, 'binomial_std')])}%), split-half r "
                f"{pooled_r:+.2f} (< {R_MAX}); control (half the runs at lr/20): ratio "
                f"{fmt_mean_std(col(control_rows, 'ratio'))}, r {control_r:+.2f}")
    return ClaimResult.decide(
        passed,
        metrics={"runs": runs, "epochs": epochs, "per_seed": rows, "mean_ratio": mean_ratio,
                 "split_half_r_pooled": pooled_r,
                 "ensemble_ece": col(rows, "ensemble_ece"), "mean_accuracy": col(rows, "mean_accuracy")},
        baseline={"binomial_std": col(rows, "binomial_std"), "ratio_tolerance": RATIO_TOL, "r_max": R_MAX},
        headline=headline, control=control,
    )
