"""Claim registry: the decorator that turns a function into a pre-registered claim check.

A claim is a small seeded experiment that measures one paper's headline claim against a named baseline. Its
``statement``, ``criterion`` and ``baseline`` are written in the decorator, before the experiment runs, and the
function returns what it measured together with the verdict that the criterion gives::

    from paperzoo.core import ClaimContext, ClaimResult, claim

    @claim(
        "adopt",
        statement="ADOPT converges for every beta2 on the stochastic counterexample.",
        criterion="final theta < -0.9 for every beta2 in {0.1, 0.5, 0.9, 0.999}, averaged over 3 seeds",
        baseline="torch.optim.Adam with the same betas and learning-rate schedule",
    )
    def counterexample(ctx: ClaimContext) -> ClaimResult:
        steps = ctx.pick(smoke=20_000, full=1_000_000)
        ...
        return ClaimResult.decide(passed, metrics={...}, baseline={...})

Claims never read each other's results and never touch the network.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from paperzoo.core.checks import check_int
from paperzoo.core.sources import claim_text_hash

__all__ = [
    "Verdict",
    "Budget",
    "BUDGETS",
    "ClaimResult",
    "ClaimContext",
    "Claim",
    "claim",
    "registered_claims",
    "derive_seed",
    "claim_text_hash",
]

Budget = Literal["smoke", "full"]
BUDGETS: tuple[str, ...] = ("smoke", "full")
_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

# Default wall-clock limits per claim, in seconds. A claim may ask for more through ``claim(timeout=...)``.
DEFAULT_TIMEOUT = {"smoke": 120.0, "full": 1800.0}


class Verdict(str, enum.Enum):
    """Outcome of a claim check. ``error`` is recorded by the runner, never returned by a claim."""

    REPRODUCED = "reproduced"
    NOT_REPRODUCED = "not_reproduced"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


def _jsonable(value: Any, where: str) -> Any:
    """Metrics must survive a JSON round trip: numbers, strings, booleans, lists and dicts of them."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy scalars and arrays
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # JSON has no NaN; keep it visible as a string rather than silently turning it into a number.
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} must be JSON-serialisable (number, str, bool, list, dict), got {type(value).__name__}")


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """What a claim measured and the verdict its pre-registered criterion gives.

    Attributes:
        verdict: one of ``reproduced``, ``not_reproduced``, ``inconclusive``.
        metrics: the method's measurements (and anything shared, such as the problem size).
        baseline: the baseline's measurements, with the same keys as ``metrics`` where they compare.
        reason: one or two sentences explaining the verdict; required for ``inconclusive``.
        headline: one line of the decisive numbers, method vs baseline with spread (evidence rule 7).
        control: the discriminating control's outcome (:class:`paperzoo.core.evidence.Control` as a dict).
    """

    verdict: Verdict
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    baseline: dict[str, Any] = dataclasses.field(default_factory=dict)
    reason: str = ""
    headline: str = ""
    control: dict[str, Any] | None = None

    def __post_init__(self):
        verdict = Verdict(self.verdict)
        if verdict is Verdict.ERROR:
            raise ValueError("verdict must be reproduced, not_reproduced or inconclusive, got 'error'")
        if verdict is Verdict.INCONCLUSIVE and not self.reason:
            raise ValueError("reason must be given when verdict is inconclusive")
        if not isinstance(self.headline, str) or "\n" in self.headline:
            raise ValueError(f"headline must be a single line of text, got {self.headline!r}")
        object.__setattr__(self, "verdict", verdict)
        object.__setattr__(self, "metrics", _jsonable(dict(self.metrics), "metrics"))
        object.__setattr__(self, "baseline", _jsonable(dict(self.baseline), "baseline"))
        if self.control is not None:
            control = self.control.as_dict() if hasattr(self.control, "as_dict") else dict(self.control)
            object.__setattr__(self, "control", _jsonable(control, "control"))

    @classmethod
    def decide(
        cls,
        passed: bool,
        *,
        metrics: Mapping[str, Any],
        baseline: Mapping[str, Any] | None = None,
        reason: str = "",
        headline: str = "",
        control: Any = None,
    ) -> "ClaimResult":
        """The verdict the criterion gives: ``reproduced`` when it ``passed``, else ``not_reproduced``.

        ``control`` (a :class:`paperzoo.core.evidence.Control`) is the case the criterion must reject; when the
        criterion passes and the control passes it too, the verdict is ``inconclusive`` ("criterion does not
        discriminate").
        """
        verdict = Verdict.REPRODUCED if bool(passed) else Verdict.NOT_REPRODUCED
        if control is not None and verdict is Verdict.REPRODUCED and bool(control.passed):
            verdict = Verdict.INCONCLUSIVE
            why = f"criterion does not discriminate: the control ({control.description}) passes it too"
            reason = f"{why}. {reason}" if reason else why
        return cls(verdict, dict(metrics), dict(baseline or {}), reason, headline, control)


