"""Claim checks for Sinkhorn-Newton-Sparse (Tang et al., ICLR 2024): fewer iterations and less time than Sinkhorn.

Both checks run our :func:`~paperzoo.transport.sinkhorn_newton_sparse` with the paper's defaults as secondary
descriptions of its Algorithm 1 give them (``N_1 = 20`` Sinkhorn sweeps, target Hessian sparsity ``lambda = 2 / n``;
the paper's own pseudocode could not be read) and our :func:`~paperzoo.transport.sinkhorn_log`
with the same stopping rule (L1 marginal error <= 1e-9, checked every iteration), the same iteration budget,
float64, on three seeds.

* ``fewer_iterations_than_sinkhorn``: empirical distributions, uniform points in ``[0, 1]^2``, squared Euclidean
  cost normalised to max 1, ``reg = 0.005``.
* ``fewer_iterations_random_assignment``: the paper's random assignment problem, i.i.d. uniform costs in
  ``[0, 1]``, uniform marginals, ``eta = 1200`` (``reg = 1 / 1200``), ``n = 500`` as in the paper.

Discriminating control (both claims): the same criterion on the same problems at ``reg = 1`` (``eta = 1``, about
the largest cost). There every kernel entry lies in ``[e^-1, 1]``, so Sinkhorn contracts fast and reaches the
tolerance in a handful of sweeps, and the plan (hence the Hessian) is dense: theory predicts no speed-up from
sparse Newton steps, and a criterion that SNS passed there too would not measure the paper's mechanism.

Issue 8 rework: the measured comparison (problems, solvers, stopping rule, budgets, timing, per-seed criterion)
is unchanged; the control and a headline were added, and the criterion text names the control.
"""

from __future__ import annotations

import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.data.point_clouds import random_point_clouds
from paperzoo.transport import sinkhorn_log, sinkhorn_newton_sparse

TOL = 1e-9
CONTROL_REG = 1.0
CRITERION = (
    "On every one of 3 seeds, both solvers reach L1 marginal error <= 1e-9 within the budget, SNS's total "
    "iterations (Sinkhorn warm-up + Newton steps) are at most 1/10 of Sinkhorn's, and SNS's wall time is lower "
    "than Sinkhorn's (best of 2 timed runs each). Control: the same criterion on the same problems at reg = 1 "
    "(eta = 1, a dense plan on which Sinkhorn converges in few sweeps, where theory predicts no speed-up); it must "
    "fail."
)
BASELINE = ("paperzoo.transport.sinkhorn_log (log-domain Sinkhorn), same problem, stopping rule, float64 and "
            "iteration budget")


