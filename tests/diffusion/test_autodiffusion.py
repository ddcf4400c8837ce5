"""AutoDiffusion's time-step search: its operators keep valid candidates (hypothesis), the search is seeded and
reproducible, finds the known optimum of a toy fitness, respects its budget, and its errors are pinned."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.data.gaussians import gaussian_w2
from paperzoo.diffusion.autodiffusion import (crossover_steps, frechet_distance, mutate_steps, random_steps,
                                              schedule_fitness, search_timesteps, steps_to_sigmas)
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.samplers import sample_ddim
from paperzoo.diffusion.schedules import alphas_cumprod_from_betas, betas_linear, sigmas_from_alphas_cumprod

D = torch.float64
LEVELS = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_linear(1000)))


def _valid(steps, K, T):
    return (len(steps) == K and all(isinstance(s, int) for s in steps) and list(steps) == sorted(set(steps))
            and 0 <= steps[0] and steps[-1] < T)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(6, 40), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_operators_keep_valid_candidates(K, T, p, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = random_steps(K, T, generator=g), random_steps(K, T, generator=g)
    assert _valid(a, K, T) and _valid(b, K, T)
    assert _valid(mutate_steps(a, T, p, generator=g), K, T)
    child = crossover_steps(a, b, generator=g)
    assert _valid(child, K, T) and set(child) <= set(a) | set(b)
    sig = steps_to_sigmas(LEVELS[:T], child)
    assert sig.shape == (K + 1,) and sig[-1] == 0 and bool((sig[1:] < sig[:-1]).all())


def test_mutation_extremes_and_crossover_of_equal_parents():
    g = torch.Generator().manual_seed(0)
    assert mutate_steps((1, 5, 9), 20, 0.0, generator=g) == (1, 5, 9)
    full = mutate_steps((1, 5, 9), 20, 1.0, generator=g)
    assert not set(full) & {1, 5, 9}  # every step replaced, by a step the parent did not use
    assert mutate_steps((0, 1, 2), 3, 1.0, generator=g) == (0, 1, 2)  # nothing unused: nothing to mutate to
    assert crossover_steps((2, 4, 6), (2, 4, 6), generator=g) == (2, 4, 6)
    # Sorted parents offering one step at two positions: the child still has three distinct parental steps.
    for seed in range(20):
        child = crossover_steps((1, 5), (5, 9), generator=torch.Generator().manual_seed(seed))
        assert len(set(child)) == 2 and set(child) <= {1, 5, 9}


def _toy(target):
    """A fitness whose unique optimum is the schedule of ``target`` steps (distance in step index)."""
    def fitness(sigmas):
        idx = torch.searchsorted(LEVELS[:64], sigmas[:-1].flip(0).contiguous())
        return float((idx - torch.tensor(target)).abs().sum())
    return fitness


def test_search_finds_the_known_optimum_and_is_reproducible():
    target = (3, 17, 40, 58)
    fit = _toy(target)
    runs = [search_timesteps(fit, LEVELS[:64], 4, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    res = runs[0]
    assert res.steps == target and res.score == 0.0
    assert torch.equal(res.sigmas, steps_to_sigmas(LEVELS[:64], target))
    assert runs[1].steps == res.steps and runs[1].best_per_iteration == res.best_per_iteration
    assert res.evaluations <= 50 * 10 and len(res.best_per_iteration) == 10
    assert all(b <= a for a, b in zip(res.best_per_iteration, res.best_per_iteration[1:]))
    other = search_timesteps(fit, LEVELS[:64], 4, population=10, top_k=3, mutations=4, crossovers=3, iterations=3,
                             generator=torch.Generator().manual_seed(6))
    assert other.evaluations <= 30


def test_search_counts_each_candidate_once_and_stops_on_a_small_space():
    calls = []

    def fit(sigmas):
        calls.append(tuple(sigmas.tolist()))
        return float(sigmas[0])

    res = search_timesteps(fit, LEVELS[:6], 2, population=50, iterations=4, generator=torch.Generator().manual_seed(0))
    assert len(calls) == len(set(calls)) == res.evaluations == math.comb(6, 2)
    assert res.steps == (0, 1)


def test_uniform_init_is_evaluated_and_never_beaten_by_the_result():
    seen = {}

    def fit(sigmas):
        seen[tuple(sigmas.tolist())] = v = float(torch.rand((), generator=torch.Generator().manual_seed(len(seen))))
        return v

    res = search_timesteps(fit, LEVELS, 4, population=8, top_k=2, mutations=3, crossovers=2, iterations=2,
                           generator=torch.Generator().manual_seed(1))
    uniform = tuple(steps_to_sigmas(LEVELS, (0, 250, 500, 750)).tolist())
    assert uniform in seen and res.score <= seen[uniform] and res.score == min(seen.values())


def test_frechet_distance_is_gaussian_w2_of_the_fits():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 3, generator=g, dtype=D), 2 + 0.5 * torch.randn(200, 3, generator=g, dtype=D)
    want = gaussian_w2(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))
    assert torch.allclose(frechet_distance(x, y), want)
    assert float(frechet_distance(x, x)) < 1e-10


def test_schedule_fitness_on_the_mixture():
    gm = mixture_on_circle(4, 2, radius=3.0, std=0.3)
    g = torch.Generator().manual_seed(0)
    z, ref = torch.randn(200, 2, generator=g, dtype=D), gm.sample(200, generator=g)
    good, bad = steps_to_sigmas(LEVELS, (5, 150, 400, 700, 999)), steps_to_sigmas(LEVELS, (600, 700, 800, 999))
    sw = schedule_fitness(gm.denoise, z, ref, generator=torch.Generator().manual_seed(1))
    assert sw(good) < 0.5 * sw(bad)  # stopping at sigma 0.6 collapses the modes to their posterior means
    assert sw(good) == sw(good)  # fixed noise and directions: a deterministic fitness
    fd = schedule_fitness(gm.denoise, z, ref, metric="frechet", sampler=sample_ddim)
    assert 0 <= fd(good) < fd(bad)
    assert schedule_fitness(lambda x, s: x * float("nan"), z, ref)(good) == math.inf


def test_errors():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"n_steps must be <= n_levels \(3\), got 4"):
        random_steps(4, 3)
    with pytest.raises(ValueError, match=r"steps must be strictly increasing step indices, got \[3, 1\]"):
        mutate_steps([3, 1], 10)
    with pytest.raises(ValueError, match=r"steps must index levels below n_levels \(10\), got 12"):
        mutate_steps([1, 12], 10)
    with pytest.raises(ValueError, match=r"p must be <= 1"):
        mutate_steps([1, 2], 10, 1.5)
    with pytest.raises(ValueError, match=r"b must have as many steps as a \(2\), got 3"):
        crossover_steps([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="levels must be strictly increasing"):
        steps_to_sigmas(LEVELS.flip(0), [0, 1])
    with pytest.raises(ValueError, match=r"levels must be > 0"):
        search_timesteps(lambda s: 0.0, torch.tensor([0.0, 1.0], dtype=D), 1)
    with pytest.raises(ValueError, match=r"n_steps must be <= the number of levels \(5\), got 6"):
        search_timesteps(lambda s: 0.0, LEVELS[:5], 6)
    with pytest.raises(ValueError, match=r"top_k must be <= population \(4\), got 5"):
        search_timesteps(lambda s: 0.0, LEVELS, 2, population=4, top_k=5)
    with pytest.raises(ValueError, match=r"mutations \+ crossovers must be <= population \(10\), got 12"):
        search_timesteps(lambda s: 0.0, LEVELS, 2, population=10, top_k=2, mutations=6, crossovers=6)
    with pytest.raises(ValueError, match="init must be one of"):
        search_timesteps(lambda s: 0.0, LEVELS, 2, init="leading")
    with pytest.raises(TypeError, match="fitness must be callable"):
        search_timesteps(None, LEVELS, 2)
    with pytest.raises(ValueError, match="x must have at least 2 rows"):
        frechet_distance(torch.zeros(1, 2, dtype=D), torch.zeros(3, 2, dtype=D))
    with pytest.raises(ValueError, match="metric must be one of"):
        schedule_fitness(lambda x, s: x, torch.zeros(3, 2, dtype=D), torch.zeros(3, 2, dtype=D), metric="fid")
    del g
