"""The paper catalog: ``paperzoo/catalog.toml`` loaded, validated and indexed by slug.

Each entry is one seed paper. Its status is never typed by hand: it is ``planned`` until a claim exists, and
afterwards the verdict of its claims in the latest stored run (see :mod:`paperzoo.core.results`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import re
import tomllib
from importlib import resources

__all__ = ["PACKAGES", "KINDS", "FIDELITY_SOURCES", "Fidelity", "Paper", "Catalog", "CatalogError", "catalog", "load_catalog", "resolve_symbol"]

PACKAGES: tuple[str, ...] = (
    "optim", "gradients", "transport", "divergences", "diffusion", "inverse", "generative", "robust",
    "representation", "nn", "linalg", "scientific", "causal", "bilevel", "distributed", "rl", "llm",
    "diagnostics", "explain", "vision",
)
KINDS: tuple[str, ...] = ("method", "theory", "empirical", "application")
_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class CatalogError(ValueError):
    """The catalog file breaks one of its rules; the message lists every problem found."""


@dataclasses.dataclass(frozen=True)
class Paper:
    """One catalog entry.

    Attributes:
        id: index of the paper in ``shared/papers/catalog.json``.
        slug: unique kebab-case name used everywhere else (CLI, claims, report).
        title: the seed title, verbatim.
        package: the paperzoo package that holds its implementation.
        kind: ``method``, ``theory``, ``empirical`` or ``application``.
        summary: one line in our own words.
        api: fully qualified public symbols, e.g. ``("paperzoo.optim.ADOPT",)``; empty while planned.
        scope: empty, or a plain note where the claim runs on a scaled-down analog of the paper's experiment.
        fidelity: what the implementation was checked against (see :class:`Fidelity`); None while planned.
    """

    id: int
    slug: str
    title: str
    package: str
    kind: str
    summary: str
    api: tuple[str, ...] = ()
    scope: str = ""
    fidelity: "Fidelity | None" = None


FIDELITY_SOURCES: tuple[str, ...] = ("paper", "official-code", "summary")
_COMMIT = re.compile(r"@ ?[0-9a-f]{7,40}\b")


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """What an implementation was checked against (DESIGN.md, Fidelity). A ``[paper.fidelity]`` table.

    Attributes:
        checked_against: ``paper`` (the paper's algorithm was read), ``official-code`` (the authors' repository
            was read; ``source`` names it with its commit) or ``summary`` (only secondary descriptions could be
            read: a warning to users).
        source: what was read: the repository and commit (``github.com/owner/name @ 1a2b3c4``) and/or the paper's
            sections and equations.
        reference: the step-level reference the tests compare with (a package, official-code numbers kept as a
            fixture, a closed form).
        deviations: every known deviation from the paper or official code; empty when none is known.
    """

    checked_against: str
    source: str
    reference: str
    deviations: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Catalog:
    papers: tuple[Paper, ...]

    def __len__(self) -> int:
        return len(self.papers)

    def __iter__(self):
        return iter(self.papers)

    @functools.cached_property
    def by_slug(self) -> dict[str, Paper]:
        return {p.slug: p for p in self.papers}

    def __getitem__(self, slug: str) -> Paper:
        try:
            return self.by_slug[slug]
        except KeyError:
            raise KeyError(f"no paper with slug {slug!r} in the catalog") from None

    def __contains__(self, slug: object) -> bool:
        return slug in self.by_slug


def resolve_symbol(path: str):
    """Import ``"paperzoo.optim.ADOPT"`` and return the object."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ImportError(f"{path!r} is not a fully qualified name")
    return getattr(importlib.import_module(module_name), attr)


