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
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from paperzoo.core.accepts import declaration
from tests.fuzz import fresh_copies, call_declared, classify_call, run_probe

PACKAGES = ["paperzoo.optim", "paperzoo.transport", "paperzoo.divergences", "paperzoo.diagnostics",
            "paperzoo.diffusion"]

# Exports that are not called with user data, with the reason.
EXEMPT = {
    "paperzoo.optim.ElementwiseOptimizer": "abstract base class of the elementwise optimizers",
    "paperzoo.optim.CheckedOptimizer": "abstract base class of every optimizer",
    "paperzoo.optim.ClosureWrapper": "abstract base class of the closure wrappers",
    "paperzoo.optim.GRAD_K": "a constant: the table of Lion-K gradient maps",
    "paperzoo.divergences.ESTIMATORS": "a constant: the table of mutual-information bounds",
    "paperzoo.diffusion.PREDICTIONS": "a constant: the prediction targets",
    "paperzoo.diffusion.INNER_PARAMETRIZATIONS": "a constant: the DiffEnc inner-encoder choices",
    "paperzoo.diagnostics.SecondMomentOperator": "built by sgd_second_moment_operator (declared), not constructed directly",
    "paperzoo.diffusion.SPACES": "a constant: the state conventions",
    "paperzoo.diffusion.SAMPLERS": "a constant: the table of samplers",
    "paperzoo.diffusion.COUPLINGS": "a constant: the minibatch couplings",
    "paperzoo.diffusion.SamplerContext": "built by run_sampler for its steps, not by users",
    "paperzoo.diffusion.guidance_scale_at": "the guided denoiser's per-call helper (hot path), checks its output",
    "paperzoo.diffusion.euler_step": "a sampler step, called by run_sampler inside a declared sampler (hot path)",
    "paperzoo.diffusion.iadb_step": "a sampler step, called by run_sampler inside a declared sampler (hot path)",
    "paperzoo.diffusion.rd_step": "a sampler step, called by run_sampler inside a declared sampler (hot path)",
    "paperzoo.diffusion.reflected_step": "a sampler step, called by run_sampler inside a declared sampler (hot path)",
    "paperzoo.diffusion.r1_penalty": "takes a live autograd graph (logits computed from x_real) that the table's argument copies would cut; its misuse error is pinned in tests/diffusion/test_ddgan.py",
    "paperzoo.diffusion.Degradation": "abstract base class of the cold-diffusion degradations (subclasses are declared)",
    "paperzoo.diffusion.heun_step": "a sampler step, called by run_sampler inside a declared sampler (hot path)",
    "paperzoo.diffusion.dpmpp_2m_step": "a sampler step, called by run_sampler inside a declared sampler (hot path)",
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
        if inspect.isclass(obj):
            # Declared public methods enter too: called as functions of the class, ``self`` from their example.
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(member) and declaration(member) is not None:
                    out.append((f"{package}.{name}.{attr}", member))
    return out


DECLARED = _declared()


def test_every_export_is_declared_or_exempt():
    missing = []
    for package, name, obj in _exports():
        key = f"{package}.{name}"
        if _is_value_type(obj) or _is_optimizer(obj) or key in EXEMPT:
            continue
        if declaration(obj) is None:
            missing.append(key)
    assert not missing, (f"exports without an accepts() declaration: {missing}; declare them with "
                         "paperzoo.core.accepts.accepts (or list them in EXEMPT with a reason)")


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


@pytest.mark.parametrize("obj", [obj for _, obj in DECLARED], ids=[key for key, _ in DECLARED])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), float64=st.booleans())
def test_random_valid_calls_give_finite_results(obj, seed, float64):
    # Property: the declaration's example with other random draws and other sizes of its shape symbols (1 to 6) is
    # still a valid call, so it returns finite results or raises a clear error naming an argument.
    decl = declaration(obj)
    dtype = torch.float64 if float64 else torch.float32
    if decl.fixed_dtype is not None:
        dtype = decl.fixed_dtype
    try:
        kwargs = fresh_copies(decl.example_kwargs(dtype, seed=seed, size_range=(1, 6)))
    except ValueError:
        reject()  # the example's builder cannot make a call at these sizes (an example that never can fails)
    outcome = classify_call(lambda: call_declared(obj, decl, kwargs), None, check_output=decl.output == "finite",
                            infinite_ok=decl.infinite_ok)
    assert outcome.kind == "result" or (outcome.kind == "clear error" and _names_an_argument(outcome, decl)), \
        outcome.detail


def _names_an_argument(outcome, decl) -> bool:
    return any(name in outcome.detail for name in inspect.signature(decl.func).parameters)
