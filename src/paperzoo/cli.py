"""The ``paperzoo`` command: list, show, reproduce, report, bench."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="paperzoo: implementations of ML papers and checks of their claims.")
console = Console()

_STYLE = {"reproduced": "green", "not_reproduced": "red", "inconclusive": "yellow", "error": "bold white on red",
          "unstable": "magenta", "planned": "dim", "not_run": "dim"}

DbOption = typer.Option(None, "--db", help="Results database (default: $PAPERZOO_RESULTS or results/paperzoo.sqlite).")
EvidenceOption = typer.Option(None, "--evidence", help="Committed results (default: $PAPERZOO_EVIDENCE or "
                                                       "RESULTS.jsonl).")


def _store(db: Optional[Path], *, must_exist: bool = False):
    """The results store at ``--db``; None when ``must_exist`` and there is none (a read-only command)."""
    from paperzoo.core.results import ResultsStore, default_db_path

    path = Path(db or default_db_path())
    if must_exist and not path.exists():
        return None
    if not must_exist:
        _check_writable("--db", path)
    try:
        return ResultsStore(path)
    except ValueError as exc:  # a directory, or a file that is not a paperzoo store: results.py says which
        _fail(f"--db {exc}")
    except (OSError, sqlite3.DatabaseError) as exc:
        _fail(f"--db cannot be opened ({path}): {_reason(exc)}")


def _report_data(db: Optional[Path], evidence: Optional[Path] = None):
    """Catalog, claims (read from their source, no torch), and the rows of the local store merged with the
    committed ``RESULTS.jsonl``: a fresh clone shows the committed evidence without rerunning anything."""
    from paperzoo.core.catalog import load_catalog
    from paperzoo.core.results import default_db_path, default_jsonl_path, merge_rows, read_jsonl
    from paperzoo.core.sources import scan_claims
    from paperzoo.report import ReportData, load_benchmark_outputs

    if evidence is not None and not evidence.is_file():
        _fail(f"--evidence {evidence} is a directory, not a results JSONL file" if evidence.is_dir()
              else f"--evidence {evidence} does not exist")
    store = _store(db, must_exist=True)
    path = evidence or default_jsonl_path()
    try:
        committed = read_jsonl(path)
    except ValueError as exc:  # a line that is not a result row; results.py names the file and the line
        _fail(f"--evidence {exc}")
    except OSError as exc:
        _fail(f"--evidence cannot be read ({path}): {_reason(exc)}")
    rows = merge_rows(committed, store.rows() if store is not None else [])
    bench_dir = (db or default_db_path()).parent / "bench"
    return ReportData(load_catalog(check_api=False, check_claims=False), scan_claims(), rows,
                      load_benchmark_outputs(bench_dir))


def _fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit ``code`` (2: bad usage or input, as for the parser's own errors)."""
    print("error: " + " ".join(str(message).splitlines()), file=sys.stderr)
    raise typer.Exit(code)


def _reason(exc: Exception) -> str:
    if isinstance(exc, FileExistsError):  # mkdir(exist_ok=True) met a file where a directory must go
        return f"{exc.filename} is a file, not a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc)


def _check_writable(option: str, path: Path, *, directory: bool = False) -> None:
    """Fail before any work when ``path`` cannot be written: the wrong kind of file is there, or a file (or a
    directory without write permission) is where its folder must go."""
    if path.exists():
        if path.is_dir() != directory:
            _fail(f"{option} must be a {'directory' if directory else 'file'}, got the existing "
                  f"{'file' if directory else 'directory'} {path}")
        target = path
    else:
        target = next(p for p in path.absolute().parents if p.exists())
        if not target.is_dir():
            _fail(f"{option} cannot be created ({path}): {target} is a file, not a directory")
    if not os.access(target, os.W_OK):
        _fail(f"{option} cannot be written ({path}): no write permission on {target}")


