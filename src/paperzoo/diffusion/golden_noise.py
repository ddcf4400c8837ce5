"""Golden noise: re-denoise sampling (one guided DDIM step down, one DDIM inversion step up) and a noise prompt
network (NPNet) that learns to map random noise to it.

References: Golden Noise for Diffusion Models: A Learning Framework, 2024 (Zhou, Shao, Bai, Xie, et al.).

**Re-denoise sampling.** From a starting noise :math:`x_T` take one DDIM step down with the *denoising* guidance
scale :math:`w_l` and one DDIM inversion step back up with the *inversion* scale :math:`w_w`,

.. math::
    x_{T-1} = \\mathrm{DDIM}(x_T;\\, D_{w_l}), \\qquad x'_T = \\mathrm{DDIM\\text{-}Inv}(x_{T-1};\\, D_{w_w}),

where :math:`D_w = D_u + w (D_c - D_u)` is the classifier-free guided denoiser. The official code's defaults
(``denoising_cfg = 5.5``, ``inversion_cfg = 1.0``, one round, SDXL with 50 DDIM steps) are this module's. In
paperzoo's VE convention (``model(x, sigma)``, :math:`\\sigma_0 > \\sigma_1` the first two levels of the sampling
schedule) both steps are Euler steps of the probability-flow ODE, down then up
(:func:`~paperzoo.diffusion.samplers.euler_step` through :func:`~paperzoo.diffusion.samplers.run_sampler`, the up
step being :func:`~paperzoo.diffusion.ddim_inversion.invert_ddim`'s),

.. math::
    x_1 = x_0 + (\\sigma_1 - \\sigma_0)\\frac{x_0 - D_{w_l}(x_0, \\sigma_0)}{\\sigma_0}, \\qquad
    x'_0 = x_1 + (\\sigma_0 - \\sigma_1)\\frac{x_1 - D_{w_w}(x_1, \\sigma_1)}{\\sigma_1}.

To first order in the step, :math:`x'_0 - x_0 \\approx (\\sigma_0 - \\sigma_1)(w_l - w_w)(D_c - D_u)/\\sigma_0`:
the difference of the two guidance strengths is written into the noise (the paper's "semantic information
injected by the inversion"). With :math:`w_l = w_w` only the ODE's discretisation error remains (the transform is
the identity to second order in :math:`\\sigma_0 - \\sigma_1`; for a Gaussian it is an affine map in closed form).

- :func:`re_denoise`: the transform for any two denoisers (down with ``model``, up with ``inversion_model``);
- :func:`golden_noise`: the paper's recipe from a conditional and an unconditional denoiser and the two scales;
- :func:`select_pairs`: the paper's data filter, keep a (noise, golden noise) pair when the golden noise's sample
  scores higher under a reward by more than ``margin``;
- :class:`NoisePromptNet` and :func:`train_npnet`: a small NPNet, :math:`\\hat\\varepsilon' = \\varepsilon +
  f_\\theta(\\varepsilon, e_c)` (unit noises, a learned class embedding :math:`e_c` in place of the text
  embedding), trained by mean squared error on the pairs.

Noises are unit-variance (``x_T = sigmas[0] * eps``); the network maps unit noise to unit noise.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.guidance import class_conditional
    >>> from paperzoo.diffusion.mixture import GaussianMixture
    >>> gm = GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64),
    ...                      torch.eye(2, dtype=torch.float64).repeat(2, 1, 1))
    >>> c0, _ = class_conditional(gm, [0, 1])
    >>> sigmas = torch.tensor([13.04, 11.61], dtype=torch.float64)
    >>> x = sigmas[0] * torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> shift = (golden_noise(c0.denoise, gm.denoise, x, sigmas) - x) / sigmas[0]
    >>> bool(shift[:, 0].mean() > 0.03)          # moved towards class 0's side (+x)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Function, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.ddim_inversion import _invert
from paperzoo.diffusion.guidance import classifier_free_guidance
from paperzoo.diffusion.samplers import euler_step, run_sampler
from paperzoo.diffusion.training import _adam_steps

__all__ = ["re_denoise", "golden_noise", "select_pairs", "NoisePromptNet", "train_npnet"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_pair(sigmas: torch.Tensor) -> None:
    if sigmas.shape[0] != 2:
        raise ValueError(f"sigmas must hold two levels (sigma_T, sigma_T-1), got {sigmas.shape[0]}")
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas <= 0).any()):
        raise ValueError("sigmas must be finite and > 0 (the inversion step needs a finite level to return to)")
    if not bool(sigmas[1] < sigmas[0]):
        raise ValueError(f"sigmas must be decreasing (sigmas[0] > sigmas[1]), got {sigmas.tolist()}")


def _re_denoise(model: Denoiser, inversion_model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Unchecked kernel of :func:`re_denoise`."""
    sigmas = sigmas.to(x.dtype)
    x1 = run_sampler(model, x, sigmas, euler_step)
    return _invert(inversion_model, x1, sigmas.flip(0), 0, None, None, False)


