"""Claim check for Gradient-Normalized Smoothness for Optimization with Approximate Hessians (2025).

Setup, fixed before the first run: ridge-regularised logistic regression (mu = 1e-3) on
:func:`paperzoo.data.regression.logistic_classification` with n = 500 (smoke 200), d = 20, feature covariance of
condition number 1e3, generating weights of norm 3; start x0 of norm 20 in a random direction (far from the
optimum). Gradient-regularized Newton (:func:`paperzoo.optim.solve_grad_regularized_newton`, gamma0 = 1) with
three Hessians: exact, the fixed Boehning bound X^T X / (4n) + mu I, and the empirical Fisher + mu I. Baselines:
gradient descent with Armijo backtracking (halving from step 1/L, L = ||X||^2/(4n) + mu, fresh at every iteration),
and pure Newton (unit step, no regularization). Tolerance ||grad f|| <= 1e-8. 3 seeds.

Issue 8 rework (measurement unchanged, nothing is tuned: GRN's gamma is adaptive and Armijo GD sets its own
step). The "GD needs >= 10x the iterations" half is now a paired comparison over the 3 problem instances of
log10 iterations with margin 1 (tenfold) beyond two standard errors (it was a ratio of seed means). The
discriminating control is GRN without its key ingredient, the gradient regularisation: pure Newton with unit
steps, through the same criterion (converges within 100 iterations on every seed and >= 10x fewer iterations than
GD); from the far start it must fail.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.data.regression import logistic_classification
from paperzoo.optim.grad_regularized_newton import empirical_fisher, solve_grad_regularized_newton

MU, TOL, NEWTON_CAP = 1e-3, 1e-8, 100


def _problem(seed, n):
    g = torch.Generator().manual_seed(seed)
    data = logistic_classification(n, 20, condition=1e3, scale=3.0, generator=g)
    X, y = data.X, data.y

    def losses(w):
        u = X @ w
        return torch.nn.functional.softplus(u) - y * u + 0.5 * MU * w.square().sum()

    def f(w):
        return losses(w).mean()

    x0 = torch.randn(20, generator=g, dtype=torch.float64)
    return X, y, f, losses, 20.0 * x0 / x0.norm()


def _gd_armijo(f, X, y, x, L, max_iter):
    n = X.shape[0]
    for k in range(max_iter + 1):
        fx = f(x)
        g = X.T @ (torch.sigmoid(X @ x) - y) / n + MU * x  # closed form: autograd would dominate the runtime
        if float(g.norm()) <= TOL:
            return k, True
        step = 1.0 / L
        while float(f(x - step * g)) > float(fx) - 0.5 * step * float(g.square().sum()) and step > 1e-12:
            step *= 0.5
        x = x - step * g
    return max_iter, False


def _pure_newton(f, x, max_iter):
    for k in range(max_iter + 1):
        xr = x.requires_grad_(True)
        (g,) = torch.autograd.grad(f(xr), xr)
        x = x.detach()
        if not bool(torch.isfinite(g).all()):
            return k, False
        if float(g.norm()) <= TOL:
            return k, True
        H = torch.autograd.functional.hessian(f, x)
        x = x - torch.linalg.solve(H, g)
        if not bool(torch.isfinite(x).all()):
            return k, False
    return max_iter, False


@claim(
    "grad-norm-smoothness",
    statement="Gradient-regularized Newton with exact or approximate Hessians (adaptive gradient-normalized "
              "smoothness) converges globally and fast on logistic regression from a far start, where gradient "
              "descent needs far more iterations.",
    criterion="Ridge logistic regression (mu 1e-3), n=500 (smoke 200), d=20, feature condition number 1e3, "
              "||x0||=20, 3 seeds, tolerance ||grad f|| <= 1e-8. Passes if GRN with each of the exact, Boehning-bound "
              "and empirical-Fisher Hessians reaches the tolerance within 100 iterations on every seed, and Armijo "
              "gradient descent (censored at its budget of 2,000 smoke / 20,000 full iterations) needs more "
              "iterations than exact-Hessian GRN by a paired log10 margin of 1 (tenfold) beyond 2 SE over the seeds. "
              "Control: pure Newton (unit step, GRN without the gradient regularisation) through the same criterion "
              "(within 100 iterations on every seed, paired tenfold fewer than GD); it must fail.",
    baseline="Gradient descent with Armijo backtracking (same tolerance); pure Newton (unit step) reported",
)
def logistic_far_start(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=200, full=500)
    gd_budget = ctx.pick(smoke=2000, full=20000)
    start = time.perf_counter()
    rows = []
    for seed in ctx.seeds(3):
        X, y, f, losses, x0 = _problem(seed, n)
        boehning = X.T @ X / (4 * n) + MU * torch.eye(20, dtype=X.dtype)
        fisher = empirical_fisher(losses)
        hessians = {"exact": "exact", "boehning": lambda x: boehning,
                    "fisher": lambda x: fisher(x) + MU * torch.eye(20, dtype=X.dtype)}
        row = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, hess in hessians.items():
                res = solve_grad_regularized_newton(f, x0, hessian=hess, max_iter=NEWTON_CAP, tol=TOL)
                row[f"{name}_iters"] = res.n_iter if res.converged else NEWTON_CAP + 1
                row[f"{name}_converged"] = res.converged
                row[f"{name}_solves"] = res.n_solves
        L = float(torch.linalg.matrix_norm(X, ord=2)) ** 2 / (4 * n) + MU
        row["gd_iters"], row["gd_converged"] = _gd_armijo(f, X, y, x0.clone(), L, gd_budget)
        row["newton_iters"], row["newton_converged"] = _pure_newton(f, x0.clone(), NEWTON_CAP)
        rows.append(row)
    seconds = time.perf_counter() - start

    def mean(key):
        return sum(float(r[key]) for r in rows) / len(rows)

    def log_iters(key):
        return [math.log10(max(float(r[key]), 1.0)) for r in rows]

    all_conv = all(r[f"{h}_converged"] for r in rows for h in ("exact", "boehning", "fisher"))
    ratio = mean("gd_iters") / max(mean("exact_iters"), 1.0)
    fewer = paired_comparison(log_iters("exact_iters"), log_iters("gd_iters"), margin=1.0)
    newton_fewer = paired_comparison(log_iters("newton_iters"), log_iters("gd_iters"), margin=1.0)
    newton_conv = all(r["newton_converged"] for r in rows)
    control = Control("pure Newton (unit step, no gradient regularisation) through the same criterion",
                      newton_conv and newton_fewer.wins,
                      dict(converged=[r["newton_converged"] for r in rows],
                           iters=[r["newton_iters"] for r in rows], paired_log10_vs_gd=newton_fewer.as_metrics()))
    headline = (f"iterations to ||grad|| <= 1e-8: {fmt_mean_std([r['exact_iters'] for r in rows])} (GRN exact), "
                f"{fmt_mean_std([r['boehning_iters'] for r in rows])} (Boehning), "
                f"{fmt_mean_std([r['fisher_iters'] for r in rows])} (Fisher) vs "
                f"{fmt_mean_std([r['gd_iters'] for r in rows])} (Armijo GD), 3 seeds, paired log10 gain "
                f"{fewer.diff_mean:.2f} ± {fewer.diff_se:.2f} SE (margin 1); pure Newton converged on "
                f"{sum(r['newton_converged'] for r in rows)}/3")
    return ClaimResult.decide(
        all_conv and fewer.wins,
        metrics={"iters": mean("exact_iters"), "boehning_iters": mean("boehning_iters"),
                 "fisher_iters": mean("fisher_iters"), "all_converged": all_conv, "gd_over_grn": ratio,
                 "paired_log10_iters_vs_gd": fewer.as_metrics(), "per_seed": rows, "n": n, "seconds": seconds},
        baseline={"iters": mean("gd_iters"), "gd_converged_all": all(r["gd_converged"] for r in rows),
                  "newton_iters": mean("newton_iters"),
                  "newton_converged": [r["newton_converged"] for r in rows]},
        headline=headline, control=control,
    )
