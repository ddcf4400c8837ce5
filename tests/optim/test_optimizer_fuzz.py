"""Registry-driven bad-input table over every optimizer exported by paperzoo.optim.

Each optimizer enters automatically: its constructor's ``@accepts`` declaration gives the hyperparameter probes
(at construction and through ``add_param_group``), and every optimizer gets the gradient probes:

- a NaN or inf gradient entry, at the first step and at a later one: ``nonfinite="raise"`` raises
  NonFiniteGradientError and ``"skip"`` skips the step, both with parameters and optimizer state unchanged;
- a sparse gradient: a clear TypeError/ValueError; a zero gradient at step 1 and a parameter without a gradient:
  finite parameters, the gradient-less one untouched; bfloat16 parameters: finite steps or a clear TypeError;
- a checkpoint through ``torch.save`` / ``torch.load`` at its defaults (``weights_only=True``) continues
  bit-identically.

Optimizers whose ``step`` is not ``step(closure)`` with a loss-and-backward closure get a driver in DRIVERS.
"""

from __future__ import annotations

import copy
import inspect
import io
import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import paperzoo.optim as optim
from paperzoo.core.accepts import declaration
from paperzoo.optim import NonFiniteGradientError
from tests.fuzz import classify_call

ABSTRACT = {"CheckedOptimizer", "ElementwiseOptimizer", "ClosureWrapper"}
# Migration list: optimizers whose constructor has no @accepts declaration or no nonfinite policy yet. Remove an
# entry when it is done; never add one.
OPTIMIZER_TODO: set[str] = set()


def _target(p):
    return torch.linspace(-1.0, 1.0, p.numel(), dtype=p.dtype).view_as(p)


def _loss(params, bad: float | None):
    loss = sum(((p - _target(p)) ** 2).sum() for p in params)
    if bad is not None:
        # One coordinate's gradient becomes NaN or inf (and the loss with it).
        loss = loss + params[0].view(-1)[0] * bad
    return loss


def _backward_closure(opt, params, bad, sparse):
    def closure():
        opt.zero_grad()
        loss = _loss(params, bad)
        loss.backward()
        if sparse:
            params[0].grad = params[0].grad.to_sparse()
        return loss
    return closure


def _closure_step(opt, params, bad, sparse=False):
    return opt.step(_backward_closure(opt, params, bad, sparse))


def _losses_step(opt, params, bad, k=4):
    """Closure returning a vector of losses (micro-batches or classes), without backward."""
    def closure():
        base = _loss(params, bad)
        return torch.stack([base * (1.0 + 0.1 * i) for i in range(k)])
    return opt.step(closure)


def _discover_step(opt, params, bad, sparse=False):
    return opt.step(_backward_closure(opt, params, bad, sparse), cluster_id=0)


def _sso_step(opt, params, bad):
    return opt.step(lambda: torch.cat([p.view(-1) for p in params]),
                    lambda z: ((z - 0.5) ** 2).sum() + (z[0] * bad if bad is not None else 0.0))


def _create_graph_step(opt, params, bad, sparse=False):
    def closure():
        opt.zero_grad()
        loss = _loss(params, bad)
        loss.backward(create_graph=True)
        if sparse:
            params[0].grad = params[0].grad.detach().to_sparse()
        return loss
    return opt.step(closure)


@dataclass
class Driver:
    build: Callable  # (cls, params, **hyperparameters) -> optimizer
    step: Callable = _closure_step  # (opt, params, bad, [sparse]) -> loss; bad: None, nan or inf
    sparse: bool = True  # the step can hand over a sparse gradient (not when gradients come from autograd.grad)


def _plain(cls, params, **kw):
    return cls(params, **kw)


