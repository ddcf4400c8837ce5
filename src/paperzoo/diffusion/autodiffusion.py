"""AutoDiffusion's time-step search: a training-free evolutionary search for the sampling steps of a diffusion model.

References: AutoDiffusion: Training-Free Optimization of Time Steps and Architectures for Automated Diffusion Model
Acceleration, 2023 (Li, Li, Zheng, Wu, Xiao, Wang, Zheng, Pan, Chao, Ji; ICCV 2023).

A few-step sampler evaluates the model at :math:`K` noise levels picked from the :math:`T` levels the model was
trained on. Instead of a fixed rule (uniform in :math:`t`, Karras, log-linear) the paper searches the set of
:math:`K` steps that minimises a sample-quality score (FID against real data) without touching the model.

**Search space.** A candidate is a set of :math:`K` distinct step indices
:math:`0 \\le \\tau_1 < \\dots < \\tau_K \\le T - 1` into ``levels`` (strictly increasing VE levels
:math:`\\sigma_0 < \\dots < \\sigma_{T-1}`, e.g. :func:`~paperzoo.diffusion.schedules.sigmas_from_alphas_cumprod`
of a DDPM schedule); its sampling schedule is :math:`(\\sigma_{\\tau_K}, \\dots, \\sigma_{\\tau_1}, 0)`
(:func:`steps_to_sigmas`), which any ``sample_<name>(model, x, sigmas)`` of :mod:`~paperzoo.diffusion.samplers`
takes, starting from noise at :math:`\\sigma_{\\tau_K}`.

**Evolutionary search** (:func:`search_timesteps`; the official ``EvolutionSearcher``). With population size
:math:`P`, ``top_k`` :math:`k`, ``mutations`` :math:`M`, ``crossovers`` :math:`C`, ``iterations`` :math:`N`,
mutation probability :math:`p`, fitness :math:`F` (lower is better):

1. initial population: the uniform (DDIM "leading") steps, :math:`\\lfloor P/2 \\rfloor` random candidates
   (:func:`random_steps`) and mutations of the uniform steps at probability ``p_mutate_init`` (0.1) up to
   :math:`P` (``init="random"``: :math:`P` random candidates);
2. repeat :math:`N` times: keep the :math:`k` best candidates evaluated so far (elitist); unless this is the last
   iteration, the next population is :math:`M` mutations of random top-:math:`k` parents (:func:`mutate_steps`:
   each step replaced with probability :math:`p` by a step the parent does not use), :math:`C` uniform crossovers
   of two random top-:math:`k` parents (:func:`crossover_steps`), and random candidates up to :math:`P`.

A candidate already evaluated is never evaluated again (nor counted); each operator gets ten tries per requested
child. The search makes at most :math:`P + (N - 1) P` fitness evaluations (500 at the defaults) and returns the best
candidate seen. The architecture (layer-skipping) stage of the paper is not implemented: it needs a network with
skippable blocks, and paperzoo's models at this scale are exact denoisers.

**Fitness.** :func:`schedule_fitness` turns a sampler, fixed unit noise and reference draws into :math:`F`: the
sliced 2-Wasserstein distance (:func:`~paperzoo.transport.sliced_wasserstein`, fixed directions) or the Fréchet
distance (:func:`frechet_distance`, FID's formula on raw coordinates) between the samples and the reference.

Paper / official-code defaults (``search_ea.py`` of lilijiangg/AutoDiffusion @ 1292082): :math:`P = 50`,
:math:`k = 10`, :math:`M = 25`, :math:`C = 15`, :math:`N = 10`, :math:`p = 0.1` (the ImageNet-64 script uses
0.25), uniform initialisation.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> from paperzoo.diffusion.schedules import alphas_cumprod_from_betas, betas_linear, sigmas_from_alphas_cumprod
    >>> gm = mixture_on_circle(4, 2, radius=3.0, std=0.3)
    >>> g = torch.Generator().manual_seed(0)
    >>> levels = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_linear(1000)))
    >>> fit = schedule_fitness(gm.denoise, torch.randn(256, 2, generator=g, dtype=torch.float64),
    ...                        gm.sample(256, generator=g), generator=g)
    >>> res = search_timesteps(fit, levels, 3, population=10, top_k=3, mutations=4, crossovers=3, iterations=3,
    ...                        generator=g)
    >>> res.sigmas.shape, bool(res.score <= fit(steps_to_sigmas(levels, (0, 333, 666))))
    (torch.Size([4]), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Function, Generator, Int, Ints, Real, Tensor, accepts
from paperzoo.data.gaussians import gaussian_w2
from paperzoo.diffusion.schedules import append_zero, discrete_timesteps

__all__ = ["SearchResult", "search_timesteps", "random_steps", "mutate_steps", "crossover_steps", "steps_to_sigmas",
           "schedule_fitness", "frechet_distance"]

Steps = tuple[int, ...]


class SearchResult(NamedTuple):
    """What :func:`search_timesteps` found.

    Attributes:
        sigmas: the best schedule, decreasing, with a final 0: shape ``(K + 1,)``.
        steps: its step indices into ``levels``, ascending.
        score: its fitness.
        evaluations: how many distinct candidates were evaluated.
        best_per_iteration: the best fitness after each iteration (nonincreasing).
    """

    sigmas: torch.Tensor
    steps: Steps
    score: float
    evaluations: int
    best_per_iteration: tuple[float, ...]


# -- operators (unchecked kernels; the public versions validate and delegate) --------------------------------------
def _randint(high: int, generator) -> int:
    return int(torch.randint(high, (), generator=generator))


def _random(n_steps: int, n_levels: int, generator) -> Steps:
    return tuple(sorted(torch.randperm(n_levels, generator=generator)[:n_steps].tolist()))


def _mutate(steps: Steps, n_levels: int, p: float, generator) -> Steps:
    used = set(steps)
    free = [t for t in range(n_levels) if t not in used]  # a replaced step never comes back, as in the official
    out = list(steps)
    draws = torch.rand(len(out), generator=generator).tolist()
    for i, u in enumerate(draws):
        if not free:
            break
        if u < p:
            out[i] = free.pop(_randint(len(free), generator))
    return tuple(sorted(out))


def _crossover(a: Steps, b: Steps, generator) -> Steps:
    pick = (torch.rand(len(a), generator=generator) < 0.5).tolist()
    child = [x if take_a else y for x, y, take_a in zip(a, b, pick)]
    other = [y if take_a else x for x, y, take_a in zip(a, b, pick)]
    # Sorted parents can hand the same step to two positions: take the other parent's step there, and failing that
    # an unused step of either parent (they hold at least K distinct steps, so there are enough).
    for i in range(1, len(child)):
        if child[i] in child[:i]:
            child[i] = other[i]
    if len(set(child)) < len(child):
        pool = [t for t in sorted(set(a) | set(b)) if t not in child]
        for i in range(1, len(child)):
            if child[i] in child[:i]:
                child[i] = pool.pop(_randint(len(pool), generator))
    return tuple(sorted(child))


def _check_steps(name: str, steps, n_levels: int | None = None) -> Steps:
    steps = tuple(int(s) for s in steps)
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"{name} must be strictly increasing step indices, got {list(steps)}")
    if n_levels is not None and steps and steps[-1] >= n_levels:
        raise ValueError(f"{name} must index levels below n_levels ({n_levels}), got {steps[-1]}")
    return steps


def _check_levels(levels: torch.Tensor) -> None:
    if bool((levels <= 0).any()):
        raise ValueError("levels must be > 0 (the VE levels of the training steps)")
    if bool((levels[1:] <= levels[:-1]).any()):
        raise ValueError("levels must be strictly increasing (level of training step t at index t)")


# -- public operators --------------------------------------------------------------------------------------------
@accepts(n_steps=Int(ge=1), n_levels=Int(ge=1), generator=Generator(),
         example=lambda ctx: {"n_steps": 3, "n_levels": 10})
def random_steps(n_steps: int, n_levels: int, *, generator: torch.Generator | None = None) -> Steps:
    """``n_steps`` distinct step indices drawn uniformly from ``0..n_levels - 1``, ascending (a random candidate)."""
    if n_steps > n_levels:
        raise ValueError(f"n_steps must be <= n_levels ({n_levels}), got {n_steps}")
    return _random(n_steps, n_levels, generator)


@accepts(steps=Ints(ge=0, min_length=1), n_levels=Int(ge=1), p=Real(ge=0, le=1), generator=Generator(),
         example=lambda ctx: {"steps": [1, 4, 7], "n_levels": 10, "p": 0.5})
def mutate_steps(steps, n_levels: int, p: float = 0.1, *, generator: torch.Generator | None = None) -> Steps:
    """The paper's mutation: each step of ``steps`` (ascending indices) is replaced with probability ``p`` by a
    step index in ``0..n_levels - 1`` the candidate does not use (drawn without replacement); returns the child,
    ascending, with as many distinct steps."""
    steps = _check_steps("steps", steps, n_levels)
    return _mutate(steps, n_levels, float(p), generator)


@accepts(a=Ints(ge=0, min_length=1), b=Ints(ge=0, min_length=1), generator=Generator(),
         example=lambda ctx: {"a": [0, 3, 6], "b": [2, 3, 9]})
def crossover_steps(a, b, *, generator: torch.Generator | None = None) -> Steps:
    """The paper's uniform crossover of two candidates (ascending indices of one length): position ``i`` of the
    child takes ``a[i]`` or ``b[i]`` with probability 1/2 each; a step taken twice is replaced by the other
    parent's step at that position, or else by an unused step of either parent. Returns the child, ascending."""
    a, b = _check_steps("a", a), _check_steps("b", b)
    if len(a) != len(b):
        raise ValueError(f"b must have as many steps as a ({len(a)}), got {len(b)}")
    return _crossover(a, b, generator)


