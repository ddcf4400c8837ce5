"""Results store: SQLite (standard library), one row per (run, claim).

Every finished claim is written in its own transaction, so a run that is killed loses nothing already
finished; ``paperzoo reproduce --resume`` reruns only the claims of the latest unfinished run that have no row.

Schema::

    runs(run_id, started, finished, budget, seed, claims, git_rev, versions, dirty, batch)
    results(run_id, claim_id, slug, verdict, metrics, baseline, reason, error, duration, seed, budget,
            figures, finished_at, headline, control, claim_hash, claim_text)

``metrics``, ``baseline``, ``claims``, ``versions``, ``figures``, ``control`` and ``claim_text`` are JSON text.
``claim_hash``/``claim_text`` are the claim's statement, criterion and baseline when it ran (the pre-registration
record); ``dirty`` says whether the working tree had uncommitted changes; ``batch`` groups the runs of one
``reproduce --seeds 0,1,2`` call. Databases written before these columns existed are migrated on open.

:func:`export_jsonl` / :func:`read_jsonl` write and read the committed, reviewable form of the results
(``RESULTS.jsonl``, one JSON object per row), which the CLI and the report read on a fresh clone.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ResultRow", "RunInfo", "ResultsStore", "default_db_path", "default_jsonl_path", "package_versions", "git_revision",
           "export_jsonl", "read_jsonl", "merge_rows"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    started  TEXT NOT NULL,
    finished TEXT,
    budget   TEXT NOT NULL,
    seed     INTEGER NOT NULL,
    claims   TEXT NOT NULL,
    git_rev  TEXT,
    versions TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    claim_id    TEXT NOT NULL,
    slug        TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    metrics     TEXT NOT NULL,
    baseline    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    error       TEXT NOT NULL,
    duration    REAL NOT NULL,
    seed        INTEGER NOT NULL,
    budget      TEXT NOT NULL,
    figures     TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    PRIMARY KEY (run_id, claim_id)
);
CREATE INDEX IF NOT EXISTS results_claim ON results(claim_id, finished_at);
"""
# Columns added after the first schema: (table, column, SQL type and default).
_MIGRATIONS = (
    ("runs", "dirty", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "batch", "TEXT"),
    ("results", "headline", "TEXT NOT NULL DEFAULT ''"),
    ("results", "control", "TEXT NOT NULL DEFAULT 'null'"),
    ("results", "claim_hash", "TEXT NOT NULL DEFAULT ''"),
    ("results", "claim_text", "TEXT NOT NULL DEFAULT '{}'"),
)


def default_db_path() -> Path:
    """``$PAPERZOO_RESULTS`` if set, else ``results/paperzoo.sqlite`` under the current directory."""
    return Path(os.environ.get("PAPERZOO_RESULTS", "results/paperzoo.sqlite"))


def default_jsonl_path() -> Path:
    """The committed results: ``$PAPERZOO_EVIDENCE``, else ``RESULTS.jsonl`` in the current directory, else the one
    at the root of the checkout this package was installed from (editable installs)."""
    if os.environ.get("PAPERZOO_EVIDENCE"):
        return Path(os.environ["PAPERZOO_EVIDENCE"])
    here = Path("RESULTS.jsonl")
    if here.is_file():
        return here
    beside = Path(__file__).resolve().parents[3] / "RESULTS.jsonl"
    return beside if beside.is_file() else here


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide numerical results."""
    from importlib import metadata

    out = {}
    for name in ("paperzoo", "torch", "numpy", "scipy", "POT", "scikit-learn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    import platform

    out["python"] = platform.python_version()
    return out


def git_revision() -> str | None:
    """The current git commit (with ``-dirty`` when the tree has changes), or None outside a checkout."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@dataclasses.dataclass(frozen=True)
class RunInfo:
    run_id: str
    started: str
    finished: str | None
    budget: str
    seed: int
    claims: tuple[str, ...]
    git_rev: str | None
    versions: dict
    dirty: bool = False
    batch: str | None = None