DRIVERS = {
    "Discover": Driver(lambda cls, params, **kw: cls(params, **{"n_clusters": 2, **kw}), _discover_step),
    "Grokfast": Driver(lambda cls, params, **kw: cls(torch.optim.SGD(params, lr=0.05), **kw)),
    # PCNGD and VRGD differentiate a vector of losses themselves, SSO its targets: no sparse gradient reaches them.
    "PCNGD": Driver(_plain, lambda opt, params, bad: _losses_step(opt, params, bad, k=2), sparse=False),
    # PSGD's default hessian="exact" takes Hessian-vector products: its closure calls backward(create_graph=True).
    "PSGD": Driver(_plain, _create_graph_step),
    "SSO": Driver(_plain, _sso_step, sparse=False),
    "VRGD": Driver(lambda cls, params, **kw: cls(params, **{"lr": 0.05, **kw}), _losses_step, sparse=False),
}

NAMES = sorted(name for name in optim.__all__
               if inspect.isclass(getattr(optim, name)) and issubclass(getattr(optim, name), torch.optim.Optimizer)
               and name not in ABSTRACT)
READY = [name for name in NAMES if name not in OPTIMIZER_TODO]


def _driver(name):
    return DRIVERS.get(name, Driver(_plain))


def _params(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3, 2, generator=g, dtype=dtype)),
            torch.nn.Parameter(torch.randn(4, generator=g, dtype=dtype))]


def _build(name, params=None, **kw):
    params = _params() if params is None else params
    return _driver(name).build(getattr(optim, name), params, **kw), params


def _snapshot(opt, params):
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b) or (
            a.is_floating_point() and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_every_optimizer_is_declared():
    missing = [name for name in NAMES if name not in OPTIMIZER_TODO and declaration(getattr(optim, name)) is None]
    assert not missing, f"optimizers without an @accepts declaration on __init__: {missing}"
    stale = sorted(OPTIMIZER_TODO - set(NAMES))
    assert not stale, f"OPTIMIZER_TODO names no exported optimizer: {stale}"


@pytest.mark.parametrize("name", READY)
def test_hyperparameter_probes(name):
    decl = declaration(getattr(optim, name))
    sig = inspect.signature(getattr(optim, name).__init__)
    failures = []
    for probe in decl.probes({}):
        if probe.arg not in sig.parameters:
            continue
        kw = probe.mutate({})
        outcome = classify_call(lambda: _build(name, **kw)[0], probe.arg, check_output=False)
        if probe.valid and outcome.kind == "result":
            opt, params = _build(name, **kw)
            outcome = classify_call(lambda: [_driver(name).step(opt, params, None) for _ in range(3)] and params,
                                    probe.arg)
        elif not probe.valid and outcome.kind == "result":
            outcome.kind = "silent"
        if not outcome.passes(probe.valid):
            failures.append(f"{probe.arg}: {probe.label} -> {outcome.kind} ({outcome.detail})")
        if not probe.valid and probe.arg not in ("nonfinite",) and probe.label != "None":
            opt, _ = _build(name)
            extra = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
            group = {"params": [extra], probe.arg: kw[probe.arg]}
            outcome = classify_call(lambda: opt.add_param_group(group), probe.arg, check_output=False)
            if outcome.kind == "result":
                outcome.kind = "silent"
            if not outcome.passes(False):
                failures.append(f"add_param_group {probe.arg}: {probe.label} -> {outcome.kind} ({outcome.detail})")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("at_step", [0, 2])
@pytest.mark.parametrize("name", READY)
def test_nonfinite_gradient_raises_or_skips_without_changing_anything(name, at_step, bad):
    for policy in (None, "raise", "skip"):  # None: the default, which must be "raise"
        opt, params = _build(name, **({} if policy is None else {"nonfinite": policy}))
        step = _driver(name).step
        for _ in range(at_step):
            step(opt, params, None)
        before = _snapshot(opt, params)
        if policy != "skip":
            with pytest.raises(NonFiniteGradientError, match="NaN or inf"):
                step(opt, params, bad)
        else:
            step(opt, params, bad)
            assert opt.skipped_steps == 1
        after = _snapshot(opt, params)
        assert _same(before[0], after[0]), f"{policy}: parameters changed"
        assert _same(before[1], after[1]), f"{policy}: optimizer state changed"
        step(opt, params, None)
        assert all(bool(torch.isfinite(p).all()) for p in params)


@pytest.mark.parametrize("name", READY)
def test_sparse_zero_and_missing_gradients(name):
    opt, params = _build(name)
    unused = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt.add_param_group({"params": [unused]})

    def zero_then_normal():
        # Parameters at the minimiser: a zero gradient at the first step (and after).
        with torch.no_grad():
            for p in params:
                p.copy_(_target(p))
        for _ in range(3):
            _driver(name).step(opt, params, None)
        return params

    outcome = classify_call(zero_then_normal, None)
    assert outcome.kind in ("result", "clear error"), outcome.detail
    assert torch.equal(unused.detach(), torch.ones(3, dtype=torch.float64))

    if _driver(name).sparse:
        opt, params = _build(name)
        outcome = classify_call(lambda: _driver(name).step(opt, params, None, True), None, check_output=False)
        assert outcome.kind == "clear error" and "sparse" in outcome.detail, outcome.detail


@pytest.mark.parametrize("name", READY)
def test_steps_run_no_declared_checks(name, monkeypatch):
    # Hot paths call the private unchecked kernels: a declared function's checks run per user call, not per step.
    import paperzoo.core.accepts as accepts_module

    opt, params = _build(name)
    calls = []
    validate = accepts_module.validate_call
    monkeypatch.setattr(accepts_module, "validate_call", lambda specs, arguments: calls.append(sorted(arguments))
                        or validate(specs, arguments))
    for _ in range(3):
        _driver(name).step(opt, params, None)
    assert not calls, f"{name}.step ran declared checks of arguments {calls[:3]}"


@pytest.mark.parametrize("name", READY)
def test_bfloat16_parameters_give_finite_steps_or_a_clear_error(name):
    def run():
        opt, params = _build(name, params=_params(torch.bfloat16))
        for _ in range(3):
            _driver(name).step(opt, params, None)
        return params
    outcome = classify_call(run, None)
    assert outcome.kind in ("result", "clear error"), outcome.detail


@pytest.mark.parametrize("name", READY)
def test_checkpoint_loads_with_torch_load_defaults(name):
    opt, params = _build(name)
    step = _driver(name).step
    for _ in range(3):
        step(opt, params, None)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)  # weights_only=True, torch's default
    new_params = [torch.nn.Parameter(t.clone()) for t in saved["params"]]
    new_opt, _ = _build(name, params=new_params)
    new_opt.load_state_dict(saved["opt"])
    for _ in range(2):
        step(opt, params, None)
        step(new_opt, new_params, None)
    for a, b in zip(params, new_params):
        assert torch.equal(a, b)


