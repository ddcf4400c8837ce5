"""Diagnostics: Hessian eigenvalues and trace against PyHessian, per-sample gradient statistics against BackPACK.

Part 1, curvature: a tanh MLP (20-64-64-10, cross-entropy, float32, one thread) on a fixed batch; both libraries see
the same model, data and loss. Top-k eigenvalues: ours is Lanczos with Ritz vectors (``top_eigenpairs``) on the
``hessian_operator`` (reverse-over-reverse products), PyHessian deflated power iteration (``eigenvalues(top_n=k)``,
its default ``tol=1e-3``; ours at the same relative residual tolerance); each is timed, and its accuracy is the
largest relative error of the k values against a float64 reference (our Lanczos at ``tol=1e-10`` on the float64 copy
of the model). Trace: both run Hutchinson with the same number of Rademacher probes (PyHessian with ``tol=0`` so
that it uses them all), ours in ``vmap``-ed blocks; the accuracy of both is the standard error of the same
estimator. Ratios are PyHessian's time over ours (> 1: ours is faster).

Part 2, gradient noise: the mean and per-parameter variance of per-sample gradients of a tanh MLP (float64, one
thread), ours (``gradient_statistics``, torch.func) against BackPACK's ``BatchGrad`` and a Python loop over samples,
agreement checked before timing (``benchmarks/_diagnostics_noise.py``).

    python benchmarks/diagnostics.py           # 1,024 points, k = 5, 200 probes
    python benchmarks/diagnostics.py --quick   # a second or two
"""

from __future__ import annotations

import argparse
import copy
import warnings

import torch
import torch.nn.functional as F

from _diagnostics_noise import per_sample_benchmark
from _timing import best_of
from paperzoo.diagnostics.hessian import hessian_operator, hutchinson_trace, top_eigenpairs


def _problem(n_points: int, width: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                                torch.nn.Tanh(), torch.nn.Linear(width, 10))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_points, 20, generator=g)
    y = torch.randint(0, 10, (n_points,), generator=g)
    return model, x, y


def curvature(n_points: int, width: int, k: int, probes: int, repeats: int) -> None:
    from pyhessian import hessian as PyHessian

    model, x, y = _problem(n_points, width)
    ref_op, n = hessian_operator(copy.deepcopy(model).double(), F.cross_entropy, x.double(), y)
    ref = top_eigenpairs(ref_op, n, k, tol=1e-10, max_iter=400, generator=torch.Generator().manual_seed(1))
    exact = ref.eigenvalues.float()

    def ours_top():
        op, _ = hessian_operator(model, F.cross_entropy, x, y)
        return top_eigenpairs(op, n, k, tol=1e-3, dtype=torch.float32, generator=torch.Generator().manual_seed(0))

    def peer_top():
        torch.manual_seed(0)
        model.zero_grad(set_to_none=True)
        ph = PyHessian(model, F.cross_entropy, data=(x, y), cuda=False)
        out = ph.eigenvalues(maxIter=100, tol=1e-3, top_n=k)[0]
        model.zero_grad(set_to_none=True)
        return torch.tensor(sorted(out, reverse=True))

    def ours_trace():
        op, _ = hessian_operator(model, F.cross_entropy, x, y)
        return hutchinson_trace(op, n, probes, batch_size=min(probes, 50), dtype=torch.float32,
                                generator=torch.Generator().manual_seed(0))

    def peer_trace():
        torch.manual_seed(0)
        model.zero_grad(set_to_none=True)
        ph = PyHessian(model, F.cross_entropy, data=(x, y), cuda=False)
        out = torch.tensor(ph.trace(maxIter=probes, tol=0.0), dtype=torch.float64)
        model.zero_grad(set_to_none=True)
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyHessian's backward(create_graph=True) reference-cycle warning
        res, t_ours = best_of(ours_top, repeats)
        peer, t_peer = best_of(peer_top, repeats)
        tr, t_ours_tr = best_of(ours_trace, repeats)
        ptr, t_peer_tr = best_of(peer_trace, repeats)
    err = float(((res.eigenvalues - exact).abs() / exact.abs()).max())
    err_peer = float(((peer - exact).abs() / exact.abs()).max())
    se_peer = float(ptr.std(correction=1)) / probes ** 0.5
    print(f"\ncurvature of a tanh MLP 20-{width}-{width}-10 ({n} parameters, {n_points} points, float32, one thread; "
          "ratio = PyHessian / ours)")
    header = f"{'measurement':24s} {'ours s':>8s} {'PyHessian s':>12s} {'ratio':>6s}   accuracy (ours / PyHessian)"
    print(header)
    print("-" * len(header))
    print(f"{'top-' + str(k) + ' eigenvalues':24s} {t_ours:8.3f} {t_peer:12.3f} {t_peer / t_ours:6.2f}   "
          f"max rel. error {err:.1e} ({res.n_iter} products) / {err_peer:.1e}")
    print(f"{'Hutchinson trace':24s} {t_ours_tr:8.3f} {t_peer_tr:12.3f} {t_peer_tr / t_ours_tr:6.2f}   "
          f"{tr.trace:.3f} +- {tr.std_error:.3f} / {float(ptr.mean()):.3f} +- {se_peer:.3f} ({probes} probes each)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.quick:
        curvature(n_points=128, width=16, k=3, probes=40, repeats=repeats)
    else:
        curvature(n_points=1024, width=64, k=5, probes=200, repeats=repeats)
    print("\nper-sample gradient statistics of a tanh MLP (10 inputs, 3 outputs, float64, one thread; ratios = "
          "peer / ours)")
    per_sample_benchmark(quick=args.quick, repeats=repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
