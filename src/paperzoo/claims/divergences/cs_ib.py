"""Claim check for Cauchy-Schwarz Divergence Information Bottleneck for Regression (Yu et al., ICLR 2024).

The paper's headline: parameterising the regression IB with the CS divergence (a conditional-CS prediction term
instead of MSE, the CS-QMI compression term instead of a variational KL bound) generalises better than the
KL/MSE-based deep IB methods (its tables: lower test RMSE than VIB, NIB and friends on six regression sets).

Setup, fixed before the first run (a scaled-down analog of the paper's tabular regressions):

* data: Friedman #1 (d = 10, Gaussian noise std 1), standardised; full: 800 / 300 / 300 train / val / test
  points, smoke: 200 / 100 / 100. A fresh draw per seed, 3 seeds.
* network (all methods): encoder 10-64-64 (ReLU) -> 2K linear outputs (mean and log-variance of t, K = 16),
  decoder K-64-1 (ReLU). Same initialisation and mini-batch order for every method on a seed.
* training: Adam, lr 1e-3, batch 100, 200 epochs (smoke: 10), float32, one thread.
* CS-IB: ``cs_ib_loss(x, y, y_hat, t, beta)`` with t = the encoder mean (deterministic, as the official
  training loop), kernel widths 1.
* VIB (Alemi et al.): ``MSE + beta * KL(N(mu, diag(var)) || N(0, I))`` with reparameterised ``t``; tested at
  ``t = mu``.
* MSE: plain MSE regression on ``t = mu`` (beta = 0, no bottleneck term).
* beta grid for CS-IB and VIB: {1e-3, 1e-2, 1e-1}, weight-decay grid for MSE: {1e-4, 1e-3, 1e-2}; one value per
  method chosen on seed 0's validation RMSE (final epoch), test RMSE reported in the original units of y (see the
  rework notes below).

Differences from the paper's protocol: a synthetic data set instead of its six real ones (California housing
needs a download); 200 epochs at a constant learning rate instead of 100-200 with a step schedule; the model is
taken at the last epoch and beta is chosen on a validation split (the official script keeps the epoch with the
best test RMSE). The NIB/HSIC-bottleneck baselines of the paper's tables are not run.

Issue 8 rework (the earlier verdict was ``not_reproduced``: test RMSE CS-IB 1.629 ± 0.073, VIB 1.440 ± 0.049,
MSE 1.604 ± 0.060, seed means compared, beta chosen per seed, MSE given no hyperparameter):

* **Tuned fairly.** Every method gets a grid of the same size: beta in {1e-3, 1e-2, 1e-1} for CS-IB and VIB, and
  for plain MSE (no bottleneck term) the Adam weight decay in {1e-4, 1e-3, 1e-2}, its usual regulariser. Each
  value is chosen by :func:`paperzoo.core.evidence.tune` on seed 0's validation RMSE (final epoch), with the grid
  extended past a winning edge within [1e-7, 10]; every seed is then trained at the chosen value and scored on its
  own held-out test split.
* **A win beyond noise.** "Lower test RMSE" is a paired comparison over the 3 seeds (same data, initialisation and
  batch order for every method on a seed) with a stated margin of 0.01 (original units of y) beyond two standard
  errors, against each baseline.
* **Control.** CS-IB without its compression term (beta = 0: the conditional-CS prediction loss alone) through the
  same criterion. The IB argument of the paper is that the compression term is what improves generalisation; if
  the prediction term alone passed too, the criterion could not attribute the gain to the bottleneck.
* **Budget.** About 60-70 s on one core at full budget (18 trainings of 200 epochs, 8 of them with the CS losses, plus any grid
  extensions).
"""

from __future__ import annotations

import statistics
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, tune
from paperzoo.data.friedman import friedman1_split
from paperzoo.divergences import cs_ib_loss

BETAS = (1e-3, 1e-2, 1e-1)
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2)
BOUNDS = (1e-7, 10.0)
MARGIN = 0.01
K = 16
CRITERION = (
    "Friedman #1, same network, optimiser and epochs; one value per method chosen on seed 0's validation RMSE "
    "(beta in {1e-3, 1e-2, 1e-1} for CS-IB and VIB, Adam weight decay in {1e-4, 1e-3, 1e-2} for plain MSE; each "
    "grid extended past a winning edge within [1e-7, 10]); on 3 seeds' held-out test splits, CS-IB's test RMSE is "
    "lower than VIB's and lower than plain MSE's, each by a paired mean gain > 0.01 and > 2 SE. Control: CS-IB "
    "with beta = 0 (prediction term only) through the same criterion; it must fail."
)
BASELINE = ("VIB (MSE + beta * KL to N(0, I), same beta grid) and plain MSE regression (weight-decay grid of the "
            "same size), same network and budget")
METHODS = ("csib", "vib", "mse")


