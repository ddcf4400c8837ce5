"""Claim checks for Sliced Wasserstein Estimation with Control Variates (Nguyen and Ho, ICLR 2024).

At an equal number ``L`` of projecting directions, each control-variate estimator of ``SW_2^2``
(:func:`~paperzoo.transport.sliced_wasserstein_cv`, lower and upper bound: one claim, one verdict each) against
plain Monte Carlo (:func:`~paperzoo.transport.sliced_wasserstein`). Each repetition draws ``L`` fresh directions
and feeds the same directions to every estimator (assembled from one computation of the projected distances, with
the internals of ``sliced_wasserstein_cv``); the variance over repetitions is the quantity compared. Three
settings, each on 3 seeds (a fresh pair of point clouds per seed), float64, ``n = 500`` points per cloud:

* ``gaussian_d10`` / ``gaussian_d50``: ``x ~ N(0, A A^T / d)``, ``y ~ N(mu, B B^T / d)``, ``A, B`` standard
  Gaussian ``d x d`` matrices, ``mu ~ N(0, I_d)``;
* ``mixture_d20``: each cloud a 4-component Gaussian mixture in ``d = 20`` (component means ``N(0, 4 I)``,
  unit isotropic covariance), drawn independently for ``x`` and ``y``: a non-Gaussian point-cloud pair.

Discriminating control: a control variate of the same form as the lower bound, ``(theta^T u)^2`` with ``u`` a
random unit vector drawn independently of the clouds (closed-form mean ``1 / d``), combined by the same
estimator: an unbiased control that carries none of the measures' information, so the criterion must reject it.
The sample-mean-centred estimator of the earlier version is reported alongside (``sample_mean_centred``) for
comparison; it decides nothing.

Issue 8 rework. The earlier single claim (``cv_reduces_variance``, both variants in one verdict) was
``not_reproduced`` at full budget: the upper CV's variance ratio on the mixtures averaged 0.568 > 0.5. Changes:
(1) the estimator now centres the control at its closed-form mean inside ``gamma_hat``, as the official code
does (the earlier one used the sample mean; this changes the estimate by ``O(1/L)``); (2) one claim, one verdict
per variant; (3) the threshold 0.5 on the seed-mean variance ratio is kept and must now also hold beyond two
standard errors over the seeds (``paired_comparison`` against plain Monte Carlo's ratio 1, margin 0.5); (4) the
control and a headline. Settings, sizes and the bias check are unchanged. Full budget: about 30 s per claim on
one core.
"""

from __future__ import annotations

import math
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.transport.sliced import _cv_combine, _cv_parts, random_projections

SETTINGS = ("gaussian_d10", "gaussian_d50", "mixture_d20")
MARGIN = 0.5  # on 1 - Var(CV) / Var(MC): the CV estimator must at least halve the variance
Z_MAX = 4.0
BASELINE = "paperzoo.transport.sliced_wasserstein: plain Monte Carlo SW_2^2 with the same L directions per repetition"


# "%s" is the variant; written as a template of literals so the torch-free source scanner can read it.
CRITERION = (
    "In every setting (Gaussians d=10, Gaussians d=50, Gaussian mixtures d=20; n=500 points, L=100 directions, "
    "400 repetitions, 3 seeds with fresh point clouds), the %s-bound CV estimate's variance over repetitions "
    "divided by plain Monte Carlo's with the same directions (one ratio per seed) is below 1/2 beyond seed noise: "
    "paired over the 3 seeds against plain Monte Carlo's own ratio 1, the mean of 1 - ratio exceeds the margin 0.5 "
    "and two standard errors; and on every seed the mean CV estimate agrees with the mean plain estimate within 4 "
    "standard errors (no visible bias). Control: the same criterion for an uninformative control variate of the "
    "same form, (theta^T u)^2 with u a random unit vector (mean 1/d), which must fail it."
)


def _pair(setting: str, n: int, gen: torch.Generator):
    kw = dict(dtype=torch.float64, generator=gen)
    if setting.startswith("gaussian"):
        d = int(setting.split("_d")[1])
        A, B = torch.randn(d, d, **kw) / math.sqrt(d), torch.randn(d, d, **kw) / math.sqrt(d)
        mu = torch.randn(d, **kw)
        return torch.randn(n, d, **kw) @ A.T, torch.randn(n, d, **kw) @ B.T + mu
    d, k = 20, 4

    def mixture():
        centers = 2.0 * torch.randn(k, d, **kw)
        labels = torch.randint(0, k, (n,), generator=gen)
        return centers[labels] + torch.randn(n, d, **kw)

    return mixture(), mixture()


def _sample_centred(w, c, expected):
    """The earlier estimator: ``gamma_hat = Cov_hat(W, C) / Var_hat(C)`` with C centred at its sample mean."""
    dc = c - c.mean()
    gamma = ((w - w.mean()) * dc).sum() / dc.pow(2).sum()
    return w.mean() - gamma * (c.mean() - expected)


