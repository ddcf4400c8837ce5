"""Claim check for finite-difference gradient regularization (Karakida et al., 2023).

Two parts of the paper's headline, checked together:

1. *Generalization / implicit bias* (Section 5): on a diagonal linear network :math:`w = u\\odot u - v\\odot v`
   trained for sparse regression, GR biases training toward the rich (sparse) regime, and the forward
   finite-difference scheme (F-GR) does so more strongly than double backpropagation (DB) or the backward scheme
   (B-GR). Data: :math:`d = 100`, :math:`n = 40`, 5-sparse :math:`w^*` with unit entries, Gaussian inputs, no
   label noise, initialization :math:`u = v = \\alpha = 1`; test error :math:`\\|w - w^*\\|^2` (the exact
   population MSE for isotropic Gaussian inputs).
2. *Cost*: an F-GR step (two plain backward passes) is cheaper than a DB step (a backward pass through the
   gradient's graph), measured on an MLP on digits.

Setup, fixed before the first run: plain SGD base (full batch), lr 0.01 for every method (the small-step regime
the paper analyses, where GD follows gradient flow; it is not tuned, the same for all), F-GR and B-GR with
:math:`\\varepsilon = 0.1`, 500 (smoke) / 5,000 (full) steps, 3 paired seeds (data and :math:`w^*`). Every GR
variant's :math:`\\gamma` is chosen by :func:`paperzoo.claims.optim._tuning.tune_over_seeds` on the mean
*validation* error over the seeds (the MSE on 40 fresh noise-free samples per seed, never used for training),
from the same grid {0.01, 0.03, 0.1}, extended past a winning edge (at most 3 extensions, 1 in smoke; bounds
1e-4..1; each initial-grid :math:`\\gamma` is one param group of one batched optimizer); the verdict reads the
exact test error of the chosen runs, paired over the seeds, in log space: (a) F-GR beats GD by margin log 2 (at
least 2x lower) and 2 SE; (b) F-GR beats DB-GR and B-GR, each by margin 0 and 2 SE; (c) the median wall time of an
F-GR step is below a DB-GR step's (MLP 64-256-256-10, batch 256, 10 (smoke) / 20 (full) interleaved timed steps each).
Control (the key ingredient removed): F-GR with a tiny finite-difference step, :math:`\\varepsilon = 10^{-3}`,
where the forward scheme collapses onto DB-GR (its extra implicit bias is of order :math:`\\varepsilon`), tuned
the same way and put through the same criterion; if it passes part (b) too, the ordering is not the effect of the
forward scheme the paper identifies, and the verdict is inconclusive.

Changed from the first version (not_reproduced): that version picked each :math:`\\gamma` by the test error that
decided the verdict (an oracle choice), stopped at the grid's edges, and compared means with no noise estimate.
Now: a validation set for selection, an extending grid, paired comparisons beyond 2 SE with stated margins, and
the small-epsilon control.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from paperzoo.claims.optim._tuning import edge_note, selection_metrics, tune_over_seeds, values
from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.optim import FiniteDifferenceGR

D, N, K = 100, 40, 5
N_VAL = 40
ALPHA = 1.0
LR = 0.01
EPS, CONTROL_EPS = 0.1, 1e-3
GAMMAS = (0.01, 0.03, 0.1)
MARGIN_GD = math.log(2.0)
CONTROL = "F-GR eps=1e-3"
MODES = {"F-GR": ("forward", EPS), "B-GR": ("backward", EPS), "DB-GR": ("double_backprop", EPS),
         CONTROL: ("forward", CONTROL_EPS)}


def _data(seeds):
    """Training inputs (S, n, d), targets (S, n), w* (S, d), validation inputs (S, n_val, d) and targets."""
    Xs, ys, ws, Xv, yv = [], [], [], [], []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        X = torch.randn(N, D, generator=g, dtype=torch.float64)
        w = torch.zeros(D, dtype=torch.float64)
        w[torch.randperm(D, generator=g)[:K]] = 1.0
        V = torch.randn(N_VAL, D, generator=g, dtype=torch.float64)
        Xs.append(X)
        ys.append(X @ w)
        ws.append(w)
        Xv.append(V)
        yv.append(V @ w)
    return torch.stack(Xs), torch.stack(ys), torch.stack(ws), torch.stack(Xv), torch.stack(yv)


def _train(mode, X, y, num_steps, gammas=(None,), eps=EPS):
    """Final w of shape (len(gammas), S, d), one param group per gamma (``mode="gd"``: plain GD, one group)."""
    S = X.shape[0]
    us = [torch.full((S, D), ALPHA, dtype=torch.float64, requires_grad=True) for _ in gammas]
    vs = [torch.full((S, D), ALPHA, dtype=torch.float64, requires_grad=True) for _ in gammas]
    if mode == "gd":
        opt = torch.optim.SGD(us + vs, lr=LR)
    else:
        groups = [{"params": [u, v], "gamma": gm} for u, v, gm in zip(us, vs, gammas)]
        # One group per gamma in a single optimizer: a gamma whose run diverges must not stop the others, and
        # its NaN end point is scored as the failure it is (torch.optim's behaviour, as before the policy).
        opt = FiniteDifferenceGR(groups, torch.optim.SGD, eps=eps, mode=mode, lr=LR, nonfinite="ignore")

    def loss_fn():
        total = 0.0
        for u, v in zip(us, vs):
            w = u * u - v * v
            r = torch.einsum("snd,sd->sn", X, w) - y
            total = total + 0.5 * (r * r).sum() / N
        return total

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        if mode != "double_backprop":
            loss.backward()
        return loss

    for _ in range(num_steps):
        if mode == "gd":
            closure()
            opt.step()
        else:
            opt.step(closure)
    with torch.no_grad():
        return torch.stack([u * u - v * v for u, v in zip(us, vs)])


def _errors(w, w_star, Xv, yv):
    """Per-seed validation MSE and exact test error ||w - w*||^2 (NaN -> inf), for w of shape (S, d)."""
    test = torch.nan_to_num(((w - w_star) ** 2).sum(-1), nan=math.inf)
    val = torch.nan_to_num(((torch.einsum("snd,sd->sn", Xv, w) - yv) ** 2).mean(-1), nan=math.inf)
    return val, test


def _step_times(reps):
    """Median seconds per step of F-GR and DB-GR on an MLP 64-256-256-10, batch 256 of digits."""
    from paperzoo.data.classification import digits_task

    task = digits_task(train_per_class=100, generator=torch.Generator().manual_seed(0))
    x, y = task.x_train[:256], task.y_train[:256]
    times = {}
    models, opts = {}, {}
    for mode in ("forward", "double_backprop"):
        torch.manual_seed(0)
        models[mode] = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 256),
                                           torch.nn.Tanh(), torch.nn.Linear(256, 10))
        opts[mode] = FiniteDifferenceGR(models[mode].parameters(), torch.optim.SGD, gamma=0.05, eps=0.05,
                                        mode=mode, lr=0.01)
        times[mode] = []
    for r in range(reps + 2):
        for mode in ("forward", "double_backprop"):
            model, opt = models[mode], opts[mode]

            def closure():
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                if mode == "forward":
                    loss.backward()
                return loss

            start = time.perf_counter()
            opt.step(closure)
            if r >= 2:  # two warm-up rounds
                times[mode].append(time.perf_counter() - start)
    return {m: statistics.median(t) for m, t in times.items()}


@claim(
    "finite-diff-gr",
    statement="Forward finite-difference gradient regularization is cheaper than double backpropagation and "
              "generalizes better: on a diagonal linear network it reaches a sparser, lower-test-error solution "
              "than GD, DB-GR and backward FD-GR.",
    criterion="Diagonal linear network w = u*u - v*v, d=100, n=40, 5-sparse w*, alpha=1, full-batch SGD lr=0.01 "
              "for all, 500 (smoke) / 5,000 (full) steps, 3 paired seeds; FD eps=0.1. Each GR variant's gamma is "
              "tuned on the mean validation MSE (40 fresh noise-free samples per seed) from the same grid {0.01, "
              "0.03, 0.1}, extended past a winning edge; the verdict uses the exact test error ||w - w*||^2, "
              "paired in log space. Passes if (a) F-GR's gain over GD exceeds margin log 2 and 2 SE, (b) F-GR's "
              "gains over DB-GR and over B-GR each exceed margin 0 and 2 SE, and (c) the median wall time of an "
              "F-GR step is below a DB-GR step's on an MLP 64-256-256-10 (batch 256, 10 (smoke) / 20 (full) "
              "timed steps each); a NaN run counts as infinite error. Control, which must fail the same "
              "criterion: F-GR with eps = 1e-3 (the forward scheme collapsed onto DB-GR), tuned the same way.",
    baseline="plain GD (same lr and steps); GR by double backpropagation (exact) and by backward finite differences, "
             "gamma grids of the same size",
    timeout={"smoke": 120.0, "full": 900.0},
    threads=1,
)
def diagonal_network_and_cost(ctx: ClaimContext) -> ClaimResult:
    start = time.perf_counter()
    num_steps = ctx.pick(smoke=500, full=5_000)
    X, y, w_star, Xv, yv = _data(ctx.seeds(3))
    seeds = list(range(X.shape[0]))  # row indices of the batched seeds
    cache: dict = {}

    def run(name, gamma, seed):
        if (name, gamma) not in cache:
            mode, eps = MODES[name]
            batch = GAMMAS if gamma in GAMMAS and (name, GAMMAS[0]) not in cache else (gamma,)
            for gm, w in zip(batch, _train(mode, X, y, num_steps, batch, eps)):
                cache[(name, gm)] = _errors(w, w_star, Xv, yv)
        val, test = cache[(name, gamma)]
        return dict(val=float(val[seed]), test=float(test[seed]), log_test=math.log(max(float(test[seed]), 1e-300)))

    sel = tune_over_seeds(run, {n: GAMMAS for n in MODES}, seeds, bounds=(1e-4, 1.0),
                          max_extensions=ctx.pick(smoke=1, full=3))
    gd_val, gd_test = _errors(_train("gd", X, y, num_steps)[0], w_star, Xv, yv)
    test = {n: values(s, "test") for n, s in sel.items()}
    test["GD"] = gd_test.tolist()
    logs = {n: [math.log(max(v, 1e-300)) for v in vals] for n, vals in test.items()}
    times = _step_times(ctx.pick(smoke=10, full=20))
    cheaper = times["forward"] < times["double_backprop"]

    def parts(name):
        a = paired_comparison(logs[name], logs["GD"], margin=MARGIN_GD)
        b = {base: paired_comparison(logs[name], logs[base], margin=0.0) for base in ("DB-GR", "B-GR")}
        return a, b, bool(a.wins and all(c.wins for c in b.values()) and cheaper)

    a, b, passed = parts("F-GR")
    ca, cb, control_passed = parts(CONTROL)
    control = Control("F-GR with eps = 1e-3 (the forward scheme collapsed onto DB-GR), gamma tuned on a grid of the "
                      "same size, through the same criterion", passed=control_passed,
                      metrics=dict(test_error=test[CONTROL], vs_gd=ca.as_metrics(),
                                   vs_db_gr=cb["DB-GR"].as_metrics(), vs_b_gr=cb["B-GR"].as_metrics()))
    headline = (f"test error {fmt_mean_std(test['F-GR'])} (F-GR) vs {fmt_mean_std(test['GD'])} (GD), "
                f"{fmt_mean_std(test['DB-GR'])} (DB-GR), {fmt_mean_std(test['B-GR'])} (B-GR), 3 seeds, log gains "
                f"{a.diff_mean:.3g} ± {a.diff_se:.2g} / {b['DB-GR'].diff_mean:.3g} ± {b['DB-GR'].diff_se:.2g} / "
                f"{b['B-GR'].diff_mean:.3g} ± {b['B-GR'].diff_se:.2g} SE; step time DB/F "
                f"{times['double_backprop'] / times['forward']:.2f}x; control eps=1e-3 gain over DB-GR "
                f"{cb['DB-GR'].diff_mean:.3g} ± {cb['DB-GR'].diff_se:.2g} SE" + edge_note(sel, "gamma"))
    checks = dict(beats_gd=a.wins, beats_db_gr=b["DB-GR"].wins, beats_b_gr=b["B-GR"].wins, cheaper=cheaper)
    metrics = dict(d=D, n=N, k=K, alpha=ALPHA, lr=LR, eps=EPS, num_steps=num_steps, num_seeds=len(seeds),
                   checks=checks, f_gr_vs_gd=a.as_metrics(), f_gr_vs_db_gr=b["DB-GR"].as_metrics(),
                   f_gr_vs_b_gr=b["B-GR"].as_metrics(), test_error=test,
                   val_error={**{n: values(s, "val") for n, s in sel.items()}, "GD": gd_val.tolist()},
                   step_seconds_f_gr=times["forward"], step_seconds_db_gr=times["double_backprop"],
                   step_time_ratio_db_over_fgr=times["double_backprop"] / times["forward"],
                   **selection_metrics(sel), seconds=round(time.perf_counter() - start, 2))
    baseline = dict(gd=test["GD"], db_gr=test["DB-GR"], b_gr=test["B-GR"])
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
