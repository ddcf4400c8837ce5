"""Claim check for Multisample Flow Matching (Pooladian et al., 2023).

The paper's claim: pairing each minibatch's data and noise by batch optimal transport straightens the learned
flow, so few function evaluations give good samples, where independent flow matching needs many.

Setup, fixed before the first run: target ``mixture_on_circle(8, 2, radius=3, std=0.3)`` (float32), noise
``N(0, I)``; network ``MLPDenoiser(2, 128, 3, prediction="flow")``; Adam, batch 256, 2,000 steps (smoke 30),
times ``t ~ U(0, 0.999]`` (``multisample_fm_batch``). Method: coupling ``"ot"``; baseline: ``"independent"``; both
tuned on the same learning-rate grid {1e-3, 3e-3} (extended past a winning edge) by the sliced W2^2 of 2-step
Euler samples on validation draws; 3 seeds, paired (same initialisation, data and noise draws). Evaluation on
held-out draws: sliced W2^2 (64 fixed directions, 4,000 samples) between Euler samples with ``k`` uniform flow-time
steps (``t_i = 0.999 (1 - i/k)``, so ``k`` evaluations) and exact draws, for ``k`` in {2, 50}; and the flow's
straightness, the mean squared deviation of the 50-step velocity from the chord ``x_end - x_start``.

Criterion: at 2 steps the OT-coupled flow's sliced W2^2 is lower, with a mean paired log ratio
``log(SW_indep / SW_ot)`` above ``log(1.25)`` and two standard errors; and its straightness deviation is lower
(paired, beyond two standard errors). Control: a second independent-coupling run (its own training seeds, same
tuned learning rate) in place of the method, through the same criterion; it must fail (the criterion must not
pass on seed noise alone).
"""

from __future__ import annotations

import math

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import fmt_mean_std, paired_comparison, paired_control, tune
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.multisample_flow_matching import multisample_fm_batch
from paperzoo.diffusion.samplers import sample_euler
from paperzoo.diffusion.training import MLPDenoiser, denoising_loss
from paperzoo.transport import sliced_wasserstein

T_MAX = 0.999
MARGIN = math.log(1.25)
CRITERION = (
    "8-Gaussian circle (radius 3, std 0.3), MLP 3x128 velocity field, 2,000 Adam steps, batch 256, lr tuned on "
    "{1e-3, 3e-3} (extended at a winning edge) for both couplings by 2-step validation sliced W2^2, 3 paired "
    "seeds: the batch-OT coupling's held-out sliced W2^2 of 2-step Euler samples is lower than independent "
    "coupling's by a mean paired log ratio > log 1.25 and > 2 SE, and its 50-step straightness deviation is lower "
    "beyond 2 SE. Control: a second independent-coupling run in place of the method must fail."
)


