"""The ``paperzoo`` command: list, show, reproduce, report, bench."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

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
    from paperzoo.core.results import ResultsStore, default_db_path

    path = db or default_db_path()
    if must_exist and not Path(path).exists():
        return None
    return ResultsStore(path)


def _report_data(db: Optional[Path], evidence: Optional[Path] = None):
    """Catalog, claims (read from their source, no torch), and the rows of the local store merged with the
    committed ``RESULTS.jsonl``: a fresh clone shows the committed evidence without rerunning anything."""
    from paperzoo.core.catalog import load_catalog
    from paperzoo.core.results import default_db_path, default_jsonl_path, merge_rows, read_jsonl
    from paperzoo.core.sources import scan_claims
    from paperzoo.report import ReportData, load_benchmark_outputs

    store = _store(db, must_exist=True)
    committed = read_jsonl(evidence or default_jsonl_path())
    rows = merge_rows(committed, store.rows() if store is not None else [])
    bench_dir = (db or default_db_path()).parent / "bench"
    return ReportData(load_catalog(check_api=False, check_claims=False), scan_claims(), rows,
                      load_benchmark_outputs(bench_dir))


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


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


@app.command()
def reproduce(
    slugs: Optional[list[str]] = typer.Argument(None, help="Paper slugs or claim ids slug:name (default: every claim)."),
    package: Optional[str] = typer.Option(None, "--package", "-p", help="Only claims of this package."),
    budget: str = typer.Option("smoke", "--budget", "-b", help="smoke (seconds per claim) or full (the report)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Claims run in parallel."),
    seed: int = typer.Option(0, "--seed", help="Base seed of the run."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Several run seeds, e.g. 0,1,2 (one run each)."),
    resume: bool = typer.Option(False, "--resume", help="Finish the latest unfinished run of this budget."),
    executor: str = typer.Option("local", "--executor", help="local (process pool) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (e.g. auto)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Per-claim limit in seconds (overrides)."),
    db: Optional[Path] = DbOption,
) -> None:
    """Run claim checks, store every result as it finishes, print a summary; exit 1 on any error."""
    from paperzoo.core import BUDGETS, catalog, registered_claims
    from paperzoo.core.runner import EXECUTORS, run_claims

    if budget not in BUDGETS:
        _fail(f"--budget must be one of {list(BUDGETS)}, got {budget!r}")
    if executor not in EXECUTORS:
        _fail(f"--executor must be one of {list(EXECUTORS)}, got {executor!r}")
    cat = catalog()
    registry = registered_claims()
    claims = list(registry.values())
    if slugs:
        # Each argument is a paper slug (all its claims) or one claim id "slug:name".
        unknown = [s for s in slugs if s not in cat and s not in registry]
        if unknown:
            _fail(f"unknown slug(s) or claim id(s) {unknown}; see `paperzoo list`")
        claims = [c for c in claims if c.slug in slugs or c.id in slugs]
    if package:
        claims = [c for c in claims if cat[c.slug].package == package]
    if not claims and not resume:
        console.print("no claims selected")
        raise typer.Exit(0)
    seed_list = None
    if seeds is not None:
        try:
            seed_list = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            _fail(f"--seeds must be comma-separated integers, got {seeds!r}")
        if not seed_list or len(set(seed_list)) != len(seed_list):
            _fail(f"--seeds must be distinct integers, got {seeds!r}")
    store = _store(db)
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
            runs, _ = run_claims(claims, store=store, budget=budget, seed=seed, seeds=seed_list, jobs=jobs,
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

    data = _report_data(db, evidence)
    jsonl = results_jsonl if results_jsonl is not None else results_md.with_suffix(".jsonl")
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
        scripts = [p for p in scripts if p.stem in names]
        if not scripts:
            _fail(f"no benchmark named {names} in {directory}")
    from paperzoo.report import save_benchmark_output

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
            save_benchmark_output(_store(db).path.parent / "bench", script.stem, proc.stdout)
    if failed:
        _fail(f"benchmark(s) failed: {failed}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
