"""Claim checks for the stochastic heavy ball under anisotropic noise (Pan, Liu, Wang, Zhang, 2024).

Problem (:mod:`paperzoo.data.quadratics`): a diagonal quadratic in :math:`d = 50` dimensions, eigenvalues
log-spaced from :math:`L = 1` to :math:`1/\\kappa`, minimiser :math:`w^* = 0`, start :math:`w_0` with
:math:`(w_0)_i = 1/\\sqrt{d\\lambda_i}` (every eigendirection carries the same initial excess risk, total 1/2),
mini-batch gradients with covariance :math:`\\sigma^2 H / B`, :math:`\\sigma = 1`.

Both methods are ``torch.optim.SGD`` under the same :func:`paperzoo.optim.step_decay_schedule` (halving,
:math:`\\lceil T/\\log_2 T\\rceil` steps per stage); SGD has momentum 0, the heavy ball momentum
:math:`\\beta > 0`. All seeds and grid points run as one parameter tensor per configuration with common random
numbers (the same noise draw at each step for every configuration).

The paper's theorem has two halves: the bias term decays at the accelerated rate (about :math:`\\sqrt\\kappa`
times fewer iterations than SGD), and the variance term stays near-optimal, of order :math:`\\sigma^2 d/(BT)` up to
log factors. What changed from the first version (review of issue 8): only the bias half was tested, and the
large-batch comparison tuned SHB over 20 configurations against SGD's 4 and chose them on the same seeds that gave
the verdict. Now both methods get a 5-value grid (SGD: lr; SHB: 1 - momentum at lr = 1/L), selected on 3
validation seeds with edge extension, and judged on 5 held-out test seeds paired with a stated margin; the
horizon is T = 1,000 (at T = 300 SHB's bias had not yet decayed, so its risk could not be compared with the
variance term); the variance half is checked against :math:`\\sigma^2 d/(BT)` at three batch sizes, with the step
decay removed as the control. The bias claim gained a control: momentum that does not scale with
:math:`\\kappa`.
"""

from __future__ import annotations

import math
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, paired_comparison, select_on_grid
from paperzoo.data.quadratics import anisotropic_noisy_gradient, log_spaced_spectrum, quadratic_excess_risk
from paperzoo.optim.schedules import step_decay_schedule

DIM = 50
KAPPA = 1e3
NOISE = 1.0
STEPS = 1_000
# Equal tuning effort (5 values each): SGD over lr, the heavy ball over 1 - momentum at lr = 1/L (the paper's
# step size); both grids log-spaced so that a winning edge can be extended.
SGD_LRS = (0.125, 0.25, 0.5, 1.0, 2.0)
SHB_ONE_MINUS_BETA = (0.01, 0.02, 0.05, 0.1, 0.2)
SHB_LR = 1.0
MARGIN_LOG10 = 1.0
# The variance term is checked against sigma^2 d / (B T): above half of it (the minimax lower bound for B T
# Gaussian samples), below a polylog allowance 2 log2 T (the theorem's bound holds up to log factors).
VARIANCE_LOW = 0.5


def _start(lam: torch.Tensor) -> torch.Tensor:
    return (1.0 / (lam * lam.numel())).sqrt()


def run_grid(lam, configs, *, steps, batch_size, seeds, decay=2.0):
    """Final excess risk, shape ``(len(configs), len(seeds))``, of SGD(lr, momentum) + step decay per config
    (``decay=1.0``: a constant learning rate)."""
    w0 = _start(lam)
    params = [w0.expand(len(seeds), -1).clone().requires_grad_(True) for _ in configs]
    groups = [dict(params=[p], lr=lr, momentum=beta) for p, (lr, beta) in zip(params, configs)]
    opt = torch.optim.SGD(groups, lr=1.0, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, step_decay_schedule(steps, decay=decay))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    for _ in range(steps):
        z = torch.stack([torch.randn(lam.numel(), generator=g, dtype=torch.float64) for g in generators])
        noise = (NOISE**2 * lam / batch_size).sqrt() * z  # shared by every configuration
        for p in params:
            p.grad = anisotropic_noisy_gradient(p.detach(), lam, noise_scale=0.0) + noise
        opt.step()
        sched.step()
    risks = torch.stack([quadratic_excess_risk(p.detach(), lam) for p in params])
    return torch.where(torch.isfinite(risks), risks, torch.full_like(risks, math.inf))  # diverged: loses


