"""Spec kinds that :mod:`paperzoo.core.accepts` lacks, pending a merge into it (issue 9, optim and diagnostics).

- :class:`OneOf`: an argument that takes one of several kinds of value (``reg``: a number or a tensor of
  penalties; ``lr``: a number or a schedule ``t -> lr_t``). The alternative is picked by the kind of the value
  (tensor, list, callable, number), and that alternative's checks and probes apply.
- :class:`Instance`: an instance of a class (an ``nn.Module``, an optimizer).
- :class:`Ints`: a sequence of integers within bounds (step counts to record, class labels).
- :class:`FloatDType`: a floating ``torch.dtype``.

They follow the conventions of :mod:`paperzoo.core.accepts` (messages of :mod:`paperzoo.core.checks`, probes
derived from the example value).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from paperzoo.core.accepts import Flag, Function, Int, Probe, Real, Spec, Tensor, Tensors
from paperzoo.core.checks import check_int

__all__ = ["OneOf", "Instance", "Ints", "FloatDType"]


def _set(arg, value):
    return lambda kw: {**kw, arg: value}


def _matches(spec: Spec, value) -> bool:
    if isinstance(spec, Tensor):
        return isinstance(value, torch.Tensor)
    if isinstance(spec, Tensors):
        return isinstance(value, (list, tuple))
    if isinstance(spec, Flag):
        return isinstance(value, bool)
    if isinstance(spec, Function):
        return callable(value) and not isinstance(value, torch.Tensor)
    if isinstance(spec, (Real, Int)):
        # bool and str land here so that the number's own check names the wrong type
        return isinstance(value, (numbers.Number, str, bytes))
    return False


def _describe(spec: Spec) -> str:
    return {Tensor: "a tensor", Tensors: "a list of tensors", Flag: "a bool", Function: "a callable",
            Real: "a real number", Int: "an integer"}.get(type(spec), type(spec).__name__)


class OneOf(Spec):
    """One of several alternatives, chosen by the kind of the value; the first gives the default example."""

    def __init__(self, *alternatives: Spec, optional: bool = False):
        if len(alternatives) < 2:
            raise ValueError("OneOf needs at least two alternatives")
        self.alternatives, self.optional = alternatives, optional

    def _pick(self, value) -> Spec | None:
        return next((spec for spec in self.alternatives if _matches(spec, value)), None)

    def check(self, name, value, binding):
        spec = self._pick(value)
        if spec is None:
            wanted = " or ".join(_describe(s) for s in self.alternatives)
            raise TypeError(f"{name} must be {wanted}, got {type(value).__name__}")
        spec.check(name, value, binding)

    def example(self, ctx):
        return self.alternatives[0].example(ctx)

    def probes(self, name, value):
        spec = self._pick(value)
        out = [] if spec is None else [p for p in spec.probes(name, value) if p.label != "None"]
        if not any(p.label == "wrong type: str" for p in out):
            out.insert(0, Probe(name, "wrong type: str", False, _set(name, "0.5")))
        if not self.optional:
            out.append(Probe(name, "None", False, _set(name, None)))
        return out


class Instance(Spec):
    """An instance of ``cls`` (the declaration's example supplies one)."""

    def __init__(self, cls: type, *, optional: bool = False):
        self.cls, self.optional = cls, optional

    def check(self, name, value, binding):
        if not isinstance(value, self.cls):
            raise TypeError(f"{name} must be a {self.cls.__module__}.{self.cls.__qualname__}, got "
                            f"{type(value).__name__}")


class Ints(Spec):
    """A sequence (not a str) of integers in ``[ge, le]``; ``min_length`` entries at least."""

    def __init__(self, *, ge: int | None = None, le: int | None = None, min_length: int = 0,
                 optional: bool = False, example=None):
        self.low, self.high, self.min_length, self.optional, self._example = ge, le, min_length, optional, example

    def check(self, name, value, binding):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            if not (isinstance(value, torch.Tensor) and value.dim() == 1 and not value.is_floating_point()):
                raise TypeError(f"{name} must be a sequence of integers, got {type(value).__name__}")
        if len(value) < self.min_length:
            raise ValueError(f"{name} must have at least {self.min_length} entries, got {len(value)}")
        for i, v in enumerate(value):
            check_int(f"{name}[{i}]", v.item() if isinstance(v, torch.Tensor) else v, low=self.low, high=self.high)

    def example(self, ctx):
        if self._example is not None:
            return self._example
        return [self.low if self.low is not None else 0]

    def probes(self, name, value):
        out = super().probes(name, value)
        if not value:
            return out
        first = list(value)
        out.append(Probe(name, "float entry", False, _set(name, [0.5, *first[1:]])))
        if self.low is not None:
            out.append(Probe(name, f"entry below bound ({self.low - 1})", False,
                             _set(name, [self.low - 1, *first[1:]])))
        if self.high is not None:
            out.append(Probe(name, f"entry above bound ({self.high + 1})", False,
                             _set(name, [self.high + 1, *first[1:]])))
        return out


class FloatDType(Spec):
    """A floating ``torch.dtype``."""

    def __init__(self, *, optional: bool = False):
        self.optional = optional

    def check(self, name, value, binding):
        if not isinstance(value, torch.dtype):
            raise TypeError(f"{name} must be a torch.dtype, got {type(value).__name__}")
        if not value.is_floating_point:
            raise TypeError(f"{name} must be a floating dtype, got {value}")

    def example(self, ctx):
        return ctx.dtype

    def probes(self, name, value):
        return super().probes(name, value) + [Probe(name, "integer dtype", False, _set(name, torch.int64))]
