"""Claim checks for Understanding the Limitations of Variational Mutual Information Estimators (SMILE).

The paper (Song and Ermon, ICLR 2020) makes a two-part claim on the correlated-Gaussian benchmark (``d = 20``,
batch ``N = 64``, true MI stepping through 2, 4, 6, 8, 10 nats): (1) the variance of the MINE and NWJ estimates
grows quickly (exponentially, in its analysis) with the true MI, and SMILE, the DV value with the partition
summands clipped to ``[e^-tau, e^tau]``, has a much lower variance; (2) with trained critics SMILE gives the better
bias-variance trade-off at high MI: lower variance than MINE and NWJ, less bias than InfoNCE (capped at
``log N``), the lowest MSE. Two checks, one per part:

* ``optimal_critic_variance``: every estimator evaluated with the true log density ratio as critic
  (:func:`~paperzoo.data.gaussian_mi.gaussian_log_density_ratio`; NWJ at its optimum ``1 + log r``). No training:
  this isolates each estimator's own variance from critic training, which is what the variance analysis is about.
  256 batches of 64 per level (smoke 32), float64, 3 seeds.
* ``staircase_bias_variance``: critics trained through the staircase, then frozen at the end of each level and
  evaluated on 64 fresh batches (smoke 4), the same batches for every estimator: bias = mean estimate - true MI,
  variance across batches, MSE. Joint (concat) critic, as in the paper's joint-critic runs, width 128, 2 hidden
  layers (the official code: width 256, 3 hidden layers), Adam lr 1e-3 (official 5e-4), 400 steps per level (smoke
  4; official 4000), batch 64, one critic per (estimator, seed) trained continuously through the five levels with
  its own estimator's training gradient (clipping changes SMILE's value, not its JS training gradient, so one
  JS-trained critic serves SMILE tau = 5 and its tau = inf control; the official demo trains one per tau). Every
  estimator sees the same initial weights and the same data stream per seed; 3 seeds. A critic whose scores or
  estimate overflow is recorded as diverged (NaN), a loss in every comparison it enters. Precondition:
  the critics must have reached the regime the paper analyses, checked at MI 2, where every bound is nearly tight
  at the optimal critic: each estimator's seed-mean estimate must be within 0.5 nats of its value at the true
  critic (computed on the same evaluation batches); otherwise the verdict is ``inconclusive``.

Official code read (and followed where it fixes a choice): github.com/ermongroup/smile-mi-estimator @ afa72e03
(``estimators.py``, ``utils.py``, ``demo.ipynb``: batch 64, lr 5e-4, 20000 steps over the five levels, width 256).

Budget: the full ``staircase_bias_variance`` takes about 150 s on one core, above the usual 60 s, because the
paper's joint critic runs its MLP on all ``N^2 = 4096`` pairs of every batch: 12 critics (4 estimators x 3 seeds)
x 2000 steps at about 6 ms per step. That is already 10x fewer steps and a 4x narrower network than the paper's;
the smaller critics of the earlier version (separable, 600 steps per level) were the reason it read about 1 nat at
true MI 2 for every estimator. ``optimal_critic_variance`` takes about 2 s.

Issue 8 rework. The earlier claim (separable critic of width 128, 600 steps per level, lr 5e-4) was
``not_reproduced``, with every estimator undertrained (about 1 nat at true MI 2, the review found). Changes: the
joint critic, the training-regime precondition, paired comparisons over the seeds with stated margins instead of
comparisons of seed means, a separate bias part, the analytic-critic variance check, a discriminating control on
each claim, and headlines.

Pre-registration caveat (``optimal_critic_variance``): before its criterion was written, one exploratory pass with
the true critic was run (seed 0, 200 batches per level), which showed variances at MI 8 / 10 of about 0.35 / 0.50
(SMILE), 1.05 / 1.73 (DV) and 13 / 10 (NWJ). The thresholds (a factor 2 between estimators, a factor 10 of growth
from MI 2 to 10) are the theory's orders of magnitude, but they were set after that look, so this check is weaker
evidence than a blind one.
"""

from __future__ import annotations

import math

import torch

from paperzoo.core import ClaimContext, ClaimResult, Verdict, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.data.gaussian_mi import gaussian_log_density_ratio, mi_to_rho, sample_correlated_gaussian
from paperzoo.divergences import ConcatCritic, MINEMovingAverage, mi_lower_bound