@accepts(levels=Tensor("T"), steps=Ints(ge=0, min_length=1),
         example=lambda ctx: {"levels": torch.logspace(-2, 2, 10, dtype=ctx.dtype), "steps": [0, 4, 9]})
def steps_to_sigmas(levels: torch.Tensor, steps) -> torch.Tensor:
    """The sampling schedule of a candidate: ``levels[steps]`` from the largest down, then 0, shape ``(K + 1,)``
    (``levels`` ``(T,)`` strictly increasing and positive, ``steps`` ascending indices)."""
    _check_levels(levels)
    steps = _check_steps("steps", steps, levels.shape[0])
    return _to_sigmas(levels, steps)


def _to_sigmas(levels: torch.Tensor, steps: Steps) -> torch.Tensor:
    return append_zero(levels[list(steps)].flip(0))


# -- fitness -----------------------------------------------------------------------------------------------------
@accepts(x=Tensor("n", "d"), y=Tensor("m", "d"))
def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Fréchet distance of FID on raw coordinates: :math:`\\|m_x - m_y\\|^2 + \\operatorname{tr}(S_x + S_y -
    2 (S_x^{1/2} S_y S_x^{1/2})^{1/2})` with the sample means and (unbiased) covariances of ``x`` ``(n, d)`` and
    ``y`` ``(m, d)``, ``n, m >= 2``; a 0-dim tensor (the squared W2 distance of the two Gaussian fits)."""
    for name, z in (("x", x), ("y", y)):
        if z.shape[0] < 2:
            raise ValueError(f"{name} must have at least 2 rows for a covariance, got {z.shape[0]}")
    return _frechet(x, y)


def _frechet(x, y):
    def fit(z):
        return z.mean(0), torch.atleast_2d(torch.cov(z.T))
    return gaussian_w2(*fit(x), *fit(y)).clamp_min(0)


@accepts(model=Function(), noise=Tensor("n", "d"), reference=Tensor("m", "d"), sampler=Function(optional=True),
         metric=Choice("sliced_w2", "frechet"), n_projections=Int(ge=1), generator=Generator(), output="any",
         example=lambda ctx: _example_fitness(ctx))
def schedule_fitness(model: Callable, noise: torch.Tensor, reference: torch.Tensor, *,
                     sampler: Callable | None = None, metric: str = "sliced_w2", n_projections: int = 64,
                     generator: torch.Generator | None = None) -> Callable[[torch.Tensor], float]:
    """A fitness for :func:`search_timesteps`: ``fitness(sigmas)`` samples ``sampler(model, sigmas[0] * noise,
    sigmas)`` (default DDIM, :func:`~paperzoo.diffusion.samplers.sample_ddim`) and returns its distance to
    ``reference`` (lower is better; ``inf`` for a non-finite sample).

    Args:
        model: the denoiser ``model(x, sigma)``.
        noise: ``(n, d)`` unit noise, fixed across candidates (common random numbers).
        reference: ``(m, d)`` real draws (the validation set).
        sampler: ``sample_<name>(model, x, sigmas)``.
        metric: ``"sliced_w2"``: :math:`SW_2` (the square root of
            :func:`~paperzoo.transport.sliced_wasserstein`) over ``n_projections`` directions drawn here once from
            ``generator``; ``"frechet"``: :func:`frechet_distance` (the paper's FID, without the Inception
            features).
    """
    from paperzoo.diffusion.samplers import sample_ddim
    from paperzoo.transport.sliced import _quantile_wasserstein, random_projections

    if metric == "frechet" and min(noise.shape[0], reference.shape[0]) < 2:
        raise ValueError("noise and reference must have at least 2 rows for metric='frechet'")
    sample = sampler if sampler is not None else sample_ddim
    theta = random_projections(n_projections, noise.shape[1], dtype=noise.dtype, generator=generator)
    ref_proj = torch.sort(theta @ reference.T, dim=1).values  # sorted once: candidates only sort their own

    def fitness(sigmas: torch.Tensor) -> float:
        x = sample(model, sigmas[0] * noise, sigmas)
        if not bool(torch.isfinite(x).all()):
            return math.inf
        if metric == "frechet":
            return float(_frechet(x, reference))
        proj = theta @ x.T
        if proj.shape[1] == ref_proj.shape[1]:
            sw2 = (torch.sort(proj, dim=1).values - ref_proj).square().mean()
        else:
            sw2 = _quantile_wasserstein(proj, ref_proj, None, None, 2.0).mean()
        return float(sw2.clamp_min(0).sqrt())

    return fitness


def _example_fitness(ctx) -> dict:
    from paperzoo.diffusion.mixture import mixture_on_circle

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {"model": gm.denoise, "noise": torch.randn(8, 2, generator=ctx.generator, dtype=ctx.dtype),
            "reference": gm.sample(8, generator=ctx.generator), "n_projections": 4}


# -- the search --------------------------------------------------------------------------------------------------
def _example_search(ctx) -> dict:
    levels = torch.logspace(-2, 2, 12, dtype=ctx.dtype)
    target = torch.tensor([2.0, 0.0, -2.0], dtype=ctx.dtype)
    return {"fitness": lambda s: float((s[:-1].log() - target).square().sum()), "levels": levels, "n_steps": 3,
            "population": 6, "top_k": 2, "mutations": 2, "crossovers": 2, "iterations": 2}


@accepts(fitness=Function(), levels=Tensor("T"), n_steps=Int(ge=1), population=Int(ge=1), top_k=Int(ge=1),
         mutations=Int(ge=0), crossovers=Int(ge=0), iterations=Int(ge=1), p_mutate=Real(ge=0, le=1),
         p_mutate_init=Real(ge=0, le=1), init=Choice("uniform", "random"), generator=Generator(),
         example=_example_search)
def search_timesteps(fitness: Callable[[torch.Tensor], float], levels: torch.Tensor, n_steps: int, *,
                     population: int = 50, top_k: int = 10, mutations: int = 25, crossovers: int = 15,
                     iterations: int = 10, p_mutate: float = 0.1, p_mutate_init: float = 0.1,
                     init: str = "uniform", generator: torch.Generator | None = None) -> SearchResult:
    """AutoDiffusion's evolutionary search for ``n_steps`` sampling steps (module docstring).

    Args:
        fitness: ``fitness(sigmas) -> float``, lower is better, for a schedule ``(n_steps + 1,)`` from
            :func:`steps_to_sigmas` (e.g. :func:`schedule_fitness`); NaN counts as ``inf``.
        levels: ``(T,)`` strictly increasing positive VE levels of the training steps (the search space).
        n_steps: :math:`K`, the number of levels of the schedule (model evaluations for DDIM).
        population, top_k, mutations, crossovers, iterations: :math:`P, k, M, C, N`.
        p_mutate: :math:`p`, the per-step mutation probability; ``p_mutate_init`` the one that seeds the initial
            population from the uniform steps.
        init: ``"uniform"`` (the official default) or ``"random"``.
        generator: the generator of every random choice (a seeded one makes the search reproducible).

    Returns:
        :class:`SearchResult`.
    """
    _check_levels(levels)
    T = levels.shape[0]
    if n_steps > T:
        raise ValueError(f"n_steps must be <= the number of levels ({T}), got {n_steps}")
    if top_k > population:
        raise ValueError(f"top_k must be <= population ({population}), got {top_k}")
    if mutations + crossovers > population:
        raise ValueError(f"mutations + crossovers must be <= population ({population}), got "
                         f"{mutations + crossovers}")
    space = math.comb(T, n_steps)
    scores: dict[Steps, float] = {}

    def evaluate(candidate: Steps) -> bool:
        """Score a new candidate; False when it was seen before (then it is neither scored nor counted)."""
        if candidate in scores:
            return False
        value = float(fitness(_to_sigmas(levels, candidate)))
        scores[candidate] = math.inf if math.isnan(value) else value
        return True

    def produce(make: Callable[[], Steps], count: int, out: list[Steps]) -> None:
        target = len(out) + count
        for _ in range(10 * count):
            if len(out) >= target or len(scores) >= space:
                return
            candidate = make()
            if evaluate(candidate):
                out.append(candidate)

    def fill_random(out: list[Steps]) -> None:
        produce(lambda: _random(n_steps, T, generator), population - len(out), out)

    current: list[Steps] = []
    if init == "uniform":
        uniform = tuple(sorted(discrete_timesteps(T, n_steps, "leading").tolist()))
        evaluate(uniform)
        current.append(uniform)
        produce(lambda: _random(n_steps, T, generator), population // 2, current)
        produce(lambda: _mutate(uniform, T, p_mutate_init, generator), population - len(current), current)
    fill_random(current)

    elite: list[Steps] = []
    history = []
    for iteration in range(iterations):
        elite = sorted(set(elite) | set(current), key=lambda c: (scores[c], c))[:top_k]
        history.append(scores[elite[0]])
        if iteration + 1 == iterations:
            break
        current = []
        produce(lambda: _mutate(elite[_randint(len(elite), generator)], T, p_mutate, generator), mutations, current)
        produce(lambda: _crossover(elite[_randint(len(elite), generator)], elite[_randint(len(elite), generator)],
                                   generator), crossovers, current)
        fill_random(current)
    best = elite[0]
    return SearchResult(_to_sigmas(levels, best), best, scores[best], len(scores), tuple(history))