def _tuned(lam, batch, val_seeds):
    """Select SGD's lr and SHB's momentum on validation seeds (mean final excess risk), same grid size."""
    configs = {"sgd": [(lr, 0.0) for lr in SGD_LRS], "shb": [(SHB_LR, 1 - o) for o in SHB_ONE_MINUS_BETA]}
    first = run_grid(lam, configs["sgd"] + configs["shb"], steps=STEPS, batch_size=batch, seeds=val_seeds).mean(1)
    cache = {"sgd": dict(zip(SGD_LRS, first[:5].tolist())), "shb": dict(zip(SHB_ONE_MINUS_BETA, first[5:].tolist()))}

    def evaluator(name):
        def evaluate(value):
            if value not in cache[name]:  # a value added by an edge extension
                cfg = (value, 0.0) if name == "sgd" else (SHB_LR, 1 - value)
                cache[name][value] = float(run_grid(lam, [cfg], steps=STEPS, batch_size=batch,
                                                    seeds=val_seeds).mean())
            return cache[name][value]
        return evaluate

    # Same grid size for both (equal tuning effort); separate bounds: SGD's lr stops at the stability limit 2/L,
    # 1 - momentum at 0.5.
    return {"sgd": select_on_grid(evaluator("sgd"), SGD_LRS, bounds=(1e-3, 2.0)),
            "shb": select_on_grid(evaluator("shb"), SHB_ONE_MINUS_BETA, bounds=(1e-3, 0.5))}


@claim(
    "shb-anisotropic",
    statement="On quadratic regression with anisotropic gradient noise, SGD with heavy-ball momentum and a "
              "step-decay schedule reaches, in the large-batch regime, a much lower excess risk than SGD with the "
              "same schedule and budget, and its excess risk is of the order of the variance term "
              "sigma^2 d / (B T) (near-optimal up to log factors).",
    criterion="d = 50 diagonal quadratic, kappa = 1e3 (log-spaced spectrum, L = 1), equal initial risk per "
              "eigendirection (total 0.5), gradient-noise covariance sigma^2 H / B (sigma = 1), T = 1,000 "
              "iterations, step decay (halve every ceil(T / log2 T) steps). Equal tuning effort on 3 validation "
              "seeds: SGD over lr in {0.125, 0.25, 0.5, 1, 2}, SHB (lr 1 = 1/L) over 1 - momentum in {0.01, 0.02, "
              "0.05, 0.1, 0.2}, grids extended past a winning edge within [1e-3, 2] (lr; 2 = 2/L, the stability "
              "limit) and "
              "[1e-3, 0.5] (1 - momentum). Verdict on 5 held-out test "
              "seeds (same noise draws for both methods). Passes if (a) at B = 1e4, paired over the test seeds, "
              "SHB's log10 final excess risk is below SGD's by more than margin 1 (a factor 10) and 2 SE, and "
              "(b) for every B in {1e4} (smoke) / {1e4, 1e3, 1e2} (full, each tuned), SHB's mean test excess risk "
              "divided by sigma^2 d / (B T) lies in [0.5, 2 log2 T] (about [0.5, 19.9]). Control: the tuned SHB "
              "with a constant learning rate (no step decay) through (b) must fail.",
    baseline="torch.optim.SGD (momentum 0) with the same step-decay schedule, grid size, budget and noise draws; "
             "control: the heavy ball without the step decay",
)
def large_batch_excess_risk(ctx: ClaimContext) -> ClaimResult:
    seeds = [s % 2**31 for s in ctx.seeds(8)]
    val_seeds, test_seeds = seeds[:3], seeds[3:]
    lam = log_spaced_spectrum(DIM, KAPPA)
    upper = 2 * math.log2(STEPS)
    start = time.perf_counter()
    per_batch = {}
    for batch in ctx.pick(smoke=(10_000,), full=(10_000, 1_000, 100)):
        sel = _tuned(lam, batch, val_seeds)
        shb_cfg = (SHB_LR, 1 - sel["shb"].best)
        test = run_grid(lam, [(sel["sgd"].best, 0.0), shb_cfg], steps=STEPS, batch_size=batch, seeds=test_seeds)
        constant = run_grid(lam, [shb_cfg], steps=STEPS, batch_size=batch, seeds=test_seeds, decay=1.0)[0]
        reference = NOISE**2 * DIM / (batch * STEPS)
        per_batch[batch] = dict(
            sgd=test[0].tolist(), shb=test[1].tolist(), shb_constant_lr=constant.tolist(), reference=reference,
            shb_ratio=float(test[1].mean()) / reference, sgd_ratio=float(test[0].mean()) / reference,
            shb_constant_lr_ratio=float(constant.mean()) / reference,
            selection={k: v.as_metrics() for k, v in sel.items()},
            at_edge=[k for k, v in sel.items() if v.at_edge])
    seconds = time.perf_counter() - start

    big = per_batch[10_000]
    cmp = paired_comparison([math.log10(v) for v in big["shb"]], [math.log10(v) for v in big["sgd"]],
                            margin=MARGIN_LOG10)
    within = lambda r: VARIANCE_LOW <= r <= upper  # noqa: E731
    variance_ok = all(within(b["shb_ratio"]) for b in per_batch.values())
    passed = cmp.wins and variance_ok
    control = Control("SHB (tuned lr, momentum) with a constant learning rate, no step decay, through the variance "
                      "criterion (b)", all(within(b["shb_constant_lr_ratio"]) for b in per_batch.values()),
                      {"ratio_to_sigma2_d_over_BT": {str(b): v["shb_constant_lr_ratio"] for b, v in per_batch.items()}})
    metrics = dict(dim=DIM, kappa=KAPPA, steps=STEPS, num_test_seeds=len(test_seeds),
                   variance_band=[VARIANCE_LOW, upper],
                   paired_log10_risk_at_B1e4=cmp.as_metrics(), variance_ok=variance_ok,
                   shb_ratio_to_sigma2_d_over_BT={str(b): v["shb_ratio"] for b, v in per_batch.items()},
                   per_batch={str(b): v for b, v in per_batch.items()}, seconds=round(seconds, 2))
    baseline = dict(sgd_ratio_to_sigma2_d_over_BT={str(b): v["sgd_ratio"] for b, v in per_batch.items()},
                    sgd_excess_risk_at_B1e4=big["sgd"])
    ratios = ", ".join(f"B={b:g}: {v['shb_ratio']:.2g}" for b, v in per_batch.items())
    edges = sorted({name for v in per_batch.values() for name in v["at_edge"]})
    edge_note = f" (selected at a grid bound: {', '.join(edges)})" if edges else ""
    headline = (cmp.headline("log10 excess risk at B=1e4", "SHB", "SGD")
                + f"; SHB risk / (sigma^2 d/(BT)): {ratios} (band [0.5, {upper:.3g}]; constant-lr SHB "
                f"{big['shb_constant_lr_ratio']:.3g}){edge_note}")
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)


