"""Claim check for GD doesn't make the cut (Kumar, 2024): the L1 paradox of non-differentiable gradient methods.

The paper's observation: gradient descent with the autograd subgradient (NGDM) on an L1-regularised problem
returns solutions whose L1 norm *grows* when the penalty grows. The mechanism, and so the regime in which the
paradox holds: with a constant step :math:`\\eta`, a coordinate whose LASSO optimum is zero never settles; it hops
across zero with mean magnitude about :math:`\\eta\\lambda/2`. NGDM's final L1 norm is then about

.. math:: \\|x^{\\mathrm{NGDM}}_\\lambda\\|_1 \\approx \\|\\hat x_\\lambda\\|_1 + (p - s_\\lambda)\\,\\eta\\lambda/2,

with :math:`\\hat x_\\lambda` the LASSO solution and :math:`s_\\lambda` its support size. Between two penalties
:math:`\\lambda_1 < \\lambda_2` the paradox (a larger L1 norm at :math:`\\lambda_2`) holds exactly when
:math:`\\eta > \\eta_c = \\dfrac{2(\\|\\hat x_{\\lambda_1}\\|_1 - \\|\\hat x_{\\lambda_2}\\|_1)}
{(p - s_{\\lambda_2})\\lambda_2 - (p - s_{\\lambda_1})\\lambda_1}`; for small steps NGDM follows the LASSO path and
its L1 norm falls with :math:`\\lambda` as it should. The proximal method (ISTA) lands on the path at every step size.

What changed from the first version (review of issue 8): the old criterion asked for "no exact zero" in NGDM's
iterates (true of any floating-point subgradient iteration, so it could not fail) and for >= 80% exact zeros in
ISTA's (forced by n < p: a LASSO solution has at most n nonzeros). Both are gone. The claim is now the paradox
and the regime it holds in: a sweep of the step size, with the crossover predicted from the LASSO path before
NGDM is run, and ISTA through the same criterion as the control.

Setup, fixed before the first run: :math:`A \\in \\mathbb R^{50 \\times 200}` with i.i.d. :math:`\\mathcal N(0, 1/50)`
entries (:math:`\\|A\\|_2^2 \\approx 8.7`, so GD on the smooth part is stable for :math:`\\eta < 0.23`),
:math:`x^*` with 5 entries equal to 1 at random positions, :math:`b = A x^* + 0.1\\,\\varepsilon`, penalties
:math:`\\lambda_1 = 0.1`, :math:`\\lambda_2 = 1`, start :math:`x_0 = 0`, steps
:math:`\\eta \\in \\{0.003, 0.01, 0.03, 0.1, 0.15\\}` (smoke without 0.003), :math:`\\max(F, \\tau/\\eta)` iterations
(:math:`F = 1000, \\tau = 10` smoke; :math:`F = 2000, \\tau = 50` full), the L1 norm averaged over the last 10%
of them (the hopping makes the last iterate's norm phase-dependent). :math:`\\hat x_\\lambda` from FISTA.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.optim.subgradient import solve_lasso_ista, solve_lasso_subgradient

N, P, K = 50, 200, 5
REGS = (0.1, 1.0)
STEPS = (0.003, 0.01, 0.03, 0.1, 0.15)
NEAR = 1.5  # steps within this factor of the predicted threshold are reported, not judged


def sparse_regression(seed: int):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, P, generator=g, dtype=torch.float64) / N**0.5
    x_star = torch.zeros(P, dtype=torch.float64)
    x_star[torch.randperm(P, generator=g)[:K]] = 1.0
    b = A @ x_star + 0.1 * torch.randn(N, generator=g, dtype=torch.float64)
    return A, b, x_star


def predicted_threshold(l1: list[float], support: list[int]) -> float:
    """eta_c from the LASSO path (module docstring): the step above which NGDM's L1 norm grows with lambda."""
    (l1a, l1b), (sa, sb), (ra, rb) = l1, support, REGS
    return 2 * (l1a - l1b) / ((P - sb) * rb - (P - sa) * ra)


