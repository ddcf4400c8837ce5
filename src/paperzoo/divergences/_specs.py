"""Argument specs the divergences need that :mod:`paperzoo.core.accepts` does not have (yet).

Local workarounds, kept small and in the style of the core specs: a bandwidth that is a number or a 1-D sweep
(:class:`Bandwidths`), a ``torch.nn.Module`` with finite parameters (:class:`Module`), an instance of a given
class (:class:`Instance`), and :class:`AnyBatch`, a tensor spec with any number of leading batch dimensions (or
any number of dimensions) whose "extra dimension" probe is a valid call, not an invalid one.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from paperzoo.core.accepts import Probe, Real, Spec, Tensor

__all__ = ["AnyBatch", "Bandwidths", "Module", "Instance"]


def _set(arg, value):
    return lambda kw: {**kw, arg: value}


class AnyBatch(Tensor):
    """:class:`~paperzoo.core.accepts.Tensor` for ``Tensor(..., "n", ...)`` without ``max_batch_dims`` or
    ``Tensor(ndims=...)``: one more leading dimension is then a valid input (a batch), so its probe must give a
    finite result instead of an error. Takes the arguments of ``Tensor``."""

    def _takes_extra_dim(self, value) -> bool:
        if self.ndims is not None:
            return value.dim() + 1 in self.ndims
        return self.batched and self.max_batch_dims is None

    def probes(self, name, value):
        out = super().probes(name, value)
        if not isinstance(value, torch.Tensor) or not self._takes_extra_dim(value):
            return out
        return [Probe(p.arg, "extra (batch) dimension", True, p.mutate) if p.label == "extra dimension" else p
                for p in out]


class Bandwidths(Spec):
    """A bandwidth ``> 0``: a number, or a 1-D tensor ``(H,)`` of them (a sweep) with the dtype of the call.

    ``like`` names the tensor argument whose dtype the tensor probes take.
    """

    def __init__(self, *, like: str, symbol: str = "H", example=None):
        self.like = like
        self._number = Real(gt=0, example=example)
        self._tensor = Tensor(symbol)

    def check(self, name, value, binding):
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            if value.dim() != 1:
                raise ValueError(f"{name} must be a number or a 1-D tensor of bandwidths, got shape "
                                 f"{tuple(value.shape)}")
            self._tensor.check(name, value, binding)
            if bool((value <= 0).any()):
                raise ValueError(f"{name} must be > 0 entrywise, got a minimum of {float(value.min())!r}")
            return
        self._number.check(name, value, binding)

    def example(self, ctx):
        return self._number.example(ctx)

    def probes(self, name, value):
        out = self._number.probes(name, value)
        v, like = float(value), self.like

        def sweep(entries):
            return lambda kw: {**kw, name: torch.tensor(entries, dtype=kw[like].dtype, device=kw[like].device)}

        out += [Probe(name, "1-D sweep", True, sweep([v, 2 * v])),
                Probe(name, "sweep with a zero entry", False, sweep([v, 0.0])),
                Probe(name, "sweep with a NaN entry", False, sweep([v, math.nan])),
                Probe(name, "empty sweep", False, sweep([])),
                Probe(name, "2-D sweep", False, sweep([[v, 2 * v]]))]
        return out


class Module(Spec):
    """A ``torch.nn.Module`` whose floating parameters are finite.

    ``bind_dtype``: its floating parameters must have the dtype of the call's tensors (a module run on them).
    """

    def __init__(self, *, bind_dtype: bool = False, example=None, optional: bool = False):
        self.bind_dtype, self._example, self.optional = bind_dtype, example, optional

    def check(self, name, value, binding):
        if not isinstance(value, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
        for pname, p in value.named_parameters():
            if not p.is_floating_point():
                continue
            if not bool(torch.isfinite(p).all()):
                raise ValueError(f"{name} must have finite parameters, got NaN or inf entries in {pname}")
            if self.bind_dtype:
                if binding.dtype is None:
                    binding.dtype = (p.dtype, f"{name}.{pname}")
                elif p.dtype != binding.dtype[0]:
                    raise TypeError(f"{name} must have parameters of the dtype of {binding.dtype[1]} "
                                    f"({binding.dtype[0]}), got {pname} of {p.dtype}")

    def example(self, ctx):
        if self._example is None:
            raise NotImplementedError("Module has no default example; give one in accepts(example=...)")
        return self._example(ctx) if callable(self._example) else self._example

    def probes(self, name, value):
        out = super().probes(name, value)
        params = [p for p in value.parameters() if p.is_floating_point() and p.numel() > 0]
        if not params:
            return out

        def with_nan(module):
            module = copy.deepcopy(module)
            with torch.no_grad():
                next(p for p in module.parameters() if p.is_floating_point() and p.numel() > 0).view(-1)[0] = math.nan
            return module

        out.append(Probe(name, "NaN parameter", False, lambda kw: {**kw, name: with_nan(kw[name])}))
        if self.bind_dtype:
            other = torch.float32 if params[0].dtype == torch.float64 else torch.float64
            out.append(Probe(name, f"parameters of {other}", False,
                             lambda kw: {**kw, name: copy.deepcopy(kw[name]).to(other)}))
        return out


class Instance(Spec):
    """An instance of ``cls`` (``what`` names it in messages)."""

    def __init__(self, cls: type, *, what: str | None = None, optional: bool = False):
        self.cls, self.optional = cls, optional
        self.what = what or f"{cls.__module__}.{cls.__qualname__}"

    def check(self, name, value, binding):
        if not isinstance(value, self.cls):
            raise TypeError(f"{name} must be a {self.what}, got {type(value).__name__}")
