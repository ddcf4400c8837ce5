"""Per-step time and state memory of paperzoo's ADOPT and AMSGrad against torch.optim and reference packages.

Run ``python benchmarks/optim_step.py`` (about 10M float32 parameters, well under a minute) or with ``--quick``
(a tiny model, about a second; used by the tests). One run times every optimizer side by side, interleaving
them round by round so that background load hits all of them alike, and reports:

- ``ms/step``: median wall time of one ``opt.step()`` (gradients fixed, state already initialised);
- ``vs AdamW``: that time over ``torch.optim.AdamW(foreach=True)``'s; ``vs fused``: over ``AdamW(fused=True)``'s,
  the fastest AdamW step a CPU user already has;
- ``state MB``: bytes held in ``opt.state``; ``MB moved``: the bytes the update must read and write at least
  (parameter and every state tensor read and written, gradient read);
- ``floor ms``: ``MB moved`` over the best memory bandwidth measured in the same run: the fastest of a large
  tensor copy (2 streams), a triad ``c = a + s b`` (3 streams), an ``addcmul`` (4 streams) and torch's fused AdamW
  itself (7 streams), so no step can beat its floor by construction; ``x floor`` is the step time over that floor;
- ``per byte vs fused``: time per byte moved over torch fused AdamW's (the target of the fused paperzoo steps);
- ``nonfinite check``: the step with the default ``nonfinite="raise"`` over the same optimizer with
  ``nonfinite="ignore"`` (no check), alternating the two step by step, for the optimizers in NONFINITE_PAIRS;
- ``torch.compile``'d AdamW (full runs only): its one-time compile cost is printed separately.

Timing uses one thread by default (``--threads``): on a shared machine, multi-threaded element-wise kernels stall
whenever another process holds a core, which made two-thread timings vary fourfold between runs here.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from paperzoo.optim import ADOPT, AMSGrad  # noqa: E402
from paperzoo.optim import MARS, AdaGradNorm, DiffGrad, Grokfast, Lion  # noqa: E402
from paperzoo.optim import BetaNormalizedGD, ClipAdamD, ClipRAdaGradD  # noqa: E402
from paperzoo.optim import MedianTrackingSGD  # noqa: E402
from paperzoo.optim import PSGD, SNSM, AdamWSN, STEPAdam  # noqa: E402
from paperzoo.optim import O2NC  # noqa: E402
from paperzoo.optim import Discover  # noqa: E402

# A few large tensors, as in a transformer block: ~10M parameters.
SHAPES = [(4096, 1024), (4096, 1024), (1024, 1024), (512, 1024), (4096,)]
QUICK_SHAPES = [(64, 64), (64, 32), (64,)]


def _optional(module: str, attr: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


# Optimizers whose step is also timed without the non-finite-gradient check: the ratio is the check's cost.
NONFINITE_PAIRS = ["paperzoo ADOPT foreach", "paperzoo ADOPT single", "paperzoo AMSGrad foreach",
                   "paperzoo Lion single", "paperzoo MARS foreach"]


def _set_policy(opt, policy):
    for group in opt.param_groups:
        group["nonfinite"] = policy


def _bind_cluster(opt):
    """Discover's step needs the batch's cluster; the timing loop calls step() bare, so bind cluster 0."""
    opt.step = functools.partial(opt.step, cluster_id=0)
    return opt


def _compiled_adamw(params):
    """torch AdamW (single-tensor) whose step is ``torch.compile``d; the first call compiles (timed by the caller)."""
    opt = torch.optim.AdamW(params, foreach=False)
    opt.step = torch.compile(opt.step)
    return opt


def candidates(second_order: bool = False, compiled: bool = False):
    """(name, factory, minimal number of full-size tensors the step must read+write) for each optimizer."""
    rows = [
        ("torch AdamW foreach", lambda ps: torch.optim.AdamW(ps, foreach=True), 7),
        ("torch AdamW fused", lambda ps: torch.optim.AdamW(ps, fused=True), 7),
        ("torch AdamW single", lambda ps: torch.optim.AdamW(ps, foreach=False), 7),
        ("torch Adam(amsgrad) foreach", lambda ps: torch.optim.Adam(ps, amsgrad=True, foreach=True), 9),
        ("paperzoo ADOPT foreach", lambda ps: ADOPT(ps, foreach=True), 7),
        ("paperzoo ADOPT single", lambda ps: ADOPT(ps, foreach=False), 7),
        ("paperzoo AMSGrad foreach", lambda ps: AMSGrad(ps, foreach=True), 9),
        ("paperzoo AMSGrad single", lambda ps: AMSGrad(ps, foreach=False), 9),
        ("paperzoo ClipRAdaGradD coord", lambda ps: ClipRAdaGradD(ps, version="coordinate", foreach=True), 5),
        ("paperzoo ClipRAdaGradD norm", lambda ps: ClipRAdaGradD(ps, foreach=True), 3),
        ("paperzoo ClipAdamD foreach", lambda ps: ClipAdamD(ps, foreach=True), 7),
        ("paperzoo BetaNormalizedGD", lambda ps: BetaNormalizedGD(ps, foreach=True), 3),
    ]
    po_adopt = _optional("pytorch_optimizer", "ADOPT")
    if po_adopt is not None:
        rows.append(("pytorch_optimizer ADOPT", lambda ps: po_adopt(ps), 7))
    ta_adopt = _optional("adopt", "ADOPT")
    if ta_adopt is not None:
        rows.append(("torch-adopt ADOPT foreach", lambda ps: ta_adopt(ps, foreach=True), 7))
    # MARS, DiffGrad: parameter, m, v and the previous gradient read and written, gradient read.
    rows += [
        ("paperzoo MARS foreach", lambda ps: MARS(ps, foreach=True), 9),
        ("paperzoo MARS single", lambda ps: MARS(ps, foreach=False), 9),
        ("paperzoo DiffGrad foreach", lambda ps: DiffGrad(ps, foreach=True), 9),
        ("paperzoo DiffGrad single", lambda ps: DiffGrad(ps, foreach=False), 9),
        ("paperzoo Lion foreach", lambda ps: Lion(ps, foreach=True), 5),
        ("paperzoo Lion single", lambda ps: Lion(ps, foreach=False), 5),
        ("paperzoo AdaGradNorm single", lambda ps: AdaGradNorm(ps, foreach=False), 3),
        ("paperzoo Grokfast(AdamW)", lambda ps: Grokfast(torch.optim.AdamW(ps, foreach=True)), 10),
        # MedianTrackingSGD: parameter and median read and written, gradient read (SAM, AMP and FD-GR need a
        # closure per step and are not timed here; so does PCNGD, whose closure returns per-class losses).
        ("paperzoo MedianTrackingSGD foreach", lambda ps: MedianTrackingSGD(ps, foreach=True), 5),
        ("paperzoo MedianTrackingSGD single", lambda ps: MedianTrackingSGD(ps, foreach=False), 5),
        # AdamWSN: parameter and m read and written, gradient read, v negligible; SNSM reads the gradient twice
        # more (projections) and writes the parameter, with rank-r momentum.
        ("paperzoo AdamWSN", lambda ps: AdamWSN(ps), 5),
        ("paperzoo SNSM rank 32", lambda ps: SNSM(ps, rank=32), 5),
        # STEPAdam in its precondition phase is Adam (7); PSGD's Kronecker factors (gradient-whitening pairs, the
        # only closure-free mode) against pytorch-optimizer's Kron, factors above 1024 kept diagonal in both.
        ("paperzoo STEPAdam", lambda ps: STEPAdam(ps), 7),
        # O2NC: parameter, anchor, Delta, window sum read and written, gradient read (SMB needs a closure).
        ("paperzoo O2NC", lambda ps: O2NC(ps), 9),
        # Discover (10 clusters): parameter, the visited cluster's momentum and the aggregate read and written,
        # gradient read; step() is bound to cluster 0. SSO and VRGD need their own closures and are not timed.
        ("paperzoo Discover sgdm", lambda ps: _bind_cluster(Discover(ps, n_clusters=10)), 7),
        ("paperzoo Discover qhm", lambda ps: _bind_cluster(Discover(ps, n_clusters=10, base="qhm")), 7),
    ]

    if compiled:
        rows.insert(3, ("torch AdamW compiled", _compiled_adamw, 7))
    if second_order:
        # Kronecker-factored preconditioners cost O(n^3) per factor update: seconds per step at this size, so they
        # are timed only on request (--second-order), against each other rather than against AdamW.
        rows.append(("paperzoo PSGD kron whitening",
                     lambda ps: PSGD(ps, hessian="gradient", max_size_triangular=1024), 3))
    po_kron = _optional("pytorch_optimizer", "Kron") if second_order else None
    if po_kron is not None:
        rows.append(("pytorch_optimizer Kron", lambda ps: po_kron(ps, momentum=0.0, max_size_triangular=1024,
                                                                   pre_conditioner_update_probability=1.0), 3))
    for name, attr, passes in (("MARS", "MARS", 9), ("DiffGrad", "DiffGrad", 9), ("Lion", "Lion", 5),
                               ("QHM (Discover with K = 1)", "QHM", 5)):
        reference = _optional("pytorch_optimizer", attr)
        if reference is not None:
            rows.append((f"pytorch_optimizer {name}", lambda ps, cls=reference: cls(ps), passes))
    return rows


def _best_rate(kernel, nbytes: int, repeats: int) -> float:
    """Bytes per second of ``kernel()`` moving ``nbytes``: one warm-up call, then the fastest of ``repeats``."""
    kernel()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        kernel()
        times.append(time.perf_counter() - start)
    return nbytes / min(times)


def copy_bandwidth(numel: int, repeats: int) -> float:
    """Bytes per second of ``dst.copy_(src)`` (one read and one write per element) on a large float32 tensor."""
    src, dst = torch.randn(numel), torch.empty(numel)
    return _best_rate(lambda: dst.copy_(src), 2 * src.nbytes, repeats)


def triad_bandwidth(numel: int, repeats: int, streams: int) -> float:
    """Bytes per second of one fused elementwise kernel over ``streams`` float32 tensors (``streams - 1`` read, one
    written): ``torch.add(a, b, alpha=s, out=c)`` for 3, ``torch.addcmul(a, b, c, value=s, out=d)`` for 4."""
    if streams not in (3, 4):
        raise ValueError(f"streams must be 3 or 4, got {streams}")
    ins = [torch.randn(numel) for _ in range(streams - 1)]
    out = torch.empty(numel)
    if streams == 3:
        return _best_rate(lambda: torch.add(ins[0], ins[1], alpha=0.5, out=out), 3 * out.nbytes, repeats)
    return _best_rate(lambda: torch.addcmul(ins[0], ins[1], ins[2], value=0.5, out=out), 4 * out.nbytes, repeats)


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(v.nbytes for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, one round: a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (median over rounds)")
    parser.add_argument("--steps", type=int, default=None, help="steps per optimizer per round")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd AdamW row")
    parser.add_argument("--second-order", action="store_true",
                        help="also time the Kronecker-factored preconditioners (PSGD kron, pytorch-optimizer Kron)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args) -> int:
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rounds = args.rounds or (1 if args.quick else 7)
    steps = args.steps or (1 if args.quick else 3)

    g = torch.Generator().manual_seed(0)
    numel = sum(torch.Size(s).numel() for s in shapes)
    rows = []
    compile_seconds = {}
    for name, factory, passes in candidates(args.second_order, compiled=not args.quick and not args.no_compile):
        params = [torch.randn(s, generator=g).requires_grad_(True) for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt = factory(params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            opt.step()  # lazy state, ADOPT's initialising step, torch.compile's compilation
            compile_seconds[name] = time.perf_counter() - start
            opt.step()
        rows.append(dict(name=name, opt=opt, passes=passes, times=[]))

    for _ in range(rounds):
        for row in rows:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                for _ in range(steps):
                    row["opt"].step()
                row["times"].append((time.perf_counter() - start) / steps)

    big, repeats = max(numel, 1 << 20), 3 if args.quick else 10
    by_row = {row["name"]: row for row in rows}
    fused = by_row["torch AdamW fused"]
    t_fused = statistics.median(fused["times"])
    rates = {"copy (2 streams)": copy_bandwidth(big, repeats),
             "triad (3 streams)": triad_bandwidth(big, repeats, 3),
             "addcmul (4 streams)": triad_bandwidth(big, repeats, 4),
             "torch fused AdamW (7 streams)": fused["passes"] * numel * 4 / min(fused["times"])}
    best = max(rates, key=rates.get)
    bandwidth = rates[best]
    ref = statistics.median(rows[0]["times"])
    print(f"{numel / 1e6:.2f}M float32 parameters in {len(shapes)} tensors, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {rounds} rounds x {steps} steps")
    print("bandwidth (GB/s): " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in rates.items())
          + f"; the floor uses the fastest, {best}")
    header = (f"{'optimizer':34s} {'ms/step':>9s} {'vs AdamW':>9s} {'vs fused':>9s} {'state MB':>9s} "
              f"{'MB moved':>9s} {'floor ms':>9s} {'x floor':>8s} {'per byte vs fused':>18s}")
    print(header)
    print("-" * len(header))
    fused_per_byte = t_fused / (fused["passes"] * numel * 4)
    for row in rows:
        t = statistics.median(row["times"])
        moved = row["passes"] * numel * 4
        floor = moved / bandwidth
        print(f"{row['name']:34s} {t * 1e3:9.2f} {t / ref:9.2f} {t / t_fused:9.2f} "
              f"{state_bytes(row['opt']) / 1e6:9.1f} {moved / 1e6:9.1f} {floor * 1e3:9.2f} {t / floor:8.2f} "
              f"{t / moved / fused_per_byte:18.2f}")
    if "torch AdamW compiled" in by_row:
        print(f"\ntorch AdamW compiled: first step (compilation) {compile_seconds['torch AdamW compiled']:.1f} s, "
              "paid once per process")
    print("\nnonfinite check: step time with the default nonfinite='raise' over 'ignore' (no check), the same")
    print("optimizer alternating the two policy step by step, median over steps:")
    by_name = {row["name"]: row["opt"] for row in rows}
    for name in NONFINITE_PAIRS:
        print(f"  {name:30s} {nonfinite_check_ratio(by_name[name], rounds * steps):6.3f}")
    return 0


def nonfinite_check_ratio(opt, pairs: int) -> float:
    """Median step time under ``nonfinite="raise"`` over that under ``"ignore"``, interleaved (alternating which
    goes first), so that both see the same tensors, caches and machine load."""
    times = {"raise": [], "ignore": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(pairs):
            for policy in (("raise", "ignore") if i % 2 == 0 else ("ignore", "raise")):
                _set_policy(opt, policy)
                start = time.perf_counter()
                opt.step()
                times[policy].append(time.perf_counter() - start)
    _set_policy(opt, "raise")
    return statistics.median(times["raise"]) / statistics.median(times["ignore"])


if __name__ == "__main__":
    sys.exit(main())
