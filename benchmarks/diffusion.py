"""Diffusion samplers: time per step against k-diffusion and diffusers' scheduler loops, and error per evaluation.

Part 1, overhead per step: every sampler runs the same schedule on the same denoiser and start, one thread,
best of ``--repeats``. Three denoisers: the closed-form denoiser of a Gaussian N(0, cI),
``D(x, sigma) = x c / (c + sigma^2)``, on 64 points (two tensor operations, so the framework's per-step
overhead is what is timed), the exact Gaussian-mixture denoiser and a small MLP (``MLPDenoiser``, 3 x 128) on
2,048 points (where the denoiser's own cost dominates). Ratios are the peer's time over ours (> 1: ours is
faster). k-diffusion's samplers are loaded from its installed ``sampling.py`` (as the tests do); diffusers runs
its ``DDIMScheduler`` loop with an eps-model wrapped around the same denoiser.

Part 2, accuracy per evaluation: sliced Wasserstein (64 fixed directions) between each sampler's output and exact
draws from the mixture, against the number of denoiser evaluations, with the SW between two exact draws as the
noise floor. Sampler-specific schedules use Karras levels (sigma in [0.02, 30], rho 7).

    python benchmarks/diffusion.py           # 2,048 points, 10 / 25 / 50 steps
    python benchmarks/diffusion.py --quick   # about a second
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from _timing import best_of
from paperzoo.diffusion import (MLPDenoiser, append_zero, discrete_timesteps, get_sigmas_karras, mixture_on_circle,
                                sample_ddim, sample_dpmpp_2m, sample_euler, sample_euler_ancestral, sample_heun,
                                sigmas_from_alphas_cumprod)
from paperzoo.transport import sliced_wasserstein

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.diffusion.references import k_diffusion_sampling  # noqa: E402

OURS = {"euler": sample_euler, "heun": sample_heun, "euler_ancestral": sample_euler_ancestral,
        "dpmpp_2m": sample_dpmpp_2m}
EVALS = {"euler": lambda n: n, "heun": lambda n: 2 * n - 1, "euler_ancestral": lambda n: n,
         "dpmpp_2m": lambda n: n, "ddim": lambda n: n}


def _diffusers_ddim(model, x_vp, n_steps, sched):
    sched.set_timesteps(n_steps)
    ac = sched.alphas_cumprod
    sig_all = sigmas_from_alphas_cumprod(ac)
    for t in sched.timesteps:
        s = sig_all[t]
        x_ve = x_vp / ac[t].sqrt()
        eps = (x_ve - model(x_ve, s * x_ve.new_ones(x_ve.shape[0]))) / s
        x_vp = sched.step(eps, t, x_vp).prev_sample
    return x_vp


def gaussian_denoiser(c: float = 4.0):
    """The exact denoiser of N(0, cI): D(x, sigma) = x c / (c + sigma^2) (a batch of levels)."""
    def model(x, sigma):
        return x * (c / (c + sigma.square()))[:, None]
    return model


def overhead(models, n_steps, repeats, dtype):
    from diffusers import DDIMScheduler

    K = k_diffusion_sampling()
    sigmas = get_sigmas_karras(n_steps, 0.02, 30.0, dtype=dtype)
    print(f"\nper-step time, {n_steps} steps, {dtype}, one thread (ratio = peer / ours)")
    header = (f"{'denoiser':10s} {'points':>6s} {'sampler':16s} {'ours ms/step':>13s} {'k-diff ms/step':>15s} "
              f"{'ratio':>6s}")
    print(header)
    print("-" * len(header))
    with torch.no_grad():
        for label, (model, n_points) in models.items():
            x = sigmas[0] * torch.randn(n_points, 2, generator=torch.Generator().manual_seed(0), dtype=dtype)
            for name, ours in OURS.items():
                evals = EVALS[name](n_steps)
                kw = {"noise_sampler": lambda s, t: torch.randn_like(x)} if name == "euler_ancestral" else {}
                _, t_ours = best_of(lambda: ours(model, x, sigmas), repeats)
                _, t_k = best_of(lambda: getattr(K, f"sample_{name}")(model, x, sigmas, disable=True, **kw),
                                 repeats)
                print(f"{label:10s} {n_points:6d} {name:16s} {1e3 * t_ours / evals:13.3f} {1e3 * t_k / evals:15.3f} "
                      f"{t_k / t_ours:6.2f}")
            sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                  beta_end=0.012, clip_sample=False)
            sched.alphas_cumprod = sched.alphas_cumprod.to(dtype)
            sched.set_timesteps(n_steps)
            ts = discrete_timesteps(1000, n_steps)
            ddim_sigmas = append_zero(sigmas_from_alphas_cumprod(sched.alphas_cumprod)[ts]).to(dtype)
            x_vp = torch.randn(n_points, 2, generator=torch.Generator().manual_seed(0), dtype=dtype)
            x_ve = x_vp / sched.alphas_cumprod[ts[0]].sqrt()
            _, t_ours = best_of(lambda: sample_ddim(model, x_ve, ddim_sigmas), repeats)
            _, t_d = best_of(lambda: _diffusers_ddim(model, x_vp, n_steps, sched), repeats)
            print(f"{label:10s} {n_points:6d} {'ddim vs diffusers':16s} {1e3 * t_ours / n_steps:13.3f} "
                  f"{1e3 * t_d / n_steps:15.3f} {t_d / t_ours:6.2f}   (diffusers DDIMScheduler loop)")


def accuracy(gm, n_points, step_counts):
    ref = gm.sample(n_points, generator=torch.Generator().manual_seed(1))
    proj = torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=ref.dtype)
    proj = proj / proj.norm(dim=1, keepdim=True)
    floor = float(sliced_wasserstein(gm.sample(n_points, generator=torch.Generator().manual_seed(3)), ref,
                                     projections=proj))
    print(f"\nsliced W2^2 to exact draws against denoiser evaluations ({n_points} points; floor between two exact "
          f"draws {floor:.4f})")
    print(f"{'sampler':16s} " + " ".join(f"{'n=' + str(n):>16s}" for n in step_counts))
    samplers = {**OURS, "ddim": sample_ddim}
    for name, sampler in samplers.items():
        cells = []
        for n in step_counts:
            sigmas = get_sigmas_karras(n, 0.02, 30.0)
            x = sigmas[0] * torch.randn(n_points, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            kw = {"generator": torch.Generator().manual_seed(4)} if name == "euler_ancestral" else {}
            out = sampler(gm.denoise, x, sigmas, **kw)
            sw = float(sliced_wasserstein(out, ref, projections=proj))
            cells.append(f"{sw:.4f} ({EVALS[name](n):3d} ev)")
        print(f"{name:16s} " + " ".join(f"{c:>16s}" for c in cells))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = args.repeats or (1 if args.quick else 5)
    n_points = 256 if args.quick else 2048
    gm = mixture_on_circle(8, 2, radius=4.0, std=0.5)
    torch.manual_seed(0)
    mlp = MLPDenoiser(2, 128, 3).double().eval()
    overhead({"Gaussian": (gaussian_denoiser(), 64), "exact GMM": (gm.denoise, n_points),
              "MLP 3x128": (mlp.denoiser(), n_points)}, 10 if args.quick else 50, repeats, torch.float64)
    accuracy(gm, n_points, [5, 10] if args.quick else [10, 25, 50])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
