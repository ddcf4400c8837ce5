"""Claim check for Discover (Tondji et al., 2021): per-cluster momenta converge faster than one momentum.

Scaled-down analog of the paper's CIFAR/ImageNet experiments: a one-hidden-layer MLP (64 hidden) on
scikit-learn's digits with the ten classes as the clusters. Each step draws a batch of 16 images from one class
chosen uniformly at random (the clustered sampling where a single momentum buffer sees the largest
between-cluster variance).

Setup, fixed before the first run: momentum 0.9 for every method, uniform cluster weights; 150 (smoke) / 1,500
(full) steps. The claim is about optimisation speed, so the verdict metric is the final full-training-set loss,
a training quantity with no held-out split to read: each method's learning rate is chosen by
:func:`paperzoo.claims.optim._tuning.tune_over_seeds` on the mean final training loss over 3 *selection* seeds,
from the same 4-point half-decade grid {3e-3, 1e-2, 3e-2, 0.1} (smoke: {1e-2, 3e-2}), extended past a winning
edge (at most 3 extensions, 1 in smoke; bounds 1e-4..3), and the chosen lr is then rerun on 3 fresh *verdict*
seeds (fresh split, initialisation, cluster and batch sequence; paired across methods) that selection never saw.
The verdict compares log training losses, paired: Discover must be at least 20% lower in geometric mean (margin
log(1/0.8) = 0.223) and beyond 2 SE. Control (the key ingredient removed): Discover whose cluster label is drawn
at random, independently of the batch's class (ten momentum buffers that no longer match the data clusters),
tuned the same way; if it passes too, the speed-up is not from clustering the momenta.

Changed from the first version (reproduced): that version picked each learning rate on the same training losses
that decided the verdict, compared a ratio of means (<= 0.8) with a lower loss on every seed (3 seeds, no noise
estimate), and had no control. Now: selection seeds and verdict seeds are disjoint, the grid extends past a
winning edge, the ratio is a paired log-loss margin beyond 2 SE, and the random-cluster control decides whether
the result is evidence. Full runtime: about 30 s on one core (from single-run timings).
"""

from __future__ import annotations

import math
import time

import torch

from paperzoo.claims.optim._tuning import digits_data, edge_note, seed_of, selection_metrics, tune_over_seeds, values
from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import fmt_mean_std, paired_comparison, paired_control
from paperzoo.optim.discover import Discover

BATCH, HIDDEN, MOMENTUM = 16, 64, 0.9
GRID = (3e-3, 1e-2, 3e-2, 0.1)
BOUNDS = (1e-4, 3.0)
MARGIN = math.log(1 / 0.8)  # log-loss margin: at least 20% lower training loss (geometric mean)
CONTROL = "Discover random clusters"


def _run(name: str, lr: float, seed: int, steps: int) -> dict:
    seed = seed_of(seed)
    data = digits_data(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10))
    if name == "SGDM":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM)
    else:
        opt = Discover(model.parameters(), n_clusters=10, lr=lr, momentum=MOMENTUM)
    members = [torch.nonzero(data.train_y == c).flatten() for c in range(10)]
    rng = torch.Generator().manual_seed(seed + 1)
    labels = torch.Generator().manual_seed(seed + 2)  # the control's random cluster labels
    ce = torch.nn.functional.cross_entropy
    for _ in range(steps):
        k = int(torch.randint(10, (1,), generator=rng))
        idx = members[k][torch.randint(len(members[k]), (BATCH,), generator=rng)]
        opt.zero_grad()
        loss = ce(model(data.train_x[idx]), data.train_y[idx])
        if not torch.isfinite(loss):
            return dict(train=math.inf, log_train=math.inf, test_acc=0.0)
        loss.backward()
        if name == "Discover":
            opt.step(cluster_id=k)
        elif name == CONTROL:
            opt.step(cluster_id=int(torch.randint(10, (1,), generator=labels)))
        else:
            opt.step()
    with torch.no_grad():
        train = float(ce(model(data.train_x), data.train_y))
        acc = float((model(data.test_x).argmax(1) == data.test_y).double().mean())
    if not math.isfinite(train):
        return dict(train=math.inf, log_train=math.inf, test_acc=0.0)
    return dict(train=train, log_train=math.log(train), test_acc=acc)


