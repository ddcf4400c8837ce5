"""Per-sample gradient statistics of a small MLP: paperzoo.diagnostics.gradient_statistics against BackPACK and a
Python loop over samples.

All three compute the same numbers from the same float64 model and batch: the mean gradient and the per-parameter
variance of the per-sample gradients (ours: ``torch.func`` vmap(grad); BackPACK 1.7.1: ``BatchGrad`` on an
extended model and ``MSELoss``; the loop: one backward pass per sample). Agreement is checked before timing. One
thread, best of ``repeats`` runs; ratios are their time / our time (> 1: ours is faster).

Not a script of its own (the leading ``_`` keeps ``paperzoo bench`` from running it): ``benchmarks/diagnostics.py``
calls :func:`per_sample_benchmark`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from _timing import best_of
from paperzoo.diagnostics.gradient_noise import gradient_statistics


def _mlp(d_in: int, hidden: int, d_out: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                               torch.nn.Tanh(), torch.nn.Linear(hidden, d_out)).double()


def _stats_from_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return rows.mean(0), rows.var(0, unbiased=True)


def _loop(model, x, y):
    params = list(model.parameters())
    rows = []
    for i in range(x.shape[0]):
        gs = torch.autograd.grad(F.mse_loss(model(x[i:i + 1]), y[i:i + 1]), params)
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    return _stats_from_rows(torch.stack(rows))


def _backpack(model, lossf, x, y):
    from backpack import backpack
    from backpack.extensions import BatchGrad
    model.zero_grad()
    loss = lossf(model(x), y)
    with backpack(BatchGrad()):
        loss.backward()
    n = x.shape[0]
    rows = torch.cat([p.grad_batch.reshape(n, -1) for p in model.parameters()], dim=1) * n  # grad_batch = g_i / N
    return _stats_from_rows(rows)


def per_sample_benchmark(*, quick: bool = False, repeats: int = 3) -> list[dict]:
    """Time per-sample gradient statistics (mean and variance) of an MLP: ours, BackPACK, a Python loop.

    Returns one dict per configuration (``n``, ``hidden``, ``params``, seconds for each route, the ratios
    ``backpack / ours`` and ``loop / ours``, and the largest absolute difference of the variances), and prints a
    table. ``quick``: one small configuration (about a second).
    """
    import warnings

    from backpack import extend

    torch.set_num_threads(1)
    grid = [(32, 16)] if quick else [(64, 32), (256, 32), (256, 128)]
    header = (f"{'N':>5} {'hidden':>6} {'P':>7} {'ours s':>9} {'BackPACK s':>10} {'loop s':>9} "
              f"{'BP/ours':>8} {'loop/ours':>9} {'max diff':>9}")
    print(header)
    print("-" * len(header))
    rows = []
    for n, hidden in grid:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(n, 10, generator=g, dtype=torch.float64)
        y = torch.randn(n, 3, generator=g, dtype=torch.float64)
        model = _mlp(10, hidden, 3)
        p = sum(q.numel() for q in model.parameters())
        stats, t_ours = best_of(lambda: gradient_statistics(model, F.mse_loss, x, y), repeats)
        (loop_mean, loop_var), t_loop = best_of(lambda: _loop(model, x, y), repeats)
        bp_model, bp_loss = extend(_mlp(10, hidden, 3)), extend(torch.nn.MSELoss(reduction="mean"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on full backward hooks without input grads
            (bp_mean, bp_var), t_bp = best_of(lambda: _backpack(bp_model, bp_loss, x, y), repeats)
        diff = max(float((stats.variance - loop_var).abs().max()), float((stats.variance - bp_var).abs().max()),
                   float((stats.mean - loop_mean).abs().max()), float((stats.mean - bp_mean).abs().max()))
        if diff > 1e-9:
            raise AssertionError(f"routes disagree by {diff:.3g} at N={n}, hidden={hidden}")
        row = {"n": n, "hidden": hidden, "params": p, "ours_s": t_ours, "backpack_s": t_bp, "loop_s": t_loop,
               "backpack_over_ours": t_bp / t_ours, "loop_over_ours": t_loop / t_ours, "max_abs_diff": diff}
        rows.append(row)
        print(f"{n:>5} {hidden:>6} {p:>7} {t_ours:>9.4f} {t_bp:>10.4f} {t_loop:>9.4f} "
              f"{t_bp / t_ours:>8.2f} {t_loop / t_ours:>9.2f} {diff:>9.1e}")
    return rows
