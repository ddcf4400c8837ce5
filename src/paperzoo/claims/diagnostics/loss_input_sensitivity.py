"""Claim check for Sensitivity Analysis On Loss Landscape (Faroz, 2024).

The paper's finding (an empirical study): after training a small tanh network with the squared loss, the
derivatives of the loss with respect to the inputs, the second one above all, tell which input variables drive the
target, much as a Spearman rank correlation would; the first and third tell how strongly. We test the part that
can fail at small scale: the second-derivative feature ranking recovers the known importance order, about as well
as the standard baseline, permutation importance.

Setup, fixed before the first run. ``d = 10`` features ``x ~ U(-1, 1)``; target
``y = sum_j a_j g_j(x_j) + 0.1 eps``. Eight active shapes, each standardised to mean 0 and variance 1 under
``U(-1, 1)`` (from 200,000 fixed draws): monotone ``x``, ``tanh(2x)``, ``x^3``, ``exp(x)``; non-monotone
``x^2``, ``cos(pi x)``, ``|x|``, ``sin(pi x)``; two null features (``a_j = 0``). The true importance of feature
``j`` is its variance share ``a_j^2``: ``2^-r`` for rank ``r = 0..7``; each seed draws which shape gets which rank
and which column each feature takes. Model: MLP ``10-64-64-1`` with tanh, float64, full-batch Adam (lr 1e-2, 1,500
steps) on ``n_train = 1024`` points (smoke: width 32, 200 steps, 128 points); every score is measured on a
held-out split of the same size.

* Method: :func:`paperzoo.diagnostics.input_sensitivity.loss_input_derivatives` (orders 1-3), score of feature
  ``j`` = mean over held-out samples of the second derivative (``sensitivity_scores(second, "mean")``).
* Baseline: :func:`paperzoo.diagnostics.input_sensitivity.permutation_importance` (5 shuffles) on the same model
  and split.
* Agreement: Kendall tau-b (scipy) between each score and the true importance over the 10 features.

Criterion: over 3 seeds, the mean tau of the second-derivative ranking is >= 0.6, and it is not worse than
permutation importance's by more than 0.15 (mean paired difference ``tau_perm - tau_deriv <= 0.15``).
Control (no signal): the same pipeline on a model trained on shuffled targets (held-out targets shuffled too); the
same criterion must fail (its tau should be near 0). Reported, not tested: the taus of the first and third
derivatives (mean absolute value), and the tau between the second-derivative scores and ``|Spearman(x_j, y)|``,
the paper's comparison (over all features, where non-monotone shapes have Spearman near 0 yet matter).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.diagnostics.input_sensitivity import (loss_input_derivatives, permutation_importance,
                                                    sensitivity_scores)

D = 10
N_ACTIVE = 8
NOISE = 0.1
TAU_MIN = 0.6
MARGIN = 0.15
SHAPES = {
    "x": lambda x: x, "tanh(2x)": lambda x: torch.tanh(2 * x), "x^3": lambda x: x ** 3, "exp(x)": torch.exp,
    "x^2": lambda x: x ** 2, "cos(pi x)": lambda x: torch.cos(math.pi * x), "|x|": torch.abs,
    "sin(pi x)": lambda x: torch.sin(math.pi * x),
}
MONOTONE = ("x", "tanh(2x)", "x^3", "exp(x)")
CRITERION = (
    "y = sum_j a_j g_j(x_j) + 0.1 noise, 10 features U(-1,1) (4 monotone, 4 non-monotone unit-variance shapes with "
    "importance a_j^2 = 2^-r, 2 null), tanh MLP trained with the squared loss, 3 seeds: the mean over seeds of the "
    "Kendall tau between the held-out mean second loss-input derivative per feature and the true importance is "
    ">= 0.6, and the mean paired (permutation-importance tau - derivative tau) is <= 0.15. Control: the model "
    "trained on shuffled targets through the same criterion must fail."
)


def _standardised_shapes() -> dict:
    g = torch.Generator().manual_seed(12345)
    u = torch.rand(200_000, generator=g, dtype=torch.float64) * 2 - 1
    out = {}
    for name, fn in SHAPES.items():
        v = fn(u)
        out[name] = (fn, float(v.mean()), float(v.std()))
    return out


def _problem(seed: int, n: int, shapes: dict):
    """``(x_train, y_train, x_test, y_test, importance, names)`` for one seed (its own draws)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(N_ACTIVE, generator=g).tolist()  # shape of rank r
    cols = torch.randperm(D, generator=g).tolist()  # column of feature k (ranks 0..7, then the nulls)
    names = [None] * D
    amp = torch.zeros(D, dtype=torch.float64)
    for r in range(N_ACTIVE):
        names[cols[r]] = list(SHAPES)[order[r]]
        amp[cols[r]] = 2.0 ** (-r / 2)
    x = torch.rand(2 * n, D, generator=g, dtype=torch.float64) * 2 - 1
    y = NOISE * torch.randn(2 * n, generator=g, dtype=torch.float64)
    for j, name in enumerate(names):
        if name is not None:
            fn, mu, sd = shapes[name]
            y = y + amp[j] * (fn(x[:, j]) - mu) / sd
    y = y[:, None]
    return x[:n], y[:n], x[n:], y[n:], (amp ** 2).numpy(), names


