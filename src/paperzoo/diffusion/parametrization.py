"""The one conversion layer between noise conventions and prediction targets.

paperzoo's samplers and losses work in the variance-exploding (VE) form of k-diffusion: a state
:math:`x = x_0 + \\sigma\\varepsilon` and a denoiser ``model(x, sigma)`` :math:`\\approx E[x_0 \\mid x]`. Other
conventions write the same state scaled, :math:`x_t = \\alpha_t x_0 + \\sigma_t \\varepsilon`:

- variance preserving (DDPM, diffusers): :math:`\\alpha_t = \\sqrt{\\bar\\alpha_t}`,
  :math:`\\sigma_t = \\sqrt{1 - \\bar\\alpha_t}`;
- flow matching / rectified flow: :math:`\\alpha_t = 1 - t`, :math:`\\sigma_t = t`.

Dividing by :math:`\\alpha_t` gives the VE state with level :math:`\\sigma = \\sigma_t/\\alpha_t`
(:func:`ve_sigma`); :func:`vp_from_ve` and :func:`flow_time_from_ve` go back. A network predicting
:math:`\\varepsilon`, :math:`v = \\alpha_t\\varepsilon - \\sigma_t x_0` (VP), the flow velocity
:math:`u = \\varepsilon - x_0` or :math:`x_0` itself becomes a VE denoiser with :func:`denoiser_from_prediction`;
:func:`prediction_target` gives the regression target of each for training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from paperzoo.core.accepts import Choice, Function, OneOf, Real, Tensor, accepts

__all__ = ["ve_sigma", "vp_from_ve", "flow_time_from_ve", "network_input_scale", "denoiser_from_prediction",
           "prediction_target", "PREDICTIONS", "SPACES"]

#: what a network may predict
PREDICTIONS = ("eps", "x0", "v", "flow")
#: how the network sees its input state
SPACES = ("ve", "vp", "flow")

_LEVEL = OneOf(Real(ge=0), Tensor(ndims=tuple(range(0, 8)), nonnegative=True, allow_empty=True))


@accepts(alpha=OneOf(Real(gt=0), Tensor(ndims=tuple(range(0, 8)), allow_empty=True)), sigma_t=_LEVEL)
def ve_sigma(alpha, sigma_t):
    """The VE level :math:`\\sigma = \\sigma_t / \\alpha_t` of a scaled state :math:`\\alpha_t x_0 + \\sigma_t\\varepsilon`."""
    if isinstance(alpha, torch.Tensor) and bool((alpha <= 0).any()):
        raise ValueError("alpha must be > 0 entrywise")
    return sigma_t / alpha


@accepts(sigma=_LEVEL)
def vp_from_ve(sigma):
    """:math:`(\\alpha_t, \\sigma_t) = (1, \\sigma)/\\sqrt{1 + \\sigma^2}`: the VP scaling of a VE level (tensors)."""
    s = sigma if isinstance(sigma, torch.Tensor) else torch.tensor(float(sigma), dtype=torch.float64)
    alpha = (1 + s.square()).rsqrt()
    return alpha, s * alpha


@accepts(sigma=_LEVEL)
def flow_time_from_ve(sigma):
    """The flow-matching time :math:`t = \\sigma / (1 + \\sigma)` of a VE level (:math:`\\alpha_t = 1 - t`)."""
    return sigma / (1 + sigma)


@accepts(sigma=_LEVEL, space=Choice(*SPACES))
def network_input_scale(sigma, space: str):
    """:math:`c_{in} = \\alpha_t`, the factor that turns the VE state into the state the network was trained on:
    1 (VE), :math:`1/\\sqrt{1+\\sigma^2}` (VP), :math:`1/(1+\\sigma)` (flow)."""
    if space == "ve":
        return torch.ones_like(sigma) if isinstance(sigma, torch.Tensor) else 1.0
    if space == "vp":
        return (1 + sigma.square()).rsqrt() if isinstance(sigma, torch.Tensor) else (1 + sigma**2) ** -0.5
    return 1 / (1 + sigma)


def _expand(sigma, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` (a number, ``()`` or ``(N,)``) shaped to broadcast against ``x`` ``(N, ...)``."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.dim() == 0:
        return s
    if s.dim() == 1 and s.shape[0] == x.shape[0]:
        return s.view(-1, *([1] * (x.dim() - 1)))
    raise ValueError(f"sigma must be a number or have shape ({x.shape[0]},) (one level per sample), got shape "
                     f"{tuple(s.shape)}")


def _x0_from_output(output, x, s, alpha, prediction):
    """The denoised estimate from a network output; ``x`` VE state, ``s`` its level, ``alpha`` = c_in."""
    if prediction == "x0":
        return output
    if prediction == "eps":
        return x - s * output
    if prediction == "v":
        # VP: x_t = a x0 + b eps, v = a eps - b x0  =>  x0 = a x_t - b v with a = alpha, b = s * alpha.
        return alpha * (alpha * x) - s * alpha * output
    # flow: x_t = (1 - t) x0 + t eps, u = eps - x0  =>  x0 = x_t - t u with t = s / (1 + s) and x_t = x / (1 + s).
    t = s / (1 + s)
    return x / (1 + s) - t * output


def _x0_with_infinite_levels(network, x, sigma, s, prediction, space):
    """The denoised estimate where some levels are infinite (zero terminal SNR): there ``x`` is the normalized
    state :math:`\\varepsilon`, which is also the network's input in the VP and flow spaces, and
    :math:`\\hat x_0 = -\\hat v` (VP), :math:`\\varepsilon - \\hat u` (flow) or the ``x0`` output itself."""
    if bool(torch.isnan(s).any()):
        raise ValueError("sigma must not contain NaN")
    if prediction == "eps":
        raise ValueError("an eps-prediction network cannot denoise at an infinite level (zero terminal SNR: "
                         "x0 = x - sigma * eps is undefined); use v, x0 or flow prediction")
    if space == "ve":
        raise ValueError("a network on VE inputs cannot take an infinite level (its input would be infinite); "
                         "use the vp or flow space")
    infinite = torch.isinf(s)
    safe = torch.where(infinite, torch.ones_like(s), s)
    c_in = torch.where(infinite, torch.ones_like(s), network_input_scale(safe, space))
    output = network(c_in * x, sigma)
    finite = _x0_from_output(output, x, safe, network_input_scale(safe, space), prediction)
    at_infinity = {"x0": output, "v": -output, "flow": x - output}[prediction]
    return torch.where(infinite, at_infinity, finite)


@accepts(network=Function(), prediction=Choice(*PREDICTIONS), space=Choice(*SPACES, optional=True),
         example=lambda ctx: {"network": lambda x, sigma: x, "prediction": "eps"}, output="any")  # a function
def denoiser_from_prediction(network: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], prediction: str, *,
                             space: str | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Wrap ``network(x_in, sigma) -> prediction`` as a VE denoiser ``model(x, sigma) -> x0``.

    Args:
        network: called with the state in its own space, :math:`x_{in} = c_{in}\\,x`
            (:func:`network_input_scale`), and the VE level ``sigma`` (shape ``(N,)``, or a number) as condition.
        prediction: ``"eps"`` (:math:`\\hat x_0 = x - \\sigma\\hat\\varepsilon`), ``"x0"``, ``"v"``
            (VP: :math:`\\hat x_0 = \\alpha_t x_t - \\sigma_t \\hat v`) or ``"flow"``
            (:math:`\\hat x_0 = x_t - t\\,\\hat u`).
            At an infinite level (zero terminal SNR) ``x`` is the normalized state :math:`\\varepsilon` (see
            :mod:`~paperzoo.diffusion.samplers`) and is passed to the network as is (the limit of
            :math:`c_{in} x`); ``"eps"`` and the ``"ve"`` space cannot take such a level (ValueError).
        space: the input convention, ``"ve"``, ``"vp"`` or ``"flow"``; default ``"vp"`` for ``"v"``, ``"flow"``
            for ``"flow"``, ``"ve"`` otherwise. ``"v"`` requires ``"vp"`` and ``"flow"`` requires ``"flow"``.
    """
    default = {"v": "vp", "flow": "flow"}.get(prediction, "ve")
    space = default if space is None else space
    if prediction in ("v", "flow") and space != default:
        raise ValueError(f"space must be {default!r} for prediction={prediction!r}, got {space!r}")

    def model(x: torch.Tensor, sigma) -> torch.Tensor:
        s = _expand(sigma, x)
        if not bool(torch.isfinite(s).all()):
            return _x0_with_infinite_levels(network, x, sigma, s, prediction, space)
        c_in = network_input_scale(s, space)
        return _x0_from_output(network(c_in * x, sigma), x, s, c_in, prediction)

    model.prediction, model.space = prediction, space
    return model


@accepts(x0=Tensor(ndims=tuple(range(1, 8)), degenerate=("coincident",)), noise=Tensor(ndims=tuple(range(1, 8))),
         sigma=_LEVEL,
         prediction=Choice(*PREDICTIONS))
def prediction_target(x0: torch.Tensor, noise: torch.Tensor, sigma, prediction: str) -> torch.Tensor:
    """The regression target of a ``prediction`` network at :math:`x = x_0 + \\sigma\\varepsilon`:
    :math:`\\varepsilon` (``"eps"``), :math:`x_0`, :math:`v = \\alpha_t\\varepsilon - \\sigma_t x_0` with the VP
    scaling (``"v"``), or :math:`u = \\varepsilon - x_0` (``"flow"``). ``sigma``: a number or ``(N,)``."""
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "flow":
        return noise - x0
    s = _expand(sigma, x0)
    alpha = (1 + s.square()).rsqrt()
    return alpha * noise - s * alpha * x0
