"""Claim check for muP (Yang & Hu, 2021; the transfer consequence of Tensor Programs V): the optimal learning
rate is stable across widths under the maximal update parametrization and drifts under the standard one.

Not a tuned comparison of two optimizers: the measured quantity is the location of the optimum itself.
Setup, fixed before the first run: MLP ``64 -> n -> ReLU -> n -> ReLU -> 10`` on scikit-learn's digits (the
training part of each seed's split), Adam, batch 128, T = 20 (smoke) / 100 (full) steps, widths n in
{32, 64, 128} (smoke) / {32, 64, 128, 256, 512} (full), base width 32, 3 seeds (split, initialisation and
batches). muP: weights N(0, 1/fan_in), zero biases, zero-initialised :class:`MuReadout` with multiplier
1/(n/32), Adam learning rate eta/(n/32) for the hidden n x n weight (:func:`mup_param_groups`). SP: the same
architecture and N(0, 1/fan_in) initialisation with a plain linear readout and one global learning rate.
For every (parametrization, width) the best learning rate is located with
:func:`paperzoo.claims.optim._tuning.tune_over_seeds` (``select_on_grid``): the mean over the seeds of the final
full-training-set loss (the quantity whose optimum muP transfers) on the half-decade grid
{1e-3, 10^-2.5, 1e-2, 10^-1.5} (smoke: {10^-2.5, 1e-2}), extended by half decades past a winning edge until the
optimum is interior (at most 4 extensions, none in smoke; bounds 1e-5..10). k*(n) = log10 of the best lr.
Criterion: under muP, max_n k*(n) - min_n k*(n) <= 0.5 (one grid step), with every muP optimum interior (an
optimum still on the edge of the extended grid is not located, and fails). Control, which must fail the same
criterion: SP (the theory predicts its optimum moves roughly as 1/width for Adam's hidden weights); if SP's
optimum is as stable as muP's, the check cannot tell the two apart and is inconclusive.

Changed from the first version (not_reproduced): that version used a fixed grid 10^-4 ... 10^-0.5 with no
extension (an optimum on the grid's edge was taken at face value), widths {64, ..., 1024} with 200 steps (about
five minutes), and a one-split dataset; SP's shift was a second criterion part. Now: the optimum is located with
an extending grid per width and must be interior, SP is the control through the same criterion, each seed has its
own split, and widths 32..512 with T = 100 (the 16x width range is kept) fit about 60 s on one core.
"""

from __future__ import annotations

import math
import time

import torch

from paperzoo.claims.optim._tuning import digits_data, seed_of, selection_metrics, tune_over_seeds
from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control
from paperzoo.optim import MuReadout, mup_init_, mup_param_groups

BASE = 32
GRID = tuple(10.0 ** k for k in (-3.0, -2.5, -2.0, -1.5))
BATCH = 128
SPREAD = 0.5  # decades: one grid step


def _mlp(n, readout):
    return torch.nn.Sequential(torch.nn.Linear(64, n), torch.nn.ReLU(), torch.nn.Linear(n, n), torch.nn.ReLU(),
                               readout(n, 10))


def _train(param: str, n: int, lr: float, seed: int, steps: int) -> dict:
    seed = seed_of(seed)
    data = digits_data(seed)
    xtr, ytr = data.train_x, data.train_y
    g = torch.Generator().manual_seed(seed)
    if param == "muP":
        model, base = _mlp(n, MuReadout), _mlp(BASE, MuReadout)
        mup_init_(model, base, readout_zero_init=True, generator=g)
        opt = torch.optim.Adam(mup_param_groups(model, base, lr, "adam"))
    else:
        model = _mlp(n, torch.nn.Linear)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() < 2:
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    batches = torch.Generator().manual_seed(seed + 1)
    loss_fn = torch.nn.functional.cross_entropy
    for _ in range(steps):
        idx = torch.randint(len(ytr), (BATCH,), generator=batches)
        opt.zero_grad()
        loss = loss_fn(model(xtr[idx]), ytr[idx])
        if not torch.isfinite(loss):
            return dict(train=math.inf)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(loss_fn(model(xtr), ytr))
    return dict(train=final if math.isfinite(final) else math.inf)


