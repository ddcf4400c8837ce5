"""Claim check for PCA of high dimensional random walks with comparison to neural network training (Antognini,
Sohl-Dickstein, 2018).

The paper's prediction: the PCA of the ``T`` positions of a random walk in ``D >> T`` dimensions puts the fraction
``rho_k`` (``-> 6 / (pi^2 k^2)``) of the variance in PC ``k``, and the walk projected on PC ``k`` is the cosine of
``k`` half-periods (Lissajous curves); training trajectories of neural networks show the same signature (a random
walk, with drift).

Setup and criterion, fixed before the first run (3 seeds each):

(A) Gaussian random walk, D = 10,000, T = 1,000 positions (smoke: T = 100). Pass: for every seed and k = 1..5 the
    measured ratio (:func:`paperzoo.diagnostics.trajectory_pca.trajectory_pca`) is within 5% (relative) of the
    finite-T prediction (:func:`~paperzoo.diagnostics.trajectory_pca.random_walk_pca_prediction`), and the
    Lissajous correlation (:func:`~paperzoo.diagnostics.trajectory_pca.lissajous_correlation`) of PCs 1..5 is
    >= 0.9.
(B) SGD training of an MLP 64-32-10 (ReLU, 2,410 parameters) on paperzoo.data digits (standardised, 70% train),
    cross-entropy, batch 32, constant lr 0.05, no momentum or weight decay, initialised as nn.Linear's default
    (uniform, bound 1/sqrt(fan_in)). After a burn-in of 1,000 steps (smoke 200) the flattened parameter vector is
    recorded every 5 steps, T = 400 records (smoke 60). The random-walk signature: the OLS slope of log rho_k on log k over k = 1..10; per seed one slope;
    pass if the 95% t-interval (2 df) of the mean slope over the 3 seeds lies inside [-2.5, -1.5].
Verdict: reproduced iff (A) and (B) pass and the control fails.

Control (the regimes where the theory predicts no random-walk signature), each measured as in (A) and (B) with
D = 10,000 and the T of (A): (i) an Ornstein-Uhlenbeck process sampled at 10 relaxation times (stationary AR(1)
with coefficient exp(-10)): the PCA of nearly independent points is flat; (ii) a drift-dominated walk, a random
walk plus a straight line whose end-to-end length is 5x the walk's RMS displacement: PC 1 takes ~97% of the
variance. The control passes (and the verdict would be inconclusive) if either trajectory passes the (A) test or
the (B) slope test.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from torch import nn

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.data.digits import digits_split
from paperzoo.diagnostics.trajectory_pca import lissajous_correlation, random_walk_pca_prediction, trajectory_pca

D_WALK = 10_000
K_TEST = 5
REL_TOL = 0.05
LISSAJOUS_MIN = 0.9
K_FIT = 10
SLOPE_BAND = (-2.5, -1.5)
CRITERION = (
    "3 seeds. (A) Gaussian random walk, D = 10,000, T = 1,000: for every seed and k = 1..5 the PCA explained-"
    "variance ratio is within 5% (relative) of the finite-T prediction (eigenvalues of the centred min(t, s) "
    "matrix) and the |correlation| of the PC-k projection with cos(pi k (t + 1/2) / T) is >= 0.9. (B) SGD (batch "
    "32, lr 0.05) on an MLP 64-32-10 on digits, parameters recorded every 5 steps after 1,000 burn-in steps, T = "
    "400: the 95% t-interval over seeds of the OLS slope of log rho_k vs log k (k = 1..10) lies inside [-2.5, "
    "-1.5]. Control: an OU process sampled at 10 relaxation times and a drift-dominated walk (line 5x the RMS "
    "displacement), D = 10,000, through (A) and the (B) slope test; each must fail both."
)


def _slope(ratios: torch.Tensor) -> float:
    k = np.arange(1, len(ratios) + 1)
    return float(np.polyfit(np.log(k), np.log(ratios.numpy()), 1)[0])


def _interval(values: list[float]) -> tuple[float, float, float]:
    m, s = float(np.mean(values)), float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.975, len(values) - 1)) * s / math.sqrt(len(values))
    return m, m - half, m + half


def _measure(positions: torch.Tensor, pred: torch.Tensor) -> dict:
    pca = trajectory_pca(positions, K_FIT)
    ratios = pca.explained_variance_ratio
    corr = lissajous_correlation(pca.projections[:, :K_TEST])
    rel = (ratios[:K_TEST] / pred[:K_TEST] - 1).abs()
    return {"ratios": ratios.tolist(), "rel_error": rel.tolist(), "lissajous": corr.tolist(),
            "slope": _slope(ratios),
            "test_a": bool((rel <= REL_TOL).all()) and bool((corr >= LISSAJOUS_MIN).all())}


def _walk(T: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(T, D_WALK, generator=g, dtype=torch.float64).cumsum(0)


def _sparse_ou(T: int, g: torch.Generator) -> torch.Tensor:
    a = math.exp(-10.0)  # one record every 10 relaxation times of a unit-variance OU process
    x = torch.empty(T, D_WALK, dtype=torch.float64)
    x[0] = torch.randn(D_WALK, generator=g, dtype=torch.float64)
    noise = torch.randn(T, D_WALK, generator=g, dtype=torch.float64) * math.sqrt(1 - a * a)
    for r in range(1, T):
        x[r] = a * x[r - 1] + noise[r]
    return x


def _drift_walk(T: int, g: torch.Generator) -> torch.Tensor:
    u = torch.randn(D_WALK, generator=g, dtype=torch.float64)
    v = u / u.norm() * 5.0 * math.sqrt(D_WALK / (T - 1))  # |v| (T - 1) = 5 sqrt(D (T - 1))
    return _walk(T, g) + torch.arange(T, dtype=torch.float64)[:, None] * v


def _sgd_trajectory(seed: int, burn_in: int, T: int, every: int) -> torch.Tensor:
    """Plain SGD on a 64-32-10 ReLU MLP over one flat parameter vector (so a record is a copy of it)."""
    g = torch.Generator().manual_seed(seed)
    data = digits_split(0.3, generator=g)
    shapes = [(32, 64), (32,), (10, 32), (10,)]
    fan_in = [64, 64, 32, 32]
    # nn.Linear's default initialisation (uniform with bound 1/sqrt(fan_in)), drawn from our own generator
    theta = torch.cat([(torch.rand(math.prod(s), generator=g) * 2 - 1) / math.sqrt(f)
                       for s, f in zip(shapes, fan_in)])
    sizes = [math.prod(s) for s in shapes]
    n = len(data.train_y)
    records = []
    for step in range(burn_in + T * every):
        idx = torch.randint(0, n, (32,), generator=g)
        theta.requires_grad_(True)
        W1, b1, W2, b2 = (p.view(s) for p, s in zip(theta.split(sizes), shapes))
        logits = torch.relu(data.train_x[idx] @ W1.T + b1) @ W2.T + b2
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, data.train_y[idx]), theta)
        theta = (theta - 0.05 * grad).detach()
        if step + 1 > burn_in and (step + 1 - burn_in) % every == 0:
            records.append(theta.to(torch.float64))
    return torch.stack(records)


@claim(
    "random-walk-pca",
    statement=("The PCA of a high-dimensional random walk puts a fraction ~6/(pi^2 k^2) of the variance in PC k and "
               "its projections are Lissajous cosines; SGD training trajectories of a neural network show the same "
               "1/k^2 signature."),
    criterion=CRITERION,
    baseline="the exact finite-T random-walk prediction (eigenvalues of the centred min(t, s) matrix) and slope -2",
    threads=1,
)
def random_walk_pca_spectrum(ctx: ClaimContext) -> ClaimResult:
    T_walk = ctx.pick(smoke=100, full=1000)
    burn_in, T_sgd, every = ctx.pick(smoke=(200, 60, 5), full=(1000, 400, 5))
    pred = random_walk_pca_prediction(T_walk, K_FIT).explained_variance_ratio
    pred_sgd = random_walk_pca_prediction(T_sgd, K_FIT).explained_variance_ratio
    seeds = ctx.seeds(3)
    walks, ous, drifts, sgds = [], [], [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        walks.append(_measure(_walk(T_walk, g), pred))
        ous.append(_measure(_sparse_ou(T_walk, g), pred))
        drifts.append(_measure(_drift_walk(T_walk, g), pred))
        sgds.append(_measure(_sgd_trajectory(seed, burn_in, T_sgd, every), pred_sgd))

    def slope_test(rows) -> tuple[bool, tuple[float, float, float]]:
        m, lo, hi = _interval([r["slope"] for r in rows])
        return SLOPE_BAND[0] <= lo and hi <= SLOPE_BAND[1], (m, lo, hi)

    pass_a = all(r["test_a"] for r in walks)
    pass_b, ci_sgd = slope_test(sgds)
    _, ci_walk = slope_test(walks)
    ou_b, ci_ou = slope_test(ous)
    drift_b, ci_drift = slope_test(drifts)
    ou_a, drift_a = all(r["test_a"] for r in ous), all(r["test_a"] for r in drifts)
    control = Control(
        "an OU process sampled at 10 relaxation times and a drift-dominated walk (line 5x the RMS displacement), "
        "D = 10,000, through the (A) test and the (B) slope test",
        ou_a or ou_b or drift_a or drift_b,
        {"ou_test_a": ou_a, "ou_slope_ci": list(ci_ou), "ou_ratio_1": [r["ratios"][0] for r in ous],
         "drift_test_a": drift_a, "drift_slope_ci": list(ci_drift),
         "drift_ratio_1": [r["ratios"][0] for r in drifts]})
    worst_rel = max(max(r["rel_error"]) for r in walks)
    min_corr = min(min(r["lissajous"]) for r in walks)
    headline = (f"random walk D = {D_WALK}, T = {T_walk}: PC1 {fmt_mean_std([r['ratios'][0] for r in walks])} vs "
                f"predicted {float(pred[0]):.4f}, worst rel. miss k<=5 {worst_rel:.1%} (tol 5%), min Lissajous corr "
                f"{min_corr:.3f}; SGD MLP slope {ci_sgd[0]:.2f} [{ci_sgd[1]:.2f}, {ci_sgd[2]:.2f}] vs -2 "
                f"(PC1 {fmt_mean_std([r['ratios'][0] for r in sgds])}); controls: OU slope {ci_ou[0]:.2f}, "
                f"drift slope {ci_drift[0]:.2f} (PC1 {np.mean([r['ratios'][0] for r in drifts]):.3f})")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k = np.arange(1, K_FIT + 1)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.loglog(k, pred.numpy(), "k--", label=f"random-walk prediction (T = {T_walk})")
        for rows, name, c in ((walks, "random walk", "C0"), (sgds, "SGD MLP (digits)", "C1"),
                              (ous, "OU, sparse sampling", "C2"), (drifts, "drift-dominated", "C3")):
            ax.loglog(k, np.mean([r["ratios"] for r in rows], 0), "o-", c=c, ms=3, label=name)
        ax.set_xlabel("PC k")
        ax.set_ylabel("explained variance ratio")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "spectra")

    return ClaimResult.decide(
        pass_a and pass_b,
        metrics={"T_walk": T_walk, "D_walk": D_WALK, "T_sgd": T_sgd, "n_params": 64 * 32 + 32 + 32 * 10 + 10,
                 "walk_test_a": pass_a, "walk_ratios": [r["ratios"][:K_TEST] for r in walks],
                 "walk_rel_error_max": worst_rel, "walk_lissajous_min": min_corr, "walk_slope_ci": list(ci_walk),
                 "sgd_slope_ci": list(ci_sgd), "sgd_slopes": [r["slope"] for r in sgds],
                 "sgd_ratios": [r["ratios"] for r in sgds], "sgd_lissajous": [r["lissajous"] for r in sgds]},
        baseline={"predicted_ratios": pred[:K_TEST].tolist(), "predicted_ratios_sgd_T": pred_sgd[:K_TEST].tolist(),
                  "limit_ratios": [6 / (math.pi ** 2 * j ** 2) for j in range(1, K_TEST + 1)],
                  "slope_band": list(SLOPE_BAND), "rel_tol": REL_TOL, "lissajous_min": LISSAJOUS_MIN},
        headline=headline, control=control,
    )