DIM, BATCH, TAU = 20, 64, 5.0
LEVELS = (2.0, 4.0, 6.0, 8.0, 10.0)
HIGH = (8.0, 10.0)
WIDTH, DEPTH, LR = 128, 2, 1e-3
TRAINED = ("smile", "mine", "nwj", "infonce")  # one critic each, trained with that estimator's gradient
VAR_MARGIN = math.log10(2.0)  # on log10 variance: SMILE's must be at least 2x lower
GATE_NATS = 0.5

ANALYTIC_CRITERION = (
    "With the true log density ratio as critic (NWJ at its optimum 1 + log r) on d=20 correlated Gaussians, "
    "batch N=64, 256 batches per MI level, 3 seeds: (1) at true MI 8 and at 10 (each separately), SMILE (tau=5) "
    "has a lower variance than MINE (its value at a fixed critic is the DV bound) and than NWJ, paired over the "
    "seeds on log10 variance with margin log10(2) (a factor 2) and beyond two standard errors; (2) the variance of "
    "MINE and of NWJ at MI 10 is at least 10 times their variance at MI 2 on every seed (the analysis bounds it "
    "below by (e^I - 1)/N, a factor e^8 ~ 3000). Control: part (1) applied at true MI 2, where the partition term "
    "is light-tailed and clipping at tau=5 rarely binds, so theory predicts no variance gap; it must fail."
)
STAIRCASE_CRITERION = (
    "Joint critics (width 128, 2 hidden layers, Adam lr 1e-3, batch 64, 400 steps per level) trained through the "
    "staircase MI 2, 4, 6, 8, 10 on d=20 correlated Gaussians, frozen at the end of each level and evaluated on 64 "
    "fresh batches (the same for all estimators), 3 seeds sharing initial weights and data across estimators. "
    "Precondition, else inconclusive: at MI 2 each estimator's seed-mean estimate is within 0.5 nats of its value "
    "at the true critic. Criterion, at true MI 8 and at 10 (each separately), paired over the 3 seeds, each win "
    "meaning the mean paired gain exceeds the margin and two standard errors: (variance) SMILE (tau=5) has a lower "
    "log10 variance than MINE and than NWJ, margin log10(2); (bias) SMILE has a smaller |bias| than InfoNCE, "
    "margin 0; (trade-off) SMILE has a lower log10 MSE than each of MINE, NWJ and InfoNCE, margin 0. Control: the "
    "same criterion with SMILE tau=inf (the DV value on the same JS-trained critic: SMILE without clipping) in "
    "place of SMILE tau=5; it must fail."
)


def _value(scores: torch.Tensor, key: str) -> torch.Tensor:
    """The estimate named ``key`` from a score matrix (batched): the value each estimator reports."""
    if key == "smile":
        return mi_lower_bound(scores, "smile", clip=TAU)
    if key in ("smile_inf", "mine"):
        return mi_lower_bound(scores, "dv")  # SMILE without clipping; MINE's value at a fixed critic
    return mi_lower_bound(scores, key)


def _true_critic_values(x: torch.Tensor, y: torch.Tensor, mi: float, keys) -> dict[str, torch.Tensor]:
    """Estimates at the optimal critic for batches ``x, y`` of shape (K, N, d); NWJ's optimum is ``1 + log r``."""
    rho = mi_to_rho(mi, DIM)
    T = torch.stack([gaussian_log_density_ratio(xb, yb, rho) for xb, yb in zip(x, y)])
    return {k: _value(T + 1.0 if k == "nwj" else T, k) for k in keys}


def _batches(gen: torch.Generator, mi: float, k: int, dtype=torch.float32):
    x, y = sample_correlated_gaussian(k * BATCH, DIM, mi=mi, generator=gen, dtype=dtype)
    return x.reshape(k, BATCH, DIM), y.reshape(k, BATCH, DIM)


def _log10(values) -> list[float]:
    """log10 per seed; NaN (a diverged critic) stays NaN, which paired_comparison counts as a loss."""
    return [math.nan if math.isnan(v) else (math.log10(v) if v > 0 else -math.inf) for v in values]


