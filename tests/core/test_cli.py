"""The command line end to end, in subprocesses: list, show, reproduce (killed and resumed), report, bench."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE = "tests.core.fake_claims"


def _env(tmp_path, **extra):
    env = dict(os.environ, PAPERZOO_CLAIM_MODULES=FAKE, PAPERZOO_RESULTS=str(tmp_path / "r.sqlite"),
               PAPERZOO_EVIDENCE=str(tmp_path / "RESULTS.jsonl"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def _cli(args, env, check=True):
    proc = subprocess.run([sys.executable, "-m", "paperzoo", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _rows(db):
    with sqlite3.connect(db) as con:
        return con.execute("SELECT claim_id FROM results").fetchall()


def test_kill_then_resume_loses_nothing(tmp_path):
    log = tmp_path / "log.txt"
    env = _env(tmp_path, PAPERZOO_FAKE_SLEEP="120", PAPERZOO_FAKE_LOG=str(log))
    ids = ["cs-ib:fake_a_pass", "cs-ib:fake_b_figure", "cs-ib:fake_c_slow"]
    proc = subprocess.Popen([sys.executable, "-m", "paperzoo", "reproduce", *ids, "--jobs", "1"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = tmp_path / "r.sqlite"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until two claims are stored and the slow one has started
        if db.exists() and len(_rows(db)) >= 2 and log.exists() and "c" in log.read_text().split():
            break
        time.sleep(0.2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the run did not reach the slow claim in time")
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: CLI and its workers
    proc.wait(30)
    assert sorted(r[0] for r in _rows(db)) == ids[:2]

    log.write_text("")
    out = _cli(["reproduce", "--resume"], dict(env, PAPERZOO_FAKE_SLEEP="0"))
    assert log.read_text().split() == ["c"], "resume must run only the unfinished claim"
    assert sorted(r[0] for r in _rows(db)) == ids
    assert "not_reproduced" in out.stdout
    again = _cli(["reproduce", "--resume"], env, check=False)
    assert again.returncode == 2 and again.stderr.startswith("error: no unfinished smoke run to resume")


def test_list_show_report_and_error_exit(tmp_path):
    env = _env(tmp_path)
    failing = _cli(["reproduce", "cs-ib:fake_a_pass", "cs-ib:fake_d_raises"], env, check=False)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    listing = _cli(["list", "--package", "divergences"], env).stdout
    assert "cs-ib" in listing and "error" in listing
    assert "318 papers" in _cli(["list"], env).stdout
    shown = _cli(["show", "cs-ib"], env).stdout
    assert "fake_a_pass" in shown and "reproduced" in shown and "RuntimeError: fixture failure" in shown
    bad = _cli(["list", "--status", "great"], env, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --status must be one of")
    assert _cli(["show", "no-such-paper"], env, check=False).returncode == 2

    out_dir, md = tmp_path / "site", tmp_path / "RESULTS.md"
    _cli(["report", "--out", str(out_dir), "--results-md", str(md)], env)
    text = md.read_text()
    assert text.count("\n| ") >= 318 + 7
    assert "| 0 | `cs-ib` |" in text and "| error |" in text
    page = (out_dir / "papers" / "cs-ib.html").read_text()
    assert "fixture failure" in page and "Criterion (pre-registered)" in page
    assert "applyFilters" in (out_dir / "index.html").read_text()
    assert len(list((out_dir / "papers").glob("*.html"))) == 318


def test_bench_runs_every_benchmark_quickly(tmp_path):
    out = _cli(["bench", "--quick"], _env(tmp_path))
    assert out.returncode == 0
    # every table is printed (one run of each benchmark serves the whole suite)
    assert "ddim vs diffusers" in out.stdout and "dpmpp_2m" in out.stdout and "sliced W2^2" in out.stdout
    assert "top-3 eigenvalues" in out.stdout and "Hutchinson trace" in out.stdout and "PyHessian" in out.stdout


def test_fresh_clone_shows_committed_verdicts_and_headlines_without_torch(tmp_path):
    from paperzoo.core.results import ResultRow, export_jsonl
    from paperzoo.core.sources import scan_claims

    entry = scan_claims()["amsgrad:reddi_counterexample"]
    rows = [ResultRow(f"run{s}", entry.id, entry.slug, "reproduced", {"x_final": -1.0}, {"x_final": 1.0}, "", "",
                      2.0, s, "full", (), f"2026-12-0{s + 1}T00:00:00+00:00", headline="x -1.000 vs Adam +0.999",
                      control={"description": "Adam", "passed": False, "metrics": {}}, claim_hash=entry.text_hash,
                      claim_text={"criterion": entry.criterion}, git_rev="abc123") for s in (0, 1, 2)]
    env = _env(tmp_path)
    env.pop("PAPERZOO_CLAIM_MODULES")
    export_jsonl(rows, tmp_path / "RESULTS.jsonl")
    listing = _cli(["list", "--status", "reproduced"], env).stdout
    assert "amsgrad" in listing and "1 of 318 papers" in listing
    shown = _cli(["show", "amsgrad"], env).stdout
    assert "reproduced (full, seeds 0, 1, 2)" in shown and "x -1.000 vs Adam +0.999" in shown
    assert "control (rejected): Adam" in shown
    code = ("import sys; from paperzoo.cli import app\n"
            "try:\n    app(['list'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'paperzoo list imported torch'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_list_fits_an_80_column_terminal(tmp_path):
    out = _cli(["list"], _env(tmp_path, COLUMNS="80")).stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "Cauchy-Schwarz Divergence Information Bottleneck for Regression" in out
