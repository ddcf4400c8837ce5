"""Target Score Matching: regress the noisy score on the known clean score instead of the noise.

References: Target Score Matching (De Bortoli, Hutchinson, Wirnsberger, Doucet), 2024.

For a noisy state :math:`x = \\alpha x_0 + \\sigma\\varepsilon` (paperzoo's VE convention is :math:`\\alpha = 1`;
:math:`\\alpha_t = \\sqrt{\\bar\\alpha_t}` is DDPM's VP time) two identities give the score of the noisy marginal
:math:`p_\\sigma` as a posterior mean over :math:`x_0 \\mid x`:

.. math::
    \\nabla \\log p_\\sigma(x) = E\\Bigl[-\\frac{x - \\alpha x_0}{\\sigma^2} \\Bigm| x\\Bigr]
    \\quad\\text{(Denoising Score Identity, the paper's eq. (2))},

.. math::
    \\nabla \\log p_\\sigma(x) = E\\Bigl[\\frac{1}{\\alpha}\\,\\nabla \\log p_0(x_0) \\Bigm| x\\Bigr]
    \\quad\\text{(Target Score Identity, its Section 2)}.

The second needs only additive noise independent of :math:`x_0` (not a Gaussian one) and the clean score
:math:`\\nabla\\log p_0`, known for Boltzmann densities :math:`p_0 \\propto e^{-U}` as :math:`-\\nabla U`. Each
identity gives a regression loss whose minimiser over all functions is the score:

.. math::
    \\ell_{DSM}(\\theta) = E\\,\\bigl\\|s_\\theta(x, \\sigma) + (x - \\alpha x_0)/\\sigma^2\\bigr\\|^2, \\qquad
    \\ell_{TSM}(\\theta) = E\\,\\bigl\\|s_\\theta(x, \\sigma) - \\nabla\\log p_0(x_0)/\\alpha\\bigr\\|^2 .

They differ by a constant in :math:`\\theta` (both targets are unbiased for the same conditional mean); what
differs is the variance of the target given :math:`x`, the loss's irreducible part and the noise of its gradient.
At low noise the posterior of :math:`x_0` has covariance about :math:`(\\sigma/\\alpha)^2 I`, so the DSM target's
conditional variance grows like :math:`d/\\sigma^2` while the TSM target's shrinks like
:math:`\\sigma^2\\alpha^{-4}\\|\\nabla^2\\log p_0\\|_F^2`. At high noise it is the other way round: the posterior
tends to :math:`p_0`, the TSM target's variance to the trace of the Fisher information,
:math:`E_{p_0}\\|\\nabla\\log p_0\\|^2/\\alpha^2`, and the DSM target's to
:math:`\\alpha^2\\operatorname{tr}\\operatorname{Cov}[x_0]/\\sigma^4`. For a single Gaussian
:math:`p_0 = \\mathcal N(\\mu, s^2 I)` with :math:`\\alpha = 1` the ratio is exactly
:math:`\\operatorname{Var}_{TSM} / \\operatorname{Var}_{DSM} = \\sigma^4 / s^4`.

Any affine combination :math:`\\kappa\\,T_{TSM} + (1 - \\kappa)\\,T_{DSM}` of the two targets is unbiased too;
``kappa`` (a number or one per sample) selects it: ``kappa=1`` is TSM, ``kappa=0`` DSM, a level-dependent
``kappa`` interpolates (TSM at low noise, DSM at high noise).

Pieces: the targets (:func:`tsm_target`, :func:`dsm_target`, :func:`mixed_score_target`), the losses on a score
model ``score_model(x, sigma) -> (N, d)`` (:func:`target_score_matching_loss`, :func:`denoising_score_matching_loss`),
the Monte Carlo score estimator from posterior draws (:func:`target_score_estimate`, self-normalised importance
weights allowed), and the Tweedie conversions between a score model and the substrate's VE denoiser
``model(x, sigma)`` (:func:`score_from_denoiser`, :func:`denoiser_from_score`).

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> gm = mixture_on_circle(4, 2, radius=2.0, std=0.5)
    >>> g = torch.Generator().manual_seed(0)
    >>> x0, sigma = gm.sample(4096, generator=g), torch.full((4096,), 0.02, dtype=torch.float64)
    >>> exact = lambda x, s: gm.score(x, s)             # the exact noisy score as the model
    >>> tsm = target_score_matching_loss(exact, x0, gm.score(x0, 0.0), sigma, generator=g)
    >>> dsm = denoising_score_matching_loss(exact, x0, sigma, generator=g)
    >>> bool(tsm < 1e-2 < 1e3 < dsm)                    # irreducible parts: TSM tiny, DSM about 1/sigma^2
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from paperzoo.core.accepts import Function, Generator, OneOf, Real, Tensor, accepts

__all__ = ["tsm_target", "dsm_target", "mixed_score_target", "target_score_matching_loss",
           "denoising_score_matching_loss", "target_score_estimate", "score_from_denoiser", "denoiser_from_score"]

# a number, or one value per sample ``(N,)``
_ALPHA = OneOf(Real(gt=0), Tensor("N", positive_mass=True))
_SIGMA = OneOf(Real(gt=0), Tensor("N", positive_mass=True))
_KAPPA = OneOf(Real(ge=0, le=1), Tensor("N", nonnegative=True))


def _per_sample(value, name: str, like: torch.Tensor, *, positive: bool = False, at_most_one: bool = False):
    """A number or ``(N,)`` tensor, checked entrywise and shaped ``(N, 1, ...)`` to broadcast against ``like``."""
    if isinstance(value, torch.Tensor):
        if positive and bool((value <= 0).any()):
            raise ValueError(f"{name} must be > 0 entrywise, got a minimum of {float(value.min())!r}")
        if at_most_one and bool((value > 1).any()):
            raise ValueError(f"{name} must be <= 1 entrywise, got a maximum of {float(value.max())!r}")
        return value.view(-1, *([1] * (like.dim() - 1)))
    return float(value)


def _tsm(grad_log_p0, alpha):
    return grad_log_p0 / alpha


def _dsm(x, x0, sigma, alpha):
    return -(x - alpha * x0) / sigma**2


def _mixed(x, x0, grad_log_p0, sigma, alpha, kappa):
    if isinstance(kappa, float) and kappa == 1.0:
        return _tsm(grad_log_p0, alpha)
    if isinstance(kappa, float) and kappa == 0.0:
        return _dsm(x, x0, sigma, alpha)
    return kappa * _tsm(grad_log_p0, alpha) + (1 - kappa) * _dsm(x, x0, sigma, alpha)


def _example_targets(ctx):
    g = ctx.generator
    x0 = torch.randn(5, 2, generator=g, dtype=ctx.dtype)
    return {"x": x0 + 0.3 * torch.randn(5, 2, generator=g, dtype=ctx.dtype), "x0": x0, "grad_log_p0": -x0,
            "sigma": 0.3}


@accepts(grad_log_p0=Tensor("N", "d"), alpha=_ALPHA,
         example=lambda ctx: {"grad_log_p0": torch.randn(5, 2, generator=ctx.generator, dtype=ctx.dtype)})
def tsm_target(grad_log_p0: torch.Tensor, *, alpha: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The TSM regression target :math:`\\nabla\\log p_0(x_0)/\\alpha` (Target Score Identity), shape ``(N, d)``.

    Args:
        grad_log_p0: the clean score at the clean points, ``(N, d)``.
        alpha: the signal scale :math:`\\alpha > 0` of the state (1 in VE), a number or ``(N,)``.
    """
    return _tsm(grad_log_p0, _per_sample(alpha, "alpha", grad_log_p0, positive=True))


