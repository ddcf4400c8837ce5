"""The report: a static HTML site (index of every paper, one page per paper), ``RESULTS.md`` and ``RESULTS.jsonl``.

All are rendered from the catalog, the claims as written in their modules, and the stored result rows (the local
store merged with the committed ``RESULTS.jsonl``); nothing is typed by hand. Rendering needs no torch.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import html
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from paperzoo.core.catalog import Catalog, Paper
from paperzoo.core.results import ResultRow, export_jsonl
from paperzoo.core.sources import ClaimSource, Registration, registration
from paperzoo.core.status import STATUSES, ClaimEvidence, claim_evidence, paper_status

__all__ = ["ReportData", "render_markdown", "write_html", "write_report", "save_benchmark_output",
           "load_benchmark_outputs", "evidence_rows", "claim_line"]


@dataclasses.dataclass(frozen=True)
class ReportData:
    """Everything the report shows.

    Attributes:
        catalog: the papers.
        claims: the registered claims by id (:class:`paperzoo.core.sources.ClaimSource` or
            :class:`paperzoo.core.Claim`: anything with ``slug``, ``name``, ``statement``, ``criterion``,
            ``baseline`` and ``text_hash``).
        rows: every stored result row (local store and committed JSONL, merged).
        benchmarks: the latest output of each benchmark script.
    """

    catalog: Catalog
    claims: Mapping[str, ClaimSource]
    rows: Sequence[ResultRow]
    benchmarks: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def evidence(self) -> dict[str, ClaimEvidence]:
        current = {cid: c.text_hash for cid, c in self.claims.items() if getattr(c, "text_hash", "")}
        return {cid: ev for cid, ev in claim_evidence(self.rows, current).items() if cid in self.claims}

    @functools.cached_property
    def _claims_by_slug(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for c in self.claims.values():
            out.setdefault(c.slug, []).append(c)
        return out

    def status(self, paper: Paper) -> str:
        return paper_status(paper.slug, [c.id for c in self.claims_of(paper)], self.evidence)

    def claims_of(self, paper: Paper) -> list:
        return self._claims_by_slug.get(paper.slug, [])

    def counts(self) -> dict[str, int]:
        counter = collections.Counter(self.status(p) for p in self.catalog)
        return {s: counter.get(s, 0) for s in STATUSES}

    def registration(self, claim_id: str) -> Registration | None:
        entry = self.claims.get(claim_id)
        if not isinstance(entry, ClaimSource) or not entry.text_hash:
            return None
        return _registration(entry)

    def runs(self) -> list[dict]:
        """The runs behind the current evidence: run id, budget, seed, git revision, versions."""
        seen: dict[str, dict] = {}
        for ev in self.evidence.values():
            for r in ev.rows:
                seen.setdefault(r.run_id, {"run_id": r.run_id, "budget": r.budget, "seed": r.seed,
                                           "git_rev": r.git_rev, "versions": r.versions, "first": r.finished_at})
        return sorted(seen.values(), key=lambda d: d["first"])


@functools.cache
def _registration(entry: ClaimSource) -> Registration:
    return registration(entry)


def evidence_rows(data: ReportData) -> list[ResultRow]:
    """The rows worth committing: every full-budget row of each claim's current evidence, and for each claim the
    first full-budget row of every criterion text it has had (the pre-registration record)."""
    keep: dict[tuple[str, str], ResultRow] = {}
    by_claim: dict[str, list[ResultRow]] = {}
    for r in data.rows:
        if r.budget == "full":
            by_claim.setdefault(r.claim_id, []).append(r)
    for cid, rows in by_claim.items():
        firsts: dict[str, ResultRow] = {}
        for r in sorted(rows, key=lambda r: r.finished_at):
            firsts.setdefault(r.claim_hash, r)
        for r in firsts.values():
            keep[(r.run_id, r.claim_id)] = r
    for ev in data.evidence.values():
        for r in ev.rows:
            if r.budget == "full":
                keep[(r.run_id, r.claim_id)] = r
    return list(keep.values())


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 8:
        return "[" + ", ".join(_fmt(v) for v in value[:8]) + f", ... ({len(value)} values)]"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def claim_line(data: ReportData, claim_id: str) -> str:
    """``verdict (full, seeds 0, 1, 2): headline`` for one claim, or its reason/error when it has no headline."""
    ev = data.evidence.get(claim_id)
    if ev is None:
        return "not run"
    row = ev.row
    text = row.headline or row.reason or (row.error.strip().splitlines()[-1] if row.error else "")
    prefix = "superseded: " if ev.stale else ""
    return prefix + ev.summary() + (f": {text}" if text else "")


def _flags(data: ReportData, claim_id: str) -> list[str]:
    """Warnings of the pre-registration record (evidence rule 6) and a missing control (rule 3)."""
    ev = data.evidence.get(claim_id)
    if ev is None:
        return []
    flags = []
    if ev.criterion_changed_after_full:
        flags.append("criterion changed after its first full-budget result")
    full = [r for r in ev.rows if r.budget == "full"]
    if any((r.git_rev or "").endswith("-dirty") for r in full):
        flags.append("full run on a dirty tree")
    reg = data.registration(claim_id)
    if full and reg is not None:
        if reg.commit is None:
            flags.append("criterion not committed")
        elif min(r.finished_at for r in full) < reg.date:
            flags.append("full run before the criterion was committed")
    if ev.row.control is None and ev.row.verdict != "error":
        flags.append("no discriminating control")
    return flags


def _headline(data: ReportData, paper: Paper) -> str:
    """One short line per paper for the index: each claim's verdict over seeds."""
    parts = []
    for entry in data.claims_of(paper):
        ev = data.evidence.get(entry.id)
        if ev is not None:
            parts.append(f"{entry.name}: {ev.summary()}")
    return _short("; ".join(parts), 220)


