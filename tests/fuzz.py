"""Shared test helper: run a derived probe and classify its outcome.

Outcomes:

- ``clear error``: a ``ValueError``/``TypeError`` raised by paperzoo whose message names the argument;
- ``result``: a return value whose floating tensors and floats are all finite;
- ``unclear error``: a ValueError/TypeError raised by paperzoo that does not name the argument, or a
  FloatingPointError (a solver's numerical breakdown);
- ``crash``: any other exception, or a ValueError/TypeError raised inside torch, scipy, sqlite or the standard
  library;
- ``silent``: an invalid input accepted, or a result with NaN or inf entries;
- ``hang``: (probe counts only) no answer within the per-probe time limit.

An invalid probe passes only as ``clear error``; a valid one as ``result`` or ``clear error``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

import paperzoo

PAPERZOO_ROOT = str(Path(paperzoo.__file__).resolve().parent)
GOOD = {True: ("result", "clear error"), False: ("clear error",)}


@dataclass
class Outcome:
    kind: str
    detail: str

    def passes(self, valid: bool) -> bool:
        return self.kind in GOOD[valid]


def nonfinite_paths(value, path="result", depth=0, infinite_ok=(), field=None) -> list[str]:
    """Where ``value`` (tensors, numbers, tuples, lists, dicts, NamedTuples) holds NaN or inf; fields named in
    ``infinite_ok`` may hold infinities but not NaN."""
    if depth > 6:
        return []
    inf_ok = field in infinite_ok
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            value = value.to_dense()
        if not (value.is_floating_point() or value.is_complex()) or not value.numel():
            return []
        bad = torch.isnan(value).any() if inf_ok else ~torch.isfinite(value).all()
        return [path] if bool(bad) else []
    if isinstance(value, float):
        return [] if math.isfinite(value) or (inf_ok and not math.isnan(value)) else [path]
    kw = dict(depth=depth + 1, infinite_ok=infinite_ok)
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nonfinite_paths(v, f"{path}[{k!r}]", field=k, **kw)]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return [p for k, v in zip(value._fields, value) for p in nonfinite_paths(v, f"{path}.{k}", field=k, **kw)]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value[:50]) for p in nonfinite_paths(v, f"{path}[{i}]", field=field, **kw)]
    return []


def _raised_in_paperzoo(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and str(Path(frames[-1].filename).resolve()).startswith(PAPERZOO_ROOT)


def classify_call(call, arg: str | None, *, check_output: bool = True, infinite_ok=()) -> Outcome:
    """Run ``call()`` and classify what happened (``arg``: the argument the probe changed, if any)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = call()
    except (ValueError, TypeError) as err:
        if not _raised_in_paperzoo(err):
            return Outcome("crash", f"{type(err).__name__} inside {traceback.extract_tb(err.__traceback__)[-1].filename}"
                                    f": {str(err)[:200]}")
        text = str(err)
        if arg is not None and arg.split("[")[0] not in text:
            return Outcome("unclear error", f"{type(err).__name__} does not name {arg}: {text[:200]}")
        return Outcome("clear error", f"{type(err).__name__}: {text[:200]}")
    except FloatingPointError as err:  # paperzoo's solvers report a numerical breakdown with the knob to turn
        return Outcome("unclear error", f"FloatingPointError: {str(err)[:200]}")
    except Exception as err:  # noqa: BLE001 - classifying every failure is the point
        # Any other exception (RuntimeError, IndexError, ZeroDivisionError, ...) comes from inside torch or from an
        # unguarded expression: a crash, wherever its last Python frame is.
        where = "paperzoo" if _raised_in_paperzoo(err) else traceback.extract_tb(err.__traceback__)[-1].filename
        return Outcome("crash", f"{type(err).__name__} in {where}: {str(err)[:200]}")
    bad = nonfinite_paths(out, infinite_ok=infinite_ok, field="result") if check_output else []
    if bad:
        return Outcome("silent", f"non-finite output at {', '.join(bad[:3])}")
    return Outcome("result", "finite result" if check_output else "returned")