@app.command("list")
def list_papers(
    package: Optional[str] = typer.Option(None, "--package", "-p", help="Only this package."),
    status: Optional[str] = typer.Option(None, "--status", "-s", help="Only this status."),
    db: Optional[Path] = DbOption,
    evidence: Optional[Path] = EvidenceOption,
) -> None:
    """Every paper in the catalog with its status (from the committed results and the local store)."""
    from paperzoo.core.catalog import PACKAGES
    from paperzoo.core.status import STATUSES

    if package is not None and package not in PACKAGES:
        _fail(f"--package must be one of {list(PACKAGES)}, got {package!r}")
    if status is not None and status not in STATUSES:
        _fail(f"--status must be one of {list(STATUSES)}, got {status!r}")
    data = _report_data(db, evidence)
    wide = console.width >= 140
    table = Table("id", "slug", "package", "status", "title", box=None, pad_edge=False)
    shown = 0
    for p in data.catalog:
        st = data.status(p)
        if (package and p.package != package) or (status and st != status):
            continue
        shown += 1
        if wide:
            table.add_row(str(p.id), p.slug, p.package, f"[{_STYLE[st]}]{st}[/]", p.title)
        else:  # narrow terminals: the title on its own indented line, wrapped at the terminal's width
            console.print(f"{p.id:>3}  [bold]{p.slug}[/bold]  {p.package}  [{_STYLE[st]}]{st}[/]")
            console.print(f"     {p.title}", highlight=False)
    if wide:
        console.print(table)
    console.print(f"{shown} of {len(data.catalog)} papers")


@app.command()
def show(slug: str = typer.Argument(..., help="Paper slug, e.g. adopt."), db: Optional[Path] = DbOption,
         evidence: Optional[Path] = EvidenceOption) -> None:
    """One paper: title, summary, api, fidelity, and its claims with criterion, verdict per seed and headline."""
    from paperzoo.report import _flags, _fmt

    data = _report_data(db, evidence)
    if slug not in data.catalog:
        _fail(f"no paper with slug {slug!r}; see `paperzoo list`")
    p = data.catalog[slug]
    st = data.status(p)
    console.print(f"[bold]{p.title}[/bold]\n{p.slug} · {p.package} · {p.kind} · [{_STYLE[st]}]{st}[/]\n")
    console.print(p.summary)
    console.print(f"api: {', '.join(p.api) or '(none yet)'}")
    if p.scope:
        console.print(f"scope: {p.scope}")
    if p.fidelity is not None:
        f = p.fidelity
        console.print(f"fidelity: checked against {f.checked_against} ({f.source}); tests compare with "
                      f"{f.reference}")
        for d in f.deviations:
            console.print(f"  deviation: {d}")
    elif p.api:
        console.print("fidelity: [red]not labelled yet[/red]")
    for entry in data.claims_of(p):
        console.print(f"\n[bold]claim {entry.id}[/bold]\n  statement: {entry.statement}\n"
                      f"  criterion: {entry.criterion}\n  baseline: {entry.baseline}")
        reg = data.registration(entry.id)
        if reg is not None:
            console.print(f"  criterion first committed: {reg.commit} ({reg.date})" if reg.commit
                          else "  criterion not committed yet")
        ev = data.evidence.get(entry.id)
        if ev is None:
            console.print("  [dim]no stored result[/dim]")
            continue
        row = ev.row
        console.print(f"  verdict: [{_STYLE.get(ev.verdict, '')}]{ev.summary()}[/]"
                      + (" [dim](superseded: result of an earlier criterion)[/dim]" if ev.stale else "")
                      + f"\n  shown: seed {row.seed}, {row.duration:.1f} s, run {row.run_id}, git {row.git_rev}"
                      + (f"\n  reason: {row.reason}" if row.reason else ""))
        if row.headline:
            console.print(f"  headline: {row.headline}")
        if row.control:
            outcome = "passes too" if row.control.get("passed") else "rejected"
            console.print(f"  control ({outcome}): {row.control.get('description', '')}")
        for flag in _flags(data, entry.id):
            console.print(f"  [red]warning: {flag}[/red]")
        table = Table("metric", "method", "baseline")
        for key in list(row.metrics) + [k for k in row.baseline if k not in row.metrics]:
            table.add_row(key, _short(_fmt(row.metrics.get(key, ""))), _short(_fmt(row.baseline.get(key, ""))))
        console.print(table)
        if row.error:
            console.print(f"[red]{row.error}[/red]")


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2``: distinct integers >= 0, separated by commas, none empty."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None
    for s in seeds:
        if s < 0:
            raise ValueError(f"--seeds must be >= 0, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct, got {text!r}")
    return seeds


