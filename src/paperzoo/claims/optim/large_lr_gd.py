"""Claim check for Special Properties of Gradient Descent with Large Learning Rates (Mohtashami, Jaggi, Stich, 2023).

The paper proves that on functions that are smooth and strongly convex except on small regions holding sharp
local minima, GD from a random start with a large step size converges to the global minimum, while GD with a
small step size converges to a local minimum with substantial probability; and it argues that stochastic noise
of any magnitude at a small step size cannot guarantee the global minimum the way the large step does.

Setup, fixed before the first run (:func:`paperzoo.data.quadratics.quadratic_with_sharp_wells`): 1-D,
:math:`f(x) = x^2/2 - 0.4\\sum_k \\exp(-(x - c_k)^2 / (2 \\cdot 0.05^2))` with wells at
:math:`c \\in \\{\\pm1, \\pm2, \\pm3\\}`. Each well holds a local minimum of curvature about 160 and value at least
0.097 (at :math:`\\pm1`); the global minimum is 0 at the origin, curvature 1. Starts :math:`x_0 \\sim U[-4, 4]`.
Large step :math:`\\eta = 0.5` (stable at the global minimum, :math:`\\eta \\cdot 1 < 2`, unstable in every well,
:math:`\\eta \\cdot 160 > 2`); small step :math:`\\eta = 0.005` (stable everywhere). Success: :math:`|x_T| < 0.01`.
Every method gets 6,000 steps. The noisy control: small-step GD with Gaussian gradient noise of std
:math:`\\sigma` for 4,000 steps, then 2,000 noise-free steps at the same step size (a settling phase: a success is
then a point at the global minimum, not one passing near it while noise is on); :math:`\\sigma` is tuned on
validation starts over a log grid that is extended past a winning edge, and measured on held-out test starts.

What changed from the first version (review of issue 8): (a) the wells had depth 0.5, which puts the minima at
:math:`\\pm 0.995` *below* the origin (value -0.0025): the "global minimum" at 0 was not global; depth 0.4 fixes
it. (b) The noisy control was measured while its noise was still on, so it could hardly ever sit within 0.01 of
0; after a settling phase, untuned noise (:math:`\\sigma = 10`) already reached about 85%. The noise magnitude is
now tuned and the noisy control is measured after settling. The honest reading of the paper's noise statement
that this setup can test is therefore the weaker one: noise at a small step, even at its best magnitude, does not
*guarantee* the global minimum (its success rate stays measurably below the large step's), not that it is
useless.
"""

from __future__ import annotations

import math
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, select_on_grid
from paperzoo.data.quadratics import quadratic_with_sharp_wells