def fresh_copies(kwargs: dict) -> dict:
    """Copies of the tensors (and lists of tensors), so that in-place functions do not change the next probe."""
    def clone(t):
        # A leaf that requires grad stays a leaf (an optimizer's parameter), not a node of the original's graph.
        if t.is_leaf and t.requires_grad:
            return t.detach().clone().requires_grad_(True)
        return t.clone()

    def copy(v):
        if isinstance(v, torch.Tensor):
            return clone(v)
        if isinstance(v, list) and all(isinstance(t, torch.Tensor) for t in v):
            return [clone(t) for t in v]
        return v
    return {k: copy(v) for k, v in kwargs.items()}


def call_declared(func, decl, kwargs: dict):
    """Call ``func(**kwargs)``; with in-place arguments (``decl.mutates``), return them with the result."""
    out = func(**kwargs)
    if decl is not None and decl.mutates:
        return {"result": out, **{name: kwargs.get(name) for name in decl.mutates}}
    return out


def run_probe(func, kwargs: dict, probe, *, check_output: bool = True, infinite_ok=(), decl=None) -> Outcome:
    """Call ``func`` with the probe applied to the valid ``kwargs``; an invalid input accepted is ``silent``."""
    try:
        new = fresh_copies(probe.mutate(dict(kwargs)))
    except Exception as err:  # the probe cannot be built from this example: nothing to test
        return Outcome("skipped", f"probe not applicable: {err}")
    outcome = classify_call(lambda: call_declared(func, decl, new), probe.arg,
                            check_output=check_output and probe.valid, infinite_ok=infinite_ok)
    if not probe.valid and outcome.kind == "result":
        return Outcome("silent", f"accepted {probe.label}")
    return outcome


class _ProbeTimeout(BaseException):
    """Raised by the alarm; a BaseException, so that classify_call's ``except Exception`` does not catch it."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Interrupt the block after ``seconds`` of wall time (SIGALRM; main thread on POSIX only)."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise _ProbeTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def count_outcomes(objects, *, validate: bool = True, time_limit: float = 5.0) -> dict[str, int]:
    """Outcome counts of every derived probe (float64) over ``objects``; ``validate=False`` switches the
    declarations' own checks off, to measure what the function bodies do without them. A probe that runs past
    ``time_limit`` seconds counts as ``hang`` (a bad input a solver loops on)."""
    from collections import Counter

    import paperzoo.core.accepts as accepts_module

    counts: Counter = Counter()
    saved = accepts_module._VALIDATE
    accepts_module._VALIDATE = validate
    try:
        for obj in objects:
            decl = accepts_module.declaration(obj)
            kwargs = decl.example_kwargs(torch.float64)
            for probe in decl.probes(kwargs):
                try:
                    with _time_limit(time_limit):
                        outcome = run_probe(obj, kwargs, probe, check_output=decl.output == "finite",
                                            infinite_ok=decl.infinite_ok, decl=decl)
                except _ProbeTimeout:
                    counts["hang"] += 1
                    continue
                if outcome.kind == "skipped":
                    counts["skipped"] += 1
                elif outcome.passes(probe.valid):
                    counts["correct result" if outcome.kind == "result" else "clear error"] += 1
                else:
                    counts[outcome.kind if outcome.kind != "result" else "silent"] += 1
    finally:
        accepts_module._VALIDATE = saved
    return dict(counts)


def main(argv=None) -> int:
    """``python -m tests.fuzz [PACKAGE ...]``: probe counts by outcome, with and without the declared checks."""
    import argparse

    from tests.core.test_fuzz_tables import DECLARED

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("packages", nargs="*")
    args = parser.parse_args(argv)
    objects = [obj for key, obj in DECLARED if not args.packages or any(key.startswith(p + ".") for p in
                                                                        args.packages)]
    print(f"{len(objects)} declared exports")
    for validate in (False, True):
        label = "with declared checks" if validate else "function bodies alone"
        print(f"{label}: {count_outcomes(objects, validate=validate)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