# Markdown ---------------------------------------------------------------------------------------------------------
def render_markdown(data: ReportData) -> str:
    """``RESULTS.md``: the counts, the runs behind them, a table of every paper and one of every claim's headline."""
    counts = data.counts()
    lines = [
        "# paperzoo results",
        "",
        "Generated by `paperzoo report` from the stored results (`RESULTS.jsonl`); do not edit by hand.",
        "Status: `planned` (no claim yet), `not_run`, or the verdict of the paper's claims: the verdict their run "
        "seeds agree on, `unstable` when they disagree.",
        "",
        "| status | papers |",
        "|---|---|",
        *[f"| {s} | {n} |" for s, n in counts.items()],
        f"| **total** | **{len(data.catalog)}** |",
        "",
    ]
    runs = data.runs()
    if runs:
        lines += ["Runs behind these results:", ""]
        for run in runs:
            versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items())
            lines.append(f"- `{run['run_id']}`: budget `{run['budget']}`, seed {run['seed']}, git `{run['git_rev']}`; "
                         f"{versions}")
        lines.append("")
    lines += ["| id | slug | title | package | kind | status | claims |", "|---|---|---|---|---|---|---|"]
    for p in data.catalog:
        title = p.title.replace("|", "\\|")
        headline = _headline(data, p).replace("|", "\\|")
        lines.append(f"| {p.id} | `{p.slug}` | {title} | {p.package} | {p.kind} | {data.status(p)} | {headline} |")
    claimed = [c for c in data.claims.values() if c.id in data.evidence or c.slug in data.catalog]
    if claimed:
        lines += ["", "## Claims", "",
                  "Each claim's verdict over run seeds, its headline (method vs baseline with spread), the outcome "
                  "of its discriminating control, and warnings of the pre-registration record.", "",
                  "| claim | verdict | headline | control | warnings |", "|---|---|---|---|---|"]
        for c in sorted(claimed, key=lambda c: c.id):
            ev = data.evidence.get(c.id)
            if ev is None:
                lines.append(f"| `{c.id}` | not run |  |  |  |")
                continue
            row = ev.row
            control = ""
            if row.control:
                control = ("passes too" if row.control.get("passed") else "rejected") + ": " + row.control.get(
                    "description", "")
            cells = [("superseded: " if ev.stale else "") + ev.summary(),
                     row.headline or row.reason or (row.error.strip().splitlines()[-1] if row.error else ""),
                     control, "; ".join(_flags(data, c.id))]
            cells = [x.replace("|", "\\|").replace("\n", " ") for x in cells]
            lines.append(f"| `{c.id}` | " + " | ".join(cells) + " |")
    if data.benchmarks:
        lines += ["", "## Benchmarks", "",
                  "Latest full output of each script in `benchmarks/` (`paperzoo bench`); ratios are measured in one "
                  "run on the machine named in each table's header.", ""]
        for name, text in data.benchmarks.items():
            lines += [f"### {name}", "", "```", text.rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def save_benchmark_output(directory: str | Path, name: str, text: str) -> Path:
    """Store one benchmark's printed table (with the date and the machine) for the report."""
    import datetime
    import os
    import platform

    path = Path(directory) / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    header = f"# {stamp} · {platform.processor() or platform.machine()} · {os.cpu_count()} cores\n"
    path.write_text(header + text, encoding="utf-8")
    return path


def load_benchmark_outputs(directory: str | Path) -> dict[str, str]:
    """The stored outputs by benchmark name (empty when none were saved)."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.txt"))}


# HTML -------------------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;width:100%;font-size:14px}th,td{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f3f3f3}.reproduced{color:#176f2c;font-weight:600}
.not_reproduced{color:#a33;font-weight:600}.inconclusive{color:#a67c00;font-weight:600}.unstable{color:#8a2be2;
font-weight:600}.warn{color:#a33}.error{color:#fff;
background:#a33}.planned,.not_run{color:#888}pre{background:#f6f6f6;padding:8px;overflow-x:auto}
img{max-width:100%;border:1px solid #eee}.meta{color:#666;font-size:13px}
"""

_FILTER_JS = """
function applyFilters(){var p=document.getElementById('pkg').value,s=document.getElementById('st').value,n=0;
document.querySelectorAll('#papers tbody tr').forEach(function(r){var ok=(!p||r.dataset.package===p)&&
(!s||r.dataset.status===s);r.style.display=ok?'':'none';if(ok)n++;});document.getElementById('n').textContent=n;}
"""


def _page(title: str, body: str, root: str = "") -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><p class='meta'><a href='{root}index.html'>paperzoo</a></p>"
            f"{body}</body></html>")