def _timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def _solve_pair(a, b, M, reg: float, budget: int, repeats: int):
    """Run SNS and Sinkhorn on one problem; return their result rows and results."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-convergence is recorded in the metrics instead
        sns, t_sns = _timed(lambda: sinkhorn_newton_sparse(a, b, M, reg, tol=TOL, max_iter=budget), repeats)
        sk, t_sk = _timed(lambda: sinkhorn_log(a, b, M, reg, tol=TOL, max_iter=budget, check_every=1), repeats)
    sns_row = dict(iterations=sns.n_iter, wall_time_s=t_sns, marginal_error=sns.marginal_error,
                   converged=sns.converged, n_sinkhorn=sns.n_sinkhorn, n_newton=sns.n_newton, n_cg=sns.n_cg)
    sk_row = dict(iterations=sk.n_iter, wall_time_s=t_sk, marginal_error=sk.marginal_error,
                  converged=sk.converged, hit_budget=sk.n_iter >= budget and not sk.converged)
    return sns_row, sk_row, (sns, sk)


def _seed_passes(s: dict, k: dict) -> bool:
    return bool(s["converged"] and k["converged"] and 10 * s["iterations"] <= k["iterations"]
                and s["wall_time_s"] < k["wall_time_s"])


def _compare(ctx: ClaimContext, problems, reg: float, budget: int, setting: dict, repeats: int) -> ClaimResult:
    setting = dict(setting, torch_threads=1)  # the claims run with threads=1 (see their decorators)
    sns_rows, sk_rows, histories = [], [], []
    for a, b, M in problems:
        sns_row, sk_row, pair = _solve_pair(a, b, M, reg, budget, repeats)
        sns_rows.append(sns_row)
        sk_rows.append(sk_row)
        histories.append(pair)
    per_seed_pass = [_seed_passes(s, k) for s, k in zip(sns_rows, sk_rows)]
    passed = all(per_seed_pass)

    # The control: the same criterion, same problems and budget, at reg = 1 (timed once: it takes milliseconds).
    control_rows = [_solve_pair(a, b, M, CONTROL_REG, budget, 1)[:2] for a, b, M in problems]
    control_pass = [_seed_passes(s, k) for s, k in control_rows]
    control = Control(f"the same criterion at reg = {CONTROL_REG:g} (dense plan, fast Sinkhorn)", all(control_pass),
                      dict(reg=CONTROL_REG, per_seed_pass=control_pass,
                           sns_iterations=[s["iterations"] for s, _ in control_rows],
                           sinkhorn_iterations=[k["iterations"] for _, k in control_rows],
                           sns_wall_time_s=[s["wall_time_s"] for s, _ in control_rows],
                           sinkhorn_wall_time_s=[k["wall_time_s"] for _, k in control_rows]))

    def collect(rows, extra=()):
        keys = ["iterations", "wall_time_s", "marginal_error", "converged", *extra]
        return {key: [row[key] for row in rows] for key in keys}

    metrics = dict(setting, iteration_budget=budget, tol=TOL, seeds=ctx.seeds(3), per_seed_pass=per_seed_pass,
                   iteration_ratio=[k["iterations"] / max(1, s["iterations"]) for s, k in zip(sns_rows, sk_rows)],
                   time_ratio=[k["wall_time_s"] / s["wall_time_s"] for s, k in zip(sns_rows, sk_rows)],
                   **collect(sns_rows, ("n_sinkhorn", "n_newton", "n_cg")))
    baseline = collect(sk_rows, ("hit_budget",))
    converged = sum(s["converged"] and k["converged"] for s, k in zip(sns_rows, sk_rows))
    headline = (f"iterations {fmt_mean_std([s['iterations'] for s in sns_rows])} (SNS) vs "
                f"{fmt_mean_std([k['iterations'] for k in sk_rows])} (Sinkhorn), wall time "
                f"{fmt_mean_std([s['wall_time_s'] for s in sns_rows])} s vs "
                f"{fmt_mean_std([k['wall_time_s'] for k in sk_rows])} s, {len(problems)} seeds, both converged on "
                f"{converged}/{len(problems)} (pass: <= 1/10 the iterations and faster on every seed); control reg = "
                f"{CONTROL_REG:g}: {fmt_mean_std(control.metrics['sns_iterations'])} vs "
                f"{fmt_mean_std(control.metrics['sinkhorn_iterations'])} iterations")
    _figure(ctx, histories[0], {k: setting[k] for k in ("n", "reg")})
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)


def _figure(ctx: ClaimContext, pair, setting: dict) -> None:
    if ctx.figure_dir is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sns, sk = pair
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(sk.history_iter.numpy(), sk.error_history.numpy(), label="Sinkhorn (log domain)")
    ax.semilogy(sns.history_iter.numpy(), sns.error_history.numpy(), label="Sinkhorn-Newton-Sparse")
    ax.axhline(TOL, color="gray", lw=0.8, ls="--")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("iteration (Sinkhorn sweeps + Newton steps)")
    ax.set_ylabel("L1 marginal error")
    ax.set_title(", ".join(f"{k}={v}" for k, v in setting.items()), fontsize=8)
    ax.legend()
    ctx.save_figure(fig, "error-vs-iteration")


@claim(
    "sinkhorn-newton-sparse",
    statement=("At small entropic regularisation, Sinkhorn-Newton-Sparse reaches a given marginal error in orders "
               "of magnitude fewer iterations, and less wall time, than the Sinkhorn algorithm; checked here on "
               "empirical distributions (2-D point clouds)."),
    criterion=CRITERION,
    baseline=BASELINE,
    # Both solvers are timed on one thread: on a shared machine, torch's thread pool makes small kernels up to
    # 100x slower under contention, which would measure the machine's load instead of the algorithms.
    threads=1,
)
def fewer_iterations_than_sinkhorn(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=100, full=500)
    reg = 0.005
    problems = []
    for seed in ctx.seeds(3):
        p = random_point_clouds(n, generator=torch.Generator().manual_seed(seed))
        problems.append((p.a, p.b, p.M))
    setting = dict(problem="uniform points in [0,1]^2, squared Euclidean cost / max", n=n, reg=reg)
    return _compare(ctx, problems, reg, budget=20_000, setting=setting, repeats=2)


@claim(
    "sinkhorn-newton-sparse",
    statement=("On the paper's random assignment problem (i.i.d. uniform costs, eta = 1200), Sinkhorn-Newton-Sparse "
               "reaches a given marginal error in orders of magnitude fewer iterations, and less wall time, than "
               "the Sinkhorn algorithm."),
    criterion=CRITERION,
    baseline=BASELINE,
    threads=1,  # solvers timed on one thread, as in fewer_iterations_than_sinkhorn
)
def fewer_iterations_random_assignment(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=50, full=500)
    reg = 1 / 1200
    problems = []
    for seed in ctx.seeds(3):
        gen = torch.Generator().manual_seed(seed)
        M = torch.rand(n, n, generator=gen, dtype=torch.float64)
        a = torch.full((n,), 1 / n, dtype=torch.float64)
        problems.append((a, a.clone(), M))
    setting = dict(problem="random assignment, iid U[0,1] costs", n=n, reg=reg)
    budget = ctx.pick(smoke=5_000, full=100_000)  # smoke: seconds, not the paper's 56k-iteration Sinkhorn run
    return _compare(ctx, problems, reg, budget=budget, setting=setting, repeats=1)
