"""Minority guidance: the L2 minority score in closed form, its quantile classes, exact classifier guidance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.guidance import class_conditional
from paperzoo.diffusion.minority_guidance import (MinorityClassifier, classifier_guidance, minority_guidance,
                                                  minority_score, minority_score_classes,
                                                  mixture_class_log_posterior, train_minority_classifier)
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle

D = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _imbalanced():
    return mixture_on_circle(6, 2, radius=3.0, std=0.4, weights=torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.03]))


def test_gaussian_minority_score_matches_its_closed_form():
    # One Gaussian: D(x) = mu + A (x - mu), A = S (S + s^2 I)^-1, so
    # E||x0 - D(x0 + s eps)||^2 = ||(I - A)(x0 - mu)||^2 + s^2 tr(A^T A).
    mu = torch.tensor([[0.5, -1.0]], dtype=D)
    cov = torch.tensor([[[1.0, 0.3], [0.3, 0.5]]], dtype=D)
    gm = GaussianMixture(mu, cov)
    x0 = torch.tensor([[0.0, 0.0], [2.0, 1.0], [0.5, -1.0]], dtype=D)
    sigma = 0.8
    A = cov[0] @ torch.linalg.inv(cov[0] + sigma**2 * torch.eye(2, dtype=D))
    exact = ((x0 - mu) @ (torch.eye(2, dtype=D) - A).T).square().sum(-1) + sigma**2 * (A.T @ A).trace()
    mc = minority_score(gm.denoise, x0, sigma, n_iter=40_000, generator=_gen(0))
    torch.testing.assert_close(mc, exact, rtol=0.02, atol=0.0)


def _quadrature_score(gm, x0, sigma, n=40):
    """E over eps ~ N(0, I_2) by a tensor Gauss-Hermite rule (exact to quadrature error)."""
    t, w = np.polynomial.hermite_e.hermegauss(n)
    t, w = torch.tensor(t, dtype=D), torch.tensor(w / w.sum(), dtype=D)
    eps = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    weight = (w[:, None] * w[None, :]).reshape(-1)
    x = x0[:, None, :] + sigma * eps
    err = (x0[:, None, :] - gm.denoise(x, sigma)).square().sum(-1)
    return (err * weight).sum(-1)


def test_rare_components_score_higher_in_expectation_and_monte_carlo_agrees():
    gm = _imbalanced()
    exact = _quadrature_score(gm, gm.means, 1.0)
    assert float(exact[5]) > 3 * float(exact[:5].max())  # the 3%-weight component's mean is far more unique
    mc = minority_score(gm.denoise, gm.means.clone(), 1.0, n_iter=20_000, generator=_gen(1))
    torch.testing.assert_close(mc, exact, rtol=0.05, atol=0.0)
    # over draws: the rare component's samples have the higher mean score
    x, k = gm.component_samples(3000, generator=_gen(2))
    s = minority_score(gm.denoise, x, 1.0, generator=_gen(3))
    assert float(s[k == 5].mean()) > 3 * float(s[k != 5].mean())


def test_on_a_balanced_symmetric_mixture_the_means_score_alike():
    gm = mixture_on_circle(6, 2, radius=3.0, std=0.4)
    exact = _quadrature_score(gm, gm.means, 1.0)
    # equal up to the tensor Gauss-Hermite rule's lack of rotational symmetry (~1e-6 relative)
    torch.testing.assert_close(exact, exact.mean().expand(6), rtol=1e-5, atol=0.0)


def _official_labels(ms, n_classes):
    """The official construct_ms_dataset.py labelling loop, re-expressed (soobin-um/minority-guidance @ e7e69bd)."""
    q = torch.stack([torch.quantile(ms, (i + 1) / n_classes) for i in range(n_classes)])
    out = torch.zeros_like(ms, dtype=torch.long)
    for i in range(len(ms)):
        for j in range(n_classes):
            if (j == 0 and ms[i] <= q[j]) or (j > 0 and q[j - 1] < ms[i] <= q[j]):
                out[i] = j
    return out, q


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=40), st.integers(1, 7))
def test_quantile_classes_match_the_official_labelling(values, n_classes):
    ms = torch.tensor(values, dtype=D)
    labels, q = minority_score_classes(ms, n_classes)
    ref_labels, ref_q = _official_labels(ms, n_classes)
    torch.testing.assert_close(q, ref_q)
    assert labels.tolist() == ref_labels.tolist()
    assert labels.dtype == torch.long and int(labels.max()) <= n_classes - 1


def test_quantile_classes_are_balanced_and_ordered():
    s = torch.rand(1000, generator=_gen(4), dtype=D)
    labels, q = minority_score_classes(s, 10)
    assert torch.bincount(labels, minlength=10).tolist() == [100] * 10
    assert bool((s[labels == 9].min() > s[labels == 8].max()))
    assert float(q[-1]) == float(s.max())


def test_zero_scale_is_the_plain_denoiser_and_the_classifier_is_not_called():
    gm = _imbalanced()
    calls = []

    def clf(x, s):
        calls.append(1)
        return torch.zeros(x.shape[0], 3, dtype=x.dtype)

    x = torch.randn(5, 2, generator=_gen(5), dtype=D)
    sigma = torch.full((5,), 0.7, dtype=D)
    assert torch.equal(minority_guidance(gm.denoise, clf, 2, 0.0)(x, sigma), gm.denoise(x, sigma))
    assert not calls


def test_exact_guidance_matches_the_closed_form_and_w1_is_the_class_conditional():
    gm = _imbalanced()
    classes = [0, 0, 0, 0, 0, 1]
    c0, c1 = class_conditional(gm, classes)
    log_post = mixture_class_log_posterior(gm, classes)
    x = 2 * torch.randn(8, 2, generator=_gen(6), dtype=D)
    sigma = torch.linspace(0.1, 3.0, 8, dtype=D)
    # log p(c | x) is the log of the class's summed responsibilities
    r = gm.responsibilities(x, sigma)
    torch.testing.assert_close(log_post(x, sigma).exp(), torch.stack([r[:, :5].sum(-1), r[:, 5]], -1))
    # its autograd gradient is grad log p_c - grad log p, so D_w = D + sigma^2 w (s_c - s)
    for w in (0.5, 3.5):
        guided = minority_guidance(gm.denoise, log_post, 1, w)(x, sigma)
        closed = gm.denoise(x, sigma) + sigma[:, None] ** 2 * w * (c1.score(x, sigma) - gm.score(x, sigma))
        torch.testing.assert_close(guided, closed, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(minority_guidance(gm.denoise, log_post, 1, 1.0)(x, sigma), c1.denoise(x, sigma),
                               rtol=1e-9, atol=1e-9)


def test_classifier_guidance_takes_a_per_sample_schedule():
    gm = _imbalanced()
    log_post = mixture_class_log_posterior(gm, [0, 0, 0, 0, 0, 1])
    x = torch.randn(4, 2, generator=_gen(7), dtype=D)
    sigma = torch.tensor([0.2, 0.5, 1.0, 2.0], dtype=D)
    guided = classifier_guidance(gm.denoise, lambda x, s: log_post(x, s)[:, 1],
                                 lambda s: torch.where(s > 0.6, 2.0, 0.0))(x, sigma)
    constant = classifier_guidance(gm.denoise, lambda x, s: log_post(x, s)[:, 1], 2.0)(x, sigma)
    torch.testing.assert_close(guided[:2], gm.denoise(x[:2], sigma[:2]))
    torch.testing.assert_close(guided[2:], constant[2:])


def test_guidance_inside_no_grad_and_it_does_not_touch_the_classifier_grads():
    net = MinorityClassifier(2, 3, 16, 1).to(D)
    x = torch.randn(4, 2, generator=_gen(8), dtype=D)
    with torch.no_grad():
        out = minority_guidance(lambda x, s: 0 * x, net, 2, 1.0)(x, torch.ones(4, dtype=D))
    assert out.shape == (4, 2) and not out.requires_grad
    assert all(p.grad is None for p in net.parameters())


def test_the_trainer_learns_a_noise_conditional_classifier():
    torch.manual_seed(0)
    gm = mixture_on_circle(6, 2, radius=3.0, std=0.4)
    x0, k = gm.component_samples(1000, generator=_gen(9))
    labels = (k < 3).long()  # two half-circles
    net = MinorityClassifier(2, 2, 16, 1, sigma_data=3.0).to(D)
    levels = lambda n, g: torch.full((n,), 0.05, dtype=D)  # noqa: E731
    hist = train_minority_classifier(net, x0, labels, levels, steps=80, batch_size=64, lr=1e-2, generator=_gen(11))
    assert hist.shape == (80,) and float(hist[-10:].mean()) < float(hist[:10].mean())
    with torch.no_grad():
        acc = (net(x0, torch.full((1000,), 0.05, dtype=D)).argmax(-1) == labels).double().mean()
    assert float(acc) > 0.9


def test_error_messages():
    gm = _imbalanced()
    x = torch.randn(3, 2, dtype=D)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        minority_score(gm.denoise, x, 0.0)
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        minority_score(gm.denoise, x, 1.0, n_iter=0)
    with pytest.raises(ValueError, match=r"model must return a denoised tensor of shape \(15, 2\), got \(15,\)"):
        minority_score(lambda x, s: x[:, 0], x, 1.0)
    with pytest.raises(ValueError, match="n_classes must be >= 1"):
        minority_score_classes(torch.rand(4, dtype=D), 0)
    with pytest.raises(ValueError, match=r"classes must have one label per component \(6\), got 2"):
        mixture_class_log_posterior(gm, [0, 1])
    with pytest.raises(ValueError, match="class 1 has none"):
        mixture_class_log_posterior(gm, [0, 0, 2, 2, 2, 2])
    sigma = torch.ones(3, dtype=D)
    with pytest.raises(ValueError, match=r"target must be < the classifier's number of classes \(2\), got 5"):
        minority_guidance(gm.denoise, mixture_class_log_posterior(gm, [0] * 5 + [1]), 5)(x, sigma)
    with pytest.raises(ValueError, match=r"classifier must return logits of shape \(3, L\)"):
        minority_guidance(gm.denoise, lambda x, s: x[:, 0], 0)(x, sigma)
    with pytest.raises(ValueError, match=r"log_likelihood must return one value per sample, shape \(3,\)"):
        classifier_guidance(gm.denoise, lambda x, s: x, 1.0)(x, sigma)
    with pytest.raises(ValueError, match="target must be >= 0"):
        minority_guidance(gm.denoise, lambda x, s: x, -1)
    with pytest.raises(ValueError, match=r"labels must be < the classifier's n_classes \(2\), got 4"):
        train_minority_classifier(MinorityClassifier(2, 2).to(D), x, torch.tensor([0, 4, 1]),
                                  lambda n, g: torch.ones(n, dtype=D), steps=1)
