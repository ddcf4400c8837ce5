"""Multisample Flow Matching: flow matching with a coupling of each minibatch's data and noise.

References: Multisample Flow Matching: Straightening Flows with Minibatch Couplings (Pooladian, Ben-Hamu,
Domingo-Enrich, Amos, Lipman, Chen), 2023.

Flow matching regresses a velocity field on the straight path between a data point :math:`x_0` and a noise point
:math:`\\varepsilon`; in paperzoo's time convention (data at :math:`t = 0`, noise at :math:`t = 1`, as in
rectified flow)

.. math::
    x_t = (1 - t)\\,x_0 + t\\,\\varepsilon, \\qquad
    \\mathcal L(\\theta) = E_{t \\sim U(0,1),\\,(x_0, \\varepsilon) \\sim \\pi}
    \\bigl\\| u_\\theta(x_t, t) - (\\varepsilon - x_0) \\bigr\\|^2 .

Independent flow matching draws :math:`\\pi = p_0 \\otimes \\mathcal N(0, I)`. Multisample flow matching draws a
minibatch of :math:`n` data and :math:`n` noise points and pairs them by a coupling with uniform marginals on the
batch, so the marginals of :math:`x_0` and :math:`\\varepsilon` are unchanged (the paper's Section 3). With the
batch optimal-transport coupling (squared Euclidean cost, an assignment: :func:`batch_ot_coupling`) the pairs cross
less, which lowers the variance of the regression target and straightens the learned flow (its Section 4), so
few Euler steps suffice.

The loss is :func:`paperzoo.diffusion.training.denoising_loss` with ``prediction="flow"``: the VE level
:math:`\\sigma = t/(1-t)` puts the network input at :math:`x_t` and its target at :math:`\\varepsilon - x_0`;
this module only supplies the coupled noise and uniform times (:func:`multisample_fm_batch`). Deviation from the
torchcfm reference: torchcfm resamples pairs from the batch plan with replacement; this module uses the plan's
permutation itself (each data and noise point once), the coupling the paper describes for uniform batches.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from paperzoo.core.accepts import Choice, Generator, Real, Tensor, accepts

__all__ = ["batch_ot_coupling", "multisample_fm_batch", "flow_path", "COUPLINGS"]

COUPLINGS = ("independent", "ot")


@accepts(x0=Tensor("n", "d", degenerate=("coincident",)), noise=Tensor("n", "d"))
def batch_ot_coupling(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The permutation ``perm`` of the noise that solves the batch assignment
    :math:`\\min_\\pi \\sum_i \\|x_{0,i} - \\varepsilon_{\\pi(i)}\\|^2` (exact OT between the two uniform batches):
    pair ``x0[i]`` with ``noise[perm[i]]``. Shape ``(n,)``, dtype ``long``."""
    cost = torch.cdist(x0.detach().double(), noise.detach().double()).square()
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    perm = torch.empty(x0.shape[0], dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm.to(x0.device)


@accepts(x0=Tensor("n", "d", degenerate=("coincident",)), noise=Tensor("n", "d"), t=Tensor("n", nonnegative=True))
def flow_path(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The straight path's point :math:`x_t = (1-t)x_0 + t\\varepsilon` and velocity target
    :math:`\\varepsilon - x_0`, each ``(n, d)``; ``t`` in ``[0, 1]``, shape ``(n,)``."""
    if bool((t > 1).any()):
        raise ValueError(f"t must be in [0, 1], got a maximum of {float(t.max())!r}")
    return (1 - t)[:, None] * x0 + t[:, None] * noise, noise - x0


@accepts(x0=Tensor("n", "d", degenerate=("coincident",)), coupling=Choice(*COUPLINGS), t_max=Real(gt=0, lt=1),
         generator=Generator())
def multisample_fm_batch(x0: torch.Tensor, coupling: str = "ot", *, t_max: float = 1 - 1e-3,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One minibatch of (coupled noise, VE levels) for ``denoising_loss(network, x0, sigma, noise=noise,
    prediction="flow")``.

    Draws :math:`n` standard normal noise points, pairs them with ``x0`` by ``coupling`` (``"ot"``:
    :func:`batch_ot_coupling`; ``"independent"``: as drawn), and times :math:`t \\sim U(0, t_{max})` mapped to
    :math:`\\sigma = t/(1-t)` (``t_max < 1`` keeps the level finite). Returns ``(noise, sigma)``.
    """
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    if coupling == "ot":
        noise = noise[batch_ot_coupling(x0, noise)]
    t = t_max * (1 - torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype)).to(x0.device)  # in (0, t_max]
    return noise, t / (1 - t)