class _Net(torch.nn.Module):
    def __init__(self, d_in: int, gen: torch.Generator):
        super().__init__()
        self.enc = torch.nn.Sequential(torch.nn.Linear(d_in, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                       torch.nn.ReLU(), torch.nn.Linear(64, 2 * K))
        self.dec = torch.nn.Sequential(torch.nn.Linear(K, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, torch.nn.Linear):
                    bound = m.in_features ** -0.5
                    m.weight.uniform_(-bound, bound, generator=gen)
                    m.bias.uniform_(-bound, bound, generator=gen)

    def forward(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        return mu, logvar


def _train(data, method: str, beta: float, seed: int, epochs: int, weight_decay: float = 0.0) -> tuple[float, float]:
    """(validation RMSE, test RMSE) in the original units of y after ``epochs`` epochs."""
    net = _Net(data.train_x.shape[1], torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=weight_decay)
    order_gen = torch.Generator().manual_seed(seed + 1)
    noise_gen = torch.Generator().manual_seed(seed + 2)
    n, bs = data.train_x.shape[0], 100
    for _ in range(epochs):
        perm = torch.randperm(n, generator=order_gen)
        for start in range(0, n - bs + 1, bs):
            idx = perm[start:start + bs]
            x, y = data.train_x[idx], data.train_y[idx]
            mu, logvar = net(x)
            if method == "vib":
                t = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=noise_gen)
                y_hat = net.dec(t)[:, 0]
                kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
                loss = torch.nn.functional.mse_loss(y_hat, y) + beta * kl
            elif method == "csib":
                y_hat = net.dec(mu)[:, 0]
                loss = cs_ib_loss(x, y, y_hat, mu, beta=beta).loss
            else:
                loss = torch.nn.functional.mse_loss(net.dec(mu)[:, 0], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        def rmse(x, y):
            return float(((net.dec(net(x)[0])[:, 0] - y).pow(2).mean().sqrt()) * data.y_std)
        return rmse(data.val_x, data.val_y), rmse(data.test_x, data.test_y)


@claim(
    "cs-ib",
    statement=("The CS-divergence IB for regression (conditional-CS prediction term plus CS-QMI compression) "
               "generalises better, i.e. reaches lower test RMSE, than the MSE-based variational IB and plain MSE."),
    criterion=CRITERION,
    baseline=BASELINE,
    threads=1,
)
def csib_lower_test_rmse_than_vib_and_mse(ctx: ClaimContext) -> ClaimResult:
    n_train, n_eval = ctx.pick(smoke=(200, 100), full=(800, 300))
    epochs = ctx.pick(smoke=10, full=200)
    seeds = [seed % (2 ** 31) for seed in ctx.seeds(3)]
    start = time.perf_counter()
    data = [friedman1_split(n_train, n_eval, n_eval, generator=torch.Generator().manual_seed(s)) for s in seeds]

    def run(method, value, i):
        if method == "mse":
            return _train(data[i], "mse", 0.0, seeds[i], epochs, weight_decay=value)
        return _train(data[i], method, value, seeds[i], epochs)

    sel = tune({m: (lambda v, m=m: run(m, v, 0)) for m in METHODS},
               {"csib": BETAS, "vib": BETAS, "mse": WEIGHT_DECAYS}, score=lambda out: out[0], bounds=BOUNDS)
    test = {m: [sel[m].output[1]] + [run(m, sel[m].best, i)[1] for i in range(1, len(seeds))] for m in METHODS}
    ablation = [_train(d, "csib", 0.0, s, epochs)[1] for d, s in zip(data, seeds)]  # the control: beta = 0

    def beats(values):
        return {b: paired_comparison(values, test[b], margin=MARGIN) for b in ("vib", "mse")}

    cmp = beats(test["csib"])
    control_cmp = beats(ablation)
    passed = all(c.wins for c in cmp.values())
    control = Control("CS-IB without its compression term (beta = 0) through the same criterion",
                      all(c.wins for c in control_cmp.values()),
                      {"test_rmse_per_seed": ablation, **{f"vs_{b}": c.as_metrics() for b, c in control_cmp.items()}})
    edge = [m for m in METHODS if sel[m].at_edge]
    headline = (f"test RMSE {fmt_mean_std(test['csib'])} (CS-IB, beta {sel['csib'].best:.2g}) vs "
                f"{fmt_mean_std(test['vib'])} (VIB, beta {sel['vib'].best:.2g}), {fmt_mean_std(test['mse'])} (MSE, "
                f"wd {sel['mse'].best:.2g}), 3 seeds, paired gain vs VIB {cmp['vib'].diff_mean:.3f} ± "
                f"{cmp['vib'].diff_se:.3f} SE, vs MSE {cmp['mse'].diff_mean:.3f} ± {cmp['mse'].diff_se:.3f} SE "
                f"(margin {MARGIN:g}); control beta = 0: {fmt_mean_std(ablation)}"
                + (f"; at a bound: {', '.join(edge)}" if edge else ""))

    def summary(m):
        return {"test_rmse_mean": statistics.fmean(test[m]), "test_rmse_std": statistics.stdev(test[m]),
                "test_rmse_per_seed": test[m], "selection": sel[m].as_metrics()}

    metrics = {**summary("csib"), **{f"paired_vs_{b}": c.as_metrics() for b, c in cmp.items()},
               "n_train": n_train, "epochs": epochs, "seconds": time.perf_counter() - start}
    baseline = {"vib": summary("vib"), "mse": summary("mse")}
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
