"""Registry-driven fuzz tables over every export of every method package.

Every public function (and class constructor) declares what it accepts with :func:`paperzoo.core.accepts.accepts`;
this table builds its valid example call in float32 and float64 and derives the probes from the declaration
(bad numbers, bad tensors, empty and mixed-dtype inputs, boundary values and degenerate cases). An invalid probe
must raise a ValueError/TypeError that names the argument; a valid one must return finite results (or raise such an
error). Optimizers have their own table in tests/optim/test_optimizer_fuzz.py.

A new export enters automatically: the coverage test fails until it is declared (or listed in EXEMPT with a reason).
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from paperzoo.core.accepts import declaration
from tests.fuzz import fresh_copies, call_declared, classify_call, run_probe

PACKAGES = ["paperzoo.optim", "paperzoo.transport", "paperzoo.divergences", "paperzoo.diagnostics"]

# Exports that are not called with user data, with the reason.
EXEMPT = {
    "paperzoo.optim.ElementwiseOptimizer": "abstract base class of the elementwise optimizers",
    "paperzoo.optim.ClosureWrapper": "abstract base class of the closure wrappers",
    "paperzoo.optim.GRAD_K": "a constant: the table of Lion-K gradient maps",
    "paperzoo.divergences.ESTIMATORS": "a constant: the table of mutual-information bounds",
}

# Migration list: exports not declared yet. Remove an entry when you declare it; never add one.
UNDECLARED_TODO: dict[str, set[str]] = {
    "paperzoo.optim": {
        "adopt_clip", "adopt_update", "amsgrad_update", "beta_normalized_step", "check_bound",
        "class_mean_losses", "clip_by_norm", "clip_coordinatewise", "clipped_fixed_point",
        "clipping_bias_bounds", "cvar_spectrum", "diffgrad_update", "ema_update", "empirical_fisher",
        "esrm_spectrum", "extremile_spectrum", "fit_inverse_hessian", "fit_linear_rate", "fit_loglog_slope",
        "gauss_newton_hessian", "gd_convex_bound", "gd_strongly_convex_bound", "geometric_median_spp",
        "global_norm", "goldstein_stationarity", "gradfilter_ema", "gradfilter_ma", "gsnr", "gsnr_scale",
        "infshape", "lasso_objective", "LieGroupHessianFitter", "lion_k_update", "logistic_loss_oracle",
        "mars_update", "mcp_penalty", "median_tracking_update", "min_norm_in_hull", "MovingWindow", "mup_init_",
        "mup_param_groups", "MuReadout", "ncvx_objective", "nm_mask", "OptimisticOMD", "optimizer_state_bytes",
        "per_class_normalized_grad", "prospect_objective", "prox_gradient_mapping_norm", "prox_mcp",
        "prox_scad", "run_gradient_method", "sa_srrw", "sa_srrw_covariance", "scad_penalty",
        "set_readout_width_mult", "sgd_strongly_convex_bound", "simulate_clipped_sgd", "sketch_solve_kkt",
        "smb_model_step", "smoothed_gradient", "soft_threshold", "solve_cyclic_bcd", "solve_gfm",
        "solve_gfm_plus", "solve_grad_regularized_newton", "solve_lasso_ista", "solve_lasso_subgradient",
        "solve_ncvx_ag", "solve_ncvx_proximal_gradient", "solve_prospect", "solve_sketched_eal",
        "spectral_risk_objective", "spectral_risk_weights", "squared_loss_oracle", "srrw_kernel",
        "srrw_sampling_covariance", "SRRWToken", "srste_adam", "step_decay_schedule", "StepDecay",
        "subset_norm_sq", "target_surrogate", "two_point_estimate", "uniform_sphere",
        "weiszfeld_geometric_median", "window_average", "window_update", "worst_case_two_point_noise"
    },
    "paperzoo.transport": {
        "adaptive_refinement", "check_ot_inputs", "density_jko", "entropic_ot", "fit_monge_gap_map",
        "functional_map_from_pointmap", "laplacian_eigenbasis", "marginal_error", "monge_gap", "pairwise_cost",
        "plan_from_potentials", "pointmap_from_functional_map", "projected_wasserstein",
        "projection_sparse_simplex", "random_projections", "sinkhorn_divergence", 
        "sinkhorn_newton_sparse", "sliced_wasserstein", "sliced_wasserstein_cv", "solve_functional_map",
        "sparsity_constrained_ot", "sw_alignment_loss", "unsupervised_matching_loss", "variational_jko"
    },
    "paperzoo.divergences": {
        "bdkd_student_loss", "bdkd_weights", "ConcatCritic", "conditional_cs_divergence", "cs_divergence",
        "cs_ib_loss", "cs_qmi", "discrete_mutual_information", "dml_student_loss", "ebim_greedy",
        "energy_distance", "entropy", "expected_calibration_error", "forward_kl", "gaussian_cs_divergence",
        "gaussian_kernel", "gradient_penalty", "greedy_mec", "group_averaged_kernel", "invariant_mmd2",
        "invariant_wasserstein1", "kde_log_density", "kde_rate", "kde_regime", "kde_thresholds",
        "logmeanexp_offdiag", "majorization_meet", "mec_b", "mi_lower_bound", "MINEMovingAverage",
        "online_distillation_step", "online_teacher_loss", "orbit_augment", "permutation_group", "reverse_kl",
        "riesz_mmd_1d", "riesz_mmd_1d_with_grad", "riesz_slicing_constant", "rotation_group", "SeparableCritic",
        "sign_flip_group", "sliced_riesz_mmd", "spectral_normalize", "wasserstein_dependency", "wpc_loss"
    },
    "paperzoo.diagnostics": {
        "class_wise_hessian_extremes", "gd_trajectory", "hvp_operator", "lanczos", "top_eigenvalue"
    },
}


def _exports():
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            yield package, name, getattr(module, name)


def _is_value_type(obj) -> bool:
    return inspect.isclass(obj) and (issubclass(obj, Warning) or (issubclass(obj, tuple) and hasattr(obj, "_fields")))


def _is_optimizer(obj) -> bool:
    return inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)


def _declared():
    out = []
    for package, name, obj in _exports():
        if _is_value_type(obj) or _is_optimizer(obj) or f"{package}.{name}" in EXEMPT:
            continue
        if declaration(obj) is not None:
            out.append((f"{package}.{name}", obj))
    return out


DECLARED = _declared()


def test_every_export_is_declared_or_exempt():
    missing = []
    for package, name, obj in _exports():
        key = f"{package}.{name}"
        if _is_value_type(obj) or _is_optimizer(obj) or key in EXEMPT or name in UNDECLARED_TODO[package]:
            continue
        if declaration(obj) is None:
            missing.append(key)
    assert not missing, (f"exports without an accepts() declaration: {missing}; declare them with "
                         "paperzoo.core.accepts.accepts (or list them in EXEMPT with a reason)")


def test_todo_lists_only_undeclared_exports():
    stale = [f"{p}.{n}" for p, names in UNDECLARED_TODO.items() for n in names
             if declaration(getattr(importlib.import_module(p), n)) is not None]
    assert not stale, f"remove these declared exports from UNDECLARED_TODO: {stale}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("obj", [obj for _, obj in DECLARED], ids=[key for key, _ in DECLARED])
def test_example_call_gives_finite_results(obj, dtype):
    decl = declaration(obj)
    if decl.fixed_dtype is not None and decl.fixed_dtype != dtype:
        pytest.skip(f"defined at {decl.fixed_dtype} only")
    kwargs = fresh_copies(decl.example_kwargs(dtype))
    outcome = classify_call(lambda: call_declared(obj, decl, kwargs), None, check_output=decl.output == "finite",
                            infinite_ok=decl.infinite_ok)
    assert outcome.kind == "result", outcome.detail


@pytest.mark.parametrize("obj", [obj for _, obj in DECLARED], ids=[key for key, _ in DECLARED])
def test_derived_probes(obj):
    decl = declaration(obj)
    kwargs = decl.example_kwargs(torch.float64)
    failures = []
    for probe in decl.probes(kwargs):
        outcome = run_probe(obj, kwargs, probe, check_output=decl.output == "finite", infinite_ok=decl.infinite_ok,
                            decl=decl)
        if outcome.kind != "skipped" and not outcome.passes(probe.valid):
            failures.append(f"{probe.arg}: {probe.label} -> {outcome.kind} ({outcome.detail})")
    assert not failures, "\n".join(failures)