CENTERS = torch.tensor([[-3.0], [-2.0], [-1.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
DEPTH, WIDTH = 0.4, 0.05
LARGE_LR, SMALL_LR = 0.5, 0.005
NOISY_STEPS, SETTLE_STEPS = 4_000, 2_000
STEPS = NOISY_STEPS + SETTLE_STEPS
SIGMA_GRID = (2.5, 5.0, 10.0, 20.0, 40.0)
SIGMA_BOUNDS = (0.5, 640.0)
TOL = 0.01
MARGIN = 0.01


def landscape():
    return quadratic_with_sharp_wells(CENTERS, depth=DEPTH, width=WIDTH)


def landscape_grad(x: torch.Tensor) -> torch.Tensor:
    """Gradient of :func:`landscape` for ``x`` of shape ``(n,)`` in closed form (checked against autograd in the
    claim: autograd on thousands of tiny steps would dominate the run time)."""
    d = x[:, None] - CENTERS[:, 0]
    return x + (DEPTH / WIDTH**2) * (d * torch.exp((-d * d / (2 * WIDTH**2)).clamp(min=-60.0))).sum(-1)


def uniform_starts(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 8 - 4


def run_gd(x0: torch.Tensor, lr: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """GD from every entry of ``x0`` (shape ``(n,)``) with its own step ``lr`` and gradient-noise std ``sigma``
    (shapes ``(n,)``): noise during the first NOISY_STEPS steps, none in the SETTLE_STEPS after (the same update as
    :func:`paperzoo.diagnostics.trajectories.gd_trajectory`, batched over step sizes and noise levels).
    Returns the per-entry success (1.0 within TOL of the global minimum; a diverged entry fails)."""
    x = x0.clone()
    noisy = bool((sigma > 0).any())
    for t in range(STEPS):
        g = landscape_grad(x)
        if noisy and t < NOISY_STEPS:
            g = g + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x - lr * g
    return (x.abs() < TOL).double()


@claim(
    "large-lr-gd",
    statement="On functions whose local minima are confined to small sharp regions, full-batch GD with a large "
              "step size from a random start converges to the global minimum, GD with a small step size often "
              "stops in a local minimum, and gradient noise at the small step size, even at its best magnitude "
              "and followed by noise-free settling, does not guarantee the global minimum as the large step does.",
    criterion="1-D quadratic basin (curvature 1, minimum 0) with six Gaussian wells (depth 0.4, width 0.05) at "
              "+-1, +-2, +-3; x0 ~ U[-4, 4]; 6,000 steps for every method; success = |x_T| < 0.01. 3 seeds, each "
              "with its own test starts (300 smoke / 2,000 full per seed) and validation starts (100 / 500 per "
              "seed). Noisy control: lr 0.005 with gradient noise std sigma for 4,000 steps, then 2,000 noise-free "
              "steps; sigma selected on the validation starts over {2.5, 5, 10, 20, 40}, extended past a winning "
              "edge within [0.5, 640]. Passes if on the test starts (1) the mean success with lr 0.5 is >= 0.95, "
              "(2) the mean success with lr 0.005 (noiseless) is <= 0.5, and (3) lr 0.5 beats the tuned, settled "
              "noisy control: paired over the 3 seeds, mean success gap > margin 0.01 and > 2 SE. Control: GD with "
              "lr 0.005 through criterion (1) must fail.",
    baseline="GD with lr = 0.005, noiseless (the control) and with tuned Gaussian gradient noise then settling",
    # Thousands of tiny steps: thread hand-offs cost more than the arithmetic (10x slower on a loaded machine).
    threads=1,
)
def large_step_finds_global_minimum(ctx: ClaimContext) -> ClaimResult:
    n_test = ctx.pick(smoke=300, full=2_000)
    n_val = ctx.pick(smoke=100, full=500)
    seeds = [s % 2**31 for s in ctx.seeds(3)]
    start = time.perf_counter()
    probe = torch.linspace(-4, 4, 101, dtype=torch.float64).unsqueeze(-1).requires_grad_(True)
    (auto,) = torch.autograd.grad(landscape()(probe).sum(), probe)
    if not torch.allclose(auto.squeeze(-1), landscape_grad(probe.detach().squeeze(-1)), rtol=1e-10, atol=1e-10):
        raise AssertionError("landscape_grad disagrees with autograd of quadratic_with_sharp_wells")
    test = torch.cat([uniform_starts(n_test, s) for s in seeds])
    val = torch.cat([uniform_starts(n_val, s + 1) for s in seeds])

    def batch(sigma_values, with_plain):
        """One batched run: for each sigma its validation and test starts (noisy, then settled), and, if asked, the
        test starts with the large and the small step. Test outcomes are read only for the selected sigma."""
        x0 = [val, test] * len(sigma_values) + ([test, test] if with_plain else [])
        lr = [SMALL_LR] * 2 * len(sigma_values) + ([LARGE_LR, SMALL_LR] if with_plain else [])
        sd = [v for v in sigma_values for _ in (0, 1)] + ([0.0, 0.0] if with_plain else [])
        expand = lambda values: torch.cat([torch.full_like(x, v) for x, v in zip(x0, values)])  # noqa: E731
        gen = torch.Generator().manual_seed((seeds[0] + round(1000 * sigma_values[0])) % 2**31)
        ok = run_gd(torch.cat(x0), expand(lr), expand(sd), gen).split([x.numel() for x in x0])
        out = {sigma: (float(ok[2 * i].mean()), ok[2 * i + 1]) for i, sigma in enumerate(sigma_values)}
        return out, ok[-2:] if with_plain else None

    runs, (large_ok, small_ok) = batch(SIGMA_GRID, True)

    def evaluate(sigma: float) -> float:
        if sigma not in runs:  # a value added by an edge extension
            runs.update(batch((sigma,), False)[0])
        return runs[sigma][0]  # validation success only

    selection = select_on_grid(evaluate, SIGMA_GRID, minimize=False, bounds=SIGMA_BOUNDS)
    per_seed = lambda ok: ok.reshape(len(seeds), -1).mean(1).tolist()  # noqa: E731
    large, small, noisy = per_seed(large_ok), per_seed(small_ok), per_seed(runs[selection.best][1])
    seconds = time.perf_counter() - start

    mean = lambda v: sum(v) / len(v)  # noqa: E731
    cmp = paired_comparison(large, noisy, margin=MARGIN, lower_is_better=False)
    part1, part2 = mean(large) >= 0.95, mean(small) <= 0.5
    passed = part1 and part2 and cmp.wins
    control = Control("GD with lr 0.005 (small step, noiseless) through criterion (1), success >= 0.95",
                      mean(small) >= 0.95, {"success_rate_per_seed": small})
    metrics = dict(lr=LARGE_LR, success_rate=mean(large), success_rate_per_seed=large, num_test_starts=n_test,
                   num_val_starts=n_val, num_seeds=len(seeds), steps=STEPS, large_beats_small=part1 and part2,
                   large_vs_tuned_noise=cmp.as_metrics(), seconds=round(seconds, 2),
                   well_minimum_value_min=_well_minimum(landscape()))
    baseline = dict(lr=SMALL_LR, success_rate=mean(small), success_rate_per_seed=small,
                    noisy_sigma=selection.best, noisy_sigma_at_edge=selection.at_edge,
                    noisy_selection=selection.as_metrics(), noisy_success_rate=mean(noisy),
                    noisy_success_rate_per_seed=noisy)
    edge = " (sigma at a grid bound)" if selection.at_edge else ""
    headline = (f"test success {fmt_mean_std(large)} (lr 0.5) vs {fmt_mean_std(noisy)} (lr 0.005 + tuned noise "
                f"sigma={selection.best:g}{edge}, settled) vs {fmt_mean_std(small)} (lr 0.005), 3 seeds, paired gap "
                f"to noise {cmp.diff_mean:.3g} ± {cmp.diff_se:.2g} SE (margin {MARGIN})")
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)


def _well_minimum(f) -> float:
    """Smallest value of f at a local minimum away from the origin (must be > 0: the origin is the global one)."""
    x = torch.linspace(-4, 4, 160_001, dtype=torch.float64).unsqueeze(-1)
    v = f(x)
    inner = (v[1:-1] < v[:-2]) & (v[1:-1] < v[2:]) & (x[1:-1, 0].abs() > 0.5)
    return float(v[1:-1][inner].min()) if bool(inner.any()) else math.inf
