"""Claim check for Gradient Descent Happens in a Tiny Subspace (Gur-Ari, Roberts, Dyer, 2018).

The paper's finding: after a short initial phase of training, the gradient lies almost entirely in the span of the
top-k Hessian eigenvectors, k the number of classes, and that span changes little over long stretches of training;
a random k-dimensional subspace would hold a fraction k/D of it.

Setup, fixed before the first run: scikit-learn digits (paperzoo.data.digits_split, 30% test, standardised,
float64; 10 classes), a 64-32-10 ReLU MLP (D = 2,410 parameters, PyTorch's default initialisation), SGD with
learning rate 0.1, no momentum, mini-batches of 64 drawn by a seeded permutation per epoch (the paper trains its
small fully connected networks with plain SGD), 1,500 steps (smoke: 200). The measurement batch is the whole
training split (smoke: its first 256 points); a :class:`paperzoo.diagnostics.tiny_subspace.SubspaceTracker` with
k = 10 measures the full-batch Hessian's top-10 eigenpairs (Lanczos, tol 1e-6; smoke 1e-4), the full-batch gradient
and their overlaps every 100 steps after a step (steps 100, 200, ..., 1,500). The initial phase is fixed as the
first 300 steps (smoke: 100): the post-initial checkpoints are steps >= 300 (smoke >= 100). 3 seeds
(``ctx.seeds(3)``: split, initialisation and batch order).

Criterion: pass iff for every seed (A) the mean over post-initial checkpoints of the gradient overlap
f_t = ||P_10 g||^2 / ||g||^2 is >= 0.70, (B) that mean is >= 20 k/D (far above the random-subspace level), and
(C) the subspace overlap tr(P_t P_s)/k between the first post-initial checkpoint (step 300; smoke 100) and the last
one (step 1,500; smoke 200) is >= 0.60. Reported: the distances of f and o from 0.70 and 0.60, f in units of k/D.

Control (the paper ties the subspace's dimension to the number of classes): k = 2, the top-2 eigenspace of the same
Lanczos runs (column 2 of the cumulative overlaps), through criterion (A): it must fail. Reported alongside: the
overlap with a fresh uniformly random 10-dimensional subspace at each checkpoint, against k/D.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.data.digits import digits_split
from paperzoo.diagnostics.tiny_subspace import subspace_tracker

K = 10
K_CONTROL = 2
GRAD_THRESHOLD = 0.70
CHANCE_FACTOR = 20.0
SUBSPACE_THRESHOLD = 0.60
LR = 0.1
BATCH = 64
EVERY = 100
CRITERION = (
    "digits (10 classes), 64-32-10 ReLU MLP (D = 2410), SGD lr 0.1 batch 64, 1500 steps, 3 seeds; tracker with "
    "k = 10 on the full training split every 100 steps; post-initial checkpoints = steps >= 300. Pass iff for every "
    "seed (A) the mean post-initial gradient overlap ||P_10 g||^2/||g||^2 >= 0.70, (B) it is >= 20 k/D, and (C) the "
    "subspace overlap tr(P_300 P_1500)/10 >= 0.60. Control: k = 2 (top-2 eigenspace, same runs) through (A); it "
    "must fail."
)


def _train_and_track(seed: int, steps: int, n_measure: int, initial: int, tol: float) -> dict:
    g = torch.Generator().manual_seed(seed)
    data = digits_split(0.3, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).double()
    loss_fn = torch.nn.functional.cross_entropy
    tracker = subspace_tracker(model, loss_fn, (data.train_x[:n_measure], data.train_y[:n_measure]), K, EVERY,
                               tol=tol, generator=torch.Generator().manual_seed(seed + 1))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    n = len(data.train_y)
    order = torch.randperm(n, generator=g)
    pos = 0
    for step in range(1, steps + 1):
        if pos + BATCH > n:
            order, pos = torch.randperm(n, generator=g), 0
        idx = order[pos:pos + BATCH]
        pos += BATCH
        opt.zero_grad()
        loss_fn(model(data.train_x[idx]), data.train_y[idx]).backward()
        opt.step()
        tracker(step)
    tr = tracker.result()
    post = tr.steps >= initial
    i0, i1 = int(torch.nonzero(post)[0]), len(tr.steps) - 1
    with torch.no_grad():
        acc = float((model(data.test_x).argmax(-1) == data.test_y).double().mean())
    D = tracker.n
    return {"D": D, "steps": tr.steps.tolist(), "gradient_overlap": tr.gradient_overlap.tolist(),
            "f_post": float(tr.gradient_overlap[post].mean()),
            "f_post_k2": float(tr.cumulative_overlap[post, K_CONTROL - 1].mean()),
            "random_post": float(tr.random_overlap[post].mean()),
            "random_post_se": float(tr.random_overlap[post].std() / math.sqrt(int(post.sum()))),
            "o_first_last": float(tr.subspace_overlap[i0, i1]),
            "o_from_first": tr.subspace_overlap[i0].tolist(),
            "top_eigenvalues_last": tr.eigenvalues[-1].tolist(), "loss": tr.losses.tolist(),
            "converged": bool(tr.converged.all()), "test_accuracy": acc,
            "cumulative_last": tr.cumulative_overlap[-1].tolist()}


@claim(
    "tiny-subspace-gd",
    statement=("After a short initial phase of training, the gradient lies mostly in the span of the top-k Hessian "
               "eigenvectors (k = number of classes), a span that changes slowly; a random k-dim subspace holds k/D."),
    criterion=CRITERION,
    baseline="a uniformly random 10-dimensional subspace (overlap k/D), and the top-2 eigenspace (k < classes)",
    threads=1,
)
def gradient_lies_in_top_hessian_subspace(ctx: ClaimContext) -> ClaimResult:
    steps = ctx.pick(smoke=200, full=1500)
    n_measure = ctx.pick(smoke=256, full=100_000)
    initial = ctx.pick(smoke=100, full=300)
    tol = ctx.pick(smoke=1e-4, full=1e-6)
    runs = [_train_and_track(seed, steps, n_measure, initial, tol) for seed in ctx.seeds(3)]
    D = runs[0]["D"]
    chance = K / D
    f = [r["f_post"] for r in runs]
    o = [r["o_first_last"] for r in runs]
    f2 = [r["f_post_k2"] for r in runs]
    rnd = [r["random_post"] for r in runs]
    ok_a = all(v >= GRAD_THRESHOLD for v in f)
    ok_b = all(v >= CHANCE_FACTOR * chance for v in f)
    ok_c = all(v >= SUBSPACE_THRESHOLD for v in o)
    passed = ok_a and ok_b and ok_c
    control = Control(f"top-{K_CONTROL} eigenspace (k < 10 classes) through criterion (A), same runs",
                      all(v >= GRAD_THRESHOLD for v in f2),
                      {"f_post_k2": f2, "threshold": GRAD_THRESHOLD,
                       "random_subspace_overlap": rnd, "k_over_D": chance})
    headline = (f"3 seeds, D = {D}: post-initial gradient overlap with the top-10 eigenspace "
                f"{fmt_mean_std(f)} (threshold {GRAD_THRESHOLD:.2f}, min margin {min(f) - GRAD_THRESHOLD:+.3f}; "
                f"{np.mean(f) / chance:.0f} x k/D); subspace overlap step {initial} vs {steps} {fmt_mean_std(o)} "
                f"(threshold {SUBSPACE_THRESHOLD:.2f}, min margin {min(o) - SUBSPACE_THRESHOLD:+.3f}); controls: "
                f"top-2 {fmt_mean_std(f2)}, random 10-dim {fmt_mean_std(rnd)} vs k/D = {chance:.4f}")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for i, r in enumerate(runs):
            ax.plot(r["steps"], r["gradient_overlap"], "o-", ms=3, c=f"C{i}", label=f"seed {i}: f_t (k = 10)")
            ax.plot(r["steps"], r["o_from_first"], "--", c=f"C{i}")
        ax.axhline(GRAD_THRESHOLD, c="k", lw=0.8)
        ax.axvline(initial, c="gray", lw=0.8, ls=":")
        ax.set_xlabel("SGD step")
        ax.set_ylabel("overlap (solid: gradient; dashed: subspace vs step %d)" % initial, fontsize=7)
        ax.legend(fontsize=6)
        ctx.save_figure(fig, "overlaps")

    return ClaimResult.decide(
        passed,
        metrics={"per_seed": runs, "f_post": f, "o_first_last": o, "criterion_A": ok_a, "criterion_B": ok_b,
                 "criterion_C": ok_c, "D": D, "k": K},
        baseline={"k_over_D": chance, "random_subspace_overlap": rnd, "f_post_k2": f2,
                  "grad_threshold": GRAD_THRESHOLD, "subspace_threshold": SUBSPACE_THRESHOLD},
        headline=headline, control=control,
    )