@claim(
    "discover",
    statement="Keeping one momentum buffer per data cluster (Discover-SGDM) reduces the variance of the update "
              "and trains faster than SGD with a single momentum buffer.",
    criterion="Digits MLP, classes as clusters, batches of 16 drawn within one random class, 150 (smoke) / 1,500 "
              "(full) steps, momentum 0.9. Each method's lr is tuned on the mean final training loss over 3 "
              "selection seeds from the same 4-point grid {3e-3, 1e-2, 3e-2, 0.1} (2 points in smoke), extended "
              "past a winning edge, then rerun on 3 fresh paired verdict seeds. Passes if Discover's paired mean "
              "gain in log final training loss over SGD-momentum on the verdict seeds exceeds margin log(1/0.8) "
              "and 2 SE. Control, which must fail the same criterion: Discover with cluster labels drawn at "
              "random, independently of the batch's class, tuned the same way.",
    baseline="torch.optim.SGD(momentum=0.9) on the same clusters, batches and seeds, a grid of the same size",
    timeout={"smoke": 120.0, "full": 900.0},
    threads=1,
)
def faster_than_sgd_momentum(ctx: ClaimContext) -> ClaimResult:
    start = time.perf_counter()
    steps = ctx.pick(smoke=150, full=1500)
    seeds = ctx.seeds(6)
    grid = ctx.pick(smoke=GRID[1:3], full=GRID)
    sel = tune_over_seeds(lambda name, lr, seed: _run(name, lr, seed, steps),
                          {n: grid for n in ("Discover", "SGDM", CONTROL)}, seeds[:3], score="train",
                          verdict_seeds=seeds[3:], bounds=BOUNDS, max_extensions=ctx.pick(smoke=1, full=3))
    log_loss = {n: values(s, "log_train") for n, s in sel.items()}
    loss = {n: values(s, "train") for n, s in sel.items()}
    cmp = paired_comparison(log_loss["Discover"], log_loss["SGDM"], margin=MARGIN)
    control, ctrl = paired_control("Discover with random cluster labels (momentum buffers unrelated to the classes), "
                                   "tuned on a grid of the same size, through the same criterion against "
                                   "SGD-momentum",
                                   log_loss[CONTROL], log_loss["SGDM"], margin=MARGIN, train_loss=loss[CONTROL])
    ratio = math.exp(-cmp.diff_mean) if math.isfinite(cmp.diff_mean) else float("nan")
    headline = (f"final training loss {fmt_mean_std(loss['Discover'])} (Discover) vs {fmt_mean_std(loss['SGDM'])} "
                f"(SGD-momentum), 3 verdict seeds, geometric-mean ratio {ratio:.3g} (pass <= 0.8 beyond 2 SE: "
                f"log gain {cmp.diff_mean:.3g} ± {cmp.diff_se:.2g} SE); control random clusters "
                f"{fmt_mean_std(loss[CONTROL])}, log gain {ctrl.diff_mean:.3g} ± {ctrl.diff_se:.2g} SE"
                + edge_note(sel))
    metrics = dict(steps=steps, batch_size=BATCH, momentum=MOMENTUM, margin=MARGIN, loss_ratio_vs_sgdm=ratio,
                   discover_vs_sgdm=cmp.as_metrics(), train_loss=loss,
                   test_accuracy={n: values(s, "test_acc") for n, s in sel.items()}, **selection_metrics(sel),
                   seconds=round(time.perf_counter() - start, 2))
    return ClaimResult.decide(cmp.wins, metrics=metrics, baseline=dict(SGDM=loss["SGDM"]), headline=headline,
                              control=control)