def derive_seed(seed: int, *keys: object) -> int:
    """A deterministic 63-bit seed from a base seed and any keys (claim id, repetition index, ...)."""
    text = repr((int(seed),) + tuple(str(k) for k in keys)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


@dataclasses.dataclass
class ClaimContext:
    """What a running claim receives.

    Attributes:
        claim_id: ``"<slug>:<function name>"``.
        seed: the base seed of the run; use :meth:`seeds` for repetitions.
        budget: ``"smoke"`` (tests, seconds) or ``"full"`` (the report).
        generator: a CPU ``torch.Generator`` seeded from ``seed`` and the claim id.
        figure_dir: where :meth:`save_figure` writes; ``None`` disables figures (tests).
    """

    claim_id: str
    seed: int
    budget: str
    generator: torch.Generator
    figure_dir: Path | None = None
    figures: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def create(cls, claim_id: str, seed: int, budget: str, figure_dir: Path | None = None) -> "ClaimContext":
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {list(BUDGETS)}, got {budget!r}")
        gen = torch.Generator().manual_seed(derive_seed(seed, claim_id))
        return cls(claim_id, int(seed), budget, gen, figure_dir)

    def pick(self, *, smoke, full):
        """The value for the current budget: ``ctx.pick(smoke=2_000, full=100_000)``."""
        return smoke if self.budget == "smoke" else full

    def seeds(self, n: int) -> list[int]:
        """``n`` independent seeds for repetitions, derived from the run seed and the claim id."""
        return [derive_seed(self.seed, self.claim_id, i) for i in range(n)]

    def save_figure(self, fig, name: str) -> str | None:
        """Save a matplotlib figure as ``<figure_dir>/<claim slug>/<name>.png`` and close it."""
        import matplotlib.pyplot as plt

        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"name must contain only letters, digits, '_', '.', '-', got {name!r}")
        try:
            if self.figure_dir is None:
                return None
            slug = self.claim_id.split(":")[0]
            path = Path(self.figure_dir) / slug / f"{self.claim_id.split(':')[1]}-{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=110, bbox_inches="tight")
            self.figures.append(str(path))
            return str(path)
        finally:
            plt.close(fig)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A registered claim check (see :func:`claim`)."""

    slug: str
    name: str
    statement: str
    criterion: str
    baseline: str
    fn: Callable[[ClaimContext], ClaimResult]
    timeout: dict[str, float]
    module: str
    threads: int | None = None

    @property
    def id(self) -> str:
        return f"{self.slug}:{self.name}"

    @property
    def text(self) -> dict[str, str]:
        """The pre-registered text: statement, criterion and baseline."""
        return {"statement": self.statement, "criterion": self.criterion, "baseline": self.baseline}

    @property
    def text_hash(self) -> str:
        """A short hash of :attr:`text`; the store keeps it with every result (evidence rule 6)."""
        return claim_text_hash(self.statement, self.criterion, self.baseline)

    def run(self, ctx: ClaimContext) -> ClaimResult:
        """Run the check, with torch's intra-op thread count set to ``threads`` (restored afterwards) if given."""
        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            result = self.fn(ctx)
        finally:
            torch.set_num_threads(previous)
        if not isinstance(result, ClaimResult):
            raise TypeError(f"claim {self.id} must return a ClaimResult, got {type(result).__name__}")
        return result


_REGISTRY: dict[str, Claim] = {}


def claim(
    slug: str,
    *,
    statement: str,
    criterion: str,
    baseline: str,
    timeout: Mapping[str, float] | None = None,
    threads: int | None = None,
) -> Callable[[Callable[[ClaimContext], ClaimResult]], Callable[[ClaimContext], ClaimResult]]:
    """Register a claim check for the paper ``slug``.

    Args:
        slug: the paper's catalog slug.
        statement: the paper's claim being tested, in one sentence of our own.
        criterion: the pass criterion, quantitative, fixed before the experiment is run.
        baseline: what the method is compared against.
        timeout: per-budget wall-clock limits in seconds, overriding the defaults (120 s smoke, 1800 s full).
        threads: torch intra-op threads while the check runs (``1`` for checks made of many tiny tensor ops, where
            thread hand-offs cost more than the arithmetic); ``None`` keeps the runner's setting.
    """
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise ValueError(f"slug must be kebab-case (lowercase letters, digits, hyphens), got {slug!r}")
    for field_name, text in (("statement", statement), ("criterion", criterion), ("baseline", baseline)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{field_name} must be a non-empty string, got {text!r}")
    if threads is not None:
        threads = check_int("threads", threads, low=1)
    limits = dict(DEFAULT_TIMEOUT)
    for key, value in dict(timeout or {}).items():
        if key not in BUDGETS:
            raise ValueError(f"timeout keys must be in {list(BUDGETS)}, got {key!r}")
        limits[key] = float(value)

    def register(fn):
        if len(inspect.signature(fn).parameters) != 1:
            raise TypeError(f"a claim function takes exactly one argument (ctx), got {fn.__qualname__}")
        entry = Claim(slug, fn.__name__, statement.strip(), criterion.strip(), baseline.strip(), fn, limits,
                      fn.__module__, threads)
        existing = _REGISTRY.get(entry.id)
        if existing is not None and existing.module != entry.module:
            raise ValueError(f"claim {entry.id} is registered twice ({existing.module} and {entry.module})")
        _REGISTRY[entry.id] = entry
        fn.claim = entry
        return fn

    return register


def registered_claims(load: bool = True) -> dict[str, Claim]:
    """All registered claims by id, sorted; ``load`` first imports every module under ``paperzoo.claims``."""
    if load:
        from paperzoo.claims import load_all

        load_all()
    return dict(sorted(_REGISTRY.items()))