@accepts(x=Tensor("N", "d"), x0=Tensor("N", "d", degenerate=("coincident",)), sigma=_SIGMA, alpha=_ALPHA,
         example=lambda ctx: {k: v for k, v in _example_targets(ctx).items() if k != "grad_log_p0"})
def dsm_target(x: torch.Tensor, x0: torch.Tensor, sigma: float | torch.Tensor, *,
               alpha: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The DSM regression target :math:`-(x - \\alpha x_0)/\\sigma^2 = -\\varepsilon/\\sigma` (Denoising Score
    Identity, eq. (2), for Gaussian noise), shape ``(N, d)``.

    Args:
        x: noisy states :math:`\\alpha x_0 + \\sigma\\varepsilon`, ``(N, d)``; x0: their clean points ``(N, d)``.
        sigma: noise level :math:`\\sigma > 0`, a number or ``(N,)``; alpha: as in :func:`tsm_target`.
    """
    return _dsm(x, x0, _per_sample(sigma, "sigma", x, positive=True), _per_sample(alpha, "alpha", x, positive=True))


@accepts(x=Tensor("N", "d"), x0=Tensor("N", "d", degenerate=("coincident",)), grad_log_p0=Tensor("N", "d"),
         sigma=_SIGMA, alpha=_ALPHA, kappa=_KAPPA, example=lambda ctx: {**_example_targets(ctx), "kappa": 0.5})
def mixed_score_target(x: torch.Tensor, x0: torch.Tensor, grad_log_p0: torch.Tensor, sigma: float | torch.Tensor,
                       *, alpha: float | torch.Tensor = 1.0, kappa: float | torch.Tensor = 1.0) -> torch.Tensor:
    """:math:`\\kappa\\,\\nabla\\log p_0(x_0)/\\alpha - (1 - \\kappa)(x - \\alpha x_0)/\\sigma^2`, shape ``(N, d)``:
    unbiased for :math:`\\nabla\\log p_\\sigma(x)` at every ``kappa`` in ``[0, 1]`` (a number or ``(N,)``);
    ``kappa=1`` is :func:`tsm_target`, ``kappa=0`` :func:`dsm_target`."""
    return _mixed(x, x0, grad_log_p0, _per_sample(sigma, "sigma", x, positive=True),
                  _per_sample(alpha, "alpha", x, positive=True), _per_sample(kappa, "kappa", x, at_most_one=True))


def _score_matching_loss(score_model, x0, grad_log_p0, sigma, alpha, kappa, weighting, noise, generator):
    """Unchecked body of both losses (the training loop)."""
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    s = sigma[:, None]
    a = alpha[:, None] if isinstance(alpha, torch.Tensor) else alpha
    k = kappa[:, None] if isinstance(kappa, torch.Tensor) else kappa
    x = a * x0 + s * noise
    output = score_model(x, sigma)
    if not isinstance(output, torch.Tensor) or output.shape != x.shape:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"score_model must return a tensor of the states' shape {tuple(x.shape)}, got {got}")
    target = _mixed(x, x0, grad_log_p0, s, a, k) if grad_log_p0 is not None else _dsm(x, x0, s, a)
    per_sample = (output - target).square().mean(-1)
    if weighting is not None:
        w = weighting(sigma)
        if not isinstance(w, torch.Tensor) or w.shape != sigma.shape:
            raise ValueError(f"weighting must return a tensor of shape {tuple(sigma.shape)} (one weight per sample)")
        per_sample = w * per_sample
    return per_sample.mean()


def _check_levels(sigma, alpha, kappa):
    """Entrywise checks the declarations leave to the body; ``alpha``/``kappa`` come back as floats or ``(N,)``."""
    if bool((sigma <= 0).any()):
        raise ValueError(f"sigma must be > 0 entrywise, got a minimum of {float(sigma.min())!r}")
    return (_per_sample(alpha, "alpha", sigma, positive=True), _per_sample(kappa, "kappa", sigma, at_most_one=True))


def _example_loss(ctx):
    g = ctx.generator
    x0 = torch.randn(6, 2, generator=g, dtype=ctx.dtype)
    return {"score_model": lambda x, s: -x, "x0": x0, "grad_log_p0": -x0,
            "sigma": torch.rand(6, generator=g, dtype=ctx.dtype) + 0.1}


@accepts(score_model=Function(), x0=Tensor("N", "d", degenerate=("coincident",)), grad_log_p0=Tensor("N", "d"),
         sigma=Tensor("N", positive_mass=True), alpha=_ALPHA, kappa=_KAPPA, weighting=Function(optional=True),
         noise=Tensor("N", "d", optional=True), generator=Generator(), example=_example_loss)
def target_score_matching_loss(score_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                               grad_log_p0: torch.Tensor, sigma: torch.Tensor, *, alpha: float | torch.Tensor = 1.0,
                               kappa: float | torch.Tensor = 1.0,
                               weighting: Callable[[torch.Tensor], torch.Tensor] | None = None,
                               noise: torch.Tensor | None = None,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """The TSM loss :math:`\\frac1N\\sum_i w(\\sigma_i)\\frac1d\\|s_\\theta(x_i, \\sigma_i) - T_i\\|^2` at
    :math:`x_i = \\alpha x_{0,i} + \\sigma_i\\varepsilon_i`, with the target :math:`T_i` of
    :func:`mixed_score_target` (``kappa=1``: the pure TSM target :math:`\\nabla\\log p_0(x_{0,i})/\\alpha`).
    A 0-dim tensor with its graph.

    Args:
        score_model: :math:`s_\\theta(x, \\sigma) \\approx \\nabla\\log p_\\sigma(x)`, called with the states
            ``(N, d)`` and the levels ``sigma`` ``(N,)``; returns ``(N, d)``.
        x0: clean data ``(N, d)``; grad_log_p0: :math:`\\nabla\\log p_0` at ``x0``, ``(N, d)``.
        sigma: levels ``(N,)``, ``> 0``; alpha: signal scale, a number or ``(N,)`` (1: VE).
        kappa: weight of the TSM target in ``[0, 1]``, a number or ``(N,)``.
        weighting: ``w(sigma) -> (N,)`` (``None``: 1), as in :func:`~paperzoo.diffusion.training.denoising_loss`.
        noise: :math:`\\varepsilon` ``(N, d)`` (any additive noise when ``kappa=1``); drawn from ``generator`` when
            omitted.
    """
    alpha, kappa = _check_levels(sigma, alpha, kappa)
    return _score_matching_loss(score_model, x0, grad_log_p0, sigma, alpha, kappa, weighting, noise, generator)


@accepts(score_model=Function(), x0=Tensor("N", "d", degenerate=("coincident",)),
         sigma=Tensor("N", positive_mass=True), alpha=_ALPHA, weighting=Function(optional=True),
         noise=Tensor("N", "d", optional=True), generator=Generator(),
         example=lambda ctx: {k: v for k, v in _example_loss(ctx).items() if k != "grad_log_p0"})
def denoising_score_matching_loss(score_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                                  x0: torch.Tensor, sigma: torch.Tensor, *, alpha: float | torch.Tensor = 1.0,
                                  weighting: Callable[[torch.Tensor], torch.Tensor] | None = None,
                                  noise: torch.Tensor | None = None,
                                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The DSM loss on a score model (Vincent, 2011), the baseline TSM is compared with: as
    :func:`target_score_matching_loss` with the target :math:`-(x - \\alpha x_0)/\\sigma^2` (no clean score needed).

    With ``score_model = -network(x, sigma) / sigma`` it is the substrate's ``denoising_loss`` (eps prediction) with
    ``weighting = 1 / sigma**2``.
    """
    alpha, _ = _check_levels(sigma, alpha, 1.0)
    return _score_matching_loss(score_model, x0, None, sigma, alpha, 0.0, weighting, noise, generator)


def _example_estimate(ctx):
    g = ctx.generator
    x0 = torch.randn(7, 3, 2, generator=g, dtype=ctx.dtype)
    return {"x": torch.randn(3, 2, generator=g, dtype=ctx.dtype), "x0_samples": x0, "grad_log_p0_samples": -x0,
            "sigma": 0.5, "kappa": 0.5}


@accepts(x=Tensor("N", "d"), x0_samples=Tensor("M", "N", "d", degenerate=("coincident",)),
         grad_log_p0_samples=Tensor("M", "N", "d"), sigma=_SIGMA, alpha=_ALPHA, kappa=_KAPPA,
         log_weights=Tensor("M", "N", optional=True, degenerate=("constant",)), example=_example_estimate)
def target_score_estimate(x: torch.Tensor, x0_samples: torch.Tensor, grad_log_p0_samples: torch.Tensor,
                          sigma: float | torch.Tensor, *, alpha: float | torch.Tensor = 1.0,
                          kappa: float | torch.Tensor = 1.0,
                          log_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Monte Carlo estimate of :math:`\\nabla\\log p_\\sigma(x)` from draws of :math:`x_0 \\mid x`: the (weighted)
    average of :func:`mixed_score_target` over the draws. ``kappa=1`` is the Target Score Identity estimator,
    ``kappa=0`` the Denoising Score Identity one. Shape ``(N, d)``.

    Args:
        x: the states ``(N, d)``.
        x0_samples: ``M`` draws of the clean point per state, ``(M, N, d)`` (exact posterior draws, MCMC, or
            proposals to be reweighted).
        grad_log_p0_samples: :math:`\\nabla\\log p_0` at those draws, ``(M, N, d)``.
        sigma, alpha, kappa: as in :func:`mixed_score_target` (numbers or ``(N,)``).
        log_weights: unnormalised log importance weights of the draws ``(M, N)`` (self-normalised over ``M``);
            ``None``: equal weights. With proposals :math:`x_0 = x/\\alpha + (\\sigma/\\alpha) z` the weights are
            :math:`\\log p_0(x_0)` (up to a constant).
    """
    xb = x.unsqueeze(0).expand_as(x0_samples)
    s = _per_sample(sigma, "sigma", x, positive=True)
    a = _per_sample(alpha, "alpha", x, positive=True)
    k = _per_sample(kappa, "kappa", x, at_most_one=True)
    targets = _mixed(xb, x0_samples, grad_log_p0_samples, s, a, k)        # (M, N, d); (N, 1) broadcasts
    if log_weights is None:
        return targets.mean(0)
    w = torch.softmax(log_weights, dim=0)
    return (w[..., None] * targets).sum(0)


@accepts(model=Function(), example=lambda ctx: {"model": lambda x, sigma: 0.5 * x}, output="any")  # a function
def score_from_denoiser(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                        ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The score model :math:`s(x, \\sigma) = (D(x, \\sigma) - x)/\\sigma^2` of a VE denoiser ``model(x, sigma)``
    (Tweedie's formula); levels must be > 0, a number or ``(N,)``."""

    def score(x: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        s = s.view(-1, *([1] * (x.dim() - 1))) if s.dim() == 1 else s
        return (model(x, sigma) - x) / s.square()

    return score


@accepts(score_model=Function(), example=lambda ctx: {"score_model": lambda x, sigma: -x}, output="any")
def denoiser_from_score(score_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                        ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The VE denoiser :math:`D(x, \\sigma) = x + \\sigma^2 s(x, \\sigma)` of a score model (Tweedie), for the
    substrate's samplers: ``sample_heun(denoiser_from_score(net), x, sigmas)``."""

    def model(x: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        s = s.view(-1, *([1] * (x.dim() - 1))) if s.dim() == 1 else s
        return x + s.square() * score_model(x, sigma)

    return model
