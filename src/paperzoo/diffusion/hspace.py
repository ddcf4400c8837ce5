"""h-space editing: reading and shifting a denoiser's bottleneck, and finding semantic directions in it.

References: Discovering Interpretable Directions in the Semantic Latent Space of Diffusion Models, 2023/2024
(Haas, Huberman-Spiegelglas, Mulayoff, Graßhof, Brandt, Michaeli; FG 2024); h-space after Kwon et al., Diffusion
Models Already Have a Semantic Latent Space, 2023.

A sample's *h-space code* is the bottleneck activation :math:`h_t` of the denoiser network at every step of the
sampling trajectory, :math:`h = (h_{t_1}, \\dots, h_{t_S})`, shape ``(S, *h_shape)`` for ``S`` sampler levels.
An edit adds an offset :math:`\\Delta h = (\\Delta h_{t_1}, \\dots)` to it while sampling from the same noise,

.. math::
    h_{t_i} \\leftarrow h_{t_i} + \\alpha\\, \\Delta h_{t_i} \\quad\\text{at every step } i,

so both the predicted clean sample and the direction to :math:`x_t` of the DDIM step change (the paper's
simplification of Asyrp's asymmetric step). Here the bottleneck is any submodule of the network (its output is
:math:`h_t`), reached with a forward hook, so the edited model is again a denoiser ``model(x, sigma)`` that every
sampler of :mod:`paperzoo.diffusion.samplers` runs unchanged (:func:`hspace_shift`). :class:`BottleneckMLP` is
a small U-Net-like network (encoder, bottleneck, decoder with a skip connection) for low-dimensional data.

Directions (the paper's Sections on unsupervised and supervised discovery):

- :func:`pca_directions`: *global* directions, the principal components of the codes of many generated samples
  (flattened over all steps: the official code's PCA over the whole trajectory);
- :func:`jacobian_directions`: *image-specific* directions at one code, the top right singular vectors of the
  Jacobian :math:`J = \\partial f / \\partial h` of the network output with respect to :math:`h` (the directions
  that change the output most per unit of :math:`\\|\\Delta h\\|`), by subspace iteration on :math:`J^\\top J`
  with forward- and reverse-mode products (``torch.func.jvp``/``vjp``), never forming :math:`J`;
  :func:`hspace_jacobian_directions` and :func:`trajectory_jacobian_directions` apply it to a denoiser's
  bottleneck at one level and along a whole DDIM trajectory;
- :func:`supervised_direction`: :math:`\\Delta h = \\bar h_{+} - \\bar h_{-}`, the difference of the mean codes of
  generated samples with and without an attribute (labels from an attribute classifier);
- :func:`project_out`: the linear-projection disentanglement, a direction with its components along other
  attributes' directions removed.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.training import MLPDenoiser
    >>> from paperzoo.diffusion.samplers import sample_ddim
    >>> from paperzoo.diffusion.schedules import get_sigmas_karras
    >>> net = MLPDenoiser(2, 16, 3).double()
    >>> model, module = net.denoiser(), net.net[3]           # the middle hidden layer is the bottleneck
    >>> sigmas = get_sigmas_karras(5, 0.05, 10.0, dtype=torch.float64)  # 5 levels and a final 0
    >>> x = sigmas[0] * torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> rec = record_hspace(model, module, x, sigmas)
    >>> tuple(rec.h.shape)                                     # (N, S, *h_shape)
    (8, 5, 16)
    >>> delta = supervised_direction(rec.h, rec.samples[:, 0] > 0)
    >>> edited = sample_ddim(hspace_shift(model, module, delta, sigmas, scale=1.0), x, sigmas)
    >>> bool(torch.equal(sample_ddim(hspace_shift(model, module, delta, sigmas, scale=0.0), x, sigmas),
    ...                  rec.samples))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.accepts import Choice, Function, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.parametrization import PREDICTIONS, denoiser_from_prediction

__all__ = ["BottleneckMLP", "HSpaceRecord", "PCADirections", "JacobianDirections", "hspace_shift", "record_hspace",
           "pca_directions", "supervised_direction", "project_out", "jacobian_directions",
           "hspace_jacobian_directions", "trajectory_jacobian_directions"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class HSpaceRecord(NamedTuple):
    """The samples of one sampler run and their h-space codes."""

    samples: torch.Tensor  #: final states, shape ``(N, *x_shape)``
    h: torch.Tensor  #: bottleneck output at each model evaluation, shape ``(N, S, *h_shape)``


class PCADirections(NamedTuple):
    """Principal directions of a set of codes."""

    directions: torch.Tensor  #: unit-norm principal directions, shape ``(k, *code_shape)``
    stds: torch.Tensor  #: standard deviation of the codes along each, shape ``(k,)`` (descending)
    mean: torch.Tensor  #: mean code, shape ``code_shape``


class JacobianDirections(NamedTuple):
    """Top singular triplets of a Jacobian :math:`J = \\partial f/\\partial h`: :math:`J v_j = s_j u_j`."""

    directions: torch.Tensor  #: right singular vectors :math:`v_j` (input space), shape ``(k, *h_shape)``
    singular_values: torch.Tensor  #: :math:`s_j`, shape ``(k,)``, descending
    outputs: torch.Tensor  #: left singular vectors :math:`u_j` (output space), shape ``(k, *out_shape)``
    iterations: int  #: subspace iterations run


class BottleneckMLP(nn.Module):
    """A U-Net-like MLP network :math:`F_\\theta(x_{in}, \\sigma)` with an explicit bottleneck, for h-space
    experiments on low-dimensional data.

    ``encoder`` maps the input and Fourier features of :math:`\\log\\sigma/4` (as in
    :class:`~paperzoo.diffusion.training.MLPDenoiser`) to features :math:`e`; ``bottleneck`` maps :math:`e` to
    :math:`h` (its output is the h-space code, the module to pass as ``module``); the decoder sees
    :math:`[h, e]`, the bottleneck *and* a skip connection from the encoder, like a U-Net's decoder. The skip
    matters: without it the code must carry the noisy input itself, and moving it towards another class's mean code
    then tells the network that the *input* lies there, which moves the sample the other way (observed on the
    mixtures here with a plain MLP and noise prediction).

    Args:
        dim: data dimension :math:`d`; hidden: width of every layer; prediction: what it predicts (the paper's
            models predict the noise, ``"eps"``); n_frequencies: Fourier features of the level.

    ``denoiser()`` returns the VE denoiser ``model(x, sigma)`` (VP input scaling).
    """

    @accepts(dim=Int(ge=1), hidden=Int(ge=1), prediction=Choice(*PREDICTIONS), n_frequencies=Int(ge=1),
             example=lambda ctx: {"dim": 2, "hidden": 8})
    def __init__(self, dim: int, hidden: int = 64, *, prediction: str = "eps", n_frequencies: int = 8):
        super().__init__()
        self.dim, self.prediction = dim, prediction
        self.space = "flow" if prediction == "flow" else "vp"
        self.register_buffer("frequencies", torch.arange(1, n_frequencies + 1, dtype=torch.float32) * math.pi / 2)
        self.encoder = nn.Sequential(nn.Linear(dim + 2 * n_frequencies, hidden), nn.SiLU())
        self.bottleneck = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.decoder = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x_in: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x_in.dtype, device=x_in.device).expand(x_in.shape[0])
        c = (s.clamp(1e-12, 1e12).log() / 4)[:, None] * self.frequencies.to(x_in.dtype)
        e = self.encoder(torch.cat([x_in, torch.sin(c), torch.cos(c)], dim=-1))
        return self.decoder(torch.cat([self.bottleneck(e), e], dim=-1))

    def denoiser(self) -> Denoiser:
        """The VE denoiser ``model(x, sigma)`` of this network."""
        return denoiser_from_prediction(self, self.prediction, space=self.space)


# -- the bottleneck hook -------------------------------------------------------------------------------------------
def _level_index(sigma: torch.Tensor, levels: torch.Tensor, rtol: float = 1e-5) -> torch.Tensor:
    """Index ``i`` with ``levels[i] == sigma`` (to ``rtol``) for each entry of ``sigma`` ``(N,)``."""
    s = sigma.to(levels.dtype).reshape(-1, 1)
    gap = (s - levels.reshape(1, -1)).abs()
    both_inf = torch.isinf(s) & torch.isinf(levels.reshape(1, -1))
    gap = torch.where(both_inf, torch.zeros_like(gap), gap)
    gap = torch.nan_to_num(gap, nan=math.inf, posinf=math.inf)
    best, idx = gap.min(dim=1)
    scale = torch.where(torch.isinf(s[:, 0]), torch.ones_like(best), s[:, 0].abs().clamp_min(1e-12))
    bad = ~(best <= rtol * scale)
    if bool(bad.any()):
        raise ValueError(f"sigma must be one of the levels of sigmas (the sampler's schedule), got "
                         f"{float(s[bad.nonzero()[0, 0], 0])!r}")
    return idx


class _Hook:
    """A forward hook on ``module`` that adds ``offset`` to its output (``offset`` set per call)."""

    def __init__(self, module: nn.Module):
        self.module, self.offset, self.replace, self.seen = module, None, None, []

    def __call__(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"module must return a tensor (the bottleneck h), got {type(output).__name__}")
        if self.replace is not None:
            if self.replace.shape != output.shape:
                raise ValueError(f"h must have the shape of the bottleneck output {tuple(output.shape)}, got "
                                 f"{tuple(self.replace.shape)}")
            output = self.replace
        if self.offset is not None:
            if self.offset.shape[1:] != output.shape[1:] or self.offset.shape[0] != output.shape[0]:
                raise ValueError(f"delta must have shape (S, *h_shape) with h_shape {tuple(output.shape[1:])}, "
                                 f"got per-step offsets of shape {tuple(self.offset.shape[1:])}")
            output = output + self.offset.to(output.dtype)
        self.seen.append(output.detach())
        return output

    def run(self, model, x, sigma):
        # an editing hook goes first, so that any other hook on the module (a recording) sees the edited h
        handle = self.module.register_forward_hook(self, prepend=self.offset is not None or self.replace is not None)
        try:
            return model(x, sigma)
        finally:
            handle.remove()


class _ExampleNet(nn.Module):
    """A tiny VE denoiser acting on the last axis (any leading shape), with a bottleneck: the declarations'
    examples."""

    def __init__(self, dim: int = 2, hidden: int = 8):
        super().__init__()
        self.inp, self.out = nn.Linear(dim + 1, hidden), nn.Linear(hidden, dim)
        self.bottleneck = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU())

    def forward(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape((-1,) + (1,) * (x.dim() - 1)).expand(x.shape[:-1] + (1,))
        c = (1 + s**2).rsqrt()
        return x - s * self.out(self.bottleneck(torch.tanh(self.inp(torch.cat([c * x, s.log1p()], -1)))))


def _example_shift(ctx):
    torch.manual_seed(0)
    net = _ExampleNet().to(ctx.dtype)
    sigmas = torch.tensor([4.0, 1.0, 0.2, 0.0], dtype=ctx.dtype)
    return {"model": net, "module": net.bottleneck, "sigmas": sigmas,
            "delta": torch.randn(3, 8, generator=ctx.generator, dtype=ctx.dtype)}


@accepts(model=Function(), module=Module(), delta=Tensor(ndims=tuple(range(2, 8)), degenerate=("zeros",)),
         sigmas=Tensor("n", nonnegative=True, finite=False), scale=Real(), output="any",  # returns a denoiser
         example=_example_shift)
def hspace_shift(model: Denoiser, module: nn.Module, delta: torch.Tensor, sigmas: torch.Tensor, *,
                 scale: float = 1.0) -> Denoiser:
    """The edited denoiser: ``model`` with :math:`\\alpha\\,\\Delta h_{t_i}` added to ``module``'s output whenever
    it is evaluated at level ``sigmas[i]``.

    Args:
        model: the denoiser ``model(x, sigma)``; it must run ``module`` once per call.
        module: the bottleneck submodule of the network inside ``model`` (its output is :math:`h_t`).
        delta: :math:`\\Delta h`, shape ``(S, *h_shape)``, one offset per level ``sigmas[:S]`` (``S`` =
            ``len(sigmas) - 1`` for the one-evaluation-per-step samplers; a direction that is the same at every step
            is ``v.expand(S, *v.shape)``).
        sigmas: the sampling schedule ``(n,)`` (``n >= S``); each call's levels must be among ``sigmas[:S]``.
        scale: :math:`\\alpha`; 0 gives ``model``'s outputs exactly.

    Returns:
        ``edited(x, sigma)``, a denoiser; with ``sigma`` of shape ``(N,)``, sample ``j`` gets the offset of its own
        level.
    """
    S = delta.shape[0]
    if S > sigmas.shape[0]:
        raise ValueError(f"delta must have at most len(sigmas) = {sigmas.shape[0]} per-step offsets, got {S}")
    levels = sigmas[:S]
    hook = _Hook(module)
    alpha = float(scale)

    def edited(x: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma, device=x.device).expand(x.shape[0])
        hook.offset, hook.seen = alpha * delta[_level_index(s, levels).to(delta.device)], []
        return hook.run(model, x, s)

    return edited


def _example_record(ctx):
    kw = _example_shift(ctx)
    return {"model": kw["model"], "module": kw["module"], "sigmas": kw["sigmas"],
            "x": 4.0 * torch.randn(5, 2, generator=ctx.generator, dtype=ctx.dtype)}


@accepts(model=Function(), module=Module(), x=Tensor(ndims=tuple(range(2, 8))),
         sigmas=Tensor("n", nonnegative=True, finite=False), sampler=Function(optional=True),
         generator=Generator(), example=_example_record)
def record_hspace(model: Denoiser, module: nn.Module, x: torch.Tensor, sigmas: torch.Tensor, *,
                  sampler: Callable | None = None, generator: torch.Generator | None = None) -> HSpaceRecord:
    """Sample from ``x`` and record the h-space code: ``module``'s output at every model evaluation.

    Args:
        model, module: as in :func:`hspace_shift`.
        x: the starting state ``(N, *x_shape)`` at level ``sigmas[0]``.
        sigmas: the schedule ``(n,)``.
        sampler: ``sampler(model, x, sigmas, generator=...)``, default deterministic DDIM
            (:func:`~paperzoo.diffusion.samplers.sample_ddim`, :math:`\\eta = 0`, the paper's sampler).
        generator: for stochastic samplers.

    Returns:
        :class:`HSpaceRecord` with ``samples`` ``(N, *x_shape)`` and ``h`` ``(N, S, *h_shape)``, ``S`` the number of
        model evaluations. With an edited ``model`` (:func:`hspace_shift`) ``h`` is the edited code.
    """
    if sampler is None:
        from paperzoo.diffusion.samplers import sample_ddim as sampler
    hook = _Hook(module)

    def recording(xx, sigma):
        return hook.run(model, xx, sigma)

    samples = sampler(recording, x, sigmas, generator=generator)
    if not hook.seen:
        raise ValueError("module must run during model's evaluations (no bottleneck output was recorded)")
    if any(h.shape[0] != x.shape[0] for h in hook.seen):
        raise ValueError("module must see the whole batch of x at each evaluation")
    return HSpaceRecord(samples, torch.stack(hook.seen, dim=1))


# -- directions ----------------------------------------------------------------------------------------------------
def _fix_sign(v: torch.Tensor) -> torch.Tensor:
    """Rows of ``v`` ``(k, F)`` with their largest-magnitude entry made positive (a deterministic sign)."""
    idx = v.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(torch.gather(v, 1, idx))
    return v * torch.where(sign == 0, torch.ones_like(sign), sign)


@accepts(h=Tensor(ndims=tuple(range(2, 9)), degenerate=("coincident",)), k=Int(ge=1),
         example=lambda ctx: {"h": torch.randn(10, 3, 4, generator=ctx.generator, dtype=ctx.dtype), "k": 2})
def pca_directions(h: torch.Tensor, k: int) -> PCADirections:
    """The top ``k`` principal directions of the codes ``h`` ``(N, *code_shape)`` (each code flattened).

    With :math:`X` the centred ``(N, F)`` matrix of codes and :math:`X = U \\Sigma V^\\top` its SVD, direction
    :math:`j` is row :math:`j` of :math:`V^\\top` (unit norm; its sign makes the largest-magnitude entry positive)
    and ``stds[j]`` :math:`= \\Sigma_{jj}/\\sqrt{N-1}`. The paper's global edit is :math:`\\Delta h = \\alpha\\,
    \\mathrm{std}_j v_j` (the official code scales each component by its standard deviation). ``k`` must be at most
    :math:`\\min(N, F)`.
    """
    N = h.shape[0]
    if N < 2:
        raise ValueError(f"h must hold at least 2 codes, got {N}")
    X = h.reshape(N, -1)
    if k > min(N, X.shape[1]):
        raise ValueError(f"k must be <= min(N, code size) = {min(N, X.shape[1])}, got {k}")
    mean = X.mean(0)
    _, svals, vh = torch.linalg.svd(X - mean, full_matrices=False)
    v = _fix_sign(vh[:k])
    return PCADirections(v.reshape((k,) + h.shape[1:]), svals[:k] / math.sqrt(N - 1), mean.reshape(h.shape[1:]))


@accepts(h=Tensor(ndims=tuple(range(2, 9))), labels=Tensor("N", dtype="bool"),
         example=lambda ctx: {"h": torch.randn(6, 3, 4, generator=ctx.generator, dtype=ctx.dtype),
                              "labels": torch.tensor([True, False, True, False, True, True])})
def supervised_direction(h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:math:`\\Delta h = \\bar h_{+} - \\bar h_{-}`: the mean code of the samples with the attribute minus the mean
    code of those without.

    Args:
        h: codes ``(N, *code_shape)`` (e.g. :attr:`HSpaceRecord.h`, ``(N, S, *h_shape)``).
        labels: ``(N,)`` bool, the attribute of each sample (an attribute classifier's verdict on the generated
            sample); both classes must be present.

    Returns:
        ``(*code_shape)``: added with scale :math:`\\alpha > 0` it moves towards the attribute, :math:`\\alpha < 0`
        away from it.
    """
    if labels.shape[0] != h.shape[0]:
        raise ValueError(f"labels must have one entry per code ({h.shape[0]}), got {labels.shape[0]}")
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.shape[0]:
        raise ValueError(f"labels must contain both classes, got {n_pos} of {labels.shape[0]} True")
    return h[labels].mean(0) - h[~labels].mean(0)


@accepts(direction=Tensor(ndims=tuple(range(1, 8))), others=Tensor(ndims=tuple(range(2, 9))),
         example=lambda ctx: {"direction": torch.randn(3, 4, generator=ctx.generator, dtype=ctx.dtype),
                              "others": torch.randn(2, 3, 4, generator=ctx.generator, dtype=ctx.dtype)})
def project_out(direction: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Disentangle by linear projection: ``direction`` minus its orthogonal projection onto the span of
    ``others``, :math:`v - Q Q^\\top v` with :math:`Q` an orthonormal basis of the rows of ``others``.

    Args:
        direction: shape ``code_shape``.
        others: ``(m, *code_shape)``, directions of the attributes to keep unchanged (linearly dependent rows are
            fine).
    """
    if tuple(others.shape[1:]) != tuple(direction.shape):
        raise ValueError(f"others must have shape (m, *direction.shape) = (m, {', '.join(map(str, direction.shape))}),"
                         f" got {tuple(others.shape)}")
    v = direction.reshape(-1)
    A = others.reshape(others.shape[0], -1)
    u, s, _ = torch.linalg.svd(A.T, full_matrices=False)
    keep = s > s.max().clamp_min(torch.finfo(s.dtype).tiny) * max(A.shape) * torch.finfo(s.dtype).eps
    Q = u[:, keep]
    return (v - Q @ (Q.T @ v)).reshape(direction.shape)


@torch.no_grad()  # the function transforms differentiate inside; no graph to f's parameters is kept
def _jacobian_directions(f, h, k, iters, tol, generator):
    """Subspace iteration on :math:`J^\\top J` with a Rayleigh-Ritz step (unchecked kernel)."""
    shape, F = h.shape, h.numel()
    _, vjp_fn = torch.func.vjp(f, h)

    def jv(v):  # J v for a flat v
        return torch.func.jvp(f, (h,), (v.reshape(shape),))[1].reshape(-1)

    def jtu(u, out_shape):
        return vjp_fn(u.reshape(out_shape))[0].reshape(-1)

    out_shape = f(h).shape
    V = torch.randn(F, k, generator=generator, dtype=h.dtype).to(h.device)
    V = torch.linalg.qr(V).Q
    it = 0
    for it in range(1, iters + 1):
        JV = torch.stack([jv(V[:, j]) for j in range(k)], dim=1)
        W = torch.stack([jtu(JV[:, j], out_shape) for j in range(k)], dim=1)
        V_new = torch.linalg.qr(W).Q
        # stop when the subspace no longer moves: the part of V_new outside span(V)
        moved = float((V_new - V @ (V.T @ V_new)).norm(dim=0).max())
        V = V_new
        if moved <= tol:
            break
    JV = torch.stack([jv(V[:, j]) for j in range(k)], dim=1)
    P, s, Qh = torch.linalg.svd(JV, full_matrices=False)
    V = V @ Qh.T
    flip = torch.sign(V.gather(0, V.abs().argmax(0, keepdim=True)))
    flip = torch.where(flip == 0, torch.ones_like(flip), flip)
    V, P = V * flip, P * flip
    return JacobianDirections(V.T.reshape((k,) + tuple(shape)).detach(), s.detach(),
                              P.T.reshape((k,) + tuple(out_shape)).detach(), it)


def _example_jacobian(ctx):
    A = torch.randn(5, 4, generator=ctx.generator, dtype=ctx.dtype)
    return {"f": lambda h: torch.tanh(h @ A.T), "h": torch.randn(4, generator=ctx.generator, dtype=ctx.dtype),
            "k": 2}


@accepts(f=Function(), h=Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",)), k=Int(ge=1), iters=Int(ge=1),
         tol=Real(ge=0), generator=Generator(), example=_example_jacobian)
def jacobian_directions(f: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, k: int, *, iters: int = 100,
                        tol: float = 1e-7, generator: torch.Generator | None = None) -> JacobianDirections:
    """The top ``k`` right singular vectors of :math:`J = \\partial f(h)/\\partial h` at ``h``: the input directions
    that change :math:`f` most, :math:`v_1 = \\arg\\max_{\\|v\\| = 1} \\|J v\\|`.

    Subspace iteration :math:`V \\leftarrow \\mathrm{orth}(J^\\top J V)` (``k`` Jacobian-vector products by forward
    mode and ``k`` vector-Jacobian products by reverse mode per iteration; :math:`J` is never formed), stopped when
    the subspace moves by at most ``tol`` (the largest norm of a new basis vector's part outside the old span) or
    after ``iters`` iterations,
    then a Rayleigh-Ritz step (an SVD of the small ``(out, k)`` matrix :math:`JV`). The official code runs
    sequential power iterations with deflation instead; both converge to the same triplets.

    Args:
        f: a differentiable function of a tensor, e.g. the denoiser output as a function of the bottleneck.
        h: the point ``h_shape``; ``k`` must be at most ``h.numel()`` and the output size.
        iters, tol: the iteration budget and stopping tolerance.
        generator: for the random starting subspace.

    Returns:
        :class:`JacobianDirections` (``directions`` ``(k, *h_shape)``, sign fixed so the largest-magnitude entry is
        positive; ``outputs`` ``(k, *out_shape)`` with :math:`J v_j = s_j u_j`).
    """
    with torch.enable_grad():
        out = f(h)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"f must return a tensor, got {type(out).__name__}")
    if k > min(h.numel(), out.numel()):
        raise ValueError(f"k must be <= min(h.numel(), output size) = {min(h.numel(), out.numel())}, got {k}")
    return _jacobian_directions(f, h.detach(), k, iters, tol, generator)


def _bottleneck_function(model, module, x, sigma):
    """``h -> model(x, sigma)`` with ``module``'s output replaced by ``h``, and ``module``'s own output at x."""
    hook = _Hook(module)
    with torch.no_grad():
        hook.run(model, x, sigma)
    h0 = hook.seen[-1]

    def f(h):
        hook.replace = h
        try:
            return hook.run(model, x, sigma)
        finally:
            hook.replace = None

    return f, h0


def _example_hjd(ctx):
    kw = _example_shift(ctx)
    return {"model": kw["model"], "module": kw["module"],
            "x": torch.randn(1, 2, generator=ctx.generator, dtype=ctx.dtype), "sigma": 1.0, "k": 2}


@accepts(model=Function(), module=Module(), x=Tensor(ndims=tuple(range(2, 8))), sigma=Real(gt=0), k=Int(ge=1),
         iters=Int(ge=1), tol=Real(ge=0), generator=Generator(), example=_example_hjd)
def hspace_jacobian_directions(model: Denoiser, module: nn.Module, x: torch.Tensor, sigma: float, k: int, *,
                               iters: int = 100, tol: float = 1e-7, generator: torch.Generator | None = None
                               ) -> JacobianDirections:
    """Image-specific directions at one level: :func:`jacobian_directions` of :math:`h \\mapsto D(x, \\sigma; h)`,
    the denoiser output with ``module``'s output set to ``h``, at ``module``'s own output :math:`h_t(x)`.

    The paper differentiates the noise prediction :math:`\\varepsilon(x_t; h)`; with ``x`` fixed the denoiser is
    :math:`D = c\\,x - \\sigma' \\varepsilon` for level-dependent constants, so the right singular vectors are the
    same and the singular values are those of :math:`\\varepsilon`'s Jacobian times :math:`\\sigma'` (the
    VP noise level in VP input space).

    Args:
        model, module: as in :func:`hspace_shift`.
        x: one state ``(1, *x_shape)`` at level ``sigma``.
        sigma: the level :math:`\\sigma > 0`.
        k, iters, tol, generator: as in :func:`jacobian_directions`.

    Returns:
        :class:`JacobianDirections`, ``directions`` ``(k, *h_shape)`` (the bottleneck's shape without its batch
        dimension of 1).
    """
    if x.shape[0] != 1:
        raise ValueError(f"x must hold one sample (batch size 1), got {x.shape[0]}")
    s = torch.full((1,), float(sigma), dtype=x.dtype, device=x.device)
    f, h0 = _bottleneck_function(model, module, x, s)
    r = jacobian_directions(lambda h: f(h[None])[0], h0[0], k, iters=iters, tol=tol, generator=generator)
    return r


@accepts(model=Function(), module=Module(), x=Tensor(ndims=tuple(range(2, 8))),
         sigmas=Tensor("n", nonnegative=True), k=Int(ge=1), iters=Int(ge=1), tol=Real(ge=0),
         generator=Generator(), example=lambda ctx: {**_example_record(ctx), "k": 2, "iters": 20,
                                                     "x": torch.randn(1, 2, generator=ctx.generator,
                                                                      dtype=ctx.dtype)})
def trajectory_jacobian_directions(model: Denoiser, module: nn.Module, x: torch.Tensor, sigmas: torch.Tensor,
                                   k: int, *, iters: int = 100, tol: float = 1e-7,
                                   generator: torch.Generator | None = None) -> JacobianDirections:
    """:func:`hspace_jacobian_directions` at every step of the unedited deterministic DDIM trajectory from ``x``
    (the official code's per-timestep power iteration).

    Args:
        model, module: as in :func:`hspace_shift`.
        x: one starting state ``(1, *x_shape)`` at level ``sigmas[0]`` (finite).
        sigmas: the schedule ``(n,)``, decreasing to 0.
        k, iters, tol, generator: as in :func:`jacobian_directions`.

    Returns:
        :class:`JacobianDirections` with ``directions`` ``(k, S, *h_shape)``, ``singular_values`` ``(k, S)``,
        ``outputs`` ``(k, S, *x_shape)``, ``S = n - 1``; ``iterations`` the largest count of any step. The edit of
        direction ``j`` is ``hspace_shift(model, module, directions[j] * singular_values[j, :, None], sigmas)``
        (the official code weights each step by its singular value) or ``directions[j]``.
    """
    from paperzoo.diffusion.samplers import sample_ddim

    if x.shape[0] != 1:
        raise ValueError(f"x must hold one sample (batch size 1), got {x.shape[0]}")
    states = []
    sample_ddim(model, x, sigmas, callback=lambda info: states.append((info["x"], info["sigma"])))
    results = []
    for xt, s in states:
        if not float(s) > 0:
            continue
        results.append(hspace_jacobian_directions(model, module, xt, float(s), k, iters=iters, tol=tol,
                                                  generator=generator))
    return JacobianDirections(torch.stack([r.directions for r in results], dim=1),
                              torch.stack([r.singular_values for r in results], dim=1),
                              torch.stack([r.outputs for r in results], dim=1),
                              max(r.iterations for r in results))
