"""Wasserstein dependency measure and Wasserstein predictive coding (WPC) with Lipschitz critics.

References: Wasserstein Dependency Measure for Representation Learning, 2019 (Ozair, Lynch, Bengio, van den Oord,
Levine, Sermanet; NeurIPS).

The Wasserstein dependency measure replaces the KL divergence in ``I(x; y) = KL(p(x, y) || p(x) p(y))`` by the
Wasserstein-1 distance, and its Kantorovich-Rubinstein dual is a supremum over 1-Lipschitz critics:

    I_W(x; y) = W_1(p(x, y), p(x) p(y)) = sup_{||f||_L <= 1}  E_{p(x,y)}[f(x, y)] - E_{p(x)p(y)}[f(x, y)].

On a score matrix ``T[i, j] = f(x_i, y_j)`` of a batch of joint pairs (diagonal = joint, off-diagonal = product of
marginals, as in :mod:`paperzoo.divergences.mutual_information`), ``form="dual"`` evaluates this dual objective as
``mean_i T_ii - mean_{i != j} T_ij``. The paper's practical method, WPC, keeps the contrastive (CPC / InfoNCE)
objective and constrains the critic to be Lipschitz; ``form="contrastive"`` is that objective,
``log N + 1/N sum_i [T_ii - log sum_j e^{T_ij}]``. Either form only measures the Wasserstein dependency when ``f`` is
kept Lipschitz, by one of the two GAN techniques the paper uses:

* :func:`gradient_penalty` (Gulrajani et al., 2017): ``lambda E_z[(||grad_z f(z)||_2 - 1)^2]`` at points ``z``
  interpolated between joint pairs ``(x_i, y_i)`` and product pairs ``(x_i, y_{i+1})`` (the batch shifted by one,
  so each is a sample of ``p(x) p(y)``); ``one_sided`` penalises only norms above 1;
* :func:`spectral_normalize` (Miyato et al., 2018): every ``nn.Linear`` reparametrised to spectral norm 1, so an
  MLP with 1-Lipschitz activations is 1-Lipschitz in each encoder.

:func:`wpc_loss` assembles one training loss: ``-objective + gp_weight * penalty``.

Deviations / uncertain points: the paper's exact gradient-penalty variant, its weight and the sampling points of the
penalty are not fixed here from the paper text; this module uses the WGAN-GP defaults (two-sided, weight 10,
interpolates between joint and product samples), all exposed as arguments. For a separable critic
``g(x)^T h(y)`` the penalty is on the gradient with respect to the raw inputs ``(x, y)``.

Example:
    >>> import torch
    >>> from paperzoo.divergences import SeparableCritic
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> critic = SeparableCritic(3, 3, hidden_dim=16, embed_dim=4, depth=2)
    >>> x = torch.randn(32, 3); y = x + 0.1 * torch.randn(32, 3)
    >>> loss = wpc_loss(critic, x, y, gp_weight=10.0, generator=torch.Generator().manual_seed(0))
    >>> loss.backward()
    >>> wasserstein_dependency(critic(x, y), form="dual").shape
    torch.Size([])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Choice, Flag, Function, Generator, Module, Real, Tensor, accepts
from paperzoo.divergences.mutual_information import SeparableCritic, _check_scores, mi_lower_bound

__all__ = ["wasserstein_dependency", "gradient_penalty", "spectral_normalize", "wpc_loss"]

FORMS = ("dual", "contrastive")


def _seeded(module: nn.Module, ctx) -> nn.Module:
    """``module`` in the example's dtype with parameters drawn from the example's generator."""
    module = module.to(ctx.dtype)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=ctx.generator, dtype=ctx.dtype))
    return module


def _pairs(ctx) -> dict:
    n = ctx.size("N")
    return {"x": torch.randn(n, 2, generator=ctx.generator, dtype=ctx.dtype),
            "y": torch.randn(n, 3, generator=ctx.generator, dtype=ctx.dtype)}


def _smooth_pair_scores(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sin(x).sum(-1) * torch.cos(y).sum(-1)


@accepts(scores=Tensor(..., "N", "N", degenerate=("constant",)), form=Choice(*FORMS))
def wasserstein_dependency(scores: torch.Tensor, form: str = "dual") -> torch.Tensor:
    """Wasserstein-dependency objective from a Lipschitz critic's score matrix.

    Args:
        scores: ``(..., N, N)`` with ``scores[..., i, j] = f(x_i, y_j)``, joint pairs on the diagonal, ``N >= 2``.
        form: ``"dual"`` (``E_P f - E_Q f``, a lower bound on ``W_1(p(x, y), p(x)p(y))`` when ``f`` is
            1-Lipschitz) or ``"contrastive"`` (the WPC / InfoNCE form).

    Returns:
        Shape ``scores.shape[:-2]``, differentiable.
    """
    _check_scores(scores)
    return _objective(scores, form)


def _objective(scores: torch.Tensor, form: str) -> torch.Tensor:
    if form == "contrastive":
        return mi_lower_bound(scores, "infonce")
    n = scores.shape[-1]
    diag = torch.diagonal(scores, dim1=-2, dim2=-1)
    joint = diag.mean(-1)
    product = (scores.sum((-2, -1)) - diag.sum(-1)) / (n * (n - 1))
    return joint - product


@accepts(pair_scores=Function(), x=Tensor("N", "dx", degenerate=("coincident",)),
         y=Tensor("N", "dy", degenerate=("coincident",)), one_sided=Flag(), generator=Generator(),
         example=lambda ctx: {"pair_scores": _smooth_pair_scores, **_pairs(ctx)})
def gradient_penalty(
    pair_scores: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    one_sided: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``E_z[(||grad_z f(z)|| - 1)^2]`` at interpolates between joint and product-of-marginal pairs.

    ``z_i = (x_i, eps_i y_i + (1 - eps_i) y_{i+1})`` with ``eps_i ~ U(0, 1)`` and ``y_{N+1} = y_1``. The result keeps
    the graph (``create_graph``), so it can be added to a loss.

    Args:
        pair_scores: ``f`` on matched rows, ``(N, dx), (N, dy) -> (N,)`` (e.g. ``critic.pair_scores``); row ``i`` of
            the output must depend on row ``i`` of the inputs only.
        x: ``(N, dx)``; y: ``(N, dy)``, the joint batch, ``N >= 2``.
        one_sided: penalise ``max(||grad|| - 1, 0)^2`` only.
        generator: draws ``eps`` (on the CPU, moved to ``x``'s device).
    """
    if x.shape[0] < 2:
        raise ValueError(f"x must have N >= 2 rows (the product pairs shift the batch by one), got shape "
                         f"{tuple(x.shape)}")
    eps = torch.rand(x.shape[0], 1, generator=generator, dtype=torch.float64).to(y)
    x_hat = x.detach().clone().requires_grad_(True)
    y_hat = (eps * y.detach() + (1 - eps) * torch.roll(y.detach(), -1, dims=0)).requires_grad_(True)
    f = pair_scores(x_hat, y_hat)
    if not isinstance(f, torch.Tensor) or f.shape != (x.shape[0],):
        got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(f"pair_scores must return shape ({x.shape[0]},), got {got}")
    if not f.requires_grad:
        raise ValueError("pair_scores must return scores differentiable in its inputs, got a tensor without grad")
    if not bool(torch.isfinite(f).all()):
        raise ValueError("pair_scores must return finite scores, got NaN or inf entries")
    # A critic may ignore one of its inputs; its gradient there is zero rather than an error.
    gx, gy = torch.autograd.grad(f.sum(), (x_hat, y_hat), create_graph=True, allow_unused=True,
                                 materialize_grads=True)
    norm = torch.sqrt(gx.pow(2).sum(-1) + gy.pow(2).sum(-1) + torch.finfo(gx.dtype).tiny)
    excess = (norm - 1.0).clamp_min(0.0) if one_sided else norm - 1.0
    return excess.pow(2).mean()