def load_catalog(text: str | None = None, *, check_api: bool = True, check_claims: bool = True) -> Catalog:
    """Parse and validate catalog TOML (the packaged ``catalog.toml`` when ``text`` is None).

    Validation: required fields and types, unique ids and slugs, kebab-case slugs, known packages and kinds,
    single-line summaries, every ``api`` symbol importable (``check_api``), every registered claim naming a
    known slug (``check_claims``). All problems are collected and raised together as :class:`CatalogError`.
    """
    if text is None:
        text = resources.files("paperzoo").joinpath("catalog.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text).get("paper", [])
    problems: list[str] = []
    papers: list[Paper] = []
    seen_slugs: set[str] = set()
    seen_ids: set[int] = set()
    fields = {f.name: f for f in dataclasses.fields(Paper)}
    for i, entry in enumerate(raw):
        where = f"paper[{i}]"
        unknown = set(entry) - set(fields)
        if unknown:
            problems.append(f"{where}: unknown field(s) {sorted(unknown)}")
        missing = [k for k in ("id", "slug", "title", "package", "kind", "summary") if k not in entry]
        if missing:
            problems.append(f"{where}: missing field(s) {missing}")
            continue
        slug = entry["slug"]
        where = f"paper[{i}] ({slug})"
        if not isinstance(slug, str) or not _SLUG.match(slug):
            problems.append(f"{where}: slug must be kebab-case")
        if slug in seen_slugs:
            problems.append(f"{where}: duplicate slug")
        seen_slugs.add(slug)
        if not isinstance(entry["id"], int) or entry["id"] in seen_ids:
            problems.append(f"{where}: id must be a unique integer, got {entry['id']!r}")
        seen_ids.add(entry["id"])
        if entry["package"] not in PACKAGES:
            problems.append(f"{where}: package must be one of {list(PACKAGES)}, got {entry['package']!r}")
        if entry["kind"] not in KINDS:
            problems.append(f"{where}: kind must be one of {list(KINDS)}, got {entry['kind']!r}")
        summary = entry["summary"]
        if not isinstance(summary, str) or not summary.strip() or "\n" in summary:
            problems.append(f"{where}: summary must be one non-empty line")
        api = entry.get("api", [])
        if not isinstance(api, list) or not all(isinstance(a, str) for a in api):
            problems.append(f"{where}: api must be a list of strings")
            api = []
        if check_api:
            for symbol in api:
                try:
                    obj = resolve_symbol(symbol)
                except (ImportError, AttributeError) as exc:
                    problems.append(f"{where}: api symbol {symbol!r} is not importable ({exc})")
                else:
                    if inspect.ismodule(obj):  # e.g. a package attribute shadowed by a submodule of the same name
                        problems.append(f"{where}: api symbol {symbol!r} is a module; name a function, class or "
                                        f"constant")
        fidelity = _fidelity(entry.get("fidelity"), where, problems)
        papers.append(Paper(entry["id"], slug, entry["title"], entry["package"], entry["kind"], summary,
                            tuple(api), entry.get("scope", ""), fidelity))
    if check_claims:
        from paperzoo.core.registry import registered_claims

        for claim_id, entry in registered_claims().items():
            if entry.slug not in seen_slugs:
                problems.append(f"claim {claim_id}: slug {entry.slug!r} is not in the catalog")
    if problems:
        raise CatalogError("catalog.toml is invalid:\n  " + "\n  ".join(problems))
    return Catalog(tuple(papers))


def _fidelity(raw, where: str, problems: list[str]) -> Fidelity | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where}: fidelity must be a table")
        return None
    known = {f.name for f in dataclasses.fields(Fidelity)}
    if set(raw) - known:
        problems.append(f"{where}: unknown fidelity field(s) {sorted(set(raw) - known)}")
    missing = [k for k in ("checked_against", "source", "reference") if not raw.get(k)]
    if missing:
        problems.append(f"{where}: fidelity is missing {missing}")
        return None
    if raw["checked_against"] not in FIDELITY_SOURCES:
        problems.append(f"{where}: fidelity.checked_against must be one of {list(FIDELITY_SOURCES)}, got "
                        f"{raw['checked_against']!r}")
    if raw["checked_against"] == "official-code" and not _COMMIT.search(raw["source"]):
        problems.append(f"{where}: fidelity.source must name the official repository and commit "
                        f"('github.com/owner/name @ <commit>') when checked_against is official-code")
    deviations = raw.get("deviations", [])
    if not isinstance(deviations, list) or not all(isinstance(d, str) and d.strip() for d in deviations):
        problems.append(f"{where}: fidelity.deviations must be a list of non-empty strings")
        deviations = []
    return Fidelity(raw["checked_against"], raw["source"], raw["reference"], tuple(deviations))


@functools.cache
def catalog() -> Catalog:
    """The packaged catalog, validated (cached for the process)."""
    return load_catalog()
