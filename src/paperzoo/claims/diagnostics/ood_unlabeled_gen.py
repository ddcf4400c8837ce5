"""Claim check for Out-Of-Domain Unlabeled Data Improves Generalization (Saberi, Najafi, Heidari, et al., ICLR 2024).

The paper's prediction: for a symmetric two-Gaussian mixture in R^d with few labeled samples (labeled-only ERM has
error of order sqrt(d/m)), adding n unlabeled samples from a slightly shifted mixture (small total-variation
shift) through a pseudo-label / cluster term lowers the generalization error, more so as n grows, provided the
unlabeled law keeps the cluster structure of the in-domain one; far-shifted or structure-free unlabeled data
should not help.

Setup, fixed before the first run: x | y ~ N(y mu, I_d), ||mu|| = 2 (Bayes error Phi(-2) = 0.0228), d = 50,
m = 5 labeled points, unlabeled points from N(+-(mu + delta), I_d) with delta orthogonal to mu, ||delta|| = 0.3
(TV bound alpha = 0.12), n in {0, 30, 100, 300, 1000, 3000} (smoke: {0, 100, 400}); per seed R = 100
independent repetitions (smoke: 6), the seed's value the mean over repetitions; 3 seeds. Method:
:func:`self_training_direction` (lam = 1, the labeled and pseudo-labeled points weighted equally; no tuning);
baseline: labeled-only ERM :func:`labeled_direction` on the same labeled points. Errors exact
(:func:`linear_rule_error`).

Criterion: (a) at the largest n the paired (over seeds) error gain of the semi-supervised rule over ERM exceeds
the margin 0.02 and two standard errors; (b) the error falls with n: the OLS slope of the seed-mean error on
log(1 + n), pooled over seeds and the n grid, has its 95% t-interval entirely below 0.

Control (the paper's assumptions violated), each at the largest n, same labeled sets, put through part (a):
(i) strongly shifted unlabeled data N(+-nu, I) with nu orthogonal to mu, ||nu|| = ||mu|| (TV bound 0.95; the
cluster axis carries no label information); (ii) label-uninformative unlabeled data N(0, I) (delta = -mu). Both
must fail (a).
"""

from __future__ import annotations

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diagnostics.semi_supervised_gmm import (_labeled_sum, _linear_rule_error, _self_train,
                                                      shift_tv_bound)

MU_NORM = 2.0
SHIFT_NORM = 0.3
M_LABELED = 5
LAM = 1.0
MARGIN = 0.02
MAX_ITER = 300
CRITERION = (
    "Symmetric mixture N(+-mu, I_d), ||mu|| = 2, d = 50, m = 5 labeled, unlabeled from N(+-(mu + delta), I) with "
    "delta orthogonal to mu, ||delta|| = 0.3 (TV <= 0.12), n in {0, 30, 100, 300, 1000, 3000}, 100 repetitions per "
    "seed, 3 seeds, exact errors: (a) at the largest n the self-training rule (lam = 1) beats labeled-only ERM by a "
    "paired gain > 0.02 and > 2 SE; (b) the OLS slope of seed-mean error on log(1 + n) has its 95% CI below 0. "
    "Control: unlabeled data N(+-nu, I) with nu orthogonal to mu, ||nu|| = 2, and unlabeled data N(0, I), at the "
    "largest n, through part (a): both must fail."
)


def _slope_ci(x, y):
    from scipy import stats

    res = stats.linregress(np.asarray(x, float), np.asarray(y, float))
    t = stats.t.ppf(0.975, len(x) - 2)
    return float(res.slope), float(res.slope - t * res.stderr), float(res.slope + t * res.stderr)


