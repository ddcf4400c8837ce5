"""Claim check for Why do Random Forests Work? Understanding Tree Ensembles as Self-Regularizing Adaptive Smoothers
(Curth, Jeffares, van der Schaar, 2024).

The paper's findings checked: (A) a randomised forest is quantifiably smoother than the trees it consists of: its
effective number of parameters at unseen test inputs, :math:`p^0_{\\hat s}(I_{test}) = \\frac{n}{|I_{test}|}\\sum
\\|\\hat s(x)\\|^2` (:func:`paperzoo.diagnostics.smoothers.effective_parameters`), is far below the single tree's;
(B) the forest regulates its smoothness by how unlike the training inputs the inputs it predicts at are
("spiked-smooth"): it uses fewer effective parameters at unseen test inputs than at the training inputs themselves,
while an interpolating tree uses ``n`` at both.

Setup, fixed before the first claim run: ``sklearn.datasets.make_friedman1`` (10 features, noise std 1), ``n = 500``
training points and 500 test points from the same distribution (smoke: 300 and 200), 3 seeds (data and fits share
the seed). Tree: ``DecisionTreeRegressor`` (fully grown, interpolating). Forest: ``RandomForestRegressor`` with
100 trees (smoke: 20), ``bootstrap=True``, ``max_features=1/3``, fully grown. Weights by
:func:`~paperzoo.diagnostics.smoothers.tree_smoother_weights` (exact bootstrap counts; reproduction of ``predict``
is recorded as a metric).

Criterion: (A) ``paired_comparison(forest p_test, tree p_test, margin = 0.5 * mean tree p_test)`` wins: the forest's
test-time p_e is below half the tree's, beyond two paired standard errors; (B) ``paired_comparison(forest p_test,
forest p_train, margin = 0.1 * mean forest p_train)`` wins (test-time p_e at least 10% below train-time, beyond 2 SE)
and the same comparison for the tree does not win. Control: a "forest" of one tree without bootstrap or feature
subsampling (``n_estimators=1, bootstrap=False, max_features=1.0``; the same estimator as the tree) put in the
forest's place through the same criterion; it must fail.

Reported beside the criterion, not part of it: p_e of the forest and the tree at test inputs shifted off the
training support (every coordinate + Delta, Delta in {0.25, 0.5, 1.0}), and of a uniform 5-NN smoother (n/5 at every
input, non-adaptive). The catalog hint asked for "forest p_e lower on shifted inputs than in-distribution"; that is
not the paper's statement (its dissimilarity is unseen-versus-training inputs), and an exploratory run of the
implementation, seen before this criterion was written, showed the forest's p_e *rising* at Delta = 0.5 (shifted
inputs fall into the few boundary leaves), so it is reported, not tested.
"""

from __future__ import annotations

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diagnostics.smoothers import effective_parameters, knn_smoother_weights, tree_smoother_weights

SHIFTS = (0.25, 0.5, 1.0)
RATIO_MARGIN = 0.5  # forest test p_e below half the tree's
SPIKE_MARGIN = 0.1  # test p_e at least 10% below train p_e
CRITERION = (
    "make_friedman1 (d = 10, noise 1), n = 500 train / 500 test, 3 seeds, fully grown trees; forest = "
    "RandomForestRegressor(100 trees, bootstrap, max_features = 1/3). (A) forest p_e at test inputs below the "
    "single tree's by more than 0.5 x the tree's mean and 2 paired SE; (B) forest p_e at test inputs below its p_e at "
    "the training inputs by more than 0.1 x the train mean and 2 paired SE, while the tree's test-vs-train drop does "
    "not pass that test. Control: a one-tree forest without bootstrap or feature subsampling in the forest's place, "
    "same criterion; it must fail."
)


def _p(model, x_train, x_query) -> float:
    return float(effective_parameters(tree_smoother_weights(model, x_train, x_query)))