@dataclasses.dataclass(frozen=True)
class ResultRow:
    run_id: str
    claim_id: str
    slug: str
    verdict: str
    metrics: dict
    baseline: dict
    reason: str
    error: str
    duration: float
    seed: int
    budget: str
    figures: tuple[str, ...]
    finished_at: str
    headline: str = ""
    control: dict | None = None
    claim_hash: str = ""
    claim_text: dict = dataclasses.field(default_factory=dict)
    git_rev: str | None = None
    versions: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        """The row as a JSON object (figures dropped: they live beside the local database, not in git)."""
        out = dataclasses.asdict(self)
        out.pop("figures")
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "ResultRow":
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in obj.items() if k in fields}
        values["figures"] = tuple(values.get("figures", ()))
        return cls(**values)


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}


@functools.cache
def _base_columns() -> dict[str, set[str]]:
    """The columns of the first schema (the later ones are migrated on open), by table."""
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(_SCHEMA)
        return {table: _columns(con, table) for table in ("runs", "results")}
    finally:
        con.close()


class ResultsStore:
    """A SQLite results database at ``path`` (created on first use).

    Raises ``ValueError`` when ``path`` is a directory or a file that is not a paperzoo results store (not
    SQLite, someone else's tables, missing columns); ``OSError`` or ``sqlite3.OperationalError`` when it cannot
    be created or opened.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_db_path()
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a directory, not a paperzoo results store")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as con:
                self._check_tables(con)
                con.executescript(_SCHEMA)
                for table, column, decl in _MIGRATIONS:
                    if column not in _columns(con, table):
                        con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        except sqlite3.OperationalError:
            raise  # it cannot be opened or written (permissions, a lock): not a question of what it holds
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            raise ValueError(f"{self.path} is not a paperzoo results store: {exc}") from None

    def _check_tables(self, con: sqlite3.Connection) -> None:
        """An existing database must be one this class wrote (both tables, with their first columns): never add
        tables to someone else's database, nor fail later on a missing column."""
        tables = {r["name"] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if not r["name"].startswith("sqlite_")}
        if not tables:
            return  # a new or empty file
        if not {"runs", "results"} <= tables:
            raise ValueError(f"{self.path} is not a paperzoo results store: it has the tables {sorted(tables)}, "
                             f"not 'runs' and 'results'")
        for table, wanted in _base_columns().items():
            missing = wanted - _columns(con, table)
            if missing:
                raise ValueError(f"{self.path} is not a paperzoo results store: table {table!r} lacks the "
                                 f"columns {sorted(missing)}")

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.row_factory = sqlite3.Row
        return con

    # runs -----------------------------------------------------------------------------------------------------
    def start_run(self, claim_ids: Iterable[str], *, budget: str, seed: int, batch: str | None = None) -> RunInfo:
        rev = git_revision()
        run_id = uuid.uuid4().hex[:12]
        info = RunInfo(run_id, _now(), None, budget, int(seed), tuple(claim_ids), rev, package_versions(),
                       bool(rev and rev.endswith("-dirty")), batch or run_id)
        with self._connect() as con:
            con.execute("INSERT INTO runs (run_id, started, finished, budget, seed, claims, git_rev, versions, dirty,"
                        " batch) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (info.run_id, info.started, None, budget, info.seed, json.dumps(list(info.claims)),
                         info.git_rev, json.dumps(info.versions), int(info.dirty), info.batch))
        return info

    def finish_run(self, run_id: str) -> None:
        with self._connect() as con:
            con.execute("UPDATE runs SET finished = ? WHERE run_id = ?", (_now(), run_id))

    @staticmethod
    def _run(row: sqlite3.Row) -> RunInfo:
        return RunInfo(row["run_id"], row["started"], row["finished"], row["budget"], row["seed"],
                       tuple(json.loads(row["claims"])), row["git_rev"], json.loads(row["versions"]),
                       bool(row["dirty"]), row["batch"] or row["run_id"])

    def runs(self) -> list[RunInfo]:
        """All runs, oldest first."""
        with self._connect() as con:
            rows = con.execute("SELECT * FROM runs ORDER BY started, rowid").fetchall()
        return [self._run(r) for r in rows]

    def get_run(self, run_id: str) -> RunInfo:
        with self._connect() as con:
            row = con.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in {self.path}")
        return self._run(row)

    def latest_unfinished_run(self, budget: str | None = None) -> RunInfo | None:
        runs = [r for r in self.runs() if r.finished is None and (budget is None or r.budget == budget)]
        return runs[-1] if runs else None

    def unfinished_batch(self, budget: str | None = None) -> list[RunInfo]:
        """The unfinished runs of the latest batch with an unfinished run (one run per seed), oldest first."""
        last = self.latest_unfinished_run(budget)
        if last is None:
            return []
        return [r for r in self.runs() if r.batch == last.batch and r.finished is None]

    # results --------------------------------------------------------------------------------------------------
    def record(self, run_id: str, claim_id: str, *, verdict: str, metrics: dict, baseline: dict, reason: str,
               error: str, duration: float, seed: int, budget: str, figures: Iterable[str] = (),
               headline: str = "", control: dict | None = None, claim_hash: str = "",
               claim_text: dict | None = None) -> None:
        """Write one claim's outcome in its own transaction (replacing an earlier row of the same run)."""
        with self._connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO results (run_id, claim_id, slug, verdict, metrics, baseline, reason, error,"
                " duration, seed, budget, figures, finished_at, headline, control, claim_hash, claim_text)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, claim_id, claim_id.split(":")[0], str(verdict), json.dumps(metrics), json.dumps(baseline),
                 reason, error, float(duration), int(seed), budget, json.dumps(list(figures)), _now(), headline,
                 json.dumps(control), claim_hash, json.dumps(claim_text or {})),
            )

    _SELECT = ("SELECT results.*, runs.git_rev AS run_git_rev, runs.versions AS run_versions FROM results "
               "LEFT JOIN runs ON runs.run_id = results.run_id")

    @staticmethod
    def _row(row: sqlite3.Row) -> ResultRow:
        return ResultRow(row["run_id"], row["claim_id"], row["slug"], row["verdict"], json.loads(row["metrics"]),
                         json.loads(row["baseline"]), row["reason"], row["error"], row["duration"], row["seed"],
                         row["budget"], tuple(json.loads(row["figures"])), row["finished_at"], row["headline"],
                         json.loads(row["control"]), row["claim_hash"], json.loads(row["claim_text"]),
                         row["run_git_rev"], json.loads(row["run_versions"] or "{}"))

    def results(self, run_id: str) -> dict[str, ResultRow]:
        """The rows of one run, by claim id."""
        with self._connect() as con:
            rows = con.execute(self._SELECT + " WHERE results.run_id = ? ORDER BY claim_id", (run_id,)).fetchall()
        return {r["claim_id"]: self._row(r) for r in rows}

    def rows(self, budget: str | None = None) -> list[ResultRow]:
        """Every stored row (optionally of one budget), oldest first."""
        query, args = self._SELECT, ()
        if budget is not None:
            query += " WHERE results.budget = ?"
            args = (budget,)
        with self._connect() as con:
            rows = con.execute(query + " ORDER BY results.finished_at, results.rowid", args).fetchall()
        return [self._row(r) for r in rows]

    def latest(self, budget: str | None = None) -> dict[str, ResultRow]:
        """The most recent row of every claim (optionally of one budget)."""
        return {r.claim_id: r for r in self.rows(budget)}


def merge_rows(*sources: Iterable[ResultRow]) -> list[ResultRow]:
    """Rows from several sources (the committed JSONL, the local store), one per (run, claim), oldest first."""
    merged: dict[tuple[str, str], ResultRow] = {}
    for source in sources:
        for row in source:
            merged[(row.run_id, row.claim_id)] = row
    return sorted(merged.values(), key=lambda r: (r.finished_at, r.run_id, r.claim_id))


def export_jsonl(rows: Iterable[ResultRow], path: str | os.PathLike) -> Path:
    """Write ``rows`` as JSON lines, sorted by claim, seed and time, so that diffs between commits are reviewable."""
    path = Path(path)
    ordered = sorted(rows, key=lambda r: (r.claim_id, r.budget, r.seed, r.finished_at, r.run_id))
    text = "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in ordered)
    path.write_text(text, encoding="utf-8")
    return path


def read_jsonl(path: str | os.PathLike) -> list[ResultRow]:
    """Rows from a file written by :func:`export_jsonl` (empty when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a results JSONL file: {exc}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise TypeError(f"expected a JSON object, got {type(obj).__name__}")
            rows.append(ResultRow.from_json(obj))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a result row ({exc})") from None
    return rows