@accepts(module=Module(example=lambda ctx: _seeded(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), ctx)))
def spectral_normalize(module: nn.Module) -> nn.Module:
    """Reparametrise every ``nn.Linear`` of ``module`` in place to spectral norm 1 (power iteration) and return it.

    ``module`` must have finite parameters and no all-zero ``nn.Linear`` weight (whose normalisation is undefined).
    """
    linears = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    for name, m in linears:
        # W / ||W||_2 is 0 / 0 for an all-zero weight: torch's power iteration would return NaN weights
        if m.weight.numel() > 0 and not bool(m.weight.detach().any()):
            raise ValueError(f"module must have nonzero nn.Linear weights to normalise (spectral norm 0), got an "
                             f"all-zero weight in {name or 'module'}.weight")
    for _, m in linears:
        nn.utils.parametrizations.spectral_norm(m)
    return module


@accepts(critic=Module(bind_dtype=True), x=Tensor("N", "dx", degenerate=("coincident",)),
         y=Tensor("N", "dy", degenerate=("coincident",)), gp_weight=Real(ge=0), form=Choice(*FORMS), one_sided=Flag(),
         generator=Generator(),
         example=lambda ctx: {"critic": _seeded(SeparableCritic(2, 3, hidden_dim=8, embed_dim=4, depth=1), ctx),
                              **_pairs(ctx)})
def wpc_loss(
    critic: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    gp_weight: float = 10.0,
    form: str = "contrastive",
    one_sided: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WPC training loss ``-objective(critic(x, y)) + gp_weight * gradient_penalty``, a 0-dim tensor.

    Args:
        critic: module with ``critic(x, y) -> (N, N)`` and ``critic.pair_scores(x, y) -> (N,)`` (the critics of
            :mod:`paperzoo.divergences.mutual_information`); ``gp_weight=0`` skips the penalty (use it with
            :func:`spectral_normalize`; with neither, the loss is plain CPC).
        x: ``(N, dx)``; y: ``(N, dy)``, a joint batch.
        gp_weight: ``lambda >= 0``.
        form: ``"contrastive"`` (WPC, default) or ``"dual"``.
    """
    gp_weight = float(gp_weight)
    if x.shape[0] < 2:
        raise ValueError(f"x must hold N >= 2 samples (the contrastive bound compares each pair with the others), "
                         f"got shape {tuple(x.shape)}")
    if gp_weight > 0 and not callable(getattr(critic, "pair_scores", None)):
        raise TypeError(f"critic must have a pair_scores(x, y) method when gp_weight > 0, got "
                        f"{type(critic).__name__}")
    scores = critic(x, y)
    n = x.shape[0]
    if not isinstance(scores, torch.Tensor) or scores.shape != (n, n):
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"critic must return the ({n}, {n}) score matrix, got {got}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("critic must return finite scores, got NaN or inf entries (check its parameters and the "
                         "learning rate)")
    loss = -_objective(scores, form)
    if gp_weight > 0:
        loss = loss + gp_weight * gradient_penalty(critic.pair_scores, x, y, one_sided=one_sided,
                                                   generator=generator)
    return loss
