"""Every expected failure of the command line is one ``error:`` line on stderr and exit 2, never a traceback.

Each case is driven through the real command (``paperzoo.cli.main``, a few in a subprocess); all of them fail
while the options are checked, before any claim runs.
"""

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from paperzoo.cli import main

ROOT = Path(__file__).resolve().parents[2]
A = "cs-ib:fake_a_pass"


@pytest.fixture
def bad(tmp_path, monkeypatch):
    """Hostile inputs under ``tmp_path``; returns a function mapping a name to its path as a string."""
    monkeypatch.setenv("PAPERZOO_CLAIM_MODULES", "tests.core.fake_claims")
    monkeypatch.setenv("PAPERZOO_RESULTS", str(tmp_path / "r.sqlite"))
    monkeypatch.setenv("PAPERZOO_EVIDENCE", str(tmp_path / "RESULTS.jsonl"))
    (tmp_path / "dir").mkdir()
    (tmp_path / "afile").write_text("hello\n")
    (tmp_path / "text.sqlite").write_text("this is not a database\n" * 50)
    (tmp_path / "random.sqlite").write_bytes(bytes(range(256)) * 16)
    with sqlite3.connect(tmp_path / "foreign.sqlite") as con:
        con.execute("CREATE TABLE foo (a, b)")
    with sqlite3.connect(tmp_path / "partial.sqlite") as con:
        con.execute("CREATE TABLE runs (run_id TEXT)")
        con.execute("CREATE TABLE results (run_id TEXT, claim_id TEXT)")
    (tmp_path / "corrupt.jsonl").write_text("\nnot json\n")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "ok.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\nprint('ok')\n")
    return lambda name: str(tmp_path / name)