def _iterations_to(lam, lr, beta, *, target, max_steps):
    """Noiseless heavy ball from the equal-risk start: first t with excess risk <= target x initial risk."""
    w = _start(lam).clone().requires_grad_(True)
    opt = torch.optim.SGD([w], lr=lr, momentum=beta)
    initial = float(quadratic_excess_risk(w.detach(), lam))
    for t in range(1, max_steps + 1):
        w.grad = lam * w.detach()
        opt.step()
        if t % 10 == 0 and float(quadratic_excess_risk(w.detach(), lam)) <= target * initial:
            return t
    return max_steps


@claim(
    "shb-anisotropic",
    statement="The bias term of the heavy ball converges in about sqrt(kappa) times fewer iterations than SGD's: "
              "its iteration count grows like kappa^(1/2) where SGD's grows like kappa.",
    criterion="Noiseless (bias-only) run on the d = 50 log-spaced quadratic with equal initial risk per direction, "
              "lr = 1/L, SGD momentum 0 vs heavy ball momentum (1 - 1/sqrt(kappa))^2 (the accelerated choice), "
              "iterations to reduce the excess risk by 1e-6 for kappa in {1e1, 1e2, 1e3} (smoke) / "
              "{1e2, 1e3, 1e4} (full). Passes if the log-log slope of iterations vs kappa is in [0.35, 0.65] for "
              "SHB and in [0.85, 1.15] for SGD. Control: the heavy ball with a momentum that does not scale with "
              "kappa (fixed 0.9) through the SHB slope criterion must fail.",
    baseline="torch.optim.SGD (momentum 0), lr = 1/L, same problems; control: heavy ball with fixed momentum 0.9",
)
def bias_acceleration_rate(ctx: ClaimContext) -> ClaimResult:
    kappas = ctx.pick(smoke=(1e1, 1e2, 1e3), full=(1e2, 1e3, 1e4))
    start = time.perf_counter()
    shb_iters, sgd_iters, fixed_iters = [], [], []
    for kappa in kappas:
        lam = log_spaced_spectrum(DIM, kappa)
        beta = (1 - 1 / math.sqrt(kappa)) ** 2
        budget = int(20 * kappa) + 1000
        shb_iters.append(_iterations_to(lam, 1.0, beta, target=1e-6, max_steps=budget))
        sgd_iters.append(_iterations_to(lam, 1.0, 0.0, target=1e-6, max_steps=budget))
        fixed_iters.append(_iterations_to(lam, 1.0, 0.9, target=1e-6, max_steps=budget))
    seconds = time.perf_counter() - start
    logk = torch.tensor(kappas, dtype=torch.float64).log()

    def slope(iters):
        y = torch.tensor(iters, dtype=torch.float64).log()
        xc = logk - logk.mean()
        return float((xc * (y - y.mean())).sum() / xc.square().sum())

    s_shb, s_sgd, s_fixed = slope(shb_iters), slope(sgd_iters), slope(fixed_iters)
    passed = 0.35 <= s_shb <= 0.65 and 0.85 <= s_sgd <= 1.15
    control = Control("heavy ball with fixed momentum 0.9 (not scaled with kappa) through the SHB slope criterion "
                      "[0.35, 0.65]", 0.35 <= s_fixed <= 0.65, {"iterations": fixed_iters, "slope": s_fixed})
    metrics = dict(kappas=list(kappas), iterations=shb_iters, slope=s_shb, predicted_slope=0.5,
                   seconds=round(seconds, 2))
    baseline = dict(iterations=sgd_iters, slope=s_sgd, predicted_slope=1.0)
    headline = (f"log-log slope of iterations vs kappa: {s_shb:.3f} (SHB, accelerated momentum) vs {s_sgd:.3f} "
                f"(SGD) vs {s_fixed:.3f} (momentum 0.9); iterations at kappa={kappas[-1]:g}: {shb_iters[-1]} vs "
                f"{sgd_iters[-1]} (deterministic, no seeds)")
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