@app.command()
def reproduce(
    slugs: Optional[list[str]] = typer.Argument(None, help="Paper slugs or claim ids slug:name (default: every claim)."),
    package: Optional[str] = typer.Option(None, "--package", "-p", help="Only claims of this package."),
    budget: str = typer.Option("smoke", "--budget", "-b", help="smoke (seconds per claim) or full (the report)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Claims run in parallel (>= 1)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Base seed of the run (>= 0; default 0)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Several run seeds, e.g. 0,1,2 (one run each)."),
    resume: bool = typer.Option(False, "--resume", help="Finish the latest unfinished run of this budget."),
    executor: str = typer.Option("local", "--executor", help="local (process pool) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (e.g. auto)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Per-claim limit in seconds (> 0; overrides)."),
    db: Optional[Path] = DbOption,
) -> None:
    """Run claim checks, store every result as it finishes, print a summary; exit 1 on any error."""
    from paperzoo.core import BUDGETS, PACKAGES, catalog, check_choice, check_int, check_number, load_catalog
    from paperzoo.core import registered_claims
    from paperzoo.core.runner import EXECUTORS, run_claims

    # Every option is checked before the store is touched or a claim module imported.
    try:
        check_choice("--budget", budget, BUDGETS)
        check_choice("--executor", executor, EXECUTORS)
        if package is not None:
            check_choice("--package", package, PACKAGES)
        check_int("--jobs", jobs, low=1)
        if seed is not None:
            check_int("--seed", seed, low=0)
        if timeout is not None:
            check_number("--timeout", timeout, low=0, low_inclusive=False)
        seed_list = None if seeds is None else _parse_seeds(seeds)
    except ValueError as exc:  # the message names the option, the constraint and the value
        _fail(str(exc))
    if seeds is not None and seed is not None:
        _fail("--seed and --seeds exclude each other: give the run seeds with --seeds alone")
    if resume and (slugs or package or seed is not None or seeds is not None):
        _fail("--resume finishes the latest unfinished run as it was started: it takes no SLUG, --package, "
              "--seed or --seeds")
    if ray_address is not None and executor != "ray":
        _fail("--ray-address needs --executor ray")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        _fail("--executor ray needs the optional dependency: pip install 'paperzoo[ray]'")
    if slugs:
        # Each argument is a paper slug (all its claims) or one claim id "slug:name"; unknown papers are found
        # from the catalog alone, before any claim module is imported.
        papers = load_catalog(check_api=False, check_claims=False)
        unknown = [s for s in slugs if s.split(":")[0] not in papers]
        if unknown:
            _fail(f"unknown slug(s) or claim id(s) {unknown}; see `paperzoo list`")
    store = _store(db)
    cat = catalog()
    registry = registered_claims()
    claims = list(registry.values())
    if slugs:
        unknown = [s for s in slugs if s not in cat and s not in registry]
        if unknown:
            _fail(f"unknown slug(s) or claim id(s) {unknown}; see `paperzoo list` and `paperzoo show SLUG`")
        claims = [c for c in claims if c.slug in slugs or c.id in slugs]
    if package:
        claims = [c for c in claims if cat[c.slug].package == package]
    if not claims and not resume:
        console.print("no claims selected")
        raise typer.Exit(0)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=console,
                        disable=not console.is_terminal and os.environ.get("PAPERZOO_PROGRESS") != "1")
    task = {}

    def on_start(runs, todo):
        for run in runs:
            console.print(f"run {run.run_id}: budget {budget}, seed {run.seed}")
        console.print(f"{len(todo)} claim run(s), jobs {jobs}")
        task["id"] = progress.add_task("claims", total=len(todo), last="")

    def on_result(outcome, run):
        progress.update(task["id"], advance=1, last=f"{outcome.claim_id} (seed {run.seed}): {outcome.verdict}")
        if not progress.console.is_terminal:
            console.print(f"  {outcome.claim_id} (seed {run.seed}): {outcome.verdict} ({outcome.duration:.1f} s)")

    try:
        with progress:
            runs, _ = run_claims(claims, store=store, budget=budget, seed=seed or 0, seeds=seed_list, jobs=jobs,
                                 executor=executor, resume=resume, ray_address=ray_address, timeout=timeout,
                                 on_start=on_start, on_result=on_result)
    except LookupError as exc:
        _fail(str(exc))
    table = Table("claim", "seed", "verdict", "seconds", "headline / reason / error", title=f"{budget} run")
    errors = False
    for run in runs:
        for cid, row in store.results(run.run_id).items():
            note = row.headline or row.reason or (row.error.strip().splitlines()[-1] if row.error else "")
            table.add_row(cid, str(row.seed), f"[{_STYLE.get(row.verdict, '')}]{row.verdict}[/]",
                          f"{row.duration:.1f}", note[:120])
            errors |= row.verdict == "error"
    console.print(table)
    console.print(f"results in {store.path}")
    if errors:
        raise typer.Exit(1)


