"""Tests for paperzoo.diagnostics.smoothers: tree/forest smoother weights against predict(), k-NN weights against
scikit-learn's KNeighborsRegressor, the effective number of parameters against closed forms, pinned errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_friedman1
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
from sklearn.neighbors import KNeighborsRegressor
from sklearn.tree import DecisionTreeRegressor

from paperzoo.diagnostics.smoothers import effective_parameters, knn_smoother_weights, tree_smoother_weights


@pytest.fixture(scope="module")
def data():
    x, y = make_friedman1(260, n_features=6, noise=1.0, random_state=0)
    return x[:200], y[:200], x[200:]


MODELS = {
    "tree": lambda: DecisionTreeRegressor(random_state=0),
    "tree_leaf5": lambda: DecisionTreeRegressor(min_samples_leaf=5, random_state=0),
    "forest_bootstrap": lambda: RandomForestRegressor(n_estimators=15, max_features=0.5, random_state=1),
    "forest_max_samples": lambda: RandomForestRegressor(n_estimators=10, max_samples=0.6, min_samples_leaf=3,
                                                        random_state=2),
    "forest_max_samples_int": lambda: RandomForestRegressor(n_estimators=5, max_samples=77, random_state=3),
    "forest_no_bootstrap": lambda: RandomForestRegressor(n_estimators=10, bootstrap=False, max_features=0.5,
                                                         random_state=4),
    "extra_trees": lambda: ExtraTreesRegressor(n_estimators=10, random_state=5),
    "extra_trees_bootstrap": lambda: ExtraTreesRegressor(n_estimators=10, bootstrap=True, random_state=6),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_weights_reproduce_predict(data, name):
    x, y, xq = data
    model = MODELS[name]().fit(x, y)
    t, tq = torch.from_numpy(x), torch.from_numpy(xq)
    w = tree_smoother_weights(model, t, tq)
    assert w.shape == (len(xq), len(x)) and w.dtype == torch.float64
    torch.testing.assert_close(w @ torch.from_numpy(y), torch.from_numpy(model.predict(xq)), rtol=0, atol=1e-10)
    assert bool((w >= 0).all())
    torch.testing.assert_close(w.sum(1), torch.ones(len(xq), dtype=torch.float64), rtol=0, atol=1e-12)
    w_train = tree_smoother_weights(model, t, t)  # at the training inputs too
    torch.testing.assert_close(w_train @ torch.from_numpy(y), torch.from_numpy(model.predict(x)), rtol=0, atol=1e-10)


def test_weights_explicit_loop_and_sklearn_bootstrap(data):
    """Against an independent per-query loop that takes the bootstrap counts from scikit-learn's own helper."""
    from sklearn.ensemble._forest import _generate_sample_indices

    x, y, xq = data
    forest = RandomForestRegressor(n_estimators=4, max_samples=0.7, random_state=7).fit(x, y)
    w = tree_smoother_weights(forest, torch.from_numpy(x), torch.from_numpy(xq[:5])).numpy()
    expected = np.zeros_like(w)
    for tree in forest.estimators_:
        idx = _generate_sample_indices(tree.random_state, len(x), forest._n_samples_bootstrap, None)
        counts = np.bincount(idx, minlength=len(x))
        leaves = tree.apply(x)
        for j, leaf in enumerate(tree.apply(xq[:5])):
            member = (leaves == leaf) * counts
            expected[j] += member / member.sum()
    np.testing.assert_allclose(w, expected / 4, rtol=0, atol=1e-14)


def test_float32_inputs_and_multioutput(data):
    x, y, xq = data
    y2 = np.stack([y, -2 * y + 1], 1)
    forest = RandomForestRegressor(n_estimators=5, random_state=0).fit(x, y2)
    w = tree_smoother_weights(forest, torch.from_numpy(x).float(), torch.from_numpy(xq).float())
    assert w.dtype == torch.float32
    np.testing.assert_allclose(w.double().numpy() @ y2, forest.predict(xq), rtol=0, atol=1e-4)


def test_interpolating_tree_uses_n_parameters_and_forest_fewer(data):
    x, y, xq = data
    t, tq = torch.from_numpy(x), torch.from_numpy(xq)
    tree = DecisionTreeRegressor(random_state=0).fit(x, y)
    assert float(effective_parameters(tree_smoother_weights(tree, t, tq))) == pytest.approx(len(x))
    assert float(effective_parameters(tree_smoother_weights(tree, t, t))) == pytest.approx(len(x))
    forest = RandomForestRegressor(n_estimators=30, max_features=1 / 3, random_state=0).fit(x, y)
    p_test = float(effective_parameters(tree_smoother_weights(forest, t, tq)))
    p_train = float(effective_parameters(tree_smoother_weights(forest, t, t)))
    assert p_test < p_train < len(x)


