"""Claim check for On Computational Limits and Provably Efficient Criteria of Visual Autoregressive Models.

Ke, Li, Liang, Sha, Shi, Song, 2025.

The paper's positive side: VAR's attention (and so its whole inference) is fast when the entries of the attention
inputs are bounded by a small ``R``: a degree-``g`` polynomial factorization of ``exp(QK^T/d)`` of rank
``binom(d+g, g) << n`` is then ``1/poly(n)``-accurate; its negative side: at ``R = Theta(sqrt(log n))``
(``d = O(log n)``) no such speed-up exists under SETH. What can be measured here is the finite-``n`` location of
that transition for the construction the positive side uses: at rank ``<= n`` and accuracy ``1/n``, where does the
Taylor factorization stop working as ``R`` grows, and does it fail at the paper's hard scale ``R = sqrt(log n)``?

Setup, fixed before the first run (only the data-free bound values ``critical_gamma`` were printed beforehand:
Gamma_b = 0.965, 1.032, 1.102, 1.174 at n = 64, 256, 1024, 4096). n in {64, 256, 1024, 4096} (smoke {64, 256}),
``d = ceil(log2(n) / 2)`` (``d = O(log n)``, and aligned sign rows exist so the logit bound is attained), accuracy
``eps = 1/n``, degree ``g = max_degree_for_rank(d, n)`` (rank ``<= n``: cheaper than the dense matrix), scale ``1/d``.
Inputs :func:`~paperzoo.diagnostics.attention_lowrank.bounded_sign_inputs` (``Q, K = R * signs``, ``V ~ U[-1, 1]``),
so the logits fill ``[-R^2, R^2]`` and ``Gamma = R^2``. Error = max-abs output error against exact attention
(``torch.nn.functional.scaled_dot_product_attention``), measured by the dense Taylor route (equal to the factorized
route; checked at the smallest ``n``). ``Gamma_b(n) = critical_gamma(g, 1/n)``: the sufficient-condition threshold of
the Lagrange-remainder bound. Measured threshold ``Gamma*``: bisection in log Gamma on ``[Gamma_b/8, 16 Gamma_b]``
(16 steps; smoke 10) for the largest Gamma with error ``<= 1/n`` on one fixed draw of signs and values. 3 seeds.

Criterion: pass iff for every (n, seed) (A) at ``R^2 = Gamma_b(n)`` the error is ``<= 1/n`` (the positive side's
construction works below the criterion) and (B) ``Gamma* <= 3 Gamma_b(n)`` (the transition is sharp and sits where
the bound puts it: at most a factor 3 in ``R^2``, i.e. ``3^(g+1) >= 729`` of slack in the error bound). The sweep must
cross (error at ``16 Gamma_b`` above ``1/n``), else inconclusive. Why 3: the bound loses the factor ``e^{2 Gamma}``
(about 7 at Gamma ~ 1) and the averaging over a row; both act on ``delta ~ Gamma^(g+1)``, so factors of up to several
hundred in ``delta`` move Gamma by well under 3 for ``g >= 5``. Reported: ``Gamma*/ln n`` per n and a fitted line of
``Gamma*`` against ``ln n`` (slope with a 95% interval); not in the criterion, because at ``n <= 4096`` the degree
budget grows by one per factor 4 of n and the asymptotic ``Theta(log n)`` law cannot be resolved.

Control (the paper's hard regime): ``R = sqrt(ln n)`` (``Gamma = ln n``), same rank budget, degree, accuracy and
inputs, through criterion (A): it must fail.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fit_line, fmt_mean_std
from paperzoo.core.registry import derive_seed
from paperzoo.diagnostics.attention_lowrank import (
    _polynomial_attention_error, bounded_sign_inputs, critical_gamma, exact_attention, fast_attention,
    max_degree_for_rank, polynomial_rank)

FACTOR = 3.0
CRITERION = (
    "n in {64, 256, 1024, 4096}, d = ceil(log2(n)/2), eps = 1/n, Taylor degree g = largest with rank binom(d+g, g) <= "
    "n, scale 1/d; Q, K = R * Rademacher, V ~ U[-1, 1]; max-abs output error vs exact softmax attention; Gamma_b(n) = "
    "largest R^2 where the Lagrange bound 2 delta/(1 - delta), delta = Gamma^(g+1) e^(2 Gamma)/(g+1)!, is <= 1/n; "
    "3 seeds. Pass iff for every (n, seed): (A) error <= 1/n at R^2 = Gamma_b(n), and (B) the measured threshold "
    "Gamma* (bisection in log R^2 on [Gamma_b/8, 16 Gamma_b], largest R^2 with error <= 1/n) is <= 3 Gamma_b(n); "
    "the sweep must cross (else inconclusive). Control: R = sqrt(ln n) (the paper's hard scale) through (A); it "
    "must fail."
)


def _setting(n: int) -> tuple[int, int, float]:
    d = math.ceil(math.log2(n) / 2)
    g = max_degree_for_rank(d, n)
    return d, g, critical_gamma(g, 1.0 / n)


def _draw(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(derive_seed(seed, f"inputs-{n}"))
    return bounded_sign_inputs(n, d, 1.0, generator=gen)


def _error(SQ, SK, V, gamma: float, g: int) -> float:
    R = math.sqrt(gamma)
    s = 1.0 / SQ.shape[1]
    return _polynomial_attention_error(R * SQ, R * SK, V, g, s)


def _threshold(SQ, SK, V, g: int, gamma_b: float, eps: float, steps: int) -> tuple[float, bool]:
    lo, hi = math.log(gamma_b / 8), math.log(16 * gamma_b)
    if _error(SQ, SK, V, math.exp(hi), g) <= eps:
        return math.exp(hi), False
    if _error(SQ, SK, V, math.exp(lo), g) > eps:
        return math.exp(lo), True
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _error(SQ, SK, V, math.exp(mid), g) <= eps else (lo, mid)
    return math.exp(lo), True


@claim(
    "var-complexity-limits",
    statement=("The polynomial-method low-rank attention behind fast VAR inference is accurate (1/n error at rank <= "
               "n) only below a critical entry bound: the measured transition sits within a factor 3 in R^2 of the "
               "Taylor-remainder criterion, and at the paper's hard scale R = sqrt(ln n) the construction fails."),
    criterion=CRITERION,
    baseline="exact softmax attention (torch.nn.functional.scaled_dot_product_attention, scale 1/d)",
    threads=1,
)
def lowrank_attention_norm_threshold(ctx: ClaimContext) -> ClaimResult:
    ns = ctx.pick(smoke=[64, 256], full=[64, 256, 1024, 4096])
    steps = ctx.pick(smoke=10, full=16)
    seeds = ctx.seeds(3)

    rows, crossed_all = {}, True
    for n in ns:
        d, g, gamma_b = _setting(n)
        eps = 1.0 / n
        at_bound, thresholds, at_hard = [], [], []
        for seed in seeds:
            SQ, SK, V = _draw(n, d, seed)
            at_bound.append(_error(SQ, SK, V, gamma_b, g))
            t, crossed = _threshold(SQ, SK, V, g, gamma_b, eps, steps)
            crossed_all &= crossed
            thresholds.append(t)
            at_hard.append(_error(SQ, SK, V, math.log(n), g))
        rows[n] = {"d": d, "degree": g, "rank": polynomial_rank(d, g), "eps": eps, "gamma_bound": gamma_b,
                   "error_at_bound": at_bound, "gamma_measured": thresholds, "error_at_sqrt_log_n": at_hard,
                   "ratio_measured_to_bound": [t / gamma_b for t in thresholds],
                   "gamma_measured_over_ln_n": [t / math.log(n) for t in thresholds]}

    # The factorized route equals the dense one it is measured by (smallest n, first seed, at the bound).
    n0 = ns[0]
    d0, g0, gb0 = _setting(n0)
    SQ, SK, V = _draw(n0, d0, seeds[0])
    Q, K = math.sqrt(gb0) * SQ, math.sqrt(gb0) * SK
    route_gap = abs(float((fast_attention(Q, K, V, g0).output - exact_attention(Q, K, V)).abs().max())
                    - rows[n0]["error_at_bound"][0])

    part_a = all(e <= r["eps"] for r in rows.values() for e in r["error_at_bound"])
    part_b = all(x <= FACTOR for r in rows.values() for x in r["ratio_measured_to_bound"])
    passed = part_a and part_b
    control_passed = all(e <= r["eps"] for r in rows.values() for e in r["error_at_sqrt_log_n"])

    fit = None
    if len(ns) >= 3:
        u = torch.tensor([math.log(n) for n in ns for _ in seeds], dtype=torch.float64)
        v = torch.tensor([t for n in ns for t in rows[n]["gamma_measured"]], dtype=torch.float64)
        lf = fit_line(u, v)
        fit = {"slope": lf.slope, "intercept": lf.intercept, "ci": [lf.ci_low, lf.ci_high], "r2": lf.r2}

    big = rows[ns[-1]]
    control = Control(
        "R = sqrt(ln n) (the paper's SETH-hard scale), same rank budget and degree, through criterion (A)",
        control_passed,
        {"max_error_at_sqrt_log_n": {str(n): max(r["error_at_sqrt_log_n"]) for n, r in rows.items()},
         "eps": {str(n): r["eps"] for n, r in rows.items()}})
    headline = (f"n = {ns[-1]} (d = {big['d']}, degree {big['degree']}, rank {big['rank']}): measured threshold R^2 = "
                f"{fmt_mean_std(big['gamma_measured'])} vs bound {big['gamma_bound']:.3f} (ratio "
                f"{fmt_mean_std(big['ratio_measured_to_bound'])}, limit {FACTOR:g}); error at the bound "
                f"{max(big['error_at_bound']):.2e} (eps {big['eps']:.2e}); at R = sqrt(ln n) "
                f"{min(big['error_at_sqrt_log_n']):.2e}")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.errorbar(ns, [np.mean(rows[n]["gamma_measured"]) for n in ns],
                    yerr=[np.std(rows[n]["gamma_measured"]) for n in ns], fmt="o", label="measured threshold R^2")
        ax.plot(ns, [rows[n]["gamma_bound"] for n in ns], "--", label="Taylor-remainder criterion")
        ax.plot(ns, [math.log(n) for n in ns], ":", c="gray", label="ln n (hard scale)")
        ax.set_xscale("log")
        ax.set_xlabel("n")
        ax.set_ylabel("R^2 at which rank <= n stops giving 1/n error")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "threshold")

    def spread(vals):
        return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "values": [float(t) for t in vals]}

    per_n = {str(n): {k: spread(val) if isinstance(val, list) else val for k, val in r.items()}
             for n, r in rows.items()}
    metrics = {"ns": ns, "bisection_steps": steps, "per_n": per_n, "part_a_bound_holds": part_a,
               "part_b_threshold_within_factor": part_b, "factor": FACTOR, "gamma_vs_ln_n_fit": fit,
               "factorized_vs_dense_route_gap": route_gap, "sweep_crossed": crossed_all}
    baseline = {"exact_attention": "scaled_dot_product_attention(scale=1/d)",
                "gamma_bound_per_n": {str(n): r["gamma_bound"] for n, r in rows.items()}}
    if not crossed_all:
        return ClaimResult("inconclusive", metrics, baseline, "a threshold sweep did not cross (error <= 1/n at "
                           "16 Gamma_b)", headline, control)
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