@app.command()
def report(
    out: Path = typer.Option(Path("report"), "--out", help="Directory for the HTML site."),
    results_md: Path = typer.Option(Path("RESULTS.md"), "--results-md", help="Where to write RESULTS.md."),
    results_jsonl: Optional[Path] = typer.Option(None, "--results-jsonl",
                                                 help="Where to write the committed rows (default: beside "
                                                      "--results-md as RESULTS.jsonl)."),
    db: Optional[Path] = DbOption,
    evidence: Optional[Path] = EvidenceOption,
) -> None:
    """Write the static HTML report, RESULTS.md and RESULTS.jsonl from the stored results."""
    from paperzoo.report import write_report

    jsonl = results_jsonl if results_jsonl is not None else results_md.with_suffix(".jsonl")
    _check_writable("--out", out, directory=True)
    _check_writable("--results-md", results_md)
    _check_writable("--results-jsonl", jsonl)
    data = _report_data(db, evidence)
    index = write_report(data, out, results_md, jsonl)
    counts = ", ".join(f"{n} {s}" for s, n in data.counts().items() if n)
    console.print(f"wrote {index}, {results_md} and {jsonl}: {len(data.catalog)} papers ({counts})")


@app.command()
def bench(
    names: Optional[list[str]] = typer.Argument(None, help="Benchmark names (default: all in benchmarks/)."),
    directory: Path = typer.Option(Path("benchmarks"), "--dir", help="Directory holding the benchmark scripts."),
    quick: bool = typer.Option(False, "--quick", help="Pass --quick to each benchmark (a seconds-long run)."),
    db: Optional[Path] = DbOption,
) -> None:
    """Run the speed and memory benchmarks in benchmarks/ (each prints its table of ratios).

    Full runs keep their output beside the results database, and `paperzoo report` copies the latest of each
    into RESULTS.md.
    """
    if not directory.is_dir():
        _fail(f"--dir {str(directory)!r} is not a directory (run from the repository root)")
    scripts = sorted(p for p in directory.glob("*.py") if not p.name.startswith("_"))
    if names:
        unknown = [n for n in names if n not in {p.stem for p in scripts}]
        if unknown:
            _fail(f"no benchmark named {unknown} in {directory}; have {[p.stem for p in scripts]}")
        scripts = [p for p in scripts if p.stem in names]
    from paperzoo.report import save_benchmark_output

    bench_dir = None if quick else _store(db).path.parent / "bench"  # a bad --db fails before the long runs

    failed = []
    for script in scripts:
        console.rule(script.stem)
        proc = subprocess.run([sys.executable, str(script)] + (["--quick"] if quick else []), capture_output=True,
                              text=True)
        sys.stdout.write(proc.stdout)  # tables as printed, never re-wrapped to the terminal width
        if proc.returncode != 0:
            sys.stdout.write(proc.stderr)
            failed.append(script.stem)
        elif not quick:
            # Kept beside the results database; `paperzoo report` puts the latest tables into RESULTS.md.
            save_benchmark_output(bench_dir, script.stem, proc.stdout)
    if failed:
        _fail(f"benchmark(s) failed: {failed}")


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """The ``paperzoo`` command: every expected failure ends as one ``error: ...`` line on stderr and a non-zero
    exit (2 for bad usage or input), never a traceback; anything else is a bug and keeps its traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:  # the bare command shows the help, as a usage error
        app(args=["--help"], prog_name="paperzoo", standalone_mode=False)
        sys.exit(2)
    try:
        code = app(args=args, prog_name="paperzoo", standalone_mode=False)
    except typer.TyperException as exc:  # the parser's own errors: unknown option, missing value, not a number
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print("error: " + " ".join(exc.format_message().splitlines()) + hint, file=sys.stderr)
        code = exc.exit_code
    except (OSError, sqlite3.DatabaseError) as exc:  # the machine, not the input: disk full, a lock, permissions
        print(f"error: {type(exc).__name__}: {_reason(exc)}", file=sys.stderr)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
