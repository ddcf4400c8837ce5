"""Claim check for Minimum Entropy Coupling with Bottleneck (Ebrahimi, Chen and Khisti, NeurIPS 2024).

Headline checked: the greedy EBIM encoder meets the paper's performance guarantee,
``I*(R) - I_greedy(R) <= h(p_2)``, checked against the universal upper bound ``I*(R) <= min(R, H(X))`` (so a
pass is at least as strong as the theorem), and it beats the paper's compression baseline (uniform
quantization of the message index, the paper's Algorithm 5) on random sources.

Setup (fixed before the first run): 3 seeds; per seed, random sources ``p_X ~ Dirichlet(1)`` on ``|X| = 6``
(smoke: 10 sources on ``|X| = 5``; full: 40 sources on ``|X| = 6``), budgets ``R = f * H(X)`` for
``f in {0.25, 0.5, 0.75}``; bits. Reference (reported, not in the criterion): the best deterministic encoder by
brute force over all set partitions of ``X``; also reported, greedy EBIM followed by the Theorem 3 move
(``refine=True``), which is not part of the criterion.

Issue 8 rework. Part (b) was "greedy >= uniform quantization on each seed's mean"; it is now a paired comparison
over the 3 seeds (per-seed mean I(X;T) over all sources and budgets) that must exceed a stated margin of 0.05 bits
beyond two standard errors (:func:`paperzoo.core.evidence.paired_comparison`). The discriminating control is the
baseline through part (a): uniform quantization's gap ``min(R, H(X)) - I_uq(X;T)`` checked against the same
``h(p_2)`` guarantee on every source and budget. If the naive code met the guarantee too, (a) would only show that
the bound is loose, not that greedy EBIM earns it; it must fail. The measurement itself is unchanged (it is
deterministic given the sources: nothing is tuned).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, paired_comparison
from paperzoo.divergences import ebim_greedy, entropy

FRACTIONS = (0.25, 0.5, 0.75)
MARGIN = 0.05  # bits
CRITERION = (
    "(a) For every source and budget, H(T) <= R + 1e-9 and min(R, H(X)) - I_greedy(X;T) <= h(p_2) + 1e-9; "
    "(b) paired over 3 seeds (per-seed mean I(X;T) over all sources and budgets), greedy EBIM beats uniform "
    "quantization into floor(2^R) contiguous bins by a mean gain > 0.05 bits and > 2 SE. Control: uniform "
    "quantization through (a) (min(R, H(X)) - I_uq <= h(p_2) + 1e-9 for every source and budget); it must fail."
)


def _set_partitions(n: int):
    """All set partitions of range(n) as label vectors (restricted growth strings)."""
    out = []

    def rec(prefix, k):
        if len(prefix) == n:
            out.append(list(prefix))
            return
        for lab in range(k + 1):
            rec(prefix + [lab], max(k, lab + 1))

    rec([0], 1)
    return np.array(out)


def _h_bits(masses: np.ndarray) -> np.ndarray:
    m = np.where(masses > 0, masses, 1.0)
    return -(masses * np.log2(m)).sum(-1)


def _best_deterministic(p: np.ndarray, R: float, labels: np.ndarray) -> float:
    n = len(p)
    onehot = np.zeros((len(labels), n, n))
    onehot[np.arange(len(labels))[:, None], np.arange(n)[None, :], labels] = 1.0
    H = _h_bits(np.einsum("x,bxt->bt", p, onehot))
    ok = H <= R + 1e-12
    return float(H[ok].max())


def _uniform_quantization(p: torch.Tensor, R: float) -> float:
    n = p.numel()
    B = max(1, min(n, int(math.floor(2.0 ** R + 1e-12))))
    bins = torch.div(torch.arange(n) * B, n, rounding_mode="floor")
    masses = torch.zeros(B, dtype=p.dtype).index_add_(0, bins, p)
    return float(entropy(masses))  # deterministic code: I(X;T) = H(T)


@claim(
    "mec-bottleneck",
    statement=("Greedy EBIM (the MEC-B encoder) is within h(p_2) of the optimal I(X;T) under the budget "
               "H(T) <= R, and beats uniform quantization of the message."),
    criterion=CRITERION,
    baseline="uniform quantization into floor(2^R) contiguous bins (the paper's Algorithm 5 baseline); "
             "brute-force best deterministic encoder reported",
    threads=1,
)
def greedy_ebim_guarantee(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=5, full=6)
    n_src = ctx.pick(smoke=10, full=40)
    labels = _set_partitions(n)
    per_seed, slack, worst_ratio = [], [], []
    a_ok = True
    uq_ok, uq_violations, greedy_violations, n_cases = True, 0, 0, 0
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        rows = []
        for _ in range(n_src):
            # Dirichlet(1) = normalised i.i.d. Exp(1), drawn from the claim's own generator
            e = -torch.rand(n, generator=g, dtype=torch.float64).log()
            p = e / e.sum()
            Hx = float(entropy(p))
            for f in FRACTIONS:
                R = f * Hx
                res = ebim_greedy(p, R)  # the paper's Algorithm 1 (deterministic EBIM solver)
                I_g, rate = float(res.mutual_information), float(res.rate)
                gap_bound = min(R, Hx) - I_g
                ok = rate <= R + 1e-9 and gap_bound <= res.guarantee + 1e-9
                a_ok &= ok
                greedy_violations += not ok
                I_uq = _uniform_quantization(p, R)
                uq_gap_ok = min(R, Hx) - I_uq <= res.guarantee + 1e-9  # a deterministic code: H(T) <= log2 B <= R
                uq_ok &= uq_gap_ok
                uq_violations += not uq_gap_ok
                n_cases += 1
                slack.append(res.guarantee - gap_bound)
                worst_ratio.append(gap_bound / res.guarantee if res.guarantee > 0 else 0.0)
                rows.append(dict(I_greedy=I_g, I_refined=float(ebim_greedy(p, R, refine=True).mutual_information),
                                 I_uq=I_uq,
                                 I_bf_det=_best_deterministic(p.numpy(), R, labels), bound=min(R, Hx)))
        per_seed.append({k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
                        | {"frac_greedy_ge_bf_det": float(np.mean([r["I_greedy"] >= r["I_bf_det"] - 1e-12
                                                                    for r in rows])),
                           "frac_greedy_eq_bf_det": float(np.mean([abs(r["I_greedy"] - r["I_bf_det"]) <= 1e-9
                                                                    for r in rows]))})
    beats = paired_comparison([s["I_greedy"] for s in per_seed], [s["I_uq"] for s in per_seed], margin=MARGIN,
                              lower_is_better=False)
    b_ok = beats.wins
    passed = a_ok and b_ok
    control = Control("uniform quantization (the baseline) through part (a): min(R, H(X)) - I_uq <= h(p_2) on every "
                      "source and budget", uq_ok,
                      {"cases_violating_guarantee": uq_violations, "cases": n_cases})

    def ms(key):
        v = np.array([s[key] for s in per_seed])
        return {"mean": float(v.mean()), "std": float(v.std())}

    metrics = {
        "alphabet": n, "sources_per_seed": n_src, "fractions_of_HX": list(FRACTIONS),
        "checks": {"a_guarantee_all": a_ok, "b_beats_uniform_quantization": b_ok},
        "I_bits": ms("I_greedy"), "I_greedy_with_theorem3_move_bits": ms("I_refined"),
        "upper_bound_min_R_HX_bits": ms("bound"),
        "min_slack_to_guarantee_bits": float(min(slack)),
        "max_gap_over_guarantee_ratio": float(max(worst_ratio)),
        "frac_greedy_ge_bruteforce_deterministic": ms("frac_greedy_ge_bf_det"),
        "frac_greedy_equals_bruteforce_deterministic": ms("frac_greedy_eq_bf_det"),
        "per_seed": per_seed,
        "paired_vs_uniform_quantization": beats.as_metrics(),
    }
    baseline = {"I_bits": ms("I_uq"), "I_bruteforce_deterministic_bits": ms("I_bf_det")}
    headline = (beats.headline("I(X;T) bits", "greedy EBIM", "uniform quantization")
                + f"; h(p_2) guarantee violated in {greedy_violations} of {n_cases} cases (uniform quantization: "
                f"{uq_violations}); brute-force deterministic optimum {ms('I_bf_det')['mean']:.3f} bits")
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