def _tail_l1(res, iters):
    return res.l1_norm[-max(1, iters // 10):].mean(0).tolist()


def run_seed(seed: int, tau: float, steps=STEPS, floor: int = 2_000, lasso_iter: int = 20_000):
    A, b, _ = sparse_regression(seed)
    regs = torch.tensor(REGS, dtype=torch.float64)
    lasso = solve_lasso_ista(A, b, regs, accelerated=True, max_iter=lasso_iter, tol=1e-12)
    l1_hat = lasso.x.abs().sum(0).tolist()
    support = (lasso.x.abs() > 1e-9).sum(0).tolist()
    eta_c = predicted_threshold(l1_hat, support)
    inv_L = 1.0 / float(torch.linalg.matrix_norm(A, ord=2)) ** 2
    out = {"l1_lasso": l1_hat, "support": support, "eta_c": eta_c, "steps": {}}
    for eta in steps:
        iters = max(floor, math.ceil(tau / eta))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NGDM with a constant step is not expected to settle
            ngdm = _tail_l1(solve_lasso_subgradient(A, b, regs, lr=eta, max_iter=iters, tol=0.0), iters)
            ista_eta = min(eta, inv_L)  # ISTA's step is capped at 1/L
            ista = _tail_l1(solve_lasso_ista(A, b, regs, lr=ista_eta, max_iter=iters, tol=0.0), iters)
        out["steps"][eta] = dict(iters=iters, ngdm_l1=ngdm, ista_l1=ista, ista_lr=ista_eta,
                                 ngdm_ratio=ngdm[1] / ngdm[0], ista_ratio=ista[1] / ista[0],
                                 predicted_l1=[l + (P - s) * eta * r / 2 for l, s, r in zip(l1_hat, support, REGS)])
    return out


def _judge(row, ratio_key):
    """Per step: (judged?, paradox predicted, paradox measured) for the method whose ratio is ``ratio_key``."""
    verdicts = {}
    for eta, st in row["steps"].items():
        judged = abs(math.log(eta / row["eta_c"])) >= math.log(NEAR)
        verdicts[eta] = (judged, eta > row["eta_c"], st[ratio_key] > 1.0)
    return verdicts


def _criterion(row, ratio_key):
    v = _judge(row, ratio_key)
    regime = all(pred == meas for judged, pred, meas in v.values() if judged)
    both = v[max(v)][2] and not v[min(v)][2]
    return regime and both


@claim(
    "nondiff-gd",
    statement="Gradient descent with the autograd subgradient (NGDM) on the LASSO, run with a constant step, ends "
              "with a larger L1 norm at a larger penalty (the L1 paradox) exactly when the step exceeds the "
              "threshold set by the zero coordinates' hopping (mean magnitude eta*lambda/2); below it NGDM follows "
              "the LASSO path. The proximal method never shows the paradox.",
    criterion="LASSO, A 50x200 Gaussian (N(0, 1/50)), 5-sparse x* of ones, noise 0.1, lambda in {0.1, 1}, x0 = 0, "
              "3 seeds, steps eta in {0.003 (full only), 0.01, 0.03, 0.1, 0.15} (all below 2/||A||^2), max(F, "
              "tau/eta) iterations (F = 1,000, tau = 10 smoke / F = 2,000, tau = 50 full), L1 norm averaged over "
              "the last 10%. Threshold predicted per "
              "seed from the LASSO path (FISTA) before NGDM runs: eta_c = 2(|x1|_1 - |x2|_1) / ((p - s2) lambda2 - "
              "(p - s1) lambda1). Paradox at eta: mean L1 at lambda = 1 > at lambda = 0.1. Passes if on every "
              "seed (a) the paradox holds at every step > 1.5 eta_c and fails at every step < eta_c / 1.5 (steps "
              "within 1.5x of eta_c are reported, not judged) and (b) it holds at the largest step (0.15) and fails "
              "at the smallest (0.003 full, 0.01 smoke). Control: ISTA (step min(eta, 1/||A||^2)) through the same "
              "criterion must fail.",
    baseline="ISTA (proximal gradient with soft thresholding) on the same problems, steps (capped at 1/L) and "
             "iteration budgets",
    threads=1,  # Thousands of 50 x 200 mat-vecs: thread hand-offs cost more than the arithmetic on a loaded machine.
)
def l1_paradox(ctx: ClaimContext) -> ClaimResult:
    tau = ctx.pick(smoke=10.0, full=50.0)
    steps = ctx.pick(smoke=STEPS[1:], full=STEPS)
    seeds = [s % 2**31 for s in ctx.seeds(3)]
    start = time.perf_counter()
    rows = [run_seed(s, tau, steps, ctx.pick(smoke=1_000, full=2_000), ctx.pick(smoke=5_000, full=20_000))
            for s in seeds]
    seconds = time.perf_counter() - start

    passed = all(_criterion(r, "ngdm_ratio") for r in rows)
    control = Control("ISTA (proximal step) through the same regime criterion",
                      all(_criterion(r, "ista_ratio") for r in rows),
                      {"ista_ratio_at_largest_step": [r["steps"][steps[-1]]["ista_ratio"] for r in rows]})
    top = steps[-1]
    log_ratio = {k: [math.log10(r["steps"][top][k]) for r in rows] for k in ("ngdm_ratio", "ista_ratio")}
    cmp = paired_comparison(log_ratio["ngdm_ratio"], log_ratio["ista_ratio"], margin=0.0, lower_is_better=False)
    judged = [(j, p == m) for r in rows for j, p, m in _judge(r, "ngdm_ratio").values()]
    n_judged, n_right = sum(j for j, _ in judged), sum(j and ok for j, ok in judged)
    key = lambda e: f"{e:g}"  # noqa: E731
    metrics = dict(regs=list(REGS), steps=list(steps), tau=tau, num_seeds=len(seeds),
                   eta_c=[r["eta_c"] for r in rows], lasso_l1=[r["l1_lasso"] for r in rows],
                   lasso_support=[r["support"] for r in rows],
                   l1_ratio={key(e): [r["steps"][e]["ngdm_ratio"] for r in rows] for e in steps},
                   l1={key(e): [r["steps"][e]["ngdm_l1"] for r in rows] for e in steps},
                   predicted_l1={key(e): [r["steps"][e]["predicted_l1"] for r in rows] for e in steps},
                   regime_judged=n_judged, regime_correct=n_right, paired_log10_ratio_at_largest_step=cmp.as_metrics(),
                   seconds=round(seconds, 2))
    baseline = dict(l1_ratio={key(e): [r["steps"][e]["ista_ratio"] for r in rows] for e in steps},
                    ista_lr={key(e): rows[0]["steps"][e]["ista_lr"] for e in steps})
    below = steps[0] if steps[0] >= 0.01 else steps[1]
    headline = (f"L1(lambda=1)/L1(lambda=0.1): {fmt_mean_std(metrics['l1_ratio'][key(top)])} (NGDM, eta={top:g}) vs "
                f"{fmt_mean_std(metrics['l1_ratio'][key(below)])} (NGDM, eta={below:g}) vs "
                f"{fmt_mean_std(baseline['l1_ratio'][key(top)])} (ISTA), 3 seeds; predicted threshold eta_c = "
                f"{fmt_mean_std(metrics['eta_c'])}; regime right at {n_right}/{n_judged} judged (seed, step) pairs")
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
