"""What each public function accepts, declared once: the declaration validates the call and drives the fuzz tables.

A public function states its arguments' constraints with :func:`accepts`::

    @accepts(a=Tensor("n", nonnegative=True), b=Tensor("m", nonnegative=True), M=Tensor("n", "m"),
             reg=Real(gt=0), max_iter=Int(ge=1), tol=Real(ge=0))
    def sinkhorn_log(a, b, M, reg, *, max_iter=1000, tol=1e-9): ...

On every call the declared arguments are checked before the body runs, with the messages of
:mod:`paperzoo.core.checks` (``ValueError: reg must be > 0, got -1.0``). Tensor shapes are written with symbols:
every argument that names ``"n"`` must agree on its size, and a symbolic size of 0 (an empty input) is rejected
unless the spec allows it. All floating tensor arguments of one call must share one dtype and one device
(``TypeError: b must have the dtype of a (torch.float64), got torch.float32``): paperzoo never promotes silently.

Hot paths: a declared function that an optimizer's ``step`` or a solver's iteration calls keeps its body in a
private, unchecked kernel ``_name`` that the loop calls; the public ``name`` is declared, validates and delegates
(``beta_normalized_step`` -> ``_beta_normalized_step``). The checks then run once per user call, never per step.

The same declaration tells the registry-driven fuzz tables (``tests/core/test_fuzz_tables.py``) how to build a
valid call and which probes to derive from it: every invalid value must raise a ``ValueError`` or ``TypeError``
that names the argument, every valid and degenerate one (a boundary value, zero-mass bins, coincident points,
either float dtype) must return finite results. Each spec lists its probes in :meth:`Spec.probes`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from paperzoo.core.checks import check_choice, check_int, check_number

__all__ = [
    "accepts", "declaration", "Declaration", "Spec", "Real", "Int", "Flag", "Choice", "Tensor", "Function",
    "Generator", "Pair", "Tensors", "OneOf", "Instance", "Ints", "FloatDType", "Module", "Probe", "Binding",
    "ExampleContext",
]

_VALIDATE = True  # switched off only by the probe-count script, to measure what the bodies do on their own


@dataclass
class Binding:
    """What one call has fixed so far: sizes of shape symbols, the floating dtype and the device (with sources)."""

    dims: dict[str, tuple[int, str]] = field(default_factory=dict)
    dtype: tuple[torch.dtype, str] | None = None
    device: tuple[torch.device, str] | None = None


@dataclass
class ExampleContext:
    """Sizes, dtype and generator used to build a valid example call."""

    sizes: dict[str, int]
    dtype: torch.dtype
    generator: torch.Generator
    size_range: tuple[int, int] | None = None

    def size(self, symbol: str) -> int:
        if symbol not in self.sizes:
            if self.size_range is None:
                # Distinct sizes per symbol, so that a swapped or mismatched dimension is detectable.
                self.sizes[symbol] = 3 + len(self.sizes)
            else:  # random sizes (property tests), drawn from the generator
                low, high = self.size_range
                self.sizes[symbol] = int(torch.randint(low, high + 1, (), generator=self.generator))
        return self.sizes[symbol]


@dataclass(frozen=True)
class Probe:
    """One derived input: ``mutate(kwargs)`` returns the call's keyword arguments with one thing changed.

    ``valid`` probes must return finite results; invalid ones must raise ValueError/TypeError naming ``arg``.
    """

    arg: str
    label: str
    valid: bool
    mutate: Callable[[dict], dict]


def _set(arg: str, value) -> Callable[[dict], dict]:
    return lambda kw: {**kw, arg: value}


def _map(arg: str, fn) -> Callable[[dict], dict]:
    return lambda kw: {**kw, arg: fn(kw[arg])}


class Spec:
    """Base class: a constraint on one argument. ``optional`` also accepts ``None``."""

    optional: bool = False

    def check(self, name: str, value, binding: Binding) -> None:
        raise NotImplementedError

    def validate(self, name: str, value, binding: Binding) -> None:
        if value is None and self.optional:
            return
        self.check(name, value, binding)

    def example(self, ctx: ExampleContext):
        """A valid value (used when the declaration gives no example for this argument)."""
        raise NotImplementedError(f"{type(self).__name__} has no default example; give one in accepts(example=...)")

    def probes(self, name: str, value) -> list[Probe]:
        """Probes derived from the valid ``value`` of the example call."""
        out = [Probe(name, "wrong type: str", False, _set(name, "0.5"))]
        if not self.optional:
            out.append(Probe(name, "None", False, _set(name, None)))
        return out


class Real(Spec):
    """A finite real number with optional bounds ``ge``/``gt`` (lower) and ``le``/``lt`` (upper)."""

    def __init__(self, *, ge=None, gt=None, le=None, lt=None, optional: bool = False, example=None):
        if ge is not None and gt is not None or le is not None and lt is not None:
            raise ValueError("Real takes at most one lower bound (ge or gt) and one upper bound (le or lt)")
        # Bounds as floats, so that messages read as those of paperzoo.core.checks ("lr must be >= 0.0").
        self.low, self.low_inclusive = (ge, True) if gt is None else (gt, False)
        self.high, self.high_inclusive = (le, True) if lt is None else (lt, False)
        self.low = None if self.low is None else float(self.low)
        self.high = None if self.high is None else float(self.high)
        self.optional, self._example = optional, example

    def check(self, name, value, binding):
        check_number(name, value, low=self.low, high=self.high, low_inclusive=self.low_inclusive,
                     high_inclusive=self.high_inclusive)

    def example(self, ctx):
        if self._example is not None:
            return self._example
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return (lo + hi) / 2
        if lo is not None:
            return lo + 0.5
        return 0.5 if hi is None else hi - 0.5

    def probes(self, name, value):
        out = super().probes(name, value)
        out += [Probe(name, "bool", False, _set(name, True)),
                Probe(name, "nan", False, _set(name, math.nan)),
                Probe(name, "inf", False, _set(name, math.inf)),
                Probe(name, "-inf", False, _set(name, -math.inf))]
        if self.low is not None:
            below = self.low - 1.0 if self.low_inclusive else self.low
            out.append(Probe(name, f"below bound ({below!r})", False, _set(name, below)))
            if self.low_inclusive:
                out.append(Probe(name, f"at inclusive bound ({self.low!r})", True, _set(name, float(self.low))))
        if self.high is not None:
            above = self.high + 1.0 if self.high_inclusive else self.high
            out.append(Probe(name, f"above bound ({above!r})", False, _set(name, above)))
            if self.high_inclusive:
                out.append(Probe(name, f"at inclusive bound ({self.high!r})", True, _set(name, float(self.high))))
        return out


class Int(Spec):
    """An integer (not ``bool``) in ``[ge, le]``."""

    def __init__(self, *, ge: int | None = None, le: int | None = None, optional: bool = False, example=None):
        self.low, self.high, self.optional, self._example = ge, le, optional, example

    def check(self, name, value, binding):
        check_int(name, value, low=self.low, high=self.high)

    def example(self, ctx):
        if self._example is not None:
            return self._example
        return self.low + 1 if self.low is not None else 2

    def probes(self, name, value):
        out = super().probes(name, value)
        out += [Probe(name, "bool", False, _set(name, True)), Probe(name, "float", False, _set(name, 1.5))]
        if self.low is not None:
            out.append(Probe(name, f"below bound ({self.low - 1})", False, _set(name, self.low - 1)))
            out.append(Probe(name, f"at inclusive bound ({self.low})", True, _set(name, self.low)))
        if self.high is not None:
            out.append(Probe(name, f"above bound ({self.high + 1})", False, _set(name, self.high + 1)))
        return out


class Flag(Spec):
    """A ``bool`` (an int standing in for one is refused)."""

    def __init__(self, *, optional: bool = False):
        self.optional = optional

    def check(self, name, value, binding):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")

    def example(self, ctx):
        return False

    def probes(self, name, value):
        return super().probes(name, value) + [Probe(name, "int", False, _set(name, 1))]


class Choice(Spec):
    """One of a fixed set of values."""

    def __init__(self, *choices, optional: bool = False):
        if not choices:
            raise ValueError("Choice needs at least one choice")
        self.choices, self.optional = choices, optional

    def check(self, name, value, binding):
        try:
            check_choice(name, value, self.choices)
        except TypeError:  # an unhashable value in a membership test
            raise ValueError(f"{name} must be one of {list(self.choices)}, got {value!r}") from None

    def example(self, ctx):
        return self.choices[0]

    def probes(self, name, value):
        out = [Probe(name, "unknown choice", False, _set(name, "__not_a_choice__"))]
        if not self.optional and None not in self.choices:
            out.append(Probe(name, "None", False, _set(name, None)))
        return out


class Function(Spec):
    """A callable."""

    def __init__(self, *, optional: bool = False):
        self.optional = optional

    def check(self, name, value, binding):
        if not callable(value):
            raise TypeError(f"{name} must be callable, got {type(value).__name__}")


class Generator(Spec):
    """A ``torch.Generator`` (``None`` allowed by default: the global generator)."""

    def __init__(self, *, optional: bool = True):
        self.optional = optional

    def check(self, name, value, binding):
        if not isinstance(value, torch.Generator):
            raise TypeError(f"{name} must be a torch.Generator, got {type(value).__name__}")

    def example(self, ctx):
        return None

    def probes(self, name, value):
        return [Probe(name, "wrong type: int", False, _set(name, 0))]


class Pair(Spec):
    """A pair ``(x0, x1)`` whose entries each satisfy ``item`` (named ``name[0]``, ``name[1]`` in messages)."""

    def __init__(self, item: Spec, *, meaning: str = "", optional: bool = False, example=None):
        self.item, self.optional, self._example = item, optional, example
        self.what = f"a pair {meaning}" if meaning else "a pair"

    def check(self, name, value, binding):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be {self.what}, got {type(value).__name__}")
        if len(value) != 2:
            raise ValueError(f"{name} must be {self.what}, got {len(value)} values")
        for i, v in enumerate(value):
            self.item.validate(f"{name}[{i}]", v, binding)

    def example(self, ctx):
        return self._example if self._example is not None else (self.item.example(ctx),) * 2

    def probes(self, name, value):
        if value is None:  # an optional pair left unset: only the generic probes apply
            return super().probes(name, value)
        out = super().probes(name, value) + [Probe(name, "three values", False, _set(name, (*value, value[0])))]
        for sub in self.item.probes(name, value[0]):
            if sub.label == "None":
                continue
            bad0 = sub.mutate({name: value[0]})[name]
            out.append(Probe(name, f"[0] {sub.label}", sub.valid, _set(name, (bad0, value[1]))))
        return out


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class Tensor(Spec):
    """A ``torch.Tensor`` of a given shape, written with symbols (``Tensor("n", "d")``) or ints; ``...`` as the
    first entry allows any leading batch dimensions.

    Args:
        *shape: the dimensions; a str is a symbol every argument of the call must agree on.
        ndims: instead of ``shape``, a tuple of allowed numbers of dimensions (sizes then unchecked).
        max_batch_dims: with ``...``, the most leading batch dimensions allowed (``None``: any number).
        dtype: ``"float"`` (floating, the call's shared dtype), ``"int"`` (integer), ``"bool"`` or ``"any"``.
        finite: reject NaN and infinities (floating tensors).
        nonnegative: reject negative entries.
        positive_mass: require a positive total (a marginal or a weight vector), implies ``nonnegative``.
        symmetric: require a symmetric matrix (last two dimensions), to within rounding.
        allow_empty: accept a size of 0 on symbolic dimensions.
        degenerate: valid degenerate cases to probe: ``"coincident"`` (all rows equal), ``"zero_mass"`` (half of the
            entries zero), ``"zeros"`` (all zeros), ``"constant"`` (all entries equal).
        example: a callable ``(ctx) -> tensor`` or a tensor for the example call.
        low, high: for ``dtype="int"`` examples and probes, the allowed range of entries (checked).
    """

    def __init__(self, *shape, ndims: tuple[int, ...] | None = None, dtype: str = "float", finite: bool = True,
                 nonnegative: bool = False, positive_mass: bool = False, symmetric: bool = False,
                 allow_empty: bool = False, degenerate: tuple[str, ...] = (), example=None,
                 low: int | None = None, high: int | None = None, max_batch_dims: int | None = None,
                 optional: bool = False):
        if dtype not in ("float", "int", "bool", "any"):
            raise ValueError(f"dtype must be one of ['float', 'int', 'bool', 'any'], got {dtype!r}")
        unknown = set(degenerate) - {"coincident", "zero_mass", "zeros", "constant"}
        if unknown:
            raise ValueError(f"unknown degenerate cases {sorted(unknown)}")
        self.batched = bool(shape) and shape[0] is Ellipsis
        self.shape = tuple(shape[1:] if self.batched else shape)
        self.ndims, self.max_batch_dims = ndims, max_batch_dims
        self.dtype, self.finite = dtype, finite
        self.nonnegative = nonnegative or positive_mass
        self.positive_mass, self.symmetric, self.allow_empty = positive_mass, symmetric, allow_empty
        self.degenerate, self._example, self.low, self.high = tuple(degenerate), example, low, high
        self.optional = optional

    # -- validation ---------------------------------------------------------------------------------------------
    def check(self, name, x, binding):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.layout != torch.strided:
            raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
        self._check_dtype(name, x, binding)
        self._check_shape(name, x, binding)
        if binding.device is None:
            binding.device = (x.device, name)
        elif x.device != binding.device[0]:
            raise ValueError(f"{name} must be on the device of {binding.device[1]} ({binding.device[0]}), "
                             f"got {x.device}")
        if x.numel() == 0:
            return
        if self.finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite, got tensor of shape {tuple(x.shape)} with NaN or inf entries")
        if self.nonnegative and bool((x < 0).any()):
            raise ValueError(f"{name} must be >= 0 entrywise, got tensor of shape {tuple(x.shape)} with negative "
                             f"entries (min {float(x.min())!r})")
        if self.low is not None and bool((x < self.low).any()):
            raise ValueError(f"{name} must have entries >= {self.low}, got a minimum of {x.min().item()!r}")
        if self.high is not None and bool((x > self.high).any()):
            raise ValueError(f"{name} must have entries <= {self.high}, got a maximum of {x.max().item()!r}")
        if self.positive_mass:
            mass = x.sum(-1) if x.dim() > 0 else x
            if not bool((mass > 0).all()):
                raise ValueError(f"{name} must have positive total mass, got sum({name})={float(mass.min())!r}")
        if self.symmetric and x.dim() >= 2:
            scale = float(x.abs().max())
            if not torch.allclose(x, x.transpose(-1, -2), rtol=0.0, atol=1e-6 * max(scale, 1.0) if
                                  x.dtype != torch.float64 else 1e-12 * max(scale, 1.0)):
                raise ValueError(f"{name} must be symmetric, got an asymmetry of "
                                 f"{float((x - x.transpose(-1, -2)).abs().max())!r}")

    def _check_dtype(self, name, x, binding):
        if self.dtype == "float":
            if not x.is_floating_point():
                raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
            if binding.dtype is None:
                binding.dtype = (x.dtype, name)
            elif x.dtype != binding.dtype[0]:
                raise TypeError(f"{name} must have the dtype of {binding.dtype[1]} ({binding.dtype[0]}), "
                                f"got {x.dtype}")
        elif self.dtype == "int" and x.dtype not in _INT_DTYPES:
            raise TypeError(f"{name} must have an integer dtype, got {x.dtype}")
        elif self.dtype == "bool" and x.dtype != torch.bool:
            raise TypeError(f"{name} must have dtype torch.bool, got {x.dtype}")

    def _check_shape(self, name, x, binding):
        if self.ndims is not None:
            if x.dim() not in self.ndims:
                wanted = " or ".join(str(k) for k in self.ndims)
                raise ValueError(f"{name} must have {wanted} dimension(s), got shape {tuple(x.shape)}")
            if not self.allow_empty and x.numel() == 0:
                raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
            return
        k = len(self.shape)
        most = k if not self.batched else None if self.max_batch_dims is None else k + self.max_batch_dims
        if x.dim() < k or (most is not None and x.dim() > most):
            wanted = (str(k) if most == k else f"at least {k}" if most is None
                      else " or ".join(str(j) for j in range(k, most + 1)))
            raise ValueError(f"{name} must have {wanted} dimension(s) {self._shape_text()}, got shape "
                             f"{tuple(x.shape)}")
        sizes = x.shape[x.dim() - k:]
        for symbol, size in zip(self.shape, sizes):
            if isinstance(symbol, int):
                if size != symbol:
                    raise ValueError(f"{name} must have shape {self._shape_text()}, got {tuple(x.shape)}")
                continue
            if size == 0 and not self.allow_empty:
                raise ValueError(f"{name} must not be empty ({symbol} = 0), got shape {tuple(x.shape)}")
            if symbol in binding.dims:
                expected, source = binding.dims[symbol]
                if size != expected:
                    raise ValueError(f"{name} must have {symbol} = {expected} (from {source}) in its shape "
                                     f"{self._shape_text()}, got shape {tuple(x.shape)}")
            else:
                binding.dims[symbol] = (size, name)

    def _shape_text(self) -> str:
        inner = ", ".join(str(s) for s in self.shape)
        return f"(..., {inner})" if self.batched else f"({inner})" if len(self.shape) != 1 else f"({inner},)"

    # -- examples and probes ------------------------------------------------------------------------------------
    def _example_shape(self, ctx):
        if self.ndims is not None:
            return (3,) * self.ndims[0]
        batch = (2,) if self.batched else ()
        return batch + tuple(s if isinstance(s, int) else ctx.size(s) for s in self.shape)

    def example(self, ctx):
        if self._example is not None:
            return self._example(ctx) if callable(self._example) else self._example
        shape, g = self._example_shape(ctx), ctx.generator
        if self.dtype == "int":
            lo = 0 if self.low is None else self.low
            hi = lo + 3 if self.high is None else self.high
            return torch.randint(lo, hi + 1, shape, generator=g)
        if self.dtype == "bool":
            return torch.rand(shape, generator=g) > 0.5
        if self.positive_mass:
            x = torch.rand(shape, generator=g, dtype=ctx.dtype) + 0.1
            return x / x.sum(-1, keepdim=True)
        if self.nonnegative:
            return torch.rand(shape, generator=g, dtype=ctx.dtype)
        x = torch.randn(shape, generator=g, dtype=ctx.dtype)
        if self.symmetric:
            x = x @ x.transpose(-1, -2) / shape[-1] + torch.eye(shape[-1], dtype=ctx.dtype)
        return x

    def probes(self, name, value):
        if not isinstance(value, torch.Tensor):
            return []
        out = [Probe(name, "wrong type: list", False, _set(name, value.tolist()))]
        if not self.optional:
            out.append(Probe(name, "None", False, _set(name, None)))
        # Any number of leading batch dimensions: one more is a valid call (a batch of one), not an invalid one.
        extra_ok = ((self.batched and self.max_batch_dims is None)
                    or (self.ndims is not None and value.dim() + 1 in self.ndims))
        out.append(Probe(name, "extra dimension", extra_ok, _set(name, value.unsqueeze(0))))
        if value.numel() > 0 and value.dim() > 0:
            out.append(Probe(name, "sparse", False, _set(name, value.to_sparse())))
        if self.dtype == "float":
            out.append(Probe(name, "integer dtype", False, _set(name, value.round().to(torch.int64))))
            if value.numel() > 0:
                if self.finite:
                    out.append(Probe(name, "NaN entry", False, _map(name, _with_entry(math.nan))))
                    out.append(Probe(name, "inf entry", False, _map(name, _with_entry(math.inf))))
        if self.nonnegative and value.numel() > 0:
            out.append(Probe(name, "negative entry", False, _map(name, _with_entry(-1.0))))
        if self.symmetric and value.dim() >= 2 and value.shape[-1] > 1:
            out.append(Probe(name, "asymmetric", False, _map(name, _asymmetric)))
        if self.ndims is None:
            for i, symbol in enumerate(self.shape):
                if isinstance(symbol, str) and not self.allow_empty:
                    dim = value.dim() - len(self.shape) + i
                    out.append(Probe(name, f"empty ({symbol} = 0)", False,
                                     _map(name, lambda v, d=dim: v.narrow(d, 0, 0))))
        for case in self.degenerate:
            out.append(Probe(name, f"degenerate: {case}", True, _map(name, _DEGENERATE[case])))
        return out


class Tensors(Spec):
    """A list (or tuple) of tensors, as the functional update rules take: ``Tensors(length="k", like="params")``.

    Every item must be a dense floating tensor of the call's dtype and device, finite unless ``finite=False``;
    ``length`` is a symbol all lists of the call agree on; ``like`` names the list whose item shapes these must match.
    """

    def __init__(self, *, length: str = "k", like: str | None = None, finite: bool = True, example=None,
                 optional: bool = False):
        self.length, self.like, self.finite, self._example, self.optional = length, like, finite, example, optional
        self._item = Tensor(ndims=tuple(range(0, 9)), finite=finite, allow_empty=True)

    def check(self, name, value, binding):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a list of tensors, got {type(value).__name__}")
        if self.length in binding.dims:
            expected, source = binding.dims[self.length]
            if len(value) != expected:
                raise ValueError(f"{name} must have {expected} tensors like {source}, got {len(value)}")
        else:
            binding.dims[self.length] = (len(value), name)
        shapes = binding.dims.get(f"shapes of {self.like}") if self.like else None
        for i, item in enumerate(value):
            self._item.validate(f"{name}[{i}]", item, binding)
            if shapes is not None and tuple(item.shape) != shapes[0][i]:
                raise ValueError(f"{name}[{i}] must have the shape of {self.like}[{i}] {shapes[0][i]}, got "
                                 f"{tuple(item.shape)}")
        binding.dims.setdefault(f"shapes of {name}", ([tuple(t.shape) for t in value], name))

    def example(self, ctx):
        if self._example is not None:
            return self._example(ctx) if callable(self._example) else self._example
        return [torch.randn(3, 2, generator=ctx.generator, dtype=ctx.dtype),
                torch.randn(4, generator=ctx.generator, dtype=ctx.dtype)]

    def probes(self, name, value):
        out = super().probes(name, value)
        if not value:
            return out
        out.append(Probe(name, "a tensor, not a list", False, _set(name, value[0])))
        out.append(Probe(name, "integer item", False, _set(name, [value[0].round().long(), *value[1:]])))
        out.append(Probe(name, "sparse item", False, _set(name, [value[0].to_sparse(), *value[1:]])))
        if self.finite:
            out.append(Probe(name, "NaN in an item", False, _set(name, [_with_entry(math.nan)(value[0]), *value[1:]])))
            out.append(Probe(name, "inf in an item", False, _set(name, [_with_entry(math.inf)(value[0]), *value[1:]])))
        return out


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
    """An instance of ``cls`` (``what`` names it in messages)."""

    def __init__(self, cls: type, *, what: str | None = None, optional: bool = False):
        self.cls, self.optional = cls, optional
        self.what = what or f"{cls.__module__}.{cls.__qualname__}"

    def check(self, name, value, binding):
        if not isinstance(value, self.cls):
            raise TypeError(f"{name} must be a {self.what}, got {type(value).__name__}")


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


class Module(Spec):
    """A ``torch.nn.Module``; with ``finite`` (the default) its floating parameters must be finite.

    ``finite=False`` for functions that overwrite the parameters (an initialiser) or read only the gradients.
    ``bind_dtype``: its floating parameters must have the dtype of the call's tensors (a module run on them).
    """

    def __init__(self, *, finite: bool = True, bind_dtype: bool = False, example=None, optional: bool = False):
        self.finite, self.bind_dtype, self._example, self.optional = finite, bind_dtype, example, optional

    def check(self, name, value, binding):
        if not isinstance(value, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
        for pname, p in value.named_parameters():
            if not p.is_floating_point():
                continue
            if self.finite and not bool(torch.isfinite(p).all()):
                raise ValueError(f"{name} must have finite parameters, got NaN or inf entries in {pname}")
            if self.bind_dtype:
                if binding.dtype is None:
                    binding.dtype = (p.dtype, f"{name}.{pname}")
                elif p.dtype != binding.dtype[0]:
                    raise TypeError(f"{name} must have parameters of the dtype of {binding.dtype[1]} "
                                    f"({binding.dtype[0]}), got {pname} of {p.dtype}")

    def example(self, ctx):
        if self._example is None:
            return super().example(ctx)
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

        if self.finite:
            out.append(Probe(name, "NaN parameter", False, lambda kw: {**kw, name: with_nan(kw[name])}))
        if self.bind_dtype:
            other = torch.float32 if params[0].dtype == torch.float64 else torch.float64
            out.append(Probe(name, f"parameters of {other}", False,
                             lambda kw: {**kw, name: copy.deepcopy(kw[name]).to(other)}))
        return out


def _with_entry(v: float):
    def mutate(x):
        x = x.detach().clone()
        x.view(-1)[0] = v
        return x
    return mutate


def _asymmetric(x):
    x = x.detach().clone()
    x[..., 0, -1] += 1.0 + x.abs().max()
    return x


def _coincident(x):
    return x.detach()[..., :1, :].expand_as(x).clone() if x.dim() >= 2 else torch.full_like(x, float(x.view(-1)[0]))


def _zero_mass(x):
    x = x.detach().clone()
    flat = x.view(-1, x.shape[-1]) if x.dim() > 0 else x.view(1, 1)
    flat[:, 1::2] = 0
    if flat.sum() > 0 and bool((flat.sum(-1) > 0).all()):
        # keep the total of each vector: a marginal stays a marginal
        x = x / x.sum(-1, keepdim=True) * 1.0 if x.dim() > 0 else x
    return x


_DEGENERATE = {
    "coincident": _coincident,
    "zero_mass": _zero_mass,
    "zeros": lambda x: torch.zeros_like(x),
    "constant": lambda x: torch.full_like(x, 0.5),
}


@dataclass
class Declaration:
    """The specs of one function (or constructor) and how to build its example call.

    Args:
        func: the undecorated function.
        specs: argument name -> :class:`Spec`.
        example: a callable ``(ctx) -> dict`` of keyword arguments for a valid call; missing declared arguments
            are filled from their spec's example, undeclared ones from the function's defaults.
        output: ``"finite"`` (every floating tensor and float in the result must be finite), or ``"any"``.
        infinite_ok: result fields (names of NamedTuple fields or dict keys) that may hold infinities by
            definition (the ``-inf`` potential of a zero-mass bin); ``"result"`` names a bare number or tensor
            result (a bound that is vacuous, ``inf``, for some valid inputs); NaN is never allowed.
        fixed_dtype: the example runs at this dtype only (a function defined at one precision).
        mutates: arguments the function updates in place; their tensors must be finite after a valid call.
    """

    func: Callable
    specs: dict[str, Spec]
    example: Callable[[ExampleContext], dict] | None = None
    output: str = "finite"
    infinite_ok: tuple[str, ...] = ()
    fixed_dtype: torch.dtype | None = None
    mutates: tuple[str, ...] = ()

    def example_kwargs(self, dtype: torch.dtype = torch.float64, seed: int = 0,
                       size_range: tuple[int, int] | None = None) -> dict:
        """A valid call; ``seed`` draws its random tensors, ``size_range`` (low, high) draws the sizes of shape
        symbols (default: fixed distinct sizes 3, 4, 5, ...)."""
        ctx = ExampleContext({}, self.fixed_dtype or dtype, torch.Generator().manual_seed(seed), size_range)
        kwargs = dict(self.example(ctx)) if self.example is not None else {}
        sig = inspect.signature(self.func)
        for name, param in sig.parameters.items():
            if name in kwargs or name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if param.default is not inspect.Parameter.empty:
                continue
            if name not in self.specs:
                raise TypeError(f"{self.func.__qualname__}: the declaration has no example for {name}")
            kwargs[name] = self.specs[name].example(ctx)
        return kwargs

    def probes(self, kwargs: dict) -> list[Probe]:
        """Every probe derived from the valid call ``kwargs``; a declared argument left at its default is probed
        from that default (its probes then pass it explicitly)."""
        sig = inspect.signature(self.func)
        out = []
        for name, spec in self.specs.items():
            value = kwargs.get(name, sig.parameters[name].default)
            out.extend(spec.probes(name, value))
        floats = [name for name, spec in self.specs.items() if isinstance(spec, Tensor) and spec.dtype == "float"
                  and isinstance(kwargs.get(name), torch.Tensor) and kwargs[name].is_floating_point()]
        for name in floats[1:]:
            other = torch.float32 if kwargs[name].dtype == torch.float64 else torch.float64
            out.append(Probe(name, f"mixed dtypes ({other} against {floats[0]})", False,
                             _map(name, lambda v, o=other: v.to(o))))
        seen: set[str] = set()
        for name, spec in self.specs.items():
            value = kwargs.get(name)
            if not isinstance(spec, Tensor) or spec.ndims is not None or not isinstance(value, torch.Tensor):
                continue
            for i, symbol in enumerate(spec.shape):
                if not isinstance(symbol, str):
                    continue
                dim = value.dim() - len(spec.shape) + i
                if symbol in seen and value.shape[dim] > 1:
                    out.append(Probe(name, f"mismatched size of {symbol}", False,
                                     _map(name, lambda v, d=dim: v.narrow(d, 0, v.shape[d] - 1))))
                seen.add(symbol)
        return out


def validate_call(specs: Mapping[str, Spec], arguments: Mapping[str, Any]) -> Binding:
    """Validate the bound ``arguments`` against ``specs`` (tensors first, so that shapes bind in order)."""
    binding = Binding()
    for name, spec in specs.items():
        if name in arguments:
            spec.validate(name, arguments[name], binding)
    return binding


def accepts(*, example: Callable[[ExampleContext], dict] | None = None, output: str = "finite",
            infinite_ok: tuple[str, ...] = (), fixed_dtype: torch.dtype | None = None, mutates: tuple[str, ...] = (),
            **specs: Spec):
    """Declare and enforce what a function accepts (see the module docstring). Decorates functions and
    ``__init__`` methods; the declaration is ``fn.__accepts__``."""
    if output not in ("finite", "any"):
        raise ValueError(f"output must be one of ['finite', 'any'], got {output!r}")
    if example is not None and not callable(example):
        raise TypeError(f"example must be a callable ctx -> dict of arguments (e.g. lambda ctx: {{...}}), got "
                        f"{type(example).__name__}")
    for name, spec in specs.items():
        if not isinstance(spec, Spec):
            raise TypeError(f"the spec of {name} must be a Spec, got {type(spec).__name__}")

    def decorate(func):
        sig = inspect.signature(func)
        unknown = [name for name in specs if name not in sig.parameters]
        if unknown:
            raise TypeError(f"{func.__qualname__} has no parameters {unknown} to declare")

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if _VALIDATE:
                try:
                    bound = sig.bind(*args, **kwargs)
                except TypeError as err:
                    raise TypeError(f"{func.__qualname__}(): {err}") from None
                validate_call(specs, bound.arguments)
            return func(*args, **kwargs)

        wrapper.__accepts__ = Declaration(func, dict(specs), example, output, tuple(infinite_ok), fixed_dtype,
                                          tuple(mutates))
        return wrapper

    return decorate


def declaration(obj) -> Declaration | None:
    """The declaration of a function, or of a class's ``__init__``; ``None`` when there is none."""
    if inspect.isclass(obj):
        obj = obj.__dict__.get("__init__") or getattr(obj, "__init__", None)
    return getattr(obj, "__accepts__", None)