@claim(
    "forest-smoothers",
    statement=("A random forest, read as a smoother of the training labels, uses far fewer effective parameters than "
               "a single tree, and fewer at unseen test inputs than at its training inputs (spiked-smooth), while "
               "an interpolating tree uses n at both."),
    criterion=CRITERION,
    baseline="a single fully grown DecisionTreeRegressor on the same data (p_e = n at every input)",
    threads=1,
)
def forests_are_adaptive_smoothers(ctx: ClaimContext) -> ClaimResult:
    from sklearn.datasets import make_friedman1
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.tree import DecisionTreeRegressor

    n_train = ctx.pick(smoke=300, full=500)
    n_test = ctx.pick(smoke=200, full=500)
    n_trees = ctx.pick(smoke=20, full=100)
    rows = {k: [] for k in ("tree_test", "tree_train", "forest_test", "forest_train", "control_test",
                            "control_train", "knn_test", "knn_train", "predict_error")}
    shifted = {f"{who}_shift_{s:g}": [] for who in ("tree", "forest") for s in SHIFTS}
    for run_seed in ctx.seeds(3):
        seed = run_seed % (2**31 - 1)  # scikit-learn takes 32-bit seeds
        x, y = make_friedman1(n_train + n_test, n_features=10, noise=1.0, random_state=seed)
        x_tr, y_tr, x_te = x[:n_train], y[:n_train], x[n_train:]
        t_tr, t_te = torch.from_numpy(x_tr), torch.from_numpy(x_te)
        tree = DecisionTreeRegressor(random_state=seed).fit(x_tr, y_tr)
        forest = RandomForestRegressor(n_estimators=n_trees, max_features=1 / 3, bootstrap=True,
                                       random_state=seed).fit(x_tr, y_tr)
        control = RandomForestRegressor(n_estimators=1, max_features=1.0, bootstrap=False,
                                        random_state=seed).fit(x_tr, y_tr)
        w_forest = tree_smoother_weights(forest, t_tr, t_te)
        rows["predict_error"].append(float((w_forest @ torch.from_numpy(y_tr)
                                            - torch.from_numpy(forest.predict(x_te))).abs().max()))
        rows["forest_test"].append(float(effective_parameters(w_forest)))
        rows["forest_train"].append(_p(forest, t_tr, t_tr))
        for name, model in (("tree", tree), ("control", control)):
            rows[f"{name}_test"].append(_p(model, t_tr, t_te))
            rows[f"{name}_train"].append(_p(model, t_tr, t_tr))
        rows["knn_test"].append(float(effective_parameters(knn_smoother_weights(t_tr, t_te, 5))))
        rows["knn_train"].append(float(effective_parameters(knn_smoother_weights(t_tr, t_tr, 5))))
        for s in SHIFTS:
            shifted[f"tree_shift_{s:g}"].append(_p(tree, t_tr, t_te + s))
            shifted[f"forest_shift_{s:g}"].append(_p(forest, t_tr, t_te + s))

    tree_test, tree_train = rows["tree_test"], rows["tree_train"]
    spike_tree = paired_comparison(tree_test, tree_train, margin=SPIKE_MARGIN * float(np.mean(tree_train)))

    def criterion(test, train):
        smoother = paired_comparison(test, tree_test, margin=RATIO_MARGIN * float(np.mean(tree_test)))
        spiked = paired_comparison(test, train, margin=SPIKE_MARGIN * float(np.mean(train)))
        return smoother.wins and spiked.wins and not spike_tree.wins, smoother, spiked

    passed, smoother, spiked = criterion(rows["forest_test"], rows["forest_train"])
    control_passed, c_smoother, c_spiked = criterion(rows["control_test"], rows["control_train"])
    control = Control("a one-tree forest without bootstrap or feature subsampling (the tree itself) in the forest's "
                      "place, same criterion", control_passed,
                      {"p_test": rows["control_test"], "p_train": rows["control_train"],
                       "smoother_than_tree": c_smoother.as_metrics(), "spiked": c_spiked.as_metrics()})
    ratio = float(np.mean(rows["forest_test"]) / np.mean(tree_test))
    headline = (f"n = {n_train}, 3 seeds: forest p_e test {fmt_mean_std(rows['forest_test'])} vs tree "
                f"{fmt_mean_std(tree_test)} (ratio {ratio:.3f}); forest train {fmt_mean_std(rows['forest_train'])} "
                f"> test (spiked-smooth), tree train {fmt_mean_std(tree_train)}; shifted +0.5: forest "
                f"{fmt_mean_std(shifted['forest_shift_0.5'])}; 5-NN {fmt_mean_std(rows['knn_test'])}; control "
                f"(1 tree) test {fmt_mean_std(rows['control_test'])}")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        grid = [0.0, *SHIFTS]
        for who, marker in (("forest", "o-"), ("tree", "s--")):
            ax.plot(grid, [np.mean(rows[f"{who}_test"])] + [np.mean(shifted[f"{who}_shift_{s:g}"]) for s in SHIFTS],
                    marker, label=f"{who}, test inputs shifted by Delta")
            ax.axhline(np.mean(rows[f"{who}_train"]), ls=":", c="C0" if who == "forest" else "C1",
                       label=f"{who}, training inputs")
        ax.set_yscale("log")
        ax.set_xlabel("shift Delta of every coordinate")
        ax.set_ylabel("effective parameters p_e")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "effective_parameters")

    return ClaimResult.decide(
        passed,
        metrics={"n_train": n_train, "n_test": n_test, "n_trees": n_trees, **rows, **shifted,
                 "forest_over_tree_test": ratio, "smoother_than_tree": smoother.as_metrics(),
                 "forest_spiked": spiked.as_metrics(), "tree_spiked": spike_tree.as_metrics()},
        baseline={"tree_test": tree_test, "tree_train": tree_train},
        headline=headline, control=control,
    )
