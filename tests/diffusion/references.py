"""Reference packages for the diffusion cross-checks, loaded without their heavy dependencies.

k-diffusion's package ``__init__`` imports its training stack (torchvision, CLIP, wandb, ...); its samplers need
only ``sampling.py`` and one helper of ``utils.py``. ``k_diffusion_sampling()`` loads the installed
``k_diffusion/sampling.py`` itself under a stub package whose ``utils`` provides that helper (``append_dims``,
which appends trailing singleton dimensions). The Makefile installs k-diffusion with ``--no-deps``.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch


def _append_dims(x, target_dims):
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def k_diffusion_sampling():
    """The module ``k_diffusion.sampling`` of the installed k-diffusion (skips the test when it is absent)."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (make install-dev installs it)")
    root = list(spec.submodule_search_locations)[0]
    package = types.ModuleType("k_diffusion")
    package.__path__ = [root]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = _append_dims
    package.utils = utils
    sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = package, utils
    sampling_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", f"{root}/sampling.py")
    module = importlib.util.module_from_spec(sampling_spec)
    sys.modules["k_diffusion.sampling"] = module
    sampling_spec.loader.exec_module(module)
    return module


def seeded_noise_sampler(x: torch.Tensor, seed: int):
    """A k-diffusion ``noise_sampler`` drawing ``torch.randn`` on a generator seeded with ``seed``: the same draws
    as paperzoo's samplers with ``generator=torch.Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=g, dtype=x.dtype)