def _example(ctx) -> dict:
    from paperzoo.diffusion.mixture import mixture_on_circle

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    sig = torch.tensor([10.0, 8.0], dtype=ctx.dtype)
    return {"model": gm.denoise, "inversion_model": gm.denoise,
            "x": sig[0] * torch.randn(5, 2, generator=ctx.generator, dtype=ctx.dtype), "sigmas": sig}


@accepts(model=Function(), inversion_model=Function(), x=Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",)),
         sigmas=Tensor(2, nonnegative=True), example=_example)
def re_denoise(model: Denoiser, inversion_model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Re-denoise sampling: one DDIM (Euler) step of ``model`` from ``sigmas[0]`` to ``sigmas[1]``, then one DDIM
    inversion step of ``inversion_model`` back to ``sigmas[0]`` (module doc).

    Args:
        model: the denoiser of the down step (the guided :math:`D_{w_l}`), ``model(x, sigma)``.
        inversion_model: the denoiser of the inversion step (:math:`D_{w_w}`).
        x: the VE noise state at ``sigmas[0]``, ``(N, ...)`` (``sigmas[0] * eps`` for unit noise ``eps``).
        sigmas: ``(2,)``, the first two levels of the sampling schedule, finite, ``sigmas[0] > sigmas[1] > 0``.

    Returns:
        The golden VE state at ``sigmas[0]``, shape of ``x``; two model evaluations.
    """
    _check_pair(sigmas)
    if x.shape[0] == 0:
        raise ValueError(f"x must have a nonempty batch dimension first, got shape {tuple(x.shape)}")
    return _re_denoise(model, inversion_model, x, sigmas)


def _example_golden(ctx) -> dict:
    ex = _example(ctx)
    return {"cond": ex["model"], "uncond": lambda x, s: 0 * x, "x": ex["x"], "sigmas": ex["sigmas"]}


@accepts(cond=Function(), uncond=Function(), x=Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",)),
         sigmas=Tensor(2, nonnegative=True), denoise_scale=Real(), inversion_scale=Real(), example=_example_golden)
def golden_noise(cond: Denoiser, uncond: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                 denoise_scale: float = 5.5, inversion_scale: float = 1.0) -> torch.Tensor:
    """The paper's golden noise: :func:`re_denoise` with classifier-free guidance
    :math:`D_u + w(D_c - D_u)` at ``denoise_scale`` (:math:`w_l`, default 5.5) down and ``inversion_scale``
    (:math:`w_w`, default 1.0, the conditional model) up. ``x`` ``(N, ...)`` and ``sigmas`` ``(2,)`` as in
    :func:`re_denoise`; returns the golden VE state at ``sigmas[0]``."""
    _check_pair(sigmas)
    if x.shape[0] == 0:
        raise ValueError(f"x must have a nonempty batch dimension first, got shape {tuple(x.shape)}")
    down = classifier_free_guidance(cond, uncond, denoise_scale)
    up = classifier_free_guidance(cond, uncond, inversion_scale)
    return _re_denoise(down, up, x, sigmas)


@accepts(reward_original=Tensor("N"), reward_golden=Tensor("N"), margin=Real(ge=0), output="any",  # bool mask
         example=lambda ctx: {"reward_original": torch.rand(6, generator=ctx.generator, dtype=ctx.dtype),
                              "reward_golden": torch.rand(6, generator=ctx.generator, dtype=ctx.dtype)})
def select_pairs(reward_original: torch.Tensor, reward_golden: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """The paper's pair filter: a boolean mask ``(N,)``, true where the sample from the golden noise scores higher
    than the sample from the original noise by more than ``margin`` (``reward_golden > reward_original +
    margin``)."""
    return reward_golden > reward_original + margin


class NoisePromptNet(nn.Module):
    """A small noise prompt network (NPNet) for low-dimensional noises: :math:`\\hat\\varepsilon' = \\varepsilon +
    f_\\theta([\\varepsilon, e_c])`, an MLP residual conditioned on a learned class embedding :math:`e_c` (the
    paper's text embedding). The last layer starts at zero, so an untrained network is the identity.

    Args:
        dim: the noise dimension :math:`d`; n_classes: the number of conditions; hidden, depth: the MLP's width and
            number of hidden layers; embed_dim: the class embedding's size.

    ``forward(eps, labels)``: unit noises ``(N, d)`` and integer labels ``(N,)`` -> predicted golden unit noises
    ``(N, d)``.
    """

    @accepts(dim=Int(ge=1), n_classes=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), embed_dim=Int(ge=1),
             example=lambda ctx: {"dim": 2, "n_classes": 2})
    def __init__(self, dim: int, n_classes: int, hidden: int = 64, depth: int = 2, embed_dim: int = 8):
        super().__init__()
        self.dim, self.n_classes = dim, n_classes
        self.embedding = nn.Embedding(n_classes, embed_dim)
        layers, width = [], dim + embed_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        last = nn.Linear(width, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, eps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if eps.dim() != 2 or eps.shape[1] != self.dim:
            raise ValueError(f"eps must have shape (N, {self.dim}), got {tuple(eps.shape)}")
        if labels.shape != (eps.shape[0],):
            raise ValueError(f"labels must have shape ({eps.shape[0]},), got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
            raise ValueError(f"labels must lie in 0..{self.n_classes - 1}, got entries in "
                             f"{int(labels.min())}..{int(labels.max())}")
        e = self.embedding(labels).to(eps.dtype)
        return eps + self.net(torch.cat([eps, e], dim=-1))


def _example_train(ctx) -> dict:
    eps = torch.randn(16, 2, generator=ctx.generator, dtype=ctx.dtype)
    return {"network": NoisePromptNet(2, 2, 8, 1).to(ctx.dtype), "noise": eps, "golden": eps + 0.1,
            "labels": torch.arange(16) % 2, "steps": 3, "batch_size": 8}


@accepts(network=Module(bind_dtype=True), noise=Tensor("N", "d", degenerate=("coincident",)),
         golden=Tensor("N", "d", degenerate=("coincident",)), labels=Tensor("N", dtype="int", low=0),
         steps=Int(ge=0), batch_size=Int(ge=1), lr=Real(gt=0), generator=Generator(), example=_example_train)
def train_npnet(network: nn.Module, noise: torch.Tensor, golden: torch.Tensor, labels: torch.Tensor, *, steps: int,
                batch_size: int = 256, lr: float = 1e-3, generator: torch.Generator | None = None) -> torch.Tensor:
    """Adam on the mean squared error :math:`\\|\\mathrm{NPNet}(\\varepsilon, c) - \\varepsilon'\\|^2` over
    minibatches (drawn with replacement from ``generator``) of the pairs ``noise`` ``(N, d)`` -> ``golden``
    ``(N, d)`` (unit noises) with labels ``(N,)``; trains ``network`` in place and returns the loss history
    ``(steps,)``."""
    n_classes = getattr(network, "n_classes", None)
    if n_classes is not None and int(labels.max()) >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1} (the network's classes), got {int(labels.max())}")
    n = noise.shape[0]

    def batch_loss(step):
        idx = torch.randint(n, (min(batch_size, n),), generator=generator)
        return (network(noise[idx], labels[idx]) - golden[idx]).square().sum(-1).mean()

    return _adam_steps(network, batch_loss, steps, lr, "train_npnet")
