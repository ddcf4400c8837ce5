"""Claims read from their source files, without importing them (no torch): for ``paperzoo list`` and the
pre-registration record.

:func:`scan_claims` parses every module under ``paperzoo/claims`` and returns each ``@claim(...)``'s slug, name and
text; :func:`registration` walks the git history of a claim's module to find the first commit whose text hashes to
the claim's present text (when the criterion was registered), so the report can show whether a full-budget result
came before or after it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import subprocess
from pathlib import Path

__all__ = ["ClaimSource", "Registration", "claim_text_hash", "scan_claims", "parse_claims", "registration",
           "claims_root"]


def claim_text_hash(statement: str, criterion: str, baseline: str) -> str:
    """sha256 of a claim's statement, criterion and baseline (whitespace-normalised), first 16 hex digits."""
    text = "\x1f".join(" ".join(t.split()) for t in (statement, criterion, baseline))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class ClaimSource:
    """One ``@claim`` as written in its module. ``text_hash`` is empty when a text is not a string literal."""

    slug: str
    name: str
    statement: str
    criterion: str
    baseline: str
    path: str

    @property
    def id(self) -> str:
        return f"{self.slug}:{self.name}"

    @property
    def text_hash(self) -> str:
        if not (self.statement and self.criterion and self.baseline):
            return ""
        return claim_text_hash(self.statement, self.criterion, self.baseline)


def claims_root() -> Path:
    """The directory of the ``paperzoo.claims`` package."""
    return Path(__file__).resolve().parent.parent / "claims"


class _Unknown(Exception):
    pass


def _evaluate(node, names: dict):
    """A string/number expression of literals, module-level constants, ``+``, ``%`` and f-strings; else _Unknown."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return _evaluate(names[node.id], names)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        left, right = _evaluate(node.left, names), _evaluate(node.right, names)
        return left + right if isinstance(node.op, ast.Add) else left % right
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                spec = "".join(_evaluate(v, names) for v in value.format_spec.values) if value.format_spec else ""
                obj = _evaluate(value.value, names)
                obj = repr(obj) if value.conversion == ord("r") else obj
                parts.append(format(obj, spec))
            else:
                parts.append(_evaluate(value, names))
        return "".join(str(p) for p in parts)
    if isinstance(node, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Constant) for e in node.elts):
        return tuple(e.value for e in node.elts) if isinstance(node, ast.Tuple) else [e.value for e in node.elts]
    raise _Unknown


def _literal(node, names: dict) -> str:
    try:
        value = _evaluate(node, names)
    except (_Unknown, TypeError, ValueError, KeyError):
        return ""
    return value if isinstance(value, str) else ""


def parse_claims(text: str, path: str = "<string>") -> list[ClaimSource]:
    """Every ``@claim("slug", statement=..., criterion=..., baseline=...)`` in a module's source text."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    names = {t.id: stmt.value for stmt in tree.body if isinstance(stmt, ast.Assign)
             for t in stmt.targets if isinstance(t, ast.Name)}
    names.update({stmt.target.id: stmt.value for stmt in tree.body
                  if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value})
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for dec in node.decorator_list:
            if not isinstance(dec, ast.Call):
                continue
            func = dec.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name != "claim" or not dec.args:
                continue
            slug = _literal(dec.args[0], names)
            if not slug:
                continue
            kw = {k.arg: _literal(k.value, names) for k in dec.keywords if k.arg in ("statement", "criterion", "baseline")}
            found.append(ClaimSource(slug, node.name, kw.get("statement", ""), kw.get("criterion", ""),
                                     kw.get("baseline", ""), path))
    return found


def _extra_module_files(names: str) -> list[Path]:
    """Source files of the modules in ``$PAPERZOO_CLAIM_MODULES`` (found, not imported)."""
    import importlib.util

    files = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            files.append(Path(spec.origin))
    return files


def scan_claims(root: str | None = None) -> dict[str, ClaimSource]:
    """All claims under ``root`` (default: the installed ``paperzoo/claims``, plus the modules named in
    ``$PAPERZOO_CLAIM_MODULES``), by id, without importing them."""
    import os

    return _scan(root, os.environ.get("PAPERZOO_CLAIM_MODULES", "") if root is None else "")


@functools.cache
def _scan(root: str | None, extra: str) -> dict[str, ClaimSource]:
    base = Path(root) if root is not None else claims_root()
    out: dict[str, ClaimSource] = {}
    for path in sorted(base.rglob("*.py")) + _extra_module_files(extra):
        for entry in parse_claims(path.read_text(encoding="utf-8"), str(path)):
            out[entry.id] = entry
    return dict(sorted(out.items()))


@dataclasses.dataclass(frozen=True)
class Registration:
    """When a claim's present text was first committed (``commit`` None when it is not committed yet)."""

    commit: str | None
    date: str | None
    earlier_texts: tuple[dict, ...] = ()  # committed earlier versions of the text, oldest first


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def registration(entry: ClaimSource) -> Registration:
    """Walk the git history of the claim's module for the first commit carrying its present text."""
    path = Path(entry.path).resolve()
    top = _git(["rev-parse", "--show-toplevel"], path.parent)
    if top is None:
        return Registration(None, None)
    top_dir = Path(top.strip())
    rel = path.relative_to(top_dir).as_posix()
    log = _git(["log", "--reverse", "--format=%H %cI", "--", rel], top_dir) or ""
    earlier: list[dict] = []
    seen: set[str] = set()
    for line in log.splitlines():
        commit, date = line.split(" ", 1)
        text = _git(["show", f"{commit}:{rel}"], top_dir)
        if text is None:
            continue
        match = next((c for c in parse_claims(text, rel) if c.name == entry.name and c.slug == entry.slug), None)
        if match is None:
            continue
        if match.text_hash == entry.text_hash:
            return Registration(commit[:12], date, tuple(earlier))
        if match.text_hash not in seen:
            seen.add(match.text_hash)
            earlier.append({"commit": commit[:12], "date": date, "statement": match.statement,
                            "criterion": match.criterion, "baseline": match.baseline, "hash": match.text_hash})
    return Registration(None, None, tuple(earlier))
