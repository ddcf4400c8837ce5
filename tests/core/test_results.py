import pytest

from paperzoo.core.results import ResultRow, ResultsStore, export_jsonl, merge_rows, read_jsonl
from paperzoo.core.status import claim_evidence, paper_status


def test_store_round_trip_and_latest(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    run = store.start_run(["adopt:x", "adopt:y"], budget="smoke", seed=7)
    assert store.latest_unfinished_run("smoke").run_id == run.run_id
    store.record(run.run_id, "adopt:x", verdict="reproduced", metrics={"m": 1.5}, baseline={"m": 2.0},
                 reason="", error="", duration=0.1, seed=7, budget="smoke", figures=["f.png"])
    row = store.results(run.run_id)["adopt:x"]
    assert (row.slug, row.verdict, row.metrics, row.baseline, row.figures) == (
        "adopt", "reproduced", {"m": 1.5}, {"m": 2.0}, ("f.png",))
    store.finish_run(run.run_id)
    assert store.latest_unfinished_run("smoke") is None
    assert store.get_run(run.run_id).claims == ("adopt:x", "adopt:y")
    assert "torch" in store.get_run(run.run_id).versions

    # A later full run wins over smoke; a later smoke row does not displace a full one.
    full = store.start_run(["adopt:x"], budget="full", seed=0)
    store.record(full.run_id, "adopt:x", verdict="not_reproduced", metrics={}, baseline={}, reason="", error="",
                 duration=1, seed=0, budget="full")
    again = store.start_run(["adopt:x"], budget="smoke", seed=0)
    store.record(again.run_id, "adopt:x", verdict="error", metrics={}, baseline={}, reason="", error="boom",
                 duration=1, seed=0, budget="smoke")
    assert claim_evidence(store.rows())["adopt:x"].verdict == "not_reproduced"


def _row(claim_id="p:a", verdict="reproduced", seed=0, budget="full", at="2026-01-01T00:00:00", h="h1", run=None):
    return ResultRow(run or f"{at}-{seed}-{budget}", claim_id, claim_id.split(":")[0], verdict, {}, {}, "", "", 1.0,
                     seed, budget, (), at, headline="x 1 vs 2", claim_hash=h, claim_text={"criterion": h},
                     git_rev="abc")


def test_seeds_that_disagree_are_unstable_never_reproduced():
    rows = [_row(seed=0), _row(seed=1, verdict="not_reproduced"), _row(seed=2)]
    ev = claim_evidence(rows)["p:a"]
    assert ev.verdict == "unstable" and ev.per_seed == {0: "reproduced", 1: "not_reproduced", 2: "reproduced"}
    assert paper_status("p", ["p:a"], {"p:a": ev}) == "unstable"
    agree = claim_evidence([_row(seed=s) for s in (0, 1, 2)])["p:a"]
    assert agree.verdict == "reproduced" and "seeds 0, 1, 2" in agree.summary()


def test_only_rows_of_the_current_criterion_count():
    old = [_row(seed=s, verdict="reproduced", h="old", at="2026-01-01") for s in (0, 1, 2)]
    new = [_row(seed=0, verdict="not_reproduced", h="new", at="2026-02-01")]
    ev = claim_evidence(old + new, {"p:a": "new"})["p:a"]
    assert ev.verdict == "not_reproduced" and len(ev.rows) == 1
    assert ev.criterion_changed_after_full and ev.first_full.claim_hash == "old"
    # The current text has never run: the old rows are shown as stale, and the paper counts as not run.
    stale = claim_evidence(old, {"p:a": "newer"})["p:a"]
    assert stale.stale and paper_status("p", ["p:a"], {"p:a": stale}) == "not_run"


def test_full_rows_win_over_smoke_and_newest_row_per_seed():
    rows = [_row(budget="full", verdict="not_reproduced", at="2026-01-01"),
            _row(budget="smoke", verdict="reproduced", at="2026-01-02"),
            _row(budget="full", verdict="reproduced", at="2026-01-03")]
    ev = claim_evidence(rows)["p:a"]
    assert ev.verdict == "reproduced" and ev.budget == "full"


def test_jsonl_round_trip_and_merge(tmp_path):
    rows = [_row(seed=s) for s in (2, 0, 1)]
    path = export_jsonl(rows, tmp_path / "R.jsonl")
    back = read_jsonl(path)
    assert [r.seed for r in back] == [0, 1, 2] and back[0].headline == "x 1 vs 2" and back[0].git_rev == "abc"
    assert len(merge_rows(back, rows)) == 3
    assert read_jsonl(tmp_path / "missing.jsonl") == []
    (tmp_path / "bad.jsonl").write_text("{not json}\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: not a result row"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_old_databases_are_migrated(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as con:
        con.executescript(_OLD_SCHEMA)
        con.execute("INSERT INTO runs VALUES ('r1','2026','2026','full',0,'[]','abc','{}')")
        con.execute("INSERT INTO results VALUES ('r1','p:a','p','reproduced','{}','{}','','',1.0,0,'full','[]','2026')")
    row = ResultsStore(path).rows()[0]
    assert (row.verdict, row.headline, row.control, row.claim_hash, row.git_rev) == ("reproduced", "", None, "",
                                                                                        "abc")


_OLD_SCHEMA = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, started TEXT NOT NULL, finished TEXT, budget TEXT NOT NULL,
    seed INTEGER NOT NULL, claims TEXT NOT NULL, git_rev TEXT, versions TEXT NOT NULL);
CREATE TABLE results (run_id TEXT NOT NULL, claim_id TEXT NOT NULL, slug TEXT NOT NULL, verdict TEXT NOT NULL,
    metrics TEXT NOT NULL, baseline TEXT NOT NULL, reason TEXT NOT NULL, error TEXT NOT NULL, duration REAL NOT NULL,
    seed INTEGER NOT NULL, budget TEXT NOT NULL, figures TEXT NOT NULL, finished_at TEXT NOT NULL,
    PRIMARY KEY (run_id, claim_id));
"""


def test_status_rules():
    ids = ["p:a", "p:b", "q:a"]
    ev = {cid: claim_evidence([_row(cid, v)])[cid] for cid, v in
          (("p:a", "reproduced"), ("p:b", "inconclusive"))}
    assert paper_status("z", ids, {}) == "planned"
    assert paper_status("p", ids, {}) == "not_run"
    assert paper_status("p", ids, {"p:a": ev["p:a"]}) == "reproduced"
    assert paper_status("p", ids, ev) == "inconclusive"
    err = claim_evidence([_row("p:b", "error")])["p:b"]
    assert paper_status("p", ids, {"p:a": ev["p:a"], "p:b": err}) == "error"