# -- part 1: the estimators' own variance, at the optimal critic --------------------------------------------------


@claim(
    "smile",
    statement=("With the optimal critic, the variance of the MINE and NWJ estimates grows quickly with the true mutual "
               "information, while SMILE's clipped estimate keeps a much lower variance at high MI."),
    criterion=ANALYTIC_CRITERION,
    baseline="MINE (DV value) and NWJ at the same optimal critic, on the same batches",
    threads=1,
)
def optimal_critic_variance(ctx: ClaimContext) -> ClaimResult:
    k = ctx.pick(smoke=32, full=256)
    seeds = ctx.seeds(3)
    keys = ("smile", "mine", "nwj", "infonce")
    var = {key: {mi: [] for mi in LEVELS} for key in keys}
    mean = {key: {mi: [] for mi in LEVELS} for key in keys}
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        for mi in LEVELS:
            x, y = _batches(gen, mi, k, dtype=torch.float64)
            for key, vals in _true_critic_values(x, y, mi, keys).items():
                var[key][mi].append(float(vals.var()))
                mean[key][mi].append(float(vals.mean()))

    def gap_wins(mi: float):
        cmps = {b: paired_comparison(_log10(var["smile"][mi]), _log10(var[b][mi]), margin=VAR_MARGIN)
                for b in ("mine", "nwj")}
        return all(c.wins for c in cmps.values()), cmps

    checks, comparisons = {}, {}
    for mi in HIGH:
        ok, cmps = gap_wins(mi)
        checks[f"variance_below_mine_nwj_at_{mi:g}"] = ok
        comparisons.update({f"{b}_at_{mi:g}": c.as_metrics() for b, c in cmps.items()})
    growth = {b: [v10 / v2 for v2, v10 in zip(var[b][LEVELS[0]], var[b][LEVELS[-1]])] for b in ("mine", "nwj")}
    for b, g in growth.items():
        checks[f"{b}_variance_growth_2_to_10_at_least_10x"] = all(v >= 10.0 for v in g)
    passed = all(checks.values())
    control_ok, control_cmps = gap_wins(LEVELS[0])
    control = Control("the variance part at true MI 2, where theory predicts no gap", control_ok,
                      {f"{b}_at_2": c.as_metrics() for b, c in control_cmps.items()})
    top = LEVELS[-1]
    headline = (f"optimal critic, MI {top:g}: variance {fmt_mean_std(var['smile'][top])} (SMILE tau=5) vs "
                f"{fmt_mean_std(var['mine'][top])} (MINE/DV), {fmt_mean_std(var['nwj'][top])} (NWJ), 3 seeds; "
                f"growth MI 2->10: MINE x{fmt_mean_std(growth['mine'])}, NWJ x{fmt_mean_std(growth['nwj'])}; "
                f"control at MI 2: {fmt_mean_std(var['smile'][2.0])} vs {fmt_mean_std(var['mine'][2.0])} (MINE)")
    per_level = {key: {"true_mi": list(LEVELS), "variance": [var[key][mi] for mi in LEVELS],
                       "mean": [mean[key][mi] for mi in LEVELS]} for key in keys}
    _figure(ctx, {key: [sum(var[key][mi]) / len(seeds) for mi in LEVELS] for key in keys}, "optimal-critic-variance",
            "variance at the optimal critic")
    metrics = {"smile_tau5": per_level["smile"], "infonce": per_level["infonce"], "checks": checks,
               "paired_log10_variance": comparisons, "growth_2_to_10": growth, "batches_per_level": k,
               "batch_size": BATCH, "dim": DIM, "seeds": seeds}
    baseline = {"mine_dv": per_level["mine"], "nwj": per_level["nwj"]}
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)


# -- part 2: trained critics on the staircase ---------------------------------------------------------------------


