"""Claim check for Integrating Efficient Optimal Transport and Functional Maps For Unsupervised Shape
Correspondence Learning (Le et al., CVPR 2024).

Scaled-down analog of the paper's near-isometric experiment: the shapes are synthetic asymmetric blobs
(:mod:`paperzoo.data.shapes`, ``n`` vertices) and their bent, noisy, vertex-shuffled copies; the feature
extractor is a 3-layer MLP (width 64, 32 output channels) on 32-channel wave kernel signatures (from 50
eigenpairs), in place of a DiffusionNet on ~5k-vertex meshes. Functional maps use ``k = 20`` eigenpairs.

For each seed, 4 training pairs (bends -0.6, -0.3, 0.3, 0.6, fresh noise and shuffles), one held-out test pair
(bend 0.45) and one validation pair (bend -0.45) are drawn; the same initial network is trained for the same
number of Adam steps (lr tuned on the same grid, below; the authors' is 1e-3; gradient norm clipped at 1) with

* **method**: the paper's loss, FM regularisers (bijectivity 1, orthogonality 1) + coupling (1) + 100 x
  ``SW_2(F_x, Pi_xy F_y)`` with 200 projections;
* **baseline**: the same loss without the SW term (the functional-map-only framework the paper builds on).

The test map is the paper's inference (soft map -> functional map -> spectral nearest neighbours); the error is
the mean geodesic distance to the ground truth divided by ``sqrt(area)``. The adaptive refinement (entropic-OT
maps, 10 steps) is then applied to both trained networks and reported, outside the criterion.

Issue 8 rework (the earlier verdict was ``reproduced``: geodesic error 0.231 (SW + FM) vs 0.427 (FM only), both at
the authors' lr 1e-3, untuned, while the untrained WKS descriptors alone scored 0.202: FM-only training degraded
the descriptors, so the comparison may have been against an over-trained baseline):

* **Tuned fairly.** Each loss's Adam learning rate is chosen by :func:`paperzoo.core.evidence.tune` from the same
  grid {3e-4, 1e-3, 3e-3} (extended past a winning edge within [1e-5, 0.1]) on seed 0, by the geodesic error on a
  held-out *validation* pair (bend -0.45, fresh noise and shuffle); every seed is then trained at the chosen rate
  and scored on its own *test* pair (bend 0.45), never used for selection. A baseline that degrades with training
  can thus pick a tiny learning rate (close to the untrained descriptors).
* **A win beyond noise.** "At least 10% lower" is now a paired comparison over the 3 seeds on log scale: the mean
  of ``log(err_fm / err_sw)`` must exceed ``log(1 / 0.9)`` and two standard errors.
* **Control.** The method without its key ingredient, i.e. the FM-only loss, retrained from a different
  initialisation (at the FM-only learning rate) and put through the same criterion against the FM-only baseline:
  it must fail, or differences of initialisation alone would pass the criterion.
* **Budget.** About 90 s on one core at full budget (13 trainings of 200 steps, 6 refinements); the tuning is what
  the check needs to be fair.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, tune
from paperzoo.data.shapes import geodesic_distances, geodesic_error, make_shape_pair, mesh_area
from paperzoo.transport.functional_maps import (SpectralBasis, adaptive_refinement, laplacian_eigenbasis,
                                                pointmap_from_features, pointmap_from_functional_map,
                                                solve_functional_map, unsupervised_matching_loss,
                                                wave_kernel_signature)

CRITERION = (
    "Adam lr of each loss chosen from {3e-4, 1e-3, 3e-3} (extended past a winning edge within [1e-5, 0.1]) by the "
    "geodesic error on a held-out validation pair of seed 0; then, on each of 3 seeds' held-out test pair, the mean "
    "geodesic error (normalised by sqrt(area)) of the network trained with the SW + functional-map loss is lower "
    "than that of the network trained with the functional-map-only loss for the same steps, by a paired mean log "
    "ratio > log(1/0.9) (at least ~10%) and > 2 SE. Control: the FM-only loss from a different initialisation "
    "through the same criterion against the FM-only baseline; it must fail."
)
BASELINE = ("the same pipeline trained without the sliced-Wasserstein term (w_sw = 0: the functional-map-only "
            "unsupervised framework the paper extends), same initialisation, optimiser, steps and lr grid")
LRS = (3e-4, 1e-3, 3e-3)
LR_BOUNDS = (1e-5, 0.1)
MARGIN = math.log(1 / 0.9)
W_SW = {"sw": 100.0, "fm_only": 0.0}

_K_FMAP, _K_WKS, _N_WKS = 20, 50, 32
_TRAIN_BENDS = (-0.6, -0.3, 0.3, 0.6)
_TEST_BEND = 0.45
_VAL_BEND = -0.45


def _prepare(mesh):
    basis = laplacian_eigenbasis(mesh.vertices.double(), mesh.faces, k=_K_WKS)
    desc = wave_kernel_signature(basis, _N_WKS)
    desc = (desc / desc.std(dim=0, keepdim=True)).float()
    small = SpectralBasis(basis.evals[:_K_FMAP].float(), basis.evecs[:, :_K_FMAP].float(), basis.mass.float())
    return desc, small


def _pair(n, bend, gen):
    pair = make_shape_pair(n, curvature=bend, noise=0.005, generator=gen)
    return pair, _prepare(pair.x), _prepare(pair.y)


def _mlp(gen):
    layers = [torch.nn.Linear(_N_WKS, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
              torch.nn.Linear(64, 32)]
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, torch.nn.Linear):
                bound = layer.in_features ** -0.5
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=gen) * 2 * bound - bound)
                layer.bias.copy_(torch.rand(layer.bias.shape, generator=gen) * 2 * bound - bound)
    return torch.nn.Sequential(*layers)


@claim(
    "sw-functional-maps",
    statement=("Adding the sliced-Wasserstein feature-alignment loss to the unsupervised functional-map losses "
               "gives more accurate point-to-point shape correspondences (lower geodesic error) than the "
               "functional-map losses alone."),
    criterion=CRITERION,
    baseline=BASELINE,
    threads=1,
)
def sw_loss_lowers_geodesic_error(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=100, full=300)
    steps = ctx.pick(smoke=10, full=200)
    refine_steps = ctx.pick(smoke=2, full=10)
    seeds = [s % (2**31) for s in ctx.seeds(3)]
    start = time.perf_counter()

    def problem(seed):
        gen = torch.Generator().manual_seed(seed)
        train = [_pair(n, bend, gen)[1:] for bend in _TRAIN_BENDS]
        evals = {}
        for split, bend in (("test", _TEST_BEND), ("val", _VAL_BEND)):
            pair, (dx, bx), (dy, by) = _pair(n, bend, gen)
            evals[split] = dict(pair=pair, dx=dx, bx=bx, dy=dy, by=by, geo=geodesic_distances(pair.x),
                                area=mesh_area(pair.x))
        return dict(seed=seed, gen=gen, train=train, **evals)

    def error(ev, p2p):
        return float(geodesic_error(p2p, ev["pair"].gt, ev["geo"], ev["area"]).mean())

    def train(prob, w_sw, lr, init_seed):
        model = _mlp(torch.Generator().manual_seed(init_seed))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        proj_gen = torch.Generator().manual_seed(prob["seed"] + 2)
        for step in range(steps):
            (desc_x, basis_x), (desc_y, basis_y) = prob["train"][step % len(prob["train"])]
            loss = unsupervised_matching_loss(model(desc_x), model(desc_y), basis_x, basis_y, w_sw=w_sw,
                                              generator=proj_gen)["total"]
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        out = {"model": model, "proj_gen": proj_gen}
        with torch.no_grad():
            for split in ("val", "test"):
                ev = prob[split]
                out[split] = error(ev, pointmap_from_features(model(ev["dx"]), model(ev["dy"]), ev["bx"], ev["by"]))
        return out

    probs = [problem(seed) for seed in seeds]
    descriptor_only = [error(p["test"], pointmap_from_functional_map(
        solve_functional_map(p["test"]["dx"], p["test"]["dy"], p["test"]["bx"], p["test"]["by"]),
        p["test"]["bx"], p["test"]["by"])) for p in probs]
    sel = tune({name: (lambda lr, w=w: train(probs[0], w, lr, probs[0]["seed"] + 1)) for name, w in W_SW.items()},
               LRS, score=lambda out: out["val"], bounds=LR_BOUNDS)
    runs = {name: [sel[name].output] + [train(p, w, sel[name].best, p["seed"] + 1) for p in probs[1:]]
            for name, w in W_SW.items()}
    replicate = [train(p, 0.0, sel["fm_only"].best, p["seed"] + 3) for p in probs]  # the control
    errors = {name: [r["test"] for r in runs[name]] for name in W_SW}
    refined = {name: [] for name in W_SW}
    for name in W_SW:
        for p, r in zip(probs, runs[name]):
            ev = p["test"]
            res = adaptive_refinement(r["model"], ev["dx"], ev["dy"], ev["bx"], ev["by"], n_iter=refine_steps,
                                      generator=r["proj_gen"])
            refined[name].append(error(ev, res.p2p))

    def summary(values):
        return {"per_seed": values, "mean": statistics.fmean(values), "std": statistics.stdev(values)}

    def log_cmp(method_err, base_err):
        return paired_comparison([math.log(e) for e in method_err], [math.log(e) for e in base_err], margin=MARGIN)

    cmp = log_cmp(errors["sw"], errors["fm_only"])
    control_cmp = log_cmp([r["test"] for r in replicate], errors["fm_only"])
    control = Control("the FM-only loss retrained from a different initialisation, through the same criterion against "
                      "the FM-only baseline", control_cmp.wins,
                      {"geodesic_error": [r["test"] for r in replicate], "paired_log_ratio": control_cmp.as_metrics()})
    edge = [name for name in W_SW if sel[name].at_edge]
    headline = (f"test geodesic error {fmt_mean_std(errors['sw'])} (SW + FM, lr {sel['sw'].best:.2g}) vs "
                f"{fmt_mean_std(errors['fm_only'])} (FM only, lr {sel['fm_only'].best:.2g}), 3 seeds, paired log "
                f"ratio {cmp.diff_mean:.3f} ± {cmp.diff_se:.3f} SE (margin {MARGIN:.3f}); untrained WKS "
                f"{fmt_mean_std(descriptor_only)}; control (FM-only replicate) log ratio {control_cmp.diff_mean:.3f}"
                + (f"; lr at a bound: {', '.join(edge)}" if edge else ""))
    common = {"n_vertices": n, "train_steps": steps, "refine_steps": refine_steps, "seeds": seeds,
              "lr_grid": list(LRS)}
    metrics = {"geodesic_error": summary(errors["sw"]), "refined_geodesic_error": summary(refined["sw"]),
               "paired_log_ratio_vs_fm_only": cmp.as_metrics(),
               "wks_descriptor_only_error": summary(descriptor_only), "selection": sel["sw"].as_metrics(),
               "seconds": time.perf_counter() - start, **common}
    baseline = {"geodesic_error": summary(errors["fm_only"]), "refined_geodesic_error": summary(refined["fm_only"]),
                "selection": sel["fm_only"].as_metrics(), **common}
    return ClaimResult.decide(cmp.wins, metrics=metrics, baseline=baseline, headline=headline, control=control)
