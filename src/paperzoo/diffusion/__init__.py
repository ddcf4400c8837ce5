"""paperzoo.diffusion: exact Gaussian-mixture targets, schedules, the prediction conversion layer and samplers.

Conventions are k-diffusion's: a state :math:`x = x_0 + \\sigma\\varepsilon`, a denoiser ``model(x, sigma)``,
schedules as decreasing tensors of levels ending in 0, samplers ``sample_<name>(model, x, sigmas, *, ...)``.
"""

from paperzoo.diffusion.guidance import class_conditional, classifier_free_guidance, guidance_scale_at
from paperzoo.diffusion.min_snr import min_snr_weight, min_snr_weighting
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.multisample_flow_matching import COUPLINGS, batch_ot_coupling, flow_path, multisample_fm_batch
from paperzoo.diffusion.parametrization import (PREDICTIONS, SPACES, denoiser_from_prediction, flow_time_from_ve,
                                                network_input_scale, prediction_target, ve_sigma, vp_from_ve)
from paperzoo.diffusion.samplers import (SAMPLERS, SamplerContext, ancestral_step, ancestral_step_sizes,
                                         dpmpp_2m_step, euler_step, heun_step, run_sampler, sample_ddim, sample_ddpm,
                                         sample_dpmpp_2m, sample_euler, sample_euler_ancestral, sample_heun,
                                         to_derivative)
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, append_zero, betas_cosine,
                                          betas_from_alphas_cumprod, betas_linear, betas_scaled_linear,
                                          discrete_timesteps, get_sigmas_exponential, get_sigmas_karras,
                                          rescale_zero_terminal_snr, sigmas_from_alphas_cumprod, snr_from_sigmas)
from paperzoo.diffusion.target_score_matching import (denoiser_from_score, denoising_score_matching_loss, dsm_target,
                                                      mixed_score_target, score_from_denoiser, target_score_estimate,
                                                      target_score_matching_loss, tsm_target)
from paperzoo.diffusion.training import (MLPDenoiser, denoising_loss, lognormal_sigmas, sample_training_sigmas,
                                         train_denoiser)
from paperzoo.diffusion.zero_terminal_snr import rescaled_guidance, zero_snr_sigmas

__all__ = [
    "GaussianMixture", "mixture_on_circle",
    "COUPLINGS", "batch_ot_coupling", "flow_path", "multisample_fm_batch",
    "PREDICTIONS", "SPACES", "denoiser_from_prediction", "flow_time_from_ve", "network_input_scale",
    "prediction_target", "ve_sigma", "vp_from_ve",
    "SAMPLERS", "SamplerContext", "ancestral_step", "ancestral_step_sizes", "dpmpp_2m_step", "euler_step",
    "heun_step", "run_sampler", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_euler",
    "sample_euler_ancestral", "sample_heun", "to_derivative",
    "alphas_cumprod_from_betas", "append_zero", "betas_cosine", "betas_from_alphas_cumprod", "betas_linear",
    "betas_scaled_linear", "discrete_timesteps", "get_sigmas_exponential", "get_sigmas_karras",
    "rescale_zero_terminal_snr", "sigmas_from_alphas_cumprod", "snr_from_sigmas",
    "class_conditional", "classifier_free_guidance", "guidance_scale_at",
    "denoiser_from_score", "denoising_score_matching_loss", "dsm_target", "mixed_score_target", "score_from_denoiser",
    "target_score_estimate", "target_score_matching_loss", "tsm_target",
    "min_snr_weight", "min_snr_weighting",
    "MLPDenoiser", "denoising_loss", "lognormal_sigmas", "sample_training_sigmas", "train_denoiser",
    "rescaled_guidance", "zero_snr_sigmas",
]