CASES = [
    # the parser's own errors
    (["nosuch"], "No such command 'nosuch'"),
    (["list", "--bogus"], "No such option: --bogus"),
    (["list", "--db"], "Option '--db' requires an argument"),
    (["show"], "Missing argument 'slug'"),
    (["reproduce", A, "--jobs", "x"], "Invalid value for '--jobs'"),
    (["reproduce", A, "--timeout", "x"], "Invalid value for '--timeout'"),
    (["reproduce", A, "--seed", "x"], "Invalid value for '--seed'"),
    # list and show
    (["list", "--package", "nope"], "--package must be one of ['optim', "),
    (["list", "--status", "great"], "--status must be one of ['planned', "),
    (["show", "no-such-paper"], "no paper with slug 'no-such-paper'"),
    (["list", "--db", "{dir}"], "--db {dir} is a directory, not a paperzoo results store"),
    (["list", "--db", "{text.sqlite}"], "--db {text.sqlite} is not a paperzoo results store: file is not a database"),
    (["list", "--db", "{random.sqlite}"], "--db {random.sqlite} is not a paperzoo results store: "),
    (["show", "cs-ib", "--db", "{foreign.sqlite}"],
     "--db {foreign.sqlite} is not a paperzoo results store: it has the tables ['foo'], not 'runs' and 'results'"),
    (["list", "--db", "{partial.sqlite}"],
     "--db {partial.sqlite} is not a paperzoo results store: table 'runs' lacks the columns ['budget', "),
    (["list", "--evidence", "{dir}"], "--evidence {dir} is a directory, not a results JSONL file"),
    (["list", "--evidence", "{missing.jsonl}"], "--evidence {missing.jsonl} does not exist"),
    (["show", "cs-ib", "--evidence", "{corrupt.jsonl}"], "--evidence {corrupt.jsonl}:2: not a result row (Expecting"),
    (["list", "--evidence", "{list.jsonl}"], "--evidence {list.jsonl}:1: not a result row (expected a JSON object, got list)"),
    (["list", "--evidence", "{binary.jsonl}"], "--evidence {binary.jsonl} is not a results JSONL file: 'utf-8' codec"),
    # reproduce: every option is checked before the store is opened or a claim imported
    (["reproduce", A, "--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["reproduce", A, "--jobs", "-3"], "--jobs must be >= 1, got -3"),
    (["reproduce", A, "--timeout", "-5"], "--timeout must be > 0, got -5.0"),
    (["reproduce", A, "--timeout", "0"], "--timeout must be > 0, got 0.0"),
    (["reproduce", A, "--timeout", "nan"], "--timeout must be finite, got nan"),
    (["reproduce", A, "--timeout", "inf"], "--timeout must be finite, got inf"),
    (["reproduce", A, "--seeds", "0,,1"], "--seeds must be comma-separated integers, got '0,,1'"),
    (["reproduce", A, "--seeds", "a"], "--seeds must be comma-separated integers, got 'a'"),
    (["reproduce", A, "--seeds", "1.5"], "--seeds must be comma-separated integers, got '1.5'"),
    (["reproduce", A, "--seeds", ""], "--seeds must be comma-separated integers, got ''"),
    (["reproduce", A, "--seeds", "0,-1"], "--seeds must be >= 0, got -1"),
    (["reproduce", A, "--seeds", "0,1,0"], "--seeds must be distinct, got '0,1,0'"),
    (["reproduce", A, "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["reproduce", A, "--seed", "5", "--seeds", "0,1"], "--seed and --seeds exclude each other"),
    (["reproduce", A, "--budget", "huge"], "--budget must be one of ['smoke', 'full'], got 'huge'"),
    (["reproduce", A, "--executor", "foo"], "--executor must be one of ['local', 'ray'], got 'foo'"),
    (["reproduce", A, "--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["reproduce", "--package", "nope"], "--package must be one of ['optim', "),
    (["reproduce", "no-such-paper", A], "unknown slug(s) or claim id(s) ['no-such-paper']"),
    (["reproduce", "--resume", "cs-ib"], "--resume finishes the latest unfinished run as it was started"),
    (["reproduce", A, "--db", "{dir}"], "--db must be a file, got the existing directory {dir}"),
    (["reproduce", A, "--db", "{afile}/x.sqlite"], "--db cannot be created ({afile}/x.sqlite): {afile} is a file, not a directory"),
    (["reproduce", A, "--db", "{afile}"], "--db {afile} is not a paperzoo results store: file is not a database"),
    # report: the outputs are checked before anything is rendered
    (["report", "--out", "{afile}", "--results-md", "{o/R.md}"], "--out must be a directory, got the existing file {afile}"),
    (["report", "--out", "{afile}/site", "--results-md", "{o/R.md}"],
     "--out cannot be created ({afile}/site): {afile} is a file, not a directory"),
    (["report", "--out", "{o}", "--results-md", "{dir}"], "--results-md must be a file, got the existing directory {dir}"),
    (["report", "--out", "{o}", "--results-md", "{afile}/R.md"], "--results-md cannot be created ({afile}/R.md): "),
    (["report", "--out", "{o}", "--results-md", "{o/R.md}", "--results-jsonl", "{dir}"],
     "--results-jsonl must be a file, got the existing directory {dir}"),
    (["report", "--out", "{o}", "--results-md", "{o/R.md}", "--results-jsonl", "{afile}/R.jsonl"],
     "--results-jsonl cannot be created ({afile}/R.jsonl): {afile} is a file, not a directory"),
    (["report", "--out", "{o}", "--results-md", "{o/R.md}", "--evidence", "{corrupt.jsonl}"],
     "--evidence {corrupt.jsonl}:2: not a result row"),
    (["report", "--out", "{o}", "--results-md", "{o/R.md}", "--db", "{text.sqlite}"],
     "--db {text.sqlite} is not a paperzoo results store"),
    # bench
    (["bench", "--dir", "{missing}"], "--dir '{missing}' is not a directory"),
    (["bench", "--dir", "{afile}"], "--dir '{afile}' is not a directory"),
    (["bench", "--dir", "{bench}", "ok", "nosuch"], "no benchmark named ['nosuch'] in {bench}; have ['ok']"),
    (["bench", "--dir", "{bench}", "--db", "{afile}/x.sqlite"], "--db cannot be created ({afile}/x.sqlite): "),
]


def _fill(text, path):
    """``{name}`` in a case stands for ``tmp_path / name``."""
    return re.sub(r"\{([^{}]+)\}", lambda m: path(m.group(1)), text)


def _one_error_line(capsys, args, code=2):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert exit_.value.code == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_expected_failure_is_one_error_line(bad, capsys, args, message):
    line = _one_error_line(capsys, [_fill(a, bad) for a in args])
    assert _fill(message, bad) in line


def test_nothing_is_written_or_run_on_bad_input(bad, capsys):
    _one_error_line(capsys, ["reproduce", A, "--db", bad("foreign.sqlite")])
    with sqlite3.connect(bad("foreign.sqlite")) as con:  # someone else's database is left as it was
        assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["foo"]
    _one_error_line(capsys, ["reproduce", A, "--timeout", "-5", "--db", bad("new.sqlite")])
    assert not Path(bad("new.sqlite")).exists()
    _one_error_line(capsys, ["bench", "--dir", bad("bench"), "--db", bad("afile") + "/x.sqlite"])
    assert not Path(bad("ran")).exists(), "the benchmark ran before --db was checked"


def test_machine_failures_are_one_line_and_bugs_keep_their_traceback(bad, capsys, monkeypatch):
    import paperzoo.report

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/somewhere/index.html")

    monkeypatch.setattr(paperzoo.report, "write_report", denied)
    line = _one_error_line(capsys, ["report", "--out", bad("o"), "--results-md", bad("R.md")], code=1)
    assert line == "error: PermissionError: Permission denied: /somewhere/index.html"

    def bug(*args, **kwargs):
        raise KeyError("a real bug")

    monkeypatch.setattr(paperzoo.report, "write_report", bug)
    with pytest.raises(KeyError, match="a real bug"):
        main(["report", "--out", bad("o"), "--results-md", bad("R.md")])


def test_help_still_works(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "--help"])
    assert exit_.value.code == 0 and "--timeout" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2 and "reproduce" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["list", "--db", "{text.sqlite}"], "error: --db {text.sqlite} is not a paperzoo results store: file is not a database"),
    (["report", "--out", "{afile}", "--results-md", "{o/R.md}"], "error: --out must be a directory, got the existing file {afile}"),
    (["list", "--evidence", "{list.jsonl}"],
     "error: --evidence {list.jsonl}:1: not a result row (expected a JSON object, got list)"),
    (["nosuch"], "error: No such command 'nosuch'. (see `paperzoo --help`)"),
])
def test_in_a_subprocess(bad, args, message):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "paperzoo", *[_fill(a, bad) for a in args]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [_fill(message, bad)] and "Traceback" not in proc.stdout
