"""Claim check for Wasserstein Dependency Measure for Representation Learning (Ozair et al., NeurIPS 2019).

The paper's headline: when the views share a lot of information (MI far above ``log N``), contrastive MI
objectives (CPC / InfoNCE) learn incomplete representations that capture only some factors of variation, while
WPC (the same contrastive objective with a Lipschitz-constrained critic) captures more of them; measured by linear
probes on every factor (its SpatialMultiOmniglot task).

Setup, fixed before the first run: :func:`paperzoo.data.multi_digits.spatial_multi_digits` with ``k = 4`` digit
positions from scikit-learn's 8x8 digits (view ``y`` shows digit ``c + 1`` at each position; ``I(x; y)`` close to
``4 log 10 = 9.2`` nats against ``log 64 = 4.2`` for batch 64). Images are split 55/15/30 into a training pool
(encoder and probe training), a validation pool (learning-rate selection) and a test pool (probe evaluation). Encoders: :class:`~paperzoo.divergences.SeparableCritic`
(width 128, 2 hidden layers, embedding 32), the representation of ``x`` is ``g(x)``. Both methods: Adam (lr tuned,
below), batch 64, the same steps (1500 full, 20 smoke), the same initial weights and data stream per seed. CPC minimises
``-InfoNCE``; WPC minimises :func:`~paperzoo.divergences.wpc_loss` (InfoNCE form, gradient penalty weight 10).
Probes: one linear classifier per position (closed-form ridge regression to one-hot labels, penalty 0.01 per
sample, standardised features, argmax) trained on 2000 encoded training pairs, accuracy on 1000 validation and
1000 test pairs.
3 seeds. Reference rows: the untrained encoder and a probe on the raw pixels.
Scope: a small digits analog of SpatialMultiOmniglot (4 positions, MLP encoders).

Issue 8 rework (the earlier verdict was ``reproduced``: probe accuracy WPC 0.916 ± 0.015 vs CPC 0.812 ± 0.015,
both at lr 1e-3, untuned, seed means compared):

* **Tuned fairly.** The images are now split 55/15/30 into training, validation and test pools. Each method's Adam
  learning rate is chosen by :func:`paperzoo.core.evidence.tune` from the same grid {3e-4, 1e-3, 3e-3} (extended
  past a winning edge within [1e-5, 0.1]) by the mean probe accuracy on 1000 *validation* pairs of seed 0 (probe
  trained on the training pool); every seed is then trained at the chosen rate and the verdict read from its
  *test* pairs only.
* **A win beyond noise.** "At least 5 points higher" is a paired comparison over the 3 seeds (same initial weights
  and data stream for both methods on a seed): paired mean gain > 0.05 and > 2 SE.
* **Control.** The regime the paper's argument excludes: one digit position (``k = 1``, ``I(x; y) <= log 10 = 2.3``
  nats, below ``log 64 = 4.2`` for batch 64), where InfoNCE's ``log N`` ceiling does not bind and the paper gives
  no reason for WPC to capture more. Both methods at their chosen learning rates, same steps, through the same
  criterion; it must fail, or the gain is not the high-MI effect the paper describes.
* **Budget.** About 90 s on one core at full budget (10 encoder trainings of 1500 steps at k = 4, 6 at k = 1; the
  gradient penalty triples the cost of a WPC step).
"""

from __future__ import annotations

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, tune
from paperzoo.data.digits import digits_split
from paperzoo.data.multi_digits import spatial_multi_digits
from paperzoo.divergences import SeparableCritic, mi_lower_bound, wpc_loss

K, BATCH, GP_WEIGHT = 4, 64, 10.0
CONTROL_K = 1
LRS = (3e-4, 1e-3, 3e-3)
LR_BOUNDS = (1e-5, 0.1)
MARGIN = 0.05
N_PROBE_TRAIN, N_PROBE_TEST = 2000, 1000
CRITERION = (
    "Adam lr of each method chosen from {3e-4, 1e-3, 3e-3} (extended past a winning edge within [1e-5, 0.1]) by "
    "the mean probe accuracy on validation pairs of seed 0; on 3 seeds' held-out test pairs, the mean linear-probe "
    "accuracy over the 4 digit positions of WPC-trained encoders exceeds that of CPC-trained encoders by a paired "
    "mean gain > 0.05 (5 points) and > 2 SE. Control: the same comparison at k = 1 position (MI below log batch "
    "size); it must fail."
)
METHODS = ("wpc", "cpc")


def _probe(train_feats, train_c, test_feats, test_c, ridge: float = 1e-2) -> list[float]:
    """Closed-form ridge-regression linear probe to one-hot targets (argmax decision), one per position: exact,
    deterministic and fast, unlike an iterative logistic regression on this loaded single core."""
    train_feats, test_feats = train_feats.double(), test_feats.double()
    mu, sd = train_feats.mean(0), train_feats.std(0) + 1e-8
    a = torch.cat([(train_feats - mu) / sd, torch.ones(len(train_feats), 1, dtype=torch.float64)], 1)
    b = torch.cat([(test_feats - mu) / sd, torch.ones(len(test_feats), 1, dtype=torch.float64)], 1)
    targets = torch.nn.functional.one_hot(train_c, 10).double().reshape(len(train_c), -1)
    w = torch.linalg.solve(a.T @ a + ridge * len(a) * torch.eye(a.shape[1], dtype=torch.float64), a.T @ targets)
    pred = (b @ w).reshape(len(b), train_c.shape[1], 10).argmax(-1)
    return (pred == test_c).double().mean(0).tolist()


