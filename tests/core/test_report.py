from paperzoo.core import catalog
from paperzoo.core.results import ResultsStore, read_jsonl
from paperzoo.core.sources import scan_claims
from paperzoo.report import (ReportData, evidence_rows, load_benchmark_outputs, render_markdown,
                             save_benchmark_output, write_html, write_report)


def _data(tmp_path, benchmarks=None, seeds=(0,), verdicts=None):
    store = ResultsStore(tmp_path / "r.sqlite")
    claims = scan_claims()
    claim_id = next(iter(claims))
    entry = claims[claim_id]
    for seed in seeds:
        run = store.start_run([claim_id], budget="full", seed=seed)
        verdict = (verdicts or {}).get(seed, "not_reproduced")
        store.record(run.run_id, claim_id, verdict=verdict, metrics={"err": 0.5, "curve": list(range(20))},
                     baseline={"err": 0.25}, reason="measured 0.5 vs 0.25", error="", duration=1.0, seed=seed,
                     budget="full", figures=[str(tmp_path / "missing.png")], headline="err 0.5 vs 0.25 (baseline)",
                     control={"description": "the baseline", "passed": False, "metrics": {}},
                     claim_hash=entry.text_hash, claim_text={"criterion": entry.criterion})
    return ReportData(catalog(), claims, store.rows(), benchmarks or {}), claim_id


def test_markdown_has_every_paper_and_the_counts(tmp_path):
    data, claim_id = _data(tmp_path)
    text = render_markdown(data)
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    assert len(rows) == len(catalog())
    slug = claim_id.split(":")[0]
    assert any(f"`{slug}`" in r and "not_reproduced" in r for r in rows)
    assert f"| `{claim_id}` | not_reproduced (full, seed 0) | err 0.5 vs 0.25 (baseline) | rejected: the baseline |" in text
    assert f"| **total** | **{len(catalog())}** |" in text
    assert "## Benchmarks" not in text


def test_benchmark_outputs_reach_results_md(tmp_path):
    save_benchmark_output(tmp_path / "bench", "optim_step", "name  ratio\nADOPT 1.01\n")
    outputs = load_benchmark_outputs(tmp_path / "bench")
    assert list(outputs) == ["optim_step"] and "ADOPT 1.01" in outputs["optim_step"]
    data, _ = _data(tmp_path, outputs)
    text = render_markdown(data)
    assert "## Benchmarks" in text and "### optim_step" in text and "ADOPT 1.01" in text
    assert load_benchmark_outputs(tmp_path / "nowhere") == {}


def test_html_pages_show_metrics_against_baseline(tmp_path):
    data, claim_id = _data(tmp_path)
    index = write_html(data, tmp_path / "site")
    page = (tmp_path / "site" / "papers" / f"{claim_id.split(':')[0]}.html").read_text()
    assert "<th>method</th><th>baseline</th>" in page and "0.25" in page and "(20 values)" in page
    assert index.read_text().count("<tr data-package=") == len(catalog())


def test_disagreeing_seeds_show_as_unstable_with_per_seed_verdicts(tmp_path):
    data, claim_id = _data(tmp_path, seeds=(0, 1, 2), verdicts={0: "reproduced", 1: "not_reproduced",
                                                                2: "reproduced"})
    paper = catalog()[claim_id.split(":")[0]]
    assert data.status(paper) == "unstable"
    text = render_markdown(data)
    assert "unstable (seed 0: reproduced, seed 1: not_reproduced, seed 2: reproduced)" in text


def test_report_writes_the_committed_jsonl_that_a_fresh_clone_reads(tmp_path):
    data, claim_id = _data(tmp_path, seeds=(0, 1, 2))
    write_report(data, tmp_path / "site", tmp_path / "RESULTS.md", tmp_path / "RESULTS.jsonl")
    rows = read_jsonl(tmp_path / "RESULTS.jsonl")
    assert sorted(r.seed for r in rows) == [0, 1, 2] and all(r.headline for r in rows)
    fresh = ReportData(catalog(), scan_claims(), rows)
    assert render_markdown(fresh).count("not_reproduced (full, seeds 0, 1, 2)") >= 1
    assert len(evidence_rows(fresh)) == 3
