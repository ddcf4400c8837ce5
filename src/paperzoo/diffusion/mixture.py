"""Gaussian mixtures with exact noisy marginals: the ground truth of every diffusion claim and test.

A mixture :math:`p_0(x) = \\sum_k w_k\\, \\mathcal N(x; \\mu_k, \\Sigma_k)` noised in the variance-exploding
convention of k-diffusion, :math:`x = x_0 + \\sigma \\varepsilon`, has the marginal

.. math::
    p_\\sigma(x) = \\sum_k w_k\\, \\mathcal N(x; \\mu_k, \\Sigma_k + \\sigma^2 I),

so its log density, score :math:`\\nabla_x \\log p_\\sigma` and denoiser (the posterior mean
:math:`D(x, \\sigma) = E[x_0 \\mid x]`, Tweedie: :math:`D = x + \\sigma^2 \\nabla_x \\log p_\\sigma`) are closed
forms. Each covariance is diagonalised once, :math:`\\Sigma_k = U_k \\operatorname{diag}(\\lambda_k) U_k^\\top`, so
any noise level, one per sample if wanted, costs :math:`O(K d^2)` per point:

.. math::
    z_k = U_k^\\top (x - \\mu_k), \\qquad
    D(x, \\sigma) = \\sum_k r_k(x)\\,\\Bigl(\\mu_k + U_k \\frac{\\lambda_k}{\\lambda_k + \\sigma^2} z_k\\Bigr), \\qquad
    \\nabla_x \\log p_\\sigma(x) = -\\sum_k r_k(x)\\, U_k \\frac{z_k}{\\lambda_k + \\sigma^2}

with :math:`r_k` the component responsibilities at level :math:`\\sigma`. Variance-preserving and flow-matching
marginals, :math:`x_t = \\alpha_t x_0 + \\sigma_t \\varepsilon`, are mixtures too: :meth:`GaussianMixture.marginal`
gives them, and :mod:`paperzoo.diffusion.parametrization` converts their states to the VE form above.

A linear-Gaussian observation :math:`y = A x_0 + s\\,\\eta` of a mixture has a mixture posterior
(:meth:`GaussianMixture.posterior`), the exact target of inverse-problem samplers.
"""

from __future__ import annotations

import math

import torch

from paperzoo.core.accepts import Generator, Int, OneOf, Real, Tensor, accepts

__all__ = ["GaussianMixture", "mixture_on_circle"]

_SIGMA = OneOf(Real(ge=0), Tensor(ndims=tuple(range(0, 8)), nonnegative=True, allow_empty=True))
#: the denoiser also takes infinite levels (zero terminal SNR)
_SIGMA_OR_INF = OneOf(Real(ge=0), Tensor(ndims=tuple(range(0, 8)), nonnegative=True, allow_empty=True, finite=False))


def _example_mixture(ctx) -> "GaussianMixture":
    return mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)


