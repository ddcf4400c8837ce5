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
    "paperzoo.optim.CheckedOptimizer": "abstract base class of every optimizer",
    "paperzoo.optim.ClosureWrapper": "abstract base class of the closure wrappers",
    "paperzoo.optim.GRAD_K": "a constant: the table of Lion-K gradient maps",
    "paperzoo.divergences.ESTIMATORS": "a constant: the table of mutual-information bounds",
}

# Migration list: exports not declared yet. Remove an entry when you declare it; never add one.
UNDECLARED_TODO: dict[str, set[str]] = {
    "paperzoo.optim": {
        "beta_normalized_step", 
        "nm_mask", "optimizer_state_bytes",
        "sa_srrw", "sa_srrw_covariance", 
        "sketch_solve_kkt",
        "solve_sketched_eal",
        "srrw_kernel",
        "srrw_sampling_covariance", "SRRWToken", "srste_adam", 
        "subset_norm_sq"
    },
    "paperzoo.transport": set(),
    "paperzoo.divergences": set(),
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
    return inspect.isclass(obj) and (issubclass(obj, BaseException) or (issubclass(obj, tuple) and hasattr(obj, "_fields")))


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