def _stability(sel, param, widths):
    best = [math.log10(sel[f"{param}-{n}"].best) for n in widths]
    interior = not any(sel[f"{param}-{n}"].at_edge for n in widths)
    spread = max(best) - min(best)
    return dict(best_log10_lr=dict(zip(map(str, widths), best)), spread_decades=spread, all_interior=interior,
                passes=bool(interior and spread <= SPREAD + 1e-9))


@claim(
    "mup",
    statement="Under the maximal update parametrization (muP) the optimal learning rate is stable as the width "
              "grows, while under the standard parametrization it shifts with width.",
    criterion="Digits MLP with two hidden layers of width n, Adam, batch 128, T = 20 (smoke) / 100 (full) steps, "
              "widths {32, 64, 128} (smoke) / {32, ..., 512} (full), base width 32, 3 seeds; for each width the "
              "lr minimising the seed-mean final training loss is located on the half-decade grid 10^-3 ... "
              "10^-1.5, extended past a winning edge until interior (not in smoke). Passes if under muP the best "
              "log10 lr varies by at most 0.5 (one grid step) across widths and every muP optimum is interior. "
              "Control, which must fail the same criterion: the standard parametrization.",
    baseline="standard parametrization (same architecture and init variance, plain readout, one global Adam lr), "
             "same grids, widths, seeds and steps",
    timeout={"smoke": 120.0, "full": 900.0},
    threads=1,
)
def optimal_lr_transfers_across_width(ctx: ClaimContext) -> ClaimResult:
    start = time.perf_counter()
    steps = ctx.pick(smoke=20, full=100)
    widths = ctx.pick(smoke=(32, 64, 128), full=(32, 64, 128, 256, 512))
    seeds = ctx.seeds(3)
    grid = ctx.pick(smoke=GRID[1:3], full=GRID)
    grids = {f"{param}-{n}": grid for param in ("muP", "SP") for n in widths}

    def run(name, lr, seed):
        param, n = name.split("-")
        return _train(param, int(n), lr, seed, steps)

    sel = tune_over_seeds(run, grids, seeds, score="train", bounds=(1e-5, 10.0),
                          max_extensions=ctx.pick(smoke=0, full=4))
    mup, sp = _stability(sel, "muP", widths), _stability(sel, "SP", widths)
    control = Control("the standard parametrization through the same criterion (its optimum should move with "
                      "width)", passed=sp["passes"], metrics=sp)

    def fmt(s):
        return "[" + ", ".join(f"{v:.1f}" for v in s["best_log10_lr"].values()) + "]"

    headline = (f"best log10 lr over widths {list(widths)}: muP {fmt(mup)} (spread {mup['spread_decades']:.1f} "
                f"decades, pass <= 0.5{'' if mup['all_interior'] else ', an optimum on the grid edge'}) vs SP "
                f"{fmt(sp)} (spread {sp['spread_decades']:.1f}{'' if sp['all_interior'] else ', edge'}), 3 seeds")
    metrics = dict(steps=steps, widths=list(widths), base_width=BASE, num_seeds=len(seeds), **mup,
                   **selection_metrics(sel), seconds=round(time.perf_counter() - start, 2))
    if ctx.figure_dir is not None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
        for ax, param in zip(axes, ("muP", "SP")):
            for n in widths:
                trace = sel[f"{param}-{n}"].trace
                ax.plot([math.log10(v) for v, _ in trace], [min(s_, 5.0) for _, s_ in trace], marker="o",
                        label=f"n={n}")
            ax.set_title(param)
            ax.set_xlabel("log10 lr")
            ax.set_yscale("log")
        axes[0].set_ylabel("final training loss (seed mean)")
        axes[0].legend()
        ctx.save_figure(fig, "lr_sweep")
    return ClaimResult.decide(mup["passes"], metrics=metrics, baseline=sp, headline=headline, control=control)