@claim(
    "ood-unlabeled-gen",
    statement=("Unlabeled samples from a slightly shifted two-Gaussian mixture, used through a pseudo-label term, "
               "lower the test error below labeled-only ERM, increasingly with their number n; unlabeled data "
               "without the in-domain cluster structure does not help."),
    criterion=CRITERION,
    baseline="labeled-only ERM (label-signed mean direction) on the same m = 5 labeled points",
    threads=1,
)
def ood_unlabeled_improves(ctx: ClaimContext) -> ClaimResult:
    d = 50
    ns = ctx.pick(smoke=[0, 100, 400], full=[0, 30, 100, 300, 1000, 3000])
    R = ctx.pick(smoke=6, full=100)
    seeds = ctx.seeds(3)
    dt = torch.float64

    mu = torch.zeros(d, dtype=dt)
    mu[0] = MU_NORM
    delta = torch.zeros(d, dtype=dt)
    delta[1] = SHIFT_NORM
    nu = torch.zeros(d, dtype=dt)
    nu[1] = MU_NORM
    controls = {"strong_shift": nu - mu, "uninformative": -mu}
    bayes = float(_linear_rule_error(mu, mu, 0.0, 1.0))

    ssl = {n: [] for n in ns}
    erm, ctrl = [], {k: [] for k in controls}
    iters = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed % (2**63))
        y = torch.randint(0, 2, (R, M_LABELED), generator=g)
        X = (2 * y - 1).to(dt)[..., None] * mu + torch.randn(R, M_LABELED, d, generator=g, dtype=dt)
        a = _labeled_sum(X, y)
        erm.append(float(_linear_rule_error(a, mu, 0.0, 1.0).mean()))
        s = (2 * torch.randint(0, 2, (R, ns[-1]), generator=g) - 1).to(dt)[..., None]
        Z = torch.randn(R, ns[-1], d, generator=g, dtype=dt)

        def fit(shift, n):
            theta, _, it, _ = _self_train(a, s[:, :n] * (mu + shift) + Z[:, :n], LAM, MAX_ITER)
            iters.append(it)
            return float(_linear_rule_error(theta, mu, 0.0, 1.0).mean())

        for n in ns:  # nested unlabeled sets: the curve in n is paired within a seed
            ssl[n].append(fit(delta, n))
        for k, shift in controls.items():
            ctrl[k].append(fit(shift, ns[-1]))

    big = ns[-1]
    main = paired_comparison(ssl[big], erm, margin=MARGIN)
    slope, lo, hi = _slope_ci([np.log1p(n) for n in ns for _ in seeds], [v for n in ns for v in ssl[n]])
    falls = hi < 0
    passed = main.wins and falls

    cmp = {k: paired_comparison(v, erm, margin=MARGIN) for k, v in ctrl.items()}
    control = Control(
        "unlabeled data violating the assumptions at the largest n, through part (a): strongly shifted N(+-nu, I) "
        "with nu orthogonal to mu, and structure-free N(0, I)",
        any(c.wins for c in cmp.values()),
        {**{f"{k}_error": v for k, v in ctrl.items()}, **{f"{k}_vs_erm": c.as_metrics() for k, c in cmp.items()},
         "strong_shift_tv_bound": shift_tv_bound(nu - mu)},
    )
    headline = (f"d = {d}, m = {M_LABELED}, n = {big}, TV <= {shift_tv_bound(delta):.2f}, 3 seeds x {R} reps: "
                f"error {fmt_mean_std(ssl[big])} (self-training) vs {fmt_mean_std(erm)} (labeled ERM), Bayes "
                f"{bayes:.4f}; slope in log(1+n) {slope:.4f} [{lo:.4f}, {hi:.4f}]; controls: strong shift "
                f"{fmt_mean_std(ctrl['strong_shift'])}, N(0, I) {fmt_mean_std(ctrl['uninformative'])}")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.semilogx([n + 1 for n in ns], [np.mean(ssl[n]) for n in ns], "o-", label="self-training (shift 0.3)")
        ax.axhline(np.mean(erm), ls="--", c="C1", label="labeled-only ERM")
        ax.axhline(bayes, ls=":", c="gray", label="Bayes")
        ax.set_xlabel("1 + unlabeled points n")
        ax.set_ylabel("test error")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "error_vs_n")

    return ClaimResult.decide(
        passed,
        metrics={"d": d, "m": M_LABELED, "repetitions": R, "mu_norm": MU_NORM, "shift_norm": SHIFT_NORM,
                 "tv_bound": shift_tv_bound(delta), "bayes_error": bayes, "ns": ns,
                 "ssl_error_per_n": {str(n): ssl[n] for n in ns}, "slope": slope, "slope_ci95": [lo, hi],
                 "falls_with_n": falls, "vs_erm": main.as_metrics(), "max_iterations": max(iters)},
        baseline={"erm_error": erm, "margin": MARGIN, "lam": LAM},
        headline=headline, control=control,
    )