def test_leaf_size_closed_form(data):
    """p_e = n * mean over queries of 1 / (size of the query's leaf), for an unbootstrapped tree."""
    x, y, xq = data
    tree = DecisionTreeRegressor(min_samples_leaf=7, random_state=0).fit(x, y)
    sizes = tree.tree_.n_node_samples[tree.apply(xq)]
    p = effective_parameters(tree_smoother_weights(tree, torch.from_numpy(x), torch.from_numpy(xq)))
    assert float(p) == pytest.approx(len(x) * np.mean(1.0 / sizes), rel=1e-12)


@pytest.mark.parametrize("k", [1, 4, 9])
def test_knn_weights_match_sklearn(data, k):
    x, y, xq = data
    w = knn_smoother_weights(torch.from_numpy(x), torch.from_numpy(xq), k)
    ref = KNeighborsRegressor(n_neighbors=k, algorithm="brute").fit(x, y)
    np.testing.assert_allclose(w.numpy() @ y, ref.predict(xq), rtol=0, atol=1e-10)
    graph = ref.kneighbors_graph(xq, mode="connectivity").toarray() / k
    np.testing.assert_allclose(w.numpy(), graph, rtol=0, atol=1e-15)
    assert float(effective_parameters(w)) == pytest.approx(len(x) / k)


def test_effective_parameters_closed_forms():
    n = 6
    assert float(effective_parameters(torch.eye(n, dtype=torch.float64))) == pytest.approx(n)  # interpolation
    assert float(effective_parameters(torch.full((3, n), 1 / n))) == pytest.approx(1.0)  # global mean
    w = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    assert float(effective_parameters(w)) == pytest.approx(4 * (0.5 + 1.0) / 2)


def test_errors(data):
    x, y, xq = data
    t, tq = torch.from_numpy(x), torch.from_numpy(xq)
    with pytest.raises(ValueError, match="tree_or_forest must be fitted, got an unfitted RandomForestRegressor"):
        tree_smoother_weights(RandomForestRegressor(), t, tq)
    with pytest.raises(TypeError, match="tree_or_forest must be a fitted scikit-learn DecisionTreeRegressor"):
        tree_smoother_weights(GradientBoostingRegressor().fit(x, y), t, tq)
    forest = RandomForestRegressor(n_estimators=3, random_state=0).fit(x, y)
    with pytest.raises(ValueError, match="X_train must be the inputs the estimator was fitted on"):
        tree_smoother_weights(forest, t[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))], tq)
    with pytest.raises(ValueError, match="X_train must have the estimator's 6 features, got 5"):
        tree_smoother_weights(forest, t[:, :5], tq[:, :5])
    with pytest.raises(ValueError, match="X_query must have d = 6"):
        tree_smoother_weights(forest, t, tq[:, :5])
    with pytest.raises(TypeError, match="X_train must be a torch.Tensor, got ndarray"):
        tree_smoother_weights(forest, x, tq)
    weighted = RandomForestRegressor(n_estimators=2, random_state=0).fit(x, y, sample_weight=np.full(len(x), 2.0))
    with pytest.raises(ValueError, match="tree_or_forest was fitted with sample_weight"):
        tree_smoother_weights(weighted, t, tq)
    mae = DecisionTreeRegressor(criterion="absolute_error", max_depth=2).fit(x, y)
    with pytest.raises(ValueError, match="criterion='absolute_error' predicts leaf medians"):
        tree_smoother_weights(mae, t, tq)
    mono = DecisionTreeRegressor(monotonic_cst=[1, 0, 0, 0, 0, 0], random_state=0).fit(x, y)
    with pytest.raises(ValueError, match="tree_or_forest must not use monotonic_cst"):
        tree_smoother_weights(mono, t, tq)
    with pytest.raises(ValueError, match="k must be <= the number of training inputs n = 200, got 201"):
        knn_smoother_weights(t, tq, 201)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        knn_smoother_weights(t, tq, 0)
    with pytest.raises(ValueError, match="weights must be >= 0 entrywise"):
        effective_parameters(-torch.eye(3))