def _index(data: ReportData) -> str:
    e = html.escape
    packages = sorted({p.package for p in data.catalog})
    counts = data.counts()
    rows = []
    for p in data.catalog:
        status = data.status(p)
        rows.append(f"<tr data-package='{e(p.package)}' data-status='{status}'><td>{p.id}</td>"
                    f"<td><a href='papers/{e(p.slug)}.html'>{e(p.slug)}</a></td><td>{e(p.title)}</td>"
                    f"<td>{e(p.package)}</td><td>{e(p.kind)}</td><td class='{status}'>{status}</td>"
                    f"<td>{e(_headline(data, p))}</td></tr>")
    options_pkg = "".join(f"<option>{e(x)}</option>" for x in packages)
    options_st = "".join(f"<option>{s}</option>" for s in STATUSES)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    body = (f"<h1>paperzoo: {len(data.catalog)} papers</h1><p>{e(summary)}</p>"
            f"<p>Package <select id='pkg' onchange='applyFilters()'><option value=''>all</option>{options_pkg}"
            f"</select> Status <select id='st' onchange='applyFilters()'><option value=''>all</option>{options_st}"
            f"</select> <span id='n'>{len(data.catalog)}</span> shown</p>"
            "<table id='papers'><thead><tr><th>id</th><th>slug</th><th>title</th><th>package</th><th>kind</th>"
            f"<th>status</th><th>claims</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<script>{_FILTER_JS}</script>")
    return _page("paperzoo report", body)


def _metrics_table(row: ResultRow) -> str:
    e = html.escape
    keys = list(row.metrics) + [k for k in row.baseline if k not in row.metrics]
    if not keys:
        return ""
    body = "".join(f"<tr><td>{e(k)}</td><td>{e(_fmt(row.metrics.get(k, '')))}</td>"
                   f"<td>{e(_fmt(row.baseline.get(k, '')))}</td></tr>" for k in keys)
    return f"<table><thead><tr><th>metric</th><th>method</th><th>baseline</th></tr></thead><tbody>{body}</tbody></table>"