def _train(method: str, seed: int, steps: int, split, lr: float = 1e-3, k: int = K) -> SeparableCritic:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        critic = SeparableCritic(64 * k, 64 * k, hidden_dim=128, embed_dim=32, depth=2)
    if method == "untrained":
        return critic
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    g_gp = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        x, y, _ = spatial_multi_digits(split.train_x, split.train_y, BATCH, k, generator=g)
        if method == "cpc":
            loss = -mi_lower_bound(critic(x, y), "infonce")
        else:
            loss = wpc_loss(critic, x, y, gp_weight=GP_WEIGHT, generator=g_gp)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return critic


@claim(
    "wasserstein-dependency",
    statement=("With many shared factors (MI far above log batch size), WPC (contrastive objective with a "
               "Lipschitz critic) learns representations from which more factors are linearly decodable than CPC."),
    criterion=CRITERION,
    baseline="CPC / InfoNCE with the same encoders, optimiser, learning rate, steps and data",
    threads=1,
)
def multi_digit_probe(ctx: ClaimContext) -> ClaimResult:
    steps = ctx.pick(smoke=20, full=1500)
    seeds = [seed % (2**31) for seed in ctx.seeds(3)]

    def problem(seed, k):
        split = digits_split(0.3, val_fraction=0.15, generator=torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed + 2 + 1000 * (k != K))
        pairs = {"train": spatial_multi_digits(split.train_x, split.train_y, N_PROBE_TRAIN, k, generator=g),
                 "val": spatial_multi_digits(split.val_x, split.val_y, N_PROBE_TEST, k, generator=g),
                 "test": spatial_multi_digits(split.test_x, split.test_y, N_PROBE_TEST, k, generator=g)}
        return dict(seed=seed, k=k, split=split, pairs=pairs)

    def evaluate(prob, method, lr):
        critic = _train(method, prob["seed"], steps, prob["split"], lr=lr, k=prob["k"])
        (xtr, _, ctr), out = prob["pairs"]["train"], {}
        with torch.no_grad():
            ftr = critic.g(xtr)
            for split in ("val", "test"):
                x, _, c = prob["pairs"][split]
                out[split] = _probe(ftr, ctr, critic.g(x), c)
            if method in METHODS:
                xte, yte, _ = prob["pairs"]["test"]
                scores = torch.stack([critic(a, b) for a, b in zip(xte.split(BATCH)[:10], yte.split(BATCH)[:10])])
                out["test_infonce_nats"] = float(mi_lower_bound(scores, "infonce").mean())
        out["val_mean"], out["test_mean"] = float(np.mean(out["val"])), float(np.mean(out["test"]))
        return out

    probs = [problem(seed, K) for seed in seeds]
    sel = tune({m: (lambda lr, m=m: evaluate(probs[0], m, lr)) for m in METHODS}, LRS,
               score=lambda out: out["val_mean"], minimize=False, bounds=LR_BOUNDS)
    runs = {m: [sel[m].output] + [evaluate(p, m, sel[m].best) for p in probs[1:]] for m in METHODS}
    untrained = [evaluate(p, "untrained", 1e-3) for p in probs]
    pixels = []
    for p in probs:
        (xtr, _, ctr), (xte, _, cte) = p["pairs"]["train"], p["pairs"]["test"]
        pixels.append(_probe(xtr, ctr, xte, cte))
    acc = {m: [r["test_mean"] for r in runs[m]] for m in METHODS}
    cmp = paired_comparison(acc["wpc"], acc["cpc"], margin=MARGIN, lower_is_better=False)
    low = [problem(seed, CONTROL_K) for seed in seeds]
    low_acc = {m: [evaluate(p, m, sel[m].best)["test_mean"] for p in low] for m in METHODS}
    control_cmp = paired_comparison(low_acc["wpc"], low_acc["cpc"], margin=MARGIN, lower_is_better=False)
    control = Control(f"the same comparison at k = {CONTROL_K} digit position (I(x;y) <= log 10 < log {BATCH}), "
                      "same learning rates and steps", control_cmp.wins, control_cmp.as_metrics())

    def summary(rows):
        a = np.array([r["test"] for r in rows])  # (seeds, positions)
        per_seed = a.mean(1)
        return {"mean_probe_accuracy": float(per_seed.mean()), "mean_probe_accuracy_seed_std": float(per_seed.std()),
                "per_position_accuracy": a.mean(0).tolist(), "per_seed_mean_accuracy": per_seed.tolist()}

    edge = [m for m in METHODS if sel[m].at_edge]
    headline = (cmp.headline("test probe accuracy", f"WPC, lr {sel['wpc'].best:.2g}", f"CPC, lr {sel['cpc'].best:.2g}")
                + f"; control k = {CONTROL_K}: {fmt_mean_std(low_acc['wpc'])} vs {fmt_mean_std(low_acc['cpc'])}"
                + (f"; lr at a bound: {', '.join(edge)}" if edge else ""))
    def infonce(m):
        return float(np.mean([r["test_infonce_nats"] for r in runs[m]]))

    metrics = {**summary(runs["wpc"]), "test_infonce_nats": infonce("wpc"),
               "paired_vs_cpc": cmp.as_metrics(), "selection": sel["wpc"].as_metrics(), "steps": steps,
               "positions": K, "log_batch": float(np.log(BATCH)),
               "reference_untrained": summary(untrained),
               "reference_pixels": summary([{"test": p} for p in pixels])}
    baseline = {**summary(runs["cpc"]), "test_infonce_nats": infonce("cpc"),
                "selection": sel["cpc"].as_metrics()}
    return ClaimResult.decide(cmp.wins, metrics=metrics, baseline=baseline, headline=headline, control=control)