def _train(estimator: str, seed: int, steps: int, eval_sets) -> dict[str, dict[float, torch.Tensor]]:
    """Train one critic through the staircase; return its estimates on the evaluation batches of every level."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        critic = ConcatCritic(DIM, DIM, hidden_dim=WIDTH, depth=DEPTH)
    opt = torch.optim.Adam(critic.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(seed)  # the training stream, the same for every estimator
    ema = MINEMovingAverage(0.9) if estimator == "mine" else None
    keys = ("smile", "smile_inf") if estimator == "smile" else (estimator,)
    out = {key: {} for key in keys}
    diverged = False  # a critic whose scores or estimate overflow stops training and reports NaN from then on
    for mi in LEVELS:
        for _ in range(steps if not diverged else 0):
            x, y = sample_correlated_gaussian(BATCH, DIM, mi=mi, generator=gen)
            scores = critic(x, y)
            if not bool(torch.isfinite(scores).all()):
                diverged = True
                break
            est = mi_lower_bound(scores, estimator, clip=TAU, moving_average=ema)
            if not bool(torch.isfinite(est)):
                diverged = True
                break
            opt.zero_grad()
            (-est).backward()
            opt.step()
        xs, ys = eval_sets[mi]
        with torch.no_grad():
            scores = torch.stack([critic(xb, yb) for xb, yb in zip(xs, ys)]).double()
        finite = not diverged and bool(torch.isfinite(scores).all())
        for key in keys:
            out[key][mi] = _value(scores, key) if finite else torch.full((len(xs),), math.nan, dtype=torch.float64)
    return out


def _stats(vals: torch.Tensor, mi: float) -> dict[str, float]:
    return {"mean": float(vals.mean()), "variance": float(vals.var()), "bias": float(vals.mean()) - mi,
            "mse": float(((vals - mi) ** 2).mean())}


def _staircase_criterion(stats, method: str):
    """The criterion with ``method`` (``smile`` or the control ``smile_inf``) as SMILE: (passed, checks, detail)."""
    checks, detail = {}, {}

    def seeds_of(key, mi, field):
        return [s[field] for s in stats[key][mi]]

    for mi in HIGH:
        tag = f"{mi:g}"
        var_m = _log10(seeds_of(method, mi, "variance"))
        mse_m = _log10(seeds_of(method, mi, "mse"))
        for b in ("mine", "nwj"):
            c = paired_comparison(var_m, _log10(seeds_of(b, mi, "variance")), margin=VAR_MARGIN)
            checks[f"variance_below_{b}_at_{tag}"], detail[f"log10_variance_vs_{b}_at_{tag}"] = c.wins, c.as_metrics()
        c = paired_comparison([abs(v) for v in seeds_of(method, mi, "bias")],
                              [abs(v) for v in seeds_of("infonce", mi, "bias")], margin=0.0)
        checks[f"abs_bias_below_infonce_at_{tag}"], detail[f"abs_bias_vs_infonce_at_{tag}"] = c.wins, c.as_metrics()
        for b in ("mine", "nwj", "infonce"):
            c = paired_comparison(mse_m, _log10(seeds_of(b, mi, "mse")), margin=0.0)
            checks[f"mse_below_{b}_at_{tag}"], detail[f"log10_mse_vs_{b}_at_{tag}"] = c.wins, c.as_metrics()
    return all(checks.values()), checks, detail


@claim(
    "smile",
    statement=("On the correlated-Gaussian MI staircase with trained critics, SMILE has a lower variance than MINE and "
               "NWJ, less bias than InfoNCE, and the best bias-variance trade-off (lowest MSE) at high MI."),
    criterion=STAIRCASE_CRITERION,
    baseline="MINE (moving-average gradient), NWJ and InfoNCE critics, same architecture, optimiser, steps, data",
    threads=1,
)
def staircase_bias_variance(ctx: ClaimContext) -> ClaimResult:
    steps = ctx.pick(smoke=4, full=400)
    n_eval = ctx.pick(smoke=4, full=64)
    seeds = ctx.seeds(3)
    keys = ("smile", "smile_inf", "mine", "nwj", "infonce")
    stats = {key: {mi: [] for mi in LEVELS} for key in keys}
    reference = {key: [] for key in TRAINED}  # estimates at the true critic, MI 2, on the evaluation batches
    for seed in seeds:
        eval_gen = torch.Generator().manual_seed(seed + 1)
        eval_sets = {mi: _batches(eval_gen, mi, n_eval) for mi in LEVELS}
        x2, y2 = eval_sets[LEVELS[0]]
        for key, vals in _true_critic_values(x2.double(), y2.double(), LEVELS[0], TRAINED).items():
            reference[key].append(float(vals.mean()))
        for estimator in TRAINED:
            for key, per_level in _train(estimator, seed, steps, eval_sets).items():
                for mi, vals in per_level.items():
                    stats[key][mi].append(_stats(vals, mi))

    # Precondition: the critics were trained into the regime (every estimator near its optimal-critic value at MI 2).
    low = LEVELS[0]
    gate = {}
    for key in TRAINED:
        trained = sum(s["mean"] for s in stats[key][low]) / len(seeds)
        optimal = sum(reference[key]) / len(seeds)
        gate[key] = {"trained": trained, "optimal_critic": optimal, "ok": abs(trained - optimal) <= GATE_NATS}
    trained_ok = all(g["ok"] for g in gate.values())

    passed, checks, detail = _staircase_criterion(stats, "smile")
    control_passed, control_checks, control_detail = _staircase_criterion(stats, "smile_inf")
    control = Control("SMILE tau=inf (DV value on the same JS-trained critic, no clipping) through the same criterion",
                      control_passed, {"checks": control_checks, "comparisons": control_detail})

    def summary(key):
        res = {"true_mi": list(LEVELS)}
        for field in ("mean", "variance", "bias", "mse"):
            res[field] = [[s[field] for s in stats[key][mi]] for mi in LEVELS]
        return res

    summ = {key: summary(key) for key in keys}
    top, k_top = LEVELS[-1], len(LEVELS) - 1

    def at_top(key, field):
        return fmt_mean_std(summ[key][field][k_top])

    headline = (f"MI {top:g}, trained joint critics, 3 seeds: variance {at_top('smile', 'variance')} (SMILE tau=5) vs "
                f"{at_top('mine', 'variance')} (MINE), {at_top('nwj', 'variance')} (NWJ); MSE "
                f"{at_top('smile', 'mse')} vs {at_top('mine', 'mse')}, {at_top('nwj', 'mse')}, "
                f"{at_top('infonce', 'mse')} (InfoNCE); control SMILE tau=inf variance "
                f"{at_top('smile_inf', 'variance')}; MI 2 reads " + ", ".join(f"{k} {gate[k]['trained']:.2f}/{gate[k]['optimal_critic']:.2f}"
                                             for k in TRAINED) + " (trained/optimal critic)")
    _figure(ctx, {key: [sum(v) / len(seeds) for v in summ[key]["variance"]] for key in keys}, "bias_variance",
            "variance of trained critics", means={key: [sum(v) / len(seeds) for v in summ[key]["mean"]]
                                                  for key in keys})
    metrics = {"smile_tau5": summ["smile"], "checks": checks, "comparisons": detail, "precondition": gate,
               "steps_per_level": steps, "eval_batches": n_eval, "batch_size": BATCH, "dim": DIM,
               "critic": f"concat, width {WIDTH}, {DEPTH} hidden layers", "lr": LR, "seeds": seeds}
    baseline = {key: summ[key] for key in ("mine", "nwj", "infonce")}
    if not trained_ok:
        short = [f"{k} {g['trained']:.2f} vs {g['optimal_critic']:.2f}" for k, g in gate.items() if not g["ok"]]
        reason = ("critics not trained into the regime the paper analyses: at true MI 2 the estimate is more than "
                  f"{GATE_NATS} nats from the optimal-critic value for " + "; ".join(short))
        return ClaimResult(Verdict.INCONCLUSIVE, metrics, baseline, reason, headline, control)
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)


def _figure(ctx: ClaimContext, variances, name: str, title: str, means=None) -> None:
    if ctx.figure_dir is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2 if means is not None else 1
    fig, axes = plt.subplots(1, cols, figsize=(5 * cols, 3.4), squeeze=False)
    for key, v in variances.items():
        axes[0, -1].semilogy(LEVELS, v, marker="o", label=key)
        if means is not None:
            axes[0, 0].plot(LEVELS, means[key], marker="o", label=key)
    axes[0, -1].set_title(title)
    if means is not None:
        axes[0, 0].plot(LEVELS, LEVELS, "k--", label="true MI")
        axes[0, 0].set_title("mean estimate")
    for ax in axes[0]:
        ax.set_xlabel("true MI (nats)")
        ax.legend(fontsize=7)
    ctx.save_figure(fig, name)