def _paper_page(data: ReportData, paper: Paper, figure_links: Mapping[str, list[str]]) -> str:
    e = html.escape
    status = data.status(paper)
    api = ", ".join(f"<code>{e(a)}</code>" for a in paper.api) or "(none yet)"
    parts = [f"<h1>{e(paper.title)}</h1>",
             f"<p><b>{e(paper.slug)}</b> · {e(paper.package)} · {e(paper.kind)} · "
             f"<span class='{status}'>{status}</span></p>",
             f"<p>{e(paper.summary)}</p><p>API: {api}</p>"]
    if paper.scope:
        parts.append(f"<p><i>Scope:</i> {e(paper.scope)}</p>")
    fid = paper.fidelity
    if fid is not None:
        devs = "".join(f"<li>{e(d)}</li>" for d in fid.deviations) or "<li>none known</li>"
        parts.append(f"<p><i>Fidelity:</i> checked against <b>{e(fid.checked_against)}</b> ({e(fid.source)}); "
                     f"tests compare with {e(fid.reference)}.</p><p>Known deviations:</p><ul>{devs}</ul>")
    elif paper.api:
        parts.append("<p class='warn'><i>Fidelity:</i> not labelled yet.</p>")
    for entry in data.claims_of(paper):
        ev = data.evidence.get(entry.id)
        parts.append(f"<h2>Claim <code>{e(entry.name)}</code></h2><p><b>Statement.</b> {e(entry.statement)}</p>"
                     f"<p><b>Criterion (pre-registered).</b> {e(entry.criterion)}</p>"
                     f"<p><b>Baseline.</b> {e(entry.baseline)}</p>")
        reg = data.registration(entry.id)
        if reg is not None:
            when = f"first committed in {e(reg.commit)} ({e(reg.date)})" if reg.commit else "not committed yet"
            parts.append(f"<p class='meta'>Criterion text {when}.</p>")
        if ev is None:
            parts.append("<p class='not_run'>No stored result yet.</p>")
            continue
        row = ev.row
        first = ev.first_full
        if first is not None:
            parts.append(f"<p class='meta'>First full-budget result: {e(first.finished_at)}, git "
                         f"{e(str(first.git_rev))}.</p>")
        for flag in _flags(data, entry.id):
            parts.append(f"<p class='warn'>Warning: {e(flag)}.</p>")
        if ev.criterion_changed_after_full and first is not None and first.claim_text:
            parts.append(f"<p class='meta'>Earlier criterion: {e(first.claim_text.get('criterion', ''))}</p>")
        seeds = ", ".join(f"seed {r.seed}: <span class='{e(r.verdict)}'>{e(r.verdict)}</span>" for r in ev.rows)
        parts.append(f"<p><b>Verdict:</b> <span class='{e(ev.verdict)}'>{e(ev.verdict)}</span> ({seeds})"
                     + (" <i>(superseded: this result is of an earlier criterion)</i>" if ev.stale else "")
                     + (f" — {e(row.reason)}" if row.reason else "") + "</p>")
        if row.headline:
            parts.append(f"<p><b>Headline.</b> {e(row.headline)}</p>")
        if row.control:
            outcome = "passes the criterion too" if row.control.get("passed") else "is rejected by the criterion"
            parts.append(f"<p><b>Control.</b> {e(row.control.get('description', ''))} {outcome}.</p>")
        parts.append(_metrics_table(row))
        if row.error:
            parts.append(f"<pre>{e(row.error)}</pre>")
        for src in figure_links.get(entry.id, []):
            parts.append(f"<p><img src='{e(src)}' alt='figure'></p>")
        versions = ", ".join(f"{k} {v}" for k, v in row.versions.items())
        parts.append(f"<p class='meta'>run {e(row.run_id)} · budget {e(row.budget)} · seed {row.seed} · "
                     f"{row.duration:.1f} s · finished {e(row.finished_at)} · git {e(str(row.git_rev))}"
                     f" · {e(versions)}</p>")
    return _page(paper.slug, "".join(parts), root="../")


def write_html(data: ReportData, out_dir: str | Path) -> Path:
    """Write ``index.html``, ``papers/<slug>.html`` and copies of the figures under ``out_dir``."""
    out = Path(out_dir)
    (out / "papers").mkdir(parents=True, exist_ok=True)
    figure_links: dict[str, list[str]] = {}
    for claim_id, ev in data.evidence.items():
        row = ev.row
        for fig in row.figures:
            src = Path(fig)
            if not src.is_file():
                continue
            dest = out / "figures" / row.slug / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            figure_links.setdefault(claim_id, []).append(f"../figures/{row.slug}/{src.name}")
    (out / "index.html").write_text(_index(data), encoding="utf-8")
    for paper in data.catalog:
        (out / "papers" / f"{paper.slug}.html").write_text(_paper_page(data, paper, figure_links), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(
        {p.slug: {"status": data.status(p), "package": p.package} for p in data.catalog}, indent=1), encoding="utf-8")
    return out / "index.html"


def write_report(data: ReportData, out_dir: str | Path, results_md: str | Path | None = "RESULTS.md",
                 results_jsonl: str | Path | None = None) -> Path:
    """The HTML site under ``out_dir``; unless None, the Markdown table and the committed JSONL rows."""
    index = write_html(data, out_dir)
    if results_md is not None:
        Path(results_md).write_text(render_markdown(data), encoding="utf-8")
    if results_jsonl is not None:
        export_jsonl(evidence_rows(data), results_jsonl)
    return index