class GaussianMixture:
    r"""Gaussian mixture :math:`\sum_k w_k \mathcal N(\mu_k, \Sigma_k)` with exact scores and denoisers at every
    noise level.

    Args:
        means: :math:`\mu`, shape ``(K, d)``.
        covs: :math:`\Sigma`, shape ``(K, d, d)``, symmetric positive definite.
        weights: :math:`w`, shape ``(K,)``, nonnegative with a positive sum (normalised here); default uniform.

    Methods take points ``x`` of shape ``(..., d)`` and a noise level ``sigma``: a number or a tensor that
    broadcasts against ``x.shape[:-1]`` (one level per point).

    Example:
        >>> import torch
        >>> gm = GaussianMixture(torch.tensor([[-2.0], [2.0]]), torch.full((2, 1, 1), 0.25))
        >>> x = torch.tensor([[1.5]])
        >>> gm.denoise(x, 0.0).tolist(), round(float(gm.denoise(x, 1e3)), 3)  # no noise: x; huge noise: the mean
        ([[1.5]], 0.0)
    """

    @accepts(means=Tensor("K", "d"), covs=Tensor("K", "d", "d", symmetric=True),
             weights=Tensor("K", positive_mass=True, optional=True, degenerate=("zero_mass",)),
             example=lambda ctx: {"means": torch.randn(3, 2, generator=ctx.generator, dtype=ctx.dtype),
                                  "covs": 0.2 * torch.eye(2, dtype=ctx.dtype).expand(3, 2, 2).clone()})
    def __init__(self, means: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor | None = None):
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        evals, evecs = torch.linalg.eigh(covs)
        if bool((evals <= 0).any()):
            k = int((evals <= 0).any(-1).nonzero()[0, 0])
            raise ValueError(f"covs must be positive definite, got component {k} with smallest eigenvalue "
                             f"{float(evals[k].min())!r}")
        if weights is None:
            weights = torch.full((means.shape[0],), 1.0 / means.shape[0], dtype=means.dtype, device=means.device)
        self.means, self.covs = means, covs
        self.weights = weights / weights.sum()
        self.eigenvalues, self.eigenvectors = evals, evecs
        # Empty components keep a finite log weight, far below any other (so no 0 * inf appears downstream).
        self._log_weights = torch.log(self.weights).clamp_min(torch.finfo(means.dtype).min / 4)

    # -- basic properties ------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def __repr__(self) -> str:
        return f"GaussianMixture(n_components={self.n_components}, dim={self.dim}, dtype={self.dtype})"

    def mean(self) -> torch.Tensor:
        """:math:`E[x_0] = \\sum_k w_k \\mu_k`, shape ``(d,)``."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """:math:`\\operatorname{Cov}[x_0]`, shape ``(d, d)`` (within- plus between-component)."""
        centred = self.means - self.mean()
        return torch.einsum("k,kij->ij", self.weights, self.covs) + (self.weights[:, None] * centred).T @ centred

    # -- derived mixtures --------------------------------------------------------------------------------------------
    @accepts(alpha=Real(gt=0), sigma=Real(ge=0), example=lambda ctx: {"self": _example_mixture(ctx), "alpha": 0.8,
                                                                      "sigma": 0.6})
    def marginal(self, alpha: float, sigma: float) -> "GaussianMixture":
        """The law of :math:`\\alpha x_0 + \\sigma \\varepsilon` (VP, flow or VE time): means :math:`\\alpha\\mu_k`,
        covariances :math:`\\alpha^2 \\Sigma_k + \\sigma^2 I`."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.means.device)
        return GaussianMixture(alpha * self.means, alpha**2 * self.covs + sigma**2 * eye, self.weights)

    @accepts(A=Tensor("m", "d"), y=Tensor("m"), noise_std=Real(gt=0),
             example=lambda ctx: {"self": _example_mixture(ctx),
                                  "A": torch.tensor([[1.0, 0.5]], dtype=ctx.dtype),
                                  "y": torch.tensor([0.7], dtype=ctx.dtype), "noise_std": 0.3})
    def posterior(self, A: torch.Tensor, y: torch.Tensor, noise_std: float) -> "GaussianMixture":
        r"""The posterior of :math:`x_0` given :math:`y = A x_0 + s\,\eta`, :math:`\eta \sim \mathcal N(0, I)`.

        Per component, with :math:`S_k = A \Sigma_k A^\top + s^2 I` and gain :math:`G_k = \Sigma_k A^\top S_k^{-1}`:
        :math:`\mu_k' = \mu_k + G_k (y - A\mu_k)`, :math:`\Sigma_k' = \Sigma_k - G_k A \Sigma_k`,
        :math:`w_k' \propto w_k\, \mathcal N(y; A\mu_k, S_k)`.

        Args:
            A: ``(m, d)``; y: ``(m,)``; noise_std: :math:`s > 0`.
        """
        if self.dim != A.shape[1]:
            raise ValueError(f"A must have {self.dim} columns (the mixture's dimension), got shape {tuple(A.shape)}")
        if A.dtype != self.dtype:
            raise TypeError(f"A must have the mixture's dtype ({self.dtype}), got {A.dtype}")
        m = A.shape[0]
        eye = torch.eye(m, dtype=self.dtype, device=A.device)
        AS = A @ self.covs                                   # (K, m, d)
        S = AS @ A.T + noise_std**2 * eye                    # (K, m, m)
        chol = torch.linalg.cholesky(S)
        resid = y - self.means @ A.T                         # (K, m)
        gain_t = torch.cholesky_solve(AS, chol)              # S^-1 A Sigma = G^T, (K, m, d)
        means = self.means + torch.einsum("kmd,km->kd", gain_t, resid)
        covs = self.covs - AS.transpose(-1, -2) @ gain_t
        white = torch.linalg.solve_triangular(chol, resid[..., None], upper=False)[..., 0]
        log_lik = (-0.5 * white.square().sum(-1) - torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
                   - 0.5 * m * math.log(2 * math.pi))
        log_w = self._log_weights + log_lik
        return GaussianMixture(means, 0.5 * (covs + covs.transpose(-1, -2)), torch.softmax(log_w, 0))

    # -- exact quantities ------------------------------------------------------------------------------------------
    def _check_points(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have last dimension {self.dim} (the mixture's), got shape {tuple(x.shape)}")
        if x.dtype != self.dtype:
            raise TypeError(f"x must have the mixture's dtype ({self.dtype}), got {x.dtype}")

    def _variance(self, sigma, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma^2` shaped ``(..., 1, 1)`` to broadcast against ``(..., K, d)``."""
        s = torch.as_tensor(sigma, dtype=self.dtype, device=x.device)
        try:
            s = torch.broadcast_to(s, x.shape[:-1])
        except RuntimeError:
            raise ValueError(f"sigma must broadcast against x.shape[:-1] = {tuple(x.shape[:-1])}, got shape "
                             f"{tuple(s.shape)}") from None
        return s.square()[..., None, None]

    def _components(self, x: torch.Tensor, sigma):
        """Whitened coordinates ``z`` (..., K, d), variances ``lam + sigma^2`` (..., K, d), log joint (..., K)."""
        self._check_points(x)
        z = torch.einsum("kdj,...kd->...kj", self.eigenvectors, x[..., None, :] - self.means)
        var = self.eigenvalues + self._variance(sigma, x)
        log_joint = self._log_weights - 0.5 * ((z.square() / var).sum(-1) + var.log().sum(-1)
                                               + self.dim * math.log(2 * math.pi))
        return z, var, log_joint

    @accepts(x=Tensor(..., "d", degenerate=("coincident",)), sigma=_SIGMA,
             example=lambda ctx: {"self": _example_mixture(ctx),
                                  "x": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.5})
    def log_prob(self, x: torch.Tensor, sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """:math:`\\log p_\\sigma(x)`, shape ``x.shape[:-1]``."""
        return torch.logsumexp(self._components(x, sigma)[2], dim=-1)

    @accepts(x=Tensor(..., "d", degenerate=("coincident",)), sigma=_SIGMA,
             example=lambda ctx: {"self": _example_mixture(ctx),
                                  "x": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.5})
    def responsibilities(self, x: torch.Tensor, sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Posterior component probabilities :math:`r_k(x)` at level ``sigma``, shape ``(..., K)``."""
        return torch.softmax(self._components(x, sigma)[2], dim=-1)

    @accepts(x=Tensor(..., "d", degenerate=("coincident",)), sigma=_SIGMA,
             example=lambda ctx: {"self": _example_mixture(ctx),
                                  "x": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.5})
    def score(self, x: torch.Tensor, sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """:math:`\\nabla_x \\log p_\\sigma(x)`, shape of ``x``."""
        z, var, log_joint = self._components(x, sigma)
        r = torch.softmax(log_joint, dim=-1)[..., None]
        return -torch.einsum("kij,...kj->...i", self.eigenvectors, r * z / var)

    @accepts(x=Tensor(..., "d", degenerate=("coincident",)), sigma=_SIGMA_OR_INF,
             example=lambda ctx: {"self": _example_mixture(ctx),
                                  "x": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.5})
    def denoise(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """The exact denoiser :math:`D(x, \\sigma) = E[x_0 \\mid x_0 + \\sigma\\varepsilon = x]`, shape of ``x``.

        Computed as the responsibility-weighted per-component posterior means (no :math:`x + \\sigma^2 s`
        cancellation at large :math:`\\sigma`). Usable as a k-diffusion-style ``model(x, sigma)``. At an infinite
        level (zero terminal SNR; ``x`` is then the normalized state, see
        :mod:`~paperzoo.diffusion.samplers`) the observation carries no signal and the result is :meth:`mean`.
        """
        if isinstance(sigma, torch.Tensor) and sigma.is_floating_point():
            if not bool(torch.isfinite(sigma).all()):  # one check on the common, finite path
                if bool(torch.isnan(sigma).any()):
                    raise ValueError("sigma must not contain NaN")
                infinite = torch.isinf(sigma)
                finite = self._denoise(x, torch.where(infinite, torch.ones_like(sigma), sigma))
                return torch.where(infinite[..., None], self.mean().to(finite.dtype), finite)
        return self._denoise(x, sigma)

    def _denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        z, var, log_joint = self._components(x, sigma)
        r = torch.softmax(log_joint, dim=-1)[..., None]
        shrunk = torch.einsum("kij,...kj->...ki", self.eigenvectors, self.eigenvalues / var * z)
        return (r * (self.means + shrunk)).sum(-2)

    @accepts(n=Int(ge=0), sigma=Real(ge=0), generator=Generator(),
             example=lambda ctx: {"self": _example_mixture(ctx), "n": 5})
    def sample(self, n: int, *, sigma: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws of :math:`x_0 + \\sigma\\varepsilon`, shape ``(n, d)``; ``component_samples`` also returns
        the components."""
        return self.component_samples(n, sigma=sigma, generator=generator)[0]

    @accepts(n=Int(ge=0), sigma=Real(ge=0), generator=Generator(),
             example=lambda ctx: {"self": _example_mixture(ctx), "n": 5})
    def component_samples(self, n: int, *, sigma: float = 0.0, generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, k)``: ``n`` draws ``(n, d)`` and the index ``(n,)`` of the component each came from."""
        device = self.means.device
        if n == 0:
            return self.means.new_zeros(0, self.dim), torch.zeros(0, dtype=torch.long, device=device)
        k = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator).to(device)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.dtype).to(device)
        x = self.means[k] + torch.einsum("nij,nj->ni", self.eigenvectors[k], self.eigenvalues[k].sqrt() * eps)
        if sigma > 0:
            x = x + sigma * torch.randn(n, self.dim, generator=generator, dtype=self.dtype).to(device)
        return x, k

    @accepts(x=Tensor("n", "d"), example=lambda ctx: {
        "self": _example_mixture(ctx), "x": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype)})
    def mode_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Fraction of the points ``(n, d)`` whose most probable component (at :math:`\\sigma = 0`) is each
        :math:`k`, shape ``(K,)``: the sample's estimate of :math:`w`, to compare with ``weights``."""
        k = self.responsibilities(x).argmax(-1)
        return torch.bincount(k, minlength=self.n_components).to(self.dtype) / x.shape[0]


@accepts(n_components=Int(ge=1), dim=Int(ge=1), radius=Real(gt=0), std=Real(gt=0),
         weights=Tensor("K", positive_mass=True, optional=True))
def mixture_on_circle(n_components: int = 8, dim: int = 2, *, radius: float = 4.0, std: float = 0.5,
                      weights: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """Isotropic components of standard deviation ``std`` with means evenly spaced on a circle of ``radius`` in
    the first two coordinates (the others zero; ``dim = 1`` puts them on a line from ``-radius`` to ``radius``).

    The standard 2-D "8 Gaussians" target at the defaults; ``weights`` make it imbalanced.
    """
    if weights is not None and weights.shape[0] != n_components:
        raise ValueError(f"weights must have {n_components} entries (n_components), got {weights.shape[0]}")
    means = torch.zeros(n_components, dim, dtype=dtype)
    if dim == 1:
        means[:, 0] = torch.linspace(-radius, radius, n_components, dtype=dtype) if n_components > 1 else 0.0
    else:
        angle = 2 * math.pi * torch.arange(n_components, dtype=dtype) / n_components
        means[:, 0], means[:, 1] = radius * torch.cos(angle), radius * torch.sin(angle)
    covs = std**2 * torch.eye(dim, dtype=dtype).expand(n_components, dim, dim).clone()
    return GaussianMixture(means, covs, None if weights is None else weights.to(dtype))