def _train(x, y, seed: int, hidden: int, steps: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(D, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                                torch.nn.Tanh(), torch.nn.Linear(hidden, 1)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    return model.eval()


def _squared(out, t):
    return ((out - t) ** 2).mean()


def _tau(scores, truth) -> float:
    t = kendalltau(np.asarray(scores), truth).statistic
    return 0.0 if not np.isfinite(t) else float(t)


def _measure(seed: int, shapes: dict, n: int, hidden: int, steps: int, shuffled: bool) -> dict:
    xtr, ytr, xte, yte, importance, names = _problem(seed, n, shapes)
    if shuffled:
        g = torch.Generator().manual_seed(seed + 1)
        ytr, yte = ytr[torch.randperm(n, generator=g)], yte[torch.randperm(n, generator=g)]
    model = _train(xtr, ytr, seed, hidden, steps)
    der = loss_input_derivatives(model, _squared, xte, yte)
    s2 = sensitivity_scores(der.second, "mean").detach().numpy()
    s1 = sensitivity_scores(der.first, "mean_abs").detach().numpy()
    s3 = sensitivity_scores(der.third, "mean_abs").detach().numpy()
    perm = permutation_importance(model, _squared, xte, yte, n_repeats=5,
                                  generator=torch.Generator().manual_seed(seed + 2)).importance.numpy()
    spear = np.array([abs(spearmanr(xte[:, j].numpy(), yte[:, 0].numpy()).statistic) for j in range(D)])
    mono = [j for j, nm in enumerate(names) if nm in MONOTONE]
    with torch.no_grad():
        test_mse = float(_squared(model(xte), yte))
    return {"tau_second": _tau(s2, importance), "tau_perm": _tau(perm, importance),
            "tau_first": _tau(s1, importance), "tau_third": _tau(s3, importance),
            "tau_second_vs_abs_spearman": _tau(s2, spear),
            "tau_second_vs_abs_spearman_monotone": _tau(s2[mono], spear[mono]),
            "tau_abs_spearman_vs_truth": _tau(spear, importance), "test_mse": test_mse,
            "second_scores": [float(v) for v in s2], "importance": [float(v) for v in importance],
            "shapes": [nm or "null" for nm in names], "mode": der.mode}


def _criterion(rows: list[dict]) -> tuple[bool, float, float]:
    tau_d = float(np.mean([r["tau_second"] for r in rows]))
    gap = float(np.mean([r["tau_perm"] - r["tau_second"] for r in rows]))
    return (tau_d >= TAU_MIN and gap <= MARGIN), tau_d, gap


@claim(
    "loss-input-sensitivity",
    statement=("The second derivative of the squared loss with respect to each input of a trained tanh network "
               "ranks the inputs by their true influence on the target, about as well as permutation importance."),
    criterion=CRITERION,
    baseline="permutation importance (5 shuffles) on the same model and held-out split",
    threads=1,
)
def second_derivative_ranks_importance(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=128, full=1024)
    hidden = ctx.pick(smoke=32, full=64)
    steps = ctx.pick(smoke=200, full=1500)
    shapes = _standardised_shapes()
    seeds = [s % (2 ** 31) for s in ctx.seeds(3)]
    rows = [_measure(s, shapes, n, hidden, steps, shuffled=False) for s in seeds]
    ctrl_rows = [_measure(s, shapes, n, hidden, steps, shuffled=True) for s in seeds]
    passed, tau_d, gap = _criterion(rows)
    ctrl_passed, ctrl_tau, ctrl_gap = _criterion(ctrl_rows)

    def col(rs, k):
        return [r[k] for r in rs]

    control = Control("the same pipeline on a model trained on shuffled targets (no signal)", ctrl_passed,
                      {"tau_second": col(ctrl_rows, "tau_second"), "tau_perm": col(ctrl_rows, "tau_perm"),
                       "tau_second_mean": ctrl_tau, "gap_mean": ctrl_gap, "test_mse": col(ctrl_rows, "test_mse")})
    headline = (f"Kendall tau with true importance, 3 seeds: second derivative {fmt_mean_std(col(rows, 'tau_second'))}"
                f" vs permutation {fmt_mean_std(col(rows, 'tau_perm'))} (gate >= {TAU_MIN}, gap <= {MARGIN}; "
                f"gap {gap:.3f}); first {fmt_mean_std(col(rows, 'tau_first'))}, third "
                f"{fmt_mean_std(col(rows, 'tau_third'))}; shuffled-target control "
                f"{fmt_mean_std(col(ctrl_rows, 'tau_second'))}")
    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for r, c in zip(rows, ("C0", "C1", "C2")):
            s2 = np.asarray(r["second_scores"])
            ax.scatter(r["importance"], s2 / max(s2.max(), 1e-12), c=c, s=14)
        for r in ctrl_rows:
            s2 = np.asarray(r["second_scores"])
            ax.scatter(r["importance"], s2 / max(s2.max(), 1e-12), c="grey", marker="x", s=14)
        ax.set_xlabel("true importance a_j^2")
        ax.set_ylabel("mean d2 loss / dx_j^2 (scaled to max 1)")
        ax.set_title("colours: seeds; grey x: shuffled-target control", fontsize=8)
        ctx.save_figure(fig, "second_derivative_vs_importance")

    metrics = {k: col(rows, k) for k in ("tau_second", "tau_perm", "tau_first", "tau_third",
                                          "tau_second_vs_abs_spearman", "tau_second_vs_abs_spearman_monotone",
                                          "tau_abs_spearman_vs_truth", "test_mse")}
    metrics.update({"tau_second_mean": tau_d, "gap_perm_minus_second_mean": gap, "per_seed": rows,
                    "n_train": n, "hidden": hidden, "steps": steps})
    return ClaimResult.decide(passed, metrics=metrics,
                              baseline={"tau_perm_mean": float(np.mean(col(rows, "tau_perm"))),
                                        "tau_min": TAU_MIN, "margin": MARGIN},
                              headline=headline, control=control)