def _measure(ctx: ClaimContext, variant: str):
    """Per setting and seed: variance ratio and bias z-score of the CV, control and sample-centred estimators."""
    n = ctx.pick(smoke=200, full=500)
    n_proj = ctx.pick(smoke=20, full=100)
    reps = ctx.pick(smoke=60, full=400)
    out = {}
    for setting in SETTINGS:
        rows = []
        for seed in ctx.seeds(3):
            gen = torch.Generator().manual_seed(seed)
            x, y = _pair(setting, n, gen)
            d = x.shape[1]
            u = random_projections(1, d, dtype=x.dtype, generator=gen)[0]
            est = {"mc": [], "cv": [], "control": [], "sample_mean_centred": []}
            for _ in range(reps):
                theta = random_projections(n_proj, d, dtype=x.dtype, generator=gen)
                w, controls = _cv_parts(x, y, theta, None, None)
                c, expected = controls[variant]
                est["mc"].append(float(w.mean()))
                est["cv"].append(float(_cv_combine(w, c, expected)))
                est["control"].append(float(_cv_combine(w, (theta @ u).pow(2), torch.tensor(1.0 / d).to(w))))
                est["sample_mean_centred"].append(float(_sample_centred(w, c, expected)))
            t = {k: torch.tensor(v, dtype=torch.float64) for k, v in est.items()}
            var_mc = float(t["mc"].var())
            row = {"mc_variance": var_mc, "mc_mean": float(t["mc"].mean())}
            for k in ("cv", "control", "sample_mean_centred"):
                var_k = float(t[k].var())
                se = math.sqrt((var_k + var_mc) / reps)
                row[f"{k}_ratio"] = var_k / var_mc
                row[f"{k}_z"] = abs(float(t[k].mean() - t["mc"].mean())) / se
            rows.append(row)
        out[setting] = rows
    return out, dict(n_points=n, n_projections=n_proj, repetitions=reps, seeds=ctx.seeds(3))


def _judge(rows, key: str):
    """The criterion in one setting for the estimator ``key``: (passed, paired comparison, z-scores)."""
    ratios = [r[f"{key}_ratio"] for r in rows]
    zs = [r[f"{key}_z"] for r in rows]
    # Gain of the estimator over plain MC, whose variance ratio to itself is 1 on every seed.
    cmp = paired_comparison(ratios, [1.0] * len(ratios), margin=MARGIN, lower_is_better=True)
    return cmp.wins and all(z <= Z_MAX for z in zs), cmp, zs


def _run(ctx: ClaimContext, variant: str) -> ClaimResult:
    start = time.perf_counter()
    data, setup = _measure(ctx, variant)
    metrics, baseline, control_metrics = dict(setup), {}, {}
    passed, control_passed = True, True
    parts = []
    for setting in SETTINGS:
        rows = data[setting]
        ok, cmp, zs = _judge(rows, "cv")
        c_ok, c_cmp, c_zs = _judge(rows, "control")
        passed = passed and ok
        control_passed = control_passed and c_ok
        metrics[f"{setting}/variance_ratio"] = list(cmp.method)
        metrics[f"{setting}/paired_vs_mc"] = cmp.as_metrics()
        metrics[f"{setting}/mean_gap_z"] = zs
        metrics[f"{setting}/pass"] = ok
        metrics[f"{setting}/sample_mean_centred_variance_ratio"] = [r["sample_mean_centred_ratio"] for r in rows]
        metrics[f"{setting}/sample_mean_centred_mean_gap_z"] = [r["sample_mean_centred_z"] for r in rows]
        baseline[f"{setting}/variance"] = [r["mc_variance"] for r in rows]
        baseline[f"{setting}/mean"] = [r["mc_mean"] for r in rows]
        control_metrics[f"{setting}/variance_ratio"] = list(c_cmp.method)
        control_metrics[f"{setting}/mean_gap_z"] = c_zs
        control_metrics[f"{setting}/pass"] = c_ok
        parts.append(f"{setting} {fmt_mean_std(cmp.method)}")
    worst_control = max((control_metrics[f"{s}/variance_ratio"] for s in SETTINGS), key=lambda v: sum(v))
    metrics["wall_time_s"] = time.perf_counter() - start
    control = Control("uninformative control variate (theta^T u)^2, u a random unit vector, through the same "
                      "criterion", control_passed, control_metrics)
    headline = (f"Var({variant} CV) / Var(plain MC) at L = {setup['n_projections']}: " + ", ".join(parts)
                + f" ({len(setup['seeds'])} seeds; pass: below {1 - MARGIN:g} beyond 2 SE in every setting); "
                f"uninformative control worst {fmt_mean_std(worst_control)}")
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)


@claim(
    "sw-control-variates",
    statement=("At an equal number of projections, the lower-bound Gaussian control-variate estimator of the sliced "
               "Wasserstein distance has a considerably lower variance than plain Monte Carlo estimation, without "
               "changing its mean."),
    criterion=CRITERION % "lower",
    baseline=BASELINE,
    threads=1,  # many small sorts per repetition: thread hand-offs would cost more than the arithmetic
)
def lower_cv_reduces_variance(ctx: ClaimContext) -> ClaimResult:
    return _run(ctx, "lower")


@claim(
    "sw-control-variates",
    statement=("At an equal number of projections, the upper-bound Gaussian control-variate estimator of the sliced "
               "Wasserstein distance has a considerably lower variance than plain Monte Carlo estimation, without "
               "changing its mean."),
    criterion=CRITERION % "upper",
    baseline=BASELINE,
    threads=1,  # many small sorts per repetition: thread hand-offs would cost more than the arithmetic
)
def upper_cv_reduces_variance(ctx: ClaimContext) -> ClaimResult:
    return _run(ctx, "upper")
