"""Runner: executes claim checks in worker processes with a per-claim time limit and stores each outcome.

Two executors share one scheduling loop:

* ``local`` (default): up to ``jobs`` worker processes on this machine (the ``forkserver`` start method where
  available, so torch and the claim modules are imported once and each claim starts from a clean fork). A claim
  that exceeds its time limit is killed and recorded as ``error``.
* ``ray``: the same claims as Ray tasks on an existing cluster (``ray.init(address="auto")``) or a local one.

Each finished claim is written to the :class:`~paperzoo.core.results.ResultsStore` at once, in its own
transaction, with the hash and text of its statement, criterion and baseline; a killed run is completed later
with ``resume=True``. Several run seeds (``seeds=[0, 1, 2]``) make one run per seed, grouped in a batch, whose
(claim, seed) pairs share one pool.

A claim's time limit counts from the moment its worker starts running it, not from when it was queued: a worker
reports when it begins, so a pool that is slow to start (a loaded machine) never eats into a claim's limit.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait as wait_connections
from pathlib import Path

from paperzoo.core.checks import check_choice, check_int
from paperzoo.core.registry import BUDGETS, Claim, ClaimContext, Verdict, registered_claims
from paperzoo.core.results import ResultsStore, RunInfo

__all__ = ["Outcome", "execute_claim", "run_claims", "EXECUTORS"]

EXECUTORS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One claim's outcome as the runner records it."""

    claim_id: str
    verdict: str
    metrics: dict
    baseline: dict
    reason: str
    error: str
    duration: float
    figures: tuple[str, ...] = ()
    headline: str = ""
    control: dict | None = None


def _extra_modules() -> str:
    return os.environ.get("PAPERZOO_CLAIM_MODULES", "")


def execute_claim(claim_id: str, seed: int, budget: str, figure_dir: str | None, threads: int,
                  extra_modules: str = "") -> Outcome:
    """Run one claim in the current process and turn any exception into an ``error`` outcome."""
    import torch
    from threadpoolctl import threadpool_limits

    if extra_modules:
        os.environ["PAPERZOO_CLAIM_MODULES"] = extra_modules
    torch.set_num_threads(max(1, threads))
    start = time.perf_counter()
    ctx = None
    try:
        entry = registered_claims()[claim_id]
        ctx = ClaimContext.create(claim_id, seed, budget, Path(figure_dir) if figure_dir else None)
        # BLAS/OpenMP pools of numpy, scipy and scikit-learn get the same thread budget as torch (one claim per
        # job must not take every core).
        with threadpool_limits(limits=max(1, entry.threads or threads)):
            result = entry.run(ctx)
        return Outcome(claim_id, result.verdict.value, result.metrics, result.baseline, result.reason, "",
                       time.perf_counter() - start, tuple(ctx.figures), result.headline, result.control)
    except Exception:  # noqa: BLE001 - every failure of a claim is data for the report
        return Outcome(claim_id, Verdict.ERROR.value, {}, {}, "", traceback.format_exc(),
                       time.perf_counter() - start, tuple(ctx.figures) if ctx else ())


_STARTED = "started"
# How long a worker may take to start before its claim's own limit begins (forkserver start on a loaded machine).
START_ALLOWANCE = 600.0


def _worker_main(conn, *args) -> None:
    try:
        conn.send(_STARTED)
        conn.send(execute_claim(*args))
    finally:
        conn.close()


def _mp_context():
    methods = mp.get_all_start_methods()
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "paperzoo.core.runner"])
        return ctx
    return mp.get_context("spawn")


