"""Claim check for Revisiting Discriminative vs. Generative Classifiers: Theory and Implications (Zheng et al., 2023).

The paper's prediction: when the class conditionals are Gaussian with a shared diagonal covariance and every feature
carries signal, multiclass naive Bayes needs O(log n) samples to come within a tolerance of its asymptotic error,
multiclass logistic regression O(n) (n the feature dimension).

Setup, fixed before the first run (after the paper's simulation): K = 5 classes, class k has mean ``k * s * 1_n``
and every class the covariance ``diag(n, ..., n, 1, ..., 1)`` (variance n on the first n/2 features), labels
``i mod K`` (balanced prefixes). n in {4, 8, 16, 32, 64} (smoke {4, 8}); 3 seeds; per (n, seed) one
learning curve on nested training prefixes of 16 log-spaced sizes from 2K to max(100 n, 2000) (smoke 6), test sets of
10000 (smoke 1000); a curve stops at its first size within the tolerance (as in the paper's simulation).
Naive Bayes: shared-diagonal-variance Gaussian NB, var_smoothing 1e-9. Logistic regression: sklearn
``LogisticRegression(C=1, lbfgs, max_iter=1000)``. Both as in the paper's simulation, nothing tuned. Samples-to-
reach m*(n): first size whose test error is within 0.01 of the exact Bayes error (which is the asymptotic error of
both learners here: NB's model holds, LR is well specified and its penalty vanishes as m grows), log-interpolated
(:func:`paperzoo.diagnostics.learning_curves.samples_to_reach`). Main setting s = 2.

Criterion: per seed, the growth exponent alpha = OLS slope of log m* on log n. Pass iff alpha_LR - alpha_NB, paired
over the 3 seeds, has mean > 0.5 and > 2 SE, the mean alpha_NB is < 0.5 (sub-linear growth, as O(log n)), and every
m* is finite. Reported: slopes of m* against log n and against n with 95% CIs (pooled over seeds).

Control (the assumption that every feature carries signal removed): s = s(n) such that the Mahalanobis distance of
adjacent classes equals its n = 4 value at every n (per-feature signal ~ 1/sqrt n, Bayes error constant). Then
naive Bayes too must estimate n means to a precision that shrinks with n and needs O(n) samples: the same criterion
must fail.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diagnostics.learning_curves import (bayes_error, gaussian_nb_fit_predict, learning_curve,
                                                  samples_to_reach)

K = 5
TOL = 0.01
MARGIN = 0.5
NB_MAX_EXPONENT = 0.5
REFERENCE_N = 4
STEP = 2.0
MAX_SIZE_PER_DIM = 100
MIN_MAX_SIZE = 2000
CRITERION = (
    "K = 5 Gaussian classes, means k*s*1_n, shared covariance diag(n on half the features, 1 on the rest), n in "
    "{4, 8, 16, 32, 64}, 3 seeds, s = 2: samples-to-reach m* = first training size within 0.01 of the exact "
    "Bayes error (log-interpolated) for shared-variance Gaussian naive Bayes and sklearn LogisticRegression(C=1); "
    "per seed the exponent alpha = slope of log m* on log n. Pass iff alpha_LR - alpha_NB, paired over seeds, "
    "has mean > 0.5 and > 2 SE, mean alpha_NB < 0.5, and every m* is finite. Control: per-feature signal "
    "s(n) ~ 1/sqrt(n) (adjacent-class Mahalanobis distance fixed at its n = 4 value); it must fail."
)


def _variances(n: int) -> torch.Tensor:
    var = torch.ones(n, dtype=torch.float64)
    var[: n // 2] = float(n)
    return var


def _step(n: int, fixed_distance: bool) -> float:
    if not fixed_distance:
        return STEP
    ref = float((1.0 / _variances(REFERENCE_N)).sum())
    return STEP * math.sqrt(ref / float((1.0 / _variances(n)).sum()))


def _sampler(n: int, s: float):
    sd = _variances(n).sqrt()
    offsets = torch.arange(K, dtype=torch.float64) * s

    def sample(size, g):
        y = torch.arange(size) % K
        return offsets[y][:, None] + sd * torch.randn(size, n, generator=g, dtype=torch.float64), y

    return sample


class _WarmLR:
    """sklearn LogisticRegression(C=1, lbfgs, max_iter=1000), warm-started from the previous fit: the penalised
    objective is strictly convex, so the start changes the iterations needed, not the solution."""

    def __init__(self):
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000, warm_start=True)

    def __call__(self, X, y, X_test):
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(X.numpy(), y.numpy())
        return torch.from_numpy(self.model.predict(X_test.numpy()))


def _ols(x, y) -> tuple[float, float]:
    """Slope and its standard error."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / (xc ** 2).sum())
    resid = y - y.mean() - slope * xc
    dof = len(x) - 2
    se = float(math.sqrt((resid ** 2).sum() / dof / (xc ** 2).sum())) if dof > 0 else math.nan
    return slope, se