def _train(gm, coupling: str, lr: float, steps: int, seed: int) -> MLPDenoiser:
    torch.manual_seed(seed)
    net = MLPDenoiser(2, 128, 3, prediction="flow")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x0 = gm.sample(256, generator=g)
        noise, sigma = multisample_fm_batch(x0, coupling, t_max=T_MAX, generator=g)
        loss = denoising_loss(net, x0, sigma, noise=noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net


def _flow_sigmas(k: int) -> torch.Tensor:
    t = T_MAX * (1 - torch.arange(k + 1, dtype=torch.float64) / k)
    return (t / (1 - t)).to(torch.float32)


def _evaluate(gm, net, k: int, n: int, seed: int, ref: torch.Tensor, proj: torch.Tensor):
    """Sliced W2^2 of k-step Euler samples against ``ref``, and (for the trajectory) the straightness deviation."""
    sigmas = _flow_sigmas(k)
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    xs = []
    with torch.no_grad():
        x = sample_euler(net.denoiser(), sigmas[0] * noise, sigmas,
                         callback=lambda d: xs.append((d["x"], d["sigma"], d["denoised"])))
    sw = float(sliced_wasserstein(x, ref, projections=proj))
    # Flow-time states x_t = x / (1 + sigma) and velocities u = (x_t - D) / t; chord = x_end - x_start(t = T_MAX).
    start = xs[0][0] / (1 + xs[0][1])
    chord = x - start
    dev = []
    for state, sigma, denoised in xs:
        t = sigma / (1 + sigma)
        u = (state / (1 + sigma) - denoised) / t
        # a straight path from start to end has dx_t/dt = -chord / T_MAX all along
        dev.append(float((u + chord / T_MAX).square().sum(1).mean()))
    return sw, sum(dev) / len(dev)


@claim(
    "multisample-fm",
    statement=("Batch optimal-transport couplings of data and noise in flow matching straighten the learned flow, "
               "so samples with few function evaluations are much closer to the target than with independent "
               "couplings."),
    criterion=CRITERION,
    baseline="independent-coupling (conditional) flow matching, same network, steps and tuned learning-rate grid",
    threads=1,
)
def ot_coupling_straightens_flows(ctx: ClaimContext) -> ClaimResult:
    gm = mixture_on_circle(8, 2, radius=3.0, std=0.3, dtype=torch.float32)
    steps = ctx.pick(smoke=30, full=2000)
    n_eval = ctx.pick(smoke=300, full=4000)
    seeds = ctx.seeds(3)
    proj = torch.randn(64, 2, generator=torch.Generator().manual_seed(seeds[0] + 7))
    proj = proj / proj.norm(dim=1, keepdim=True)
    val_ref = gm.sample(n_eval, generator=torch.Generator().manual_seed(seeds[0] + 1))
    test_ref = gm.sample(n_eval, generator=torch.Generator().manual_seed(seeds[0] + 2))

    # Tuning on the first seed's training run, validation draws only.
    def evaluator(coupling):
        return lambda lr: _evaluate(gm, _train(gm, coupling, lr, steps, seeds[0]), 2, n_eval, seeds[0] + 3,
                                    val_ref, proj)[0]

    sel = tune({"ot": evaluator("ot"), "independent": evaluator("independent")}, [1e-3, 3e-3],
               bounds=(1e-4, 3e-2))
    lr = {name: s.best for name, s in sel.items()}

    rows = {"ot": [], "independent": [], "independent_again": []}
    for i, seed in enumerate(seeds):
        for name, coupling, train_seed in (("ot", "ot", seed), ("independent", "independent", seed),
                                           ("independent_again", "independent", seed + 10_000)):
            net = _train(gm, coupling, lr[coupling], steps, train_seed)
            sw2, _ = _evaluate(gm, net, 2, n_eval, seed + 5, test_ref, proj)
            sw50, straight = _evaluate(gm, net, 50, n_eval, seed + 5, test_ref, proj)
            rows[name].append({"sw_2": sw2, "sw_50": sw50, "straightness": straight})

    def criterion(method_rows):
        log_ratio = paired_comparison([math.log(r["sw_2"]) for r in method_rows],
                                      [math.log(r["sw_2"]) for r in rows["independent"]], margin=MARGIN)
        straight = paired_comparison([r["straightness"] for r in method_rows],
                                     [r["straightness"] for r in rows["independent"]])
        return log_ratio, straight

    cmp_sw, cmp_straight = criterion(rows["ot"])
    passed = cmp_sw.wins and cmp_straight.wins
    ctrl_sw, ctrl_straight = criterion(rows["independent_again"])
    control, _ = paired_control(
        "a second independent-coupling run (other training seeds) in place of the method",
        [math.log(r["sw_2"]) for r in rows["independent_again"]], [math.log(r["sw_2"]) for r in rows["independent"]],
        margin=MARGIN, straightness_wins=ctrl_straight.wins)
    control = type(control)(control.description, ctrl_sw.wins and ctrl_straight.wins, control.metrics)

    def col(name, key):
        return [r[key] for r in rows[name]]

    headline = (f"2-step sliced W2^2 {fmt_mean_std(col('ot', 'sw_2'))} (batch OT) vs {fmt_mean_std(col('independent', 'sw_2'))} "
                f"(independent), paired log ratio {cmp_sw.diff_mean:.2f} ± {cmp_sw.diff_se:.2f} SE (margin "
                f"{MARGIN:.2f}); straightness deviation {fmt_mean_std(col('ot', 'straightness'))} vs "
                f"{fmt_mean_std(col('independent', 'straightness'))}; 50-step SW {fmt_mean_std(col('ot', 'sw_50'))} vs "
                f"{fmt_mean_std(col('independent', 'sw_50'))}; lr {lr['ot']:g} / {lr['independent']:g}; control "
                f"(independent again) log ratio {ctrl_sw.diff_mean:.2f} ± {ctrl_sw.diff_se:.2f}")
    return ClaimResult.decide(
        passed,
        metrics={"rows": rows, "lr": lr, "tuning": {k: s.as_metrics() for k, s in sel.items()},
                 "sw2_log_ratio": cmp_sw.as_metrics(), "straightness": cmp_straight.as_metrics(), "steps": steps},
        baseline={"independent": rows["independent"]},
        headline=headline, control=control,
    )

