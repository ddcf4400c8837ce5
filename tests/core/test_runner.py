import importlib
import os

import pytest

from paperzoo.core import registered_claims
from paperzoo.core.results import ResultsStore
from paperzoo.core.runner import execute_claim, run_claims

FAKES = "tests.core.fake_claims"


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setenv("PAPERZOO_CLAIM_MODULES", FAKES)
    module = importlib.import_module(FAKES)
    registry = registered_claims()
    return [registry[cid] for cid in module.FAKE_IDS]


def test_execute_claim_in_process(fakes, tmp_path):
    ok = execute_claim("cs-ib:fake_a_pass", 5, "smoke", None, 1, FAKES)
    assert (ok.verdict, ok.metrics) == ("reproduced", {"x": 1.0, "seed": 5})
    bad = execute_claim("cs-ib:fake_d_raises", 0, "smoke", None, 1, FAKES)
    assert bad.verdict == "error" and "RuntimeError: fixture failure" in bad.error
    fig = execute_claim("cs-ib:fake_b_figure", 0, "smoke", str(tmp_path), 1, FAKES)
    assert fig.verdict == "inconclusive" and os.path.isfile(fig.figures[0])


def test_local_pool_records_everything_and_times_out(fakes, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_FAKE_SLEEP", "30")
    store = ResultsStore(tmp_path / "r.sqlite")
    seen = []
    (run,), outcomes = run_claims(fakes, store=store, budget="smoke", seed=1, jobs=2, timeout=8,
                                  on_result=lambda o, r: seen.append(o.claim_id))
    rows = store.results(run.run_id)
    assert set(rows) == set(seen) == {c.id for c in fakes}
    assert rows["cs-ib:fake_a_pass"].verdict == "reproduced"
    assert rows["cs-ib:fake_b_figure"].verdict == "inconclusive"
    assert rows["cs-ib:fake_c_slow"].verdict == "error" and "time-out" in rows["cs-ib:fake_c_slow"].error
    assert rows["cs-ib:fake_d_raises"].verdict == "error"
    assert rows["cs-ib:fake_a_pass"].claim_hash == fakes[0].text_hash
    assert rows["cs-ib:fake_a_pass"].claim_text["criterion"] == fakes[0].criterion
    assert store.get_run(run.run_id).finished is not None
    with pytest.raises(LookupError, match="no unfinished smoke run"):
        run_claims(store=store, budget="smoke", resume=True)


def test_ray_executor_runs_the_same_claims(fakes, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PAPERZOO_CLAIM_MODULES": FAKES}})
    try:
        store = ResultsStore(tmp_path / "r.sqlite")
        subset = [c for c in fakes if c.name in ("fake_a_pass", "fake_d_raises")]
        (run,), _ = run_claims(subset, store=store, budget="smoke", executor="ray", jobs=1)
        rows = store.results(run.run_id)
        assert rows["cs-ib:fake_a_pass"].verdict == "reproduced"
        assert rows["cs-ib:fake_d_raises"].verdict == "error"
    finally:
        ray.shutdown()


def test_several_run_seeds_make_one_run_each_in_one_batch(fakes, tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    subset = [c for c in fakes if c.name == "fake_a_pass"]
    runs, outcomes = run_claims(subset, store=store, budget="smoke", seeds=[0, 1, 2], jobs=2)
    assert [r.seed for r in runs] == [0, 1, 2] and len({r.batch for r in runs}) == 1
    assert {k: o.metrics["seed"] for k, o in outcomes.items()} == {("cs-ib:fake_a_pass", s): s for s in (0, 1, 2)}
    with pytest.raises(ValueError, match="seeds must be distinct"):
        run_claims(subset, store=store, seeds=[1, 1])


def test_time_limit_counts_from_the_claim_start_not_the_queue(fakes, tmp_path, monkeypatch):
    # A worker that takes longer to start than the claim's limit must not be killed for it: the limit counts from
    # the worker's "started" message.
    from paperzoo.core import runner

    original = runner._worker_main

    def slow_start(conn, *args):
        import time

        time.sleep(3)
        original(conn, *args)

    monkeypatch.setattr(runner, "_worker_main", slow_start)
    monkeypatch.setattr(runner, "_mp_context", lambda: __import__("multiprocessing").get_context("fork"))
    store = ResultsStore(tmp_path / "r.sqlite")
    subset = [c for c in fakes if c.name == "fake_a_pass"]
    (run,), _ = run_claims(subset, store=store, budget="smoke", timeout=2)
    assert store.results(run.run_id)["cs-ib:fake_a_pass"].verdict == "reproduced"
