"""Claim check for The Monge Gap: A Regularizer to Learn All Transport Maps (Uscidda and Cuturi, ICML 2023).

Between two Gaussians the squared-Euclidean OT map is affine and known in closed form
(:func:`paperzoo.data.gaussians.gaussian_ot_map`), so the distance of a fitted map to the true one can be measured
directly. Source ``mu = N(0, S1)``, target ``nu = N(m2, S2)``, ``S1, S2`` with eigenvalues uniform in
``[0.5, 2]`` and random eigenbases, ``m2 ~ N(0, I)``, in ``d = 2`` and ``d = 6``. The same plain MLP (same initial
weights, same mini-batches, Adam, same number of steps) is fitted with :func:`~paperzoo.transport.fit_monge_gap_map`
twice: with the Sinkhorn-divergence loss alone (``lam = 0``) and with the Monge gap added (``lam = 1``, the paper's
recipe with rho = mu, eps = 0.05 mean cost). Error: ``E ||T(x) - T*(x)||^2`` on 2000 held-out test source points,
relative to ``E ||T*(x) - E T*(x)||^2 = tr(S2)``.

Issue 8 rework (the earlier verdict was ``reproduced``: error 0.024 vs 6.73 at d = 2, 0.32 vs 12.2 at d = 6, with
one learning rate, 1e-3, for both fits and no tuning; 321 s at full budget):

* **Tuned fairly.** Each fit's Adam learning rate is chosen by :func:`paperzoo.core.evidence.tune` from the same
  grid {3e-4, 1e-3, 3e-3} (extended past a winning edge within [1e-5, 0.1]) on seed 0's problem, by the map error on
  2000 *validation* source points (the ground-truth map is known here, so both fits get their best learning rate);
  every seed is then fitted at the chosen rate and scored on its own *test* points, never used for selection.
* **A win beyond noise.** The ">= 2x lower error" part is a paired comparison over the 3 seeds on log scale (gain
  ``log(err_plain / err_mg)`` must exceed ``log 2`` and two standard errors).
* **Control.** The unregularised fit through the absolute part (relative error < 0.1): matching the target
  distribution alone does not identify the OT map, so it must fail.
* **Budget.** 200 steps instead of 400 (one timed run at lr 1e-3: the training objective has plateaued by step
  ~150) and Sinkhorn tolerance 1e-3 instead of 1e-4 inside training (3 solves per step for the divergence, 1 for the
  gap; an L1 marginal error of 1e-3 leaves the envelope gradients accurate), which together make a fit about 5x
  cheaper. The claim still runs 20 fits (12 for tuning), about 90-120 s on one core: longer than the 60 s target
  because every step solves 4 entropic OT problems and the learning rate is now tuned for both fits.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, tune
from paperzoo.data.gaussians import gaussian_ot_map, random_spd
from paperzoo.transport import monge_gap, sinkhorn_divergence
from paperzoo.transport.monge_gap import default_map, fit_monge_gap_map

LRS = (3e-4, 1e-3, 3e-3)
LR_BOUNDS = (1e-5, 0.1)
FIT_REG, GAP_SCALE, TRAIN_TOL = 0.1, 0.05, 1e-3
REL_MAX = 0.1
MARGIN = math.log(2.0)  # "at least twice lower", on log scale
CRITERION = (
    "For d = 2 and d = 6 (lr of each fit chosen from {3e-4, 1e-3, 3e-3}, extended past a winning edge within "
    "[1e-5, 0.1], by map error on held-out validation points of seed 0's problem; then 3 seeds scored on held-out "
    "test points): (i) paired over the 3 seeds, the Monge-gap map's error E||T(x) - T*(x)||^2 is lower than the "
    "unregularised fit's by a mean log ratio > log 2 (at least 2x) and > 2 SE; (ii) its mean relative error "
    "E||T(x) - T*(x)||^2 / tr(S2) is < 0.1. Control: the unregularised (Sinkhorn-divergence only) fit through (ii); "
    "it must fail."
)
METHODS = {"monge_gap": 1.0, "plain": 0.0}


def _problem(seed: int, d: int, n_train: int, n_eval: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    S1 = random_spd(d, low=0.5, high=2.0, generator=g)
    S2 = random_spd(d, low=0.5, high=2.0, generator=g)
    m1, m2 = torch.zeros(d, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    A, b = gaussian_ot_map(m1, S1, m2, S2)
    L1, L2 = torch.linalg.cholesky(S1), torch.linalg.cholesky(S2)

    def source(n):
        return torch.randn(n, d, generator=g, dtype=torch.float64) @ L1.T

    x = source(n_train).float()
    y = (torch.randn(n_train, d, generator=g, dtype=torch.float64) @ L2.T + m2).float()
    x_val, x_test = source(n_eval), source(n_eval)
    y_test = (torch.randn(n_eval, d, generator=g, dtype=torch.float64) @ L2.T + m2).float()
    net_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    return dict(x=x, y=y, x_val=x_val.float(), t_val=(x_val @ A.T + b).float(), x_test=x_test.float(),
                t_test=(x_test @ A.T + b).float(), y_test=y_test, tr_S2=float(torch.trace(S2)), net_seed=net_seed,
                d=d)


def _fit(prob: dict, lam: float, lr: float, n_iter: int, batch: int) -> dict:
    torch.manual_seed(prob["net_seed"])  # the same initial weights for both fits and every learning rate
    model = default_map(prob["d"])
    start = time.perf_counter()
    try:
        fit = fit_monge_gap_map(prob["x"], prob["y"], lam=lam, n_iter=n_iter, batch_size=batch, lr=lr,
                                fit_reg=FIT_REG, gap_reg_scale=GAP_SCALE, tol=TRAIN_TOL, model=model,
                                generator=torch.Generator().manual_seed(prob["net_seed"]))
    except FloatingPointError:  # a diverged fit loses the selection
        return {"val_error": math.inf, "test_error": math.inf, "model": None, "seconds": 0.0}
    with torch.no_grad():
        val = float(((fit.model(prob["x_val"]) - prob["t_val"]) ** 2).sum(1).mean())
        test = float(((fit.model(prob["x_test"]) - prob["t_test"]) ** 2).sum(1).mean())
    return {"val_error": val, "test_error": test, "model": fit.model, "seconds": time.perf_counter() - start}


def _describe(prob: dict, out: dict, n_diag: int) -> dict:
    """Test-set diagnostics of a chosen fit: relative map error, Sinkhorn divergence to the target and Monge gap
    (on the first ``n_diag`` test points)."""
    row = {"map_error": out["test_error"], "relative_map_error": out["test_error"] / prob["tr_S2"],
           "seconds": out["seconds"]}
    if out["model"] is not None:
        with torch.no_grad():
            tx = out["model"](prob["x_test"][:n_diag])
            row["test_sinkhorn_divergence"] = float(sinkhorn_divergence(tx, prob["y_test"][:n_diag], FIT_REG,
                                                                        max_iter=2000, tol=1e-4))
            row["test_monge_gap"] = float(monge_gap(prob["x_test"][:n_diag], tx, max_iter=2000, tol=1e-4,
                                                    warn=False))
    return row


def _stats(rows: list[dict]) -> dict:
    out = {}
    for key in rows[0]:
        vals = [r[key] for r in rows if key in r]
        out[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    "per_seed": vals}
    return out


@claim(
    "monge-gap",
    statement=("Adding the Monge gap to a plain distribution-fitting loss (Sinkhorn divergence) lets an unconstrained "
               "MLP recover the squared-Euclidean OT map much better than the same fit without the regulariser."),
    criterion=CRITERION,
    baseline=("the same MLP fitted with the Sinkhorn divergence alone (lambda = 0): same initial weights, "
              "mini-batches and number of steps, Adam learning rate tuned on the same grid"),
    threads=1,
)
def recovers_gaussian_ot_map(ctx: ClaimContext) -> ClaimResult:
    n_iter = ctx.pick(smoke=5, full=200)
    batch = ctx.pick(smoke=64, full=128)
    n_diag = ctx.pick(smoke=64, full=500)
    n_train, n_eval = 4096, 2000
    seeds = [s % (2**31) for s in ctx.seeds(3)]
    metrics = {"steps": n_iter, "batch_size": batch, "lambda": 1.0, "fit_reg": FIT_REG, "gap_reg_scale": GAP_SCALE,
               "train_sinkhorn_tol": TRAIN_TOL, "lr_grid": list(LRS), "seeds": seeds}
    baseline: dict = {}
    passed, control_passed = True, True
    control_rel, heads = {}, []
    for d in (2, 6):
        probs = [_problem(seed, d, n_train, n_eval) for seed in seeds]
        sel = tune({name: (lambda lr, lam=lam: _fit(probs[0], lam, lr, n_iter, batch)) for name, lam in
                    METHODS.items()}, LRS, score=lambda out: out["val_error"], bounds=LR_BOUNDS)
        rows = {}
        for name, lam in METHODS.items():
            outs = [sel[name].output] + [_fit(p, lam, sel[name].best, n_iter, batch) for p in probs[1:]]
            rows[name] = [_describe(p, o, n_diag) for p, o in zip(probs, outs)]
        err = {name: [r["map_error"] for r in rows[name]] for name in METHODS}
        rel = {name: [r["relative_map_error"] for r in rows[name]] for name in METHODS}
        cmp = paired_comparison([math.log(e) for e in err["monge_gap"]], [math.log(e) for e in err["plain"]],
                                margin=MARGIN)
        ok = cmp.wins and statistics.fmean(rel["monge_gap"]) < REL_MAX
        passed = passed and ok
        control_passed = control_passed and statistics.fmean(rel["plain"]) < REL_MAX
        control_rel[f"d{d}"] = rel["plain"]
        metrics[f"d{d}"] = {**_stats(rows["monge_gap"]), "passed": ok, "paired_log_error": cmp.as_metrics(),
                            "selection": sel["monge_gap"].as_metrics()}
        baseline[f"d{d}"] = {**_stats(rows["plain"]), "selection": sel["plain"].as_metrics()}
        edge = [n for n in METHODS if sel[n].at_edge]
        heads.append(f"d={d}: {fmt_mean_std(err['monge_gap'])} (Monge gap, lr {sel['monge_gap'].best:.2g}) vs "
                     f"{fmt_mean_std(err['plain'])} (plain, lr {sel['plain'].best:.2g}), paired log gain "
                     f"{cmp.diff_mean:.2f} ± {cmp.diff_se:.2f} SE, relative error "
                     f"{statistics.fmean(rel['monge_gap']):.3f} vs {statistics.fmean(rel['plain']):.3f}"
                     + (f", lr at a bound: {', '.join(edge)}" if edge else ""))
    control = Control("the unregularised (Sinkhorn-divergence only) fit through (ii): mean relative map error < 0.1 "
                      "at d = 2 and 6", control_passed, {"relative_map_error": control_rel})
    headline = ("held-out map error E||T - T*||^2, 3 seeds: " + "; ".join(heads)
                + f" (margin log 2, tol {REL_MAX:g})")
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
