"""Claim check for Stochastic Hessian Fittings with Lie Groups (Li, 2024): linear convergence on Lie groups.

The paper's prediction: fitting :math:`P \\approx H^{-1}` from Hessian-vector products by minimising
:math:`\\mathbb E[h^\\top P h + v^\\top P^{-1} v]` converges linearly with gradient descent on the Lie groups
:math:`GL(n)` and invertible upper-triangular matrices, and only sublinearly with gradient descent in the
Euclidean space of :math:`P`.

Setup, fixed before the first run: :math:`d = 10`, :math:`H` a random rotation of eigenvalues log-spaced in
:math:`[1, 100]`, exact pairs :math:`(v, Hv)` with one :math:`v \\sim N(0, I)` per iteration, :math:`P_0 = I`,
float64; step sizes :math:`\\mu \\in \\{0.1, 0.3, 0.9\\}` for every method (best by median final error); T = 1,000
(smoke) / 3,000 (full) iterations; 3 seeds (rotation and probes). Error :math:`e_t = \\|PH - I\\|_F/\\sqrt d`.

Issue 8 rework (measurement unchanged). The step size was chosen on the very seeds it was then judged on; it is
now selected per method by :func:`paperzoo.core.evidence.tune` on 2 *tuning* seeds (median final error), the
grid extended past a winning lower edge (an upper edge is bounded by the method's domain, mu <= 1, and then
reported), and the criterion is read on 3 fresh *test* seeds (their own rotations and probes). The discriminating
control is the Euclidean baseline through the same linear-convergence criterion; it must fail.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, tune
from paperzoo.data.digits import single_thread
from paperzoo.optim.lie_group import LieGroupHessianFitter
from paperzoo.optim.rates import fit_linear_rate

D, KAPPA = 10, 100.0
LRS = (0.1, 0.3, 0.9)
LR_BOUNDS = (1e-3, 1.0)  # the fitter's domain: mu in (0, 1]
NUM_TUNE, NUM_TEST = 2, 3
METHODS = ("GL", "triu", "euclidean")
FLOOR = 1e-10


def _errors(method, lr, seed, steps):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    H = (Q * torch.logspace(0, math.log10(KAPPA), D, dtype=torch.float64)) @ Q.T
    fitter = LieGroupHessianFitter(D, method, lr, dtype=torch.float64)
    eye = torch.eye(D, dtype=torch.float64)
    errors = [float(torch.linalg.matrix_norm(fitter.P @ H - eye) / math.sqrt(D))]
    for _ in range(steps):
        v = torch.randn(D, generator=g, dtype=torch.float64)
        fitter.update(v, H @ v)
        errors.append(float(torch.linalg.matrix_norm(fitter.P @ H - eye) / math.sqrt(D)))
    return errors


def _rate(errors, steps):
    """Per-iteration contraction and R^2 of log e_t on t over [T/10, first t with e_t < FLOOR or T]."""
    end = next((t for t, e in enumerate(errors) if e < FLOOR), len(errors) - 1)
    start = min(steps // 10, max(end - 2, 0))
    t = torch.arange(start, end + 1, dtype=torch.float64)
    y = torch.tensor(errors[start:end + 1], dtype=torch.float64).clamp_min(1e-300)
    logy = y.log()
    slope_fit = torch.linalg.lstsq(torch.stack([t, torch.ones_like(t)], 1), logy.unsqueeze(1)).solution
    resid = logy - (slope_fit[0] * t + slope_fit[1])
    r2 = 1 - float((resid**2).sum() / ((logy - logy.mean()) ** 2).sum().clamp_min(1e-300))
    return fit_linear_rate(t, y), r2


@claim(
    "lie-group-hessian-fit",
    statement="Stochastic Hessian fitting by gradient descent on the Lie groups GL(n) and upper-triangular "
              "matrices converges linearly to the inverse Hessian, while gradient descent on P in Euclidean "
              "space converges only sublinearly.",
    criterion="d = 10, kappa = 100, exact Hessian-vector products, one probe per iteration, mu per method tuned on "
              "2 tuning seeds by median final error (grid {0.1, 0.3, 0.9} extended past a winning edge within "
              "(0, 1]), T = 1,000 (smoke) / 3,000 (full), judged on 3 fresh test seeds, error "
              "e_t = ||PH - I||_F / sqrt(d). Passes if for GL and triu on every test seed: e_T / e_0 <= 1e-3 and the "
              "least-squares fit of log e_t on t over [T/10, first t with e_t < 1e-10 or T] has a contraction "
              "rho < 1 with R^2 >= 0.9 (linear convergence); AND the Euclidean method's e_T is >= 10x the larger "
              "of GL's and triu's e_T on every test seed. Control: the Euclidean method through the same "
              "linear-convergence criterion; it must fail.",
    baseline="Euclidean gradient descent on P (normalised step of spectral length mu * lambda_min(P), the largest "
             "that keeps P positive definite), same probes, step grid and budget",
    timeout={"smoke": 120.0, "full": 600.0},
)
def lie_group_fit_converges_linearly(ctx: ClaimContext) -> ClaimResult:
    steps = ctx.pick(smoke=1000, full=3000)
    seeds = ctx.seeds(NUM_TUNE + NUM_TEST)
    tune_seeds, test_seeds = seeds[:NUM_TUNE], seeds[NUM_TUNE:]
    start = time.perf_counter()
    with single_thread():
        def evaluator(method):
            return lambda lr: statistics.median(_errors(method, lr, s, steps)[-1] for s in tune_seeds)

        sel = tune({m: evaluator(m) for m in METHODS}, LRS, bounds=LR_BOUNDS)
        runs = {m: (sel[m].best, [_errors(m, sel[m].best, s, steps) for s in test_seeds]) for m in METHODS}
    summary = {}
    for method, (lr, errs) in runs.items():
        rates = [_rate(e, steps) for e in errs]
        summary[method] = dict(best_lr=lr, selection=sel[method].as_metrics(), final_error=[e[-1] for e in errs],
                               initial_error=[e[0] for e in errs],
                               contraction_per_iter=[r for r, _ in rates], r2=[q for _, q in rates],
                               error_at=[{str(t): e[t] for t in (0, steps // 10, steps // 2, steps)} for e in errs])

    def linear(m):
        return all(summary[m]["final_error"][i] / summary[m]["initial_error"][i] <= 1e-3
                   and summary[m]["contraction_per_iter"][i] < 1 and summary[m]["r2"][i] >= 0.9
                   for i in range(len(test_seeds)))

    lie_ok = linear("GL") and linear("triu")
    gap_ok = all(summary["euclidean"]["final_error"][i]
                 >= 10 * max(summary["GL"]["final_error"][i], summary["triu"]["final_error"][i])
                 for i in range(len(test_seeds)))
    control = Control("the Euclidean method through the same linear-convergence criterion", linear("euclidean"),
                      dict(final_error=summary["euclidean"]["final_error"],
                           contraction_per_iter=summary["euclidean"]["contraction_per_iter"],
                           r2=summary["euclidean"]["r2"]))
    metrics = dict(steps=steps, d=D, kappa=KAPPA, lr_grid=list(LRS), lr_bounds=list(LR_BOUNDS),
                   num_tune=NUM_TUNE, num_test=NUM_TEST, GL=summary["GL"], triu=summary["triu"],
                   linear_convergence=lie_ok, euclidean_gap=gap_ok, seconds=round(time.perf_counter() - start, 2))
    edge = [m for m in METHODS if sel[m].at_edge]
    headline = (f"final ||PH - I||_F/sqrt(d) after {steps:,} fits: {fmt_mean_std(summary['GL']['final_error'])} "
                f"(GL, mu {sel['GL'].best:g}), {fmt_mean_std(summary['triu']['final_error'])} (triu, mu "
                f"{sel['triu'].best:g}) vs {fmt_mean_std(summary['euclidean']['final_error'])} (Euclidean, mu "
                f"{sel['euclidean'].best:g}), {NUM_TEST} test seeds; GL/triu linear: {lie_ok}"
                + (f"; mu at a bound: {', '.join(edge)}" if edge else ""))
    if ctx.figure_dir is not None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for method, (lr, errs) in runs.items():
            ax.semilogy(errs[0], label=f"{method} (mu={lr})")
        ax.set_xlabel("iteration")
        ax.set_ylabel("||PH - I||_F / sqrt(d)")
        ax.legend()
        ctx.save_figure(fig, "fitting_error")
        plt.close(fig)
    return ClaimResult.decide(lie_ok and gap_ok, metrics=metrics, baseline=dict(euclidean=summary["euclidean"]),
                              headline=headline, control=control)