def _ci(x, y) -> dict:
    from scipy.stats import t as student_t

    slope, se = _ols(x, y)
    half = float(student_t.ppf(0.975, len(x) - 2)) * se if len(x) > 2 else math.nan
    return {"slope": slope, "se": se, "ci95": [slope - half, slope + half]}


def _fmt_ci(fit) -> str:
    if fit is None:
        return "n/a"
    return f"{fit['slope']:.3g} [{fit['ci95'][0]:.3g}, {fit['ci95'][1]:.3g}]"


@claim(
    "nb-vs-lr",
    statement=("Under Gaussian class conditionals with a shared diagonal covariance, multiclass naive Bayes comes "
               "within a tolerance of its asymptotic error with O(log n) samples, logistic regression needs O(n)."),
    criterion=CRITERION,
    baseline="sklearn LogisticRegression(C=1, lbfgs): the discriminative counterpart, through the same learning curves",
    threads=1,
)
def naive_bayes_needs_fewer_samples(ctx: ClaimContext) -> ClaimResult:
    from threadpoolctl import threadpool_limits

    # one core: the runner limits torch's threads, the BLAS under sklearn is limited here
    with threadpool_limits(limits=1):
        return _run(ctx)


def _run(ctx: ClaimContext) -> ClaimResult:
    dims = ctx.pick(smoke=[4, 8], full=[4, 8, 16, 32, 64])
    n_sizes = ctx.pick(smoke=6, full=16)
    max_per_dim = MAX_SIZE_PER_DIM
    test_size = ctx.pick(smoke=1000, full=10_000)
    seeds = ctx.seeds(3)
    learners = {"nb": lambda: gaussian_nb_fit_predict, "lr": _WarmLR}

    def measure(fixed_distance: bool, offset: int) -> dict:
        rows = {}
        for n in dims:
            s = _step(n, fixed_distance)
            means = torch.arange(K, dtype=torch.float64)[:, None] * s * torch.ones(1, n, dtype=torch.float64)
            err_inf = bayes_error(means, torch.diag(_variances(n)))
            top = max(max_per_dim * n, MIN_MAX_SIZE)
            sizes = np.unique(np.round(np.geomspace(2 * K, top, n_sizes)).astype(int)).tolist()
            row = {"bayes_error": err_inf, "step": s}
            for name, make in learners.items():
                fit_predict = make()  # a fresh learner per dimension (LR warm-starts along one curve)
                # curves stop at the first size within the tolerance (as the paper's simulation): m* is unchanged
                curve = learning_curve(fit_predict, _sampler(n, s), sizes, [sd + offset + n for sd in seeds],
                                       test_size=test_size, stop_below=err_inf + TOL)
                reach = samples_to_reach(curve, err_inf, TOL)
                row[name] = {"m_star": reach.per_seed.tolist(), "first_error": curve.mean[0].item(),
                             "sizes_fitted": int(torch.isfinite(curve.errors).sum())}
            rows[n] = row
        return rows

    def analyse(rows) -> dict:
        logn = np.log(dims)
        out = {}
        for name in learners:
            m = np.array([rows[n][name]["m_star"] for n in dims])  # (dims, seeds)
            finite = bool(np.isfinite(m).all())
            alphas = [(_ols(logn, np.log(m[:, i]))[0] if np.isfinite(m[:, i]).all() else math.nan)
                      for i in range(len(seeds))]
            pooled_x = np.repeat(np.array(dims, float), len(seeds))
            flat = m.reshape(-1)
            ok = np.isfinite(flat)
            out[name] = {"alpha": alphas, "all_reached": finite,
                         "slope_vs_log_n": _ci(np.log(pooled_x[ok]), flat[ok]) if ok.sum() > 2 else None,
                         "slope_vs_n": _ci(pooled_x[ok], flat[ok]) if ok.sum() > 2 else None}
        cmp = paired_comparison(out["lr"]["alpha"], out["nb"]["alpha"], margin=MARGIN, lower_is_better=False)
        nb_alpha = float(np.mean(out["nb"]["alpha"]))
        passed = (cmp.wins and nb_alpha < NB_MAX_EXPONENT and out["nb"]["all_reached"]
                  and out["lr"]["all_reached"])
        return {"passed": bool(passed), "per_learner": out, "gap": cmp.as_metrics(), "nb_alpha_mean": nb_alpha}

    rows = measure(False, 0)
    main = analyse(rows)
    control_rows = measure(True, 10_000)
    ctrl = analyse(control_rows)
    control = Control(
        "per-feature signal s(n) ~ 1/sqrt(n) (adjacent-class Mahalanobis distance fixed at its n = 4 value, Bayes "
        "error constant), where naive Bayes is predicted to need O(n) samples too", ctrl["passed"],
        {"alpha_nb": ctrl["per_learner"]["nb"]["alpha"], "alpha_lr": ctrl["per_learner"]["lr"]["alpha"],
         "gap": ctrl["gap"], "m_star": {str(n): {k: r[k]["m_star"] for k in learners}
                                        for n, r in control_rows.items()},
         "bayes_error": {str(n): r["bayes_error"] for n, r in control_rows.items()}})

    pl = main["per_learner"]
    headline = (f"n = {dims[0]}..{dims[-1]}, 3 seeds: growth exponent of samples-to-reach in n: NB "
                f"{fmt_mean_std(pl['nb']['alpha'])} vs LR {fmt_mean_std(pl['lr']['alpha'])} (gap "
                f"{main['gap']['gain_mean']:.3g} ± {main['gap']['gain_se']:.2g} SE, margin {MARGIN}); LR m* vs n "
                f"slope {_fmt_ci(pl['lr']['slope_vs_n'])}, NB m* vs log n slope "
                f"{_fmt_ci(pl['nb']['slope_vs_log_n'])}; control "
                f"(signal ~ 1/sqrt n): NB {fmt_mean_std(ctrl['per_learner']['nb']['alpha'])} vs LR "
                f"{fmt_mean_std(ctrl['per_learner']['lr']['alpha'])}")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for data, style, label in ((rows, "-", ""), (control_rows, "--", " (control)")):
            for name, colour in (("nb", "C0"), ("lr", "C1")):
                ax.plot(dims, [np.nanmean(data[n][name]["m_star"]) for n in dims], style, c=colour, marker="o",
                        label=name.upper() + label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("feature dimension n")
        ax.set_ylabel(f"samples to reach Bayes error + {TOL}")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "samples_to_reach")

    per_dim = {str(n): {"bayes_error": r["bayes_error"], **{k: r[k] for k in learners}} for n, r in rows.items()}
    return ClaimResult.decide(
        main["passed"],
        metrics={"dims": dims, "tol": TOL, "per_dim": per_dim, "alpha_nb": pl["nb"]["alpha"],
                 "alpha_lr": pl["lr"]["alpha"], "gap": main["gap"], "nb_alpha_mean": main["nb_alpha_mean"],
                 "nb_slopes": {k: pl["nb"][k] for k in ("slope_vs_log_n", "slope_vs_n")},
                 "lr_slopes": {k: pl["lr"][k] for k in ("slope_vs_log_n", "slope_vs_n")},
                 "all_reached": {k: pl[k]["all_reached"] for k in learners}},
        baseline={"alpha_lr": pl["lr"]["alpha"], "predicted": "alpha_NB ~ 0 (log n), alpha_LR ~ 1 (n)"},
        headline=headline, control=control,
    )