class _LocalExecutor:
    """Up to ``jobs`` processes; a process per claim so that a time-out can kill exactly that claim."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.ctx = _mp_context()
        self.running: dict = {}  # conn -> [process, task, claim_id, limit, deadline, start or None]

    def capacity(self) -> int:
        return self.jobs - len(self.running)

    def submit(self, task, claim_id: str, args: tuple, timeout: float) -> None:
        recv, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_worker_main, args=(send, claim_id, *args), daemon=True)
        proc.start()
        send.close()
        # Until the worker says it has started, only the start allowance runs.
        self.running[recv] = [proc, task, claim_id, timeout, time.monotonic() + START_ALLOWANCE + timeout, None]

    def poll(self, interval: float) -> list:
        done: list = []
        ready = wait_connections(list(self.running), timeout=interval) if self.running else []
        for conn in ready:
            entry = self.running[conn]
            proc, task, claim_id, limit, _, start = entry
            try:
                message = conn.recv()
            except (EOFError, OSError):
                proc.join(5)
                since = start if start is not None else time.monotonic()
                message = Outcome(claim_id, Verdict.ERROR.value, {}, {}, "",
                                  f"worker process died (exit code {proc.exitcode})", time.monotonic() - since)
            if message == _STARTED:
                now = time.monotonic()
                entry[4], entry[5] = now + limit, now
                continue
            del self.running[conn]
            conn.close()
            proc.join(5)
            done.append((task, message))
        now = time.monotonic()
        for conn, (proc, task, claim_id, limit, deadline, start) in list(self.running.items()):
            if now > deadline:
                proc.kill()
                proc.join(5)
                conn.close()
                del self.running[conn]
                what = (f"time-out: claim exceeded its limit of {limit:.0f} s" if start is not None
                        else f"time-out: the worker did not start within {START_ALLOWANCE:.0f} s")
                done.append((task, Outcome(claim_id, Verdict.ERROR.value, {}, {}, "", what,
                                           now - (start if start is not None else now))))
        return done

    def shutdown(self) -> None:
        for conn, (proc, *_rest) in self.running.items():
            proc.kill()
            proc.join(5)
            conn.close()
        self.running.clear()


class _RayExecutor:
    """Claims as Ray tasks; time-outs cancel the task with ``force=True``."""

    def __init__(self, jobs: int, address: str | None):
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise RuntimeError("executor 'ray' needs the optional dependency: pip install 'paperzoo[ray]'") from exc
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.remote = ray.remote(num_cpus=1, max_retries=0)(execute_claim)
        self.jobs = jobs
        self.running: dict = {}  # ref -> (task, claim_id, deadline, start)

    def capacity(self) -> int:
        return self.jobs - len(self.running)

    def submit(self, task, claim_id: str, args: tuple, timeout: float) -> None:
        # Ray does not say when a queued task starts; ``jobs`` bounds the tasks in flight, so the limit is counted
        # from submission plus the same start allowance as the local pool.
        ref = self.remote.remote(claim_id, *args)
        now = time.monotonic()
        self.running[ref] = (task, claim_id, now + timeout + START_ALLOWANCE, now)

    def poll(self, interval: float) -> list:
        done: list = []
        if self.running:
            ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=interval)
            for ref in ready:
                task, claim_id, _, start = self.running.pop(ref)
                try:
                    done.append((task, self.ray.get(ref)))
                except Exception as exc:  # noqa: BLE001 - a crashed worker is an error outcome
                    done.append((task, Outcome(claim_id, Verdict.ERROR.value, {}, {}, "", f"ray task failed: {exc}",
                                               time.monotonic() - start)))
        now = time.monotonic()
        for ref, (task, claim_id, deadline, start) in list(self.running.items()):
            if now > deadline:
                self.ray.cancel(ref, force=True)
                del self.running[ref]
                done.append((task, Outcome(claim_id, Verdict.ERROR.value, {}, {}, "",
                                           "time-out: claim exceeded its limit", now - start)))
        return done

    def shutdown(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        self.running.clear()


def run_claims(
    claims: Sequence[Claim] | None = None,
    *,
    store: ResultsStore,
    budget: str = "smoke",
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    jobs: int = 1,
    executor: str = "local",
    resume: bool = False,
    ray_address: str | None = None,
    figure_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
    on_start: Callable[[list[RunInfo], list[tuple[str, int]]], None] | None = None,
    on_result: Callable[[Outcome, RunInfo], None] | None = None,
) -> tuple[list[RunInfo], dict[tuple[str, int], Outcome]]:
    """Run ``claims`` (all registered ones when None) at every run seed and record every outcome in ``store``.

    Args:
        claims: the claims to run; ignored with ``resume`` (the unfinished runs' own lists are used).
        store: where results go.
        budget: ``"smoke"`` or ``"full"``.
        seed: base seed handed to every claim's context (when ``seeds`` is None).
        seeds: several run seeds: one run per seed, all (claim, seed) pairs in one pool (evidence rule 5).
        jobs: worker processes (or concurrent Ray tasks).
        executor: ``"local"`` or ``"ray"``.
        resume: continue the latest unfinished batch of this budget, running only claims without a stored row.
        ray_address: passed to ``ray.init`` (``"auto"`` joins an existing cluster; None starts a local one).
        figure_dir: where claims save figures (default: ``figures/`` beside the database).
        timeout: per-claim limit in seconds overriding each claim's own limit for this budget.
        on_start: called with the runs and the (claim id, seed) pairs about to run.
        on_result: called with each outcome and its run as it is recorded.

    Returns:
        The runs (one per seed) and the outcomes executed in this call, by (claim id, seed).
    """
    check_choice("budget", budget, BUDGETS)
    check_choice("executor", executor, EXECUTORS)
    jobs = check_int("jobs", jobs, low=1)
    seed_list = [check_int("seed", seed)] if seeds is None else [check_int("seeds", s) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds or [])}")
    registry = registered_claims()
    todo: list[tuple[RunInfo, Claim]] = []
    if resume:
        runs = store.unfinished_batch(budget)
        if not runs:
            raise LookupError(f"no unfinished {budget} run to resume in {store.path}")
        for run in runs:
            finished = store.results(run.run_id)
            todo += [(run, registry[c]) for c in run.claims if c not in finished and c in registry]
    else:
        chosen = list(registry.values()) if claims is None else list(claims)
        runs = []
        batch = None
        for s in seed_list:
            run = store.start_run([c.id for c in chosen], budget=budget, seed=s, batch=batch)
            batch = run.batch
            runs.append(run)
        # Claim-major order: the seeds of one claim finish together, so a partial run already shows stability.
        todo = [(run, c) for c in chosen for run in runs]
    figure_dir = str(figure_dir if figure_dir is not None else store.path.parent / "figures")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = _RayExecutor(jobs, ray_address) if executor == "ray" else _LocalExecutor(jobs)
    if on_start is not None:
        on_start(runs, [(c.id, run.seed) for run, c in todo])
    outcomes: dict[tuple[str, int], Outcome] = {}
    queue = list(todo)
    try:
        while queue or pool.running:
            while queue and pool.capacity() > 0:
                run, entry = queue.pop(0)
                limit = timeout if timeout is not None else entry.timeout[budget]
                pool.submit((run, entry), entry.id, (run.seed, budget, figure_dir, threads, _extra_modules()),
                            limit)
            for (run, entry), outcome in pool.poll(0.1):
                store.record(run.run_id, outcome.claim_id, verdict=outcome.verdict, metrics=outcome.metrics,
                             baseline=outcome.baseline, reason=outcome.reason, error=outcome.error,
                             duration=outcome.duration, seed=run.seed, budget=budget, figures=outcome.figures,
                             headline=outcome.headline, control=outcome.control, claim_hash=entry.text_hash,
                             claim_text=entry.text)
                outcomes[(outcome.claim_id, run.seed)] = outcome
                if on_result is not None:
                    on_result(outcome, run)
    finally:
        pool.shutdown()
    for run in runs:
        store.finish_run(run.run_id)
    return runs, outcomes