WRAPPERS = [name for name in READY if issubclass(getattr(optim, name), optim.ClosureWrapper)]


@pytest.mark.parametrize("name", WRAPPERS)
@pytest.mark.parametrize("key", ["lr", "momentum", "weight_decay"])
def test_wrappers_check_the_base_optimizers_hyperparameters(name, key):
    """torch.optim.SGD accepts lr=nan and a per-group lr=-1; the wrappers check its groups with our messages."""
    from paperzoo.optim._common import TORCH_HYPERPARAMETERS

    failures = []
    for probe in TORCH_HYPERPARAMETERS[key].probes(key, 0.1):
        if probe.valid or probe.label == "None":
            continue
        bad = probe.mutate({})[key]
        attempts = {
            "constructor": lambda: _build(name, **{key: bad}),
            "per-group": lambda: _build(name, params=[{"params": _params(), key: bad}]),
            "add_param_group": lambda: _build(name)[0].add_param_group(
                {"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], key: bad}),
        }
        for where, attempt in attempts.items():
            outcome = classify_call(attempt, key, check_output=False)
            if outcome.kind != "clear error":
                failures.append(f"{where} {key}: {probe.label} -> {outcome.kind} ({outcome.detail})")
    assert not failures, "\n".join(failures)


def test_grokfast_checks_the_wrapped_optimizers_groups():
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=r"^lr must be finite, got nan$"):
        optim.Grokfast(torch.optim.SGD([{"params": [w], "lr": math.nan}], lr=0.1))
    opt = optim.Grokfast(torch.optim.SGD([w], lr=0.1))
    with pytest.raises(ValueError, match=r"^lr must be >= 0\.0, got -1\.0$"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": -1.0})
