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
from paperzoo.diffusion.momentum_sampler import (adams_bashforth_coefficients, dpmpp_2m_hb_step, ghvb_coefficients,
                                                 ghvb_step, plms_hb_step, plms_step, sample_ghvb, sample_hb,
                                                 sample_plms, sample_plms_hb)
from paperzoo.diffusion.guidance_interval import (guidance_interval_from_steps, guidance_interval_scale,
                                                  limited_interval_guidance)
from paperzoo.diffusion.iadb import (DeblendingNetwork, alpha_blend, alpha_from_sigma, deblending_from_denoiser,
                                     get_sigmas_iadb, iadb_loss, iadb_step, iadb_training_sigmas, sample_iadb,
                                     sigma_from_alpha)
from paperzoo.diffusion.edit_friendly import (EditFriendlyInversion, ddim_inversion, edit_friendly_inversion,
                                              noise_map_step, sample_ddpm_noise_maps)
from paperzoo.diffusion.adaptive_guidance import (adaptive_guidance, noise_cosine_similarity)
from paperzoo.diffusion.gradient_estimation import (gradient_estimation_step, sample_gradient_estimation)
from paperzoo.diffusion.ddim_inversion import (NoiseAssignment, assign_noises, ddim_inversion_sigmas, invert_ddim,
                                               ks_distance, moment_gaussian_kl, reconstruction_error,
                                               top_k_correlation)
from paperzoo.diffusion.noise_unconditional import (EffectiveTargetError, NoiseUnconditional,
                                                    accumulated_error_bound, conditional_target,
                                                    effective_target_error, level_posterior,
                                                    optimal_unconditional_denoiser, unconditional_target)
from paperzoo.diffusion.debiased_loss import (debiased_weight, debiased_weighting)
from paperzoo.diffusion.autodiffusion import (SearchResult, crossover_steps, frechet_distance, mutate_steps,
                                              random_steps, schedule_fitness, search_timesteps, steps_to_sigmas)

from paperzoo.diffusion.cold_diffusion import (Degradation, GaussianBlur, GaussianNoise, Interpolation, Masking,
                                               RestorationMLP, blur_schedule, cold_levels, cold_loss, cold_step,
                                               gaussian_fade_masks, sample_cold, train_restoration)
from paperzoo.diffusion.gauge_freedom import (DimensionEstimate, denoiser_jacobian, dimension_from_spectrum,
                                              gauge_residual, gauge_rotation, intrinsic_dimension,
                                              mle_intrinsic_dimension, nonconservativity)
from paperzoo.diffusion.predictor_corrector_guidance import (cfg_gaussian_output, pcg_corrector, pcg_gamma, pcg_step,
                                                             sample_pcg, tilted_gaussian, tilted_log_density)
from paperzoo.diffusion.logsnr_schedules import (LogSNRSchedule, cauchy_schedule, cosine_logsnr_schedule,
                                               importance_weight, importance_weighting, laplace_schedule)
from paperzoo.diffusion.kinetic_optimal import (GaussianPath, cond_ot_path, cosine_path, data_separation_function,
                                                gaussian_eps_mmse, gaussian_path_kinetic_energy,
                                                kinetic_energy_from_separation, kinetic_optimal_path,
                                                path_to_ve_sigmas, piecewise_linear_path, tabulate_eps_mmse)
from paperzoo.diffusion.improved_ddpm import (LearnedVarianceMLP, VLBResult, ddpm_variance_range, ddpm_variance_step,
                                              gaussian_kl, hybrid_loss, interpolated_log_variance,
                                              sample_ddpm_variance, train_hybrid, vlb_bound, vlb_term)
from paperzoo.diffusion.noise_scheduling import (GammaSchedule, ScaledInputNetwork, gamma_cosine, gamma_linear,
                                                 gamma_sigmoid, noisy_input)
from paperzoo.diffusion.pfgmpp import (EmpiricalPFGMPP, noise_injected_step, pfgmpp_noise, pfgmpp_perturb,
                                       pfgmpp_posterior_mean, pfgmpp_prior, pfgmpp_radius_cdf, radius_to_sigma,
                                       sigma_to_radius)
from paperzoo.diffusion.signal_leak import (SignalLeak, fit_signal_leak, low_frequency_basis, sample_signal_leak,
                                          signal_leak_from_moments, signal_leak_moments, signal_leak_start)
from paperzoo.diffusion.f_distill import (OneStepGenerator, distill_one_step, f_distill_direction, f_distill_loss,
                                         f_divergence_function, f_divergence_weight, student_density)
from paperzoo.diffusion.consistency import (ConsistencyModel, consistency_scalings, consistency_step,
                                            consistency_training_loss, ct_discretization_steps, ct_ema_decay,
                                            ict_discretization_steps, karras_levels, lognormal_level_probs,
                                            pseudo_huber, pseudo_huber_c, sample_consistency, sample_level_indices,
                                            train_consistency)
from paperzoo.diffusion.noisediffusion import (interpolate_images, lerp, noisediffusion_coefficients,
                                               noisediffusion_latent, slerp)
from paperzoo.diffusion.restoration_degradation import (affine_sampler_law, biased_denoiser, ddim_gaussian_error,
                                                        degradation, predicted_noise, rd_step, restoration,
                                                        restoration_level, sample_rd)
from paperzoo.diffusion.minority_guidance import (MinorityClassifier, classifier_guidance, minority_guidance,
                                                  minority_score, minority_score_classes, mixture_class_log_posterior,
                                                  train_minority_classifier)
from paperzoo.diffusion.harmonic_generalization import (EmpiricalDenoiser, JacobianSpectrum, cross_network_distance,
                                                        jacobian_spectrum, memorization_ratio,
                                                        nearest_neighbor_distances)
from paperzoo.diffusion.ptq4dm import (QuantLinear, fake_quantize, fit_range, gaussian_calibration_set, ndtc_steps,
                                       quantize_network, sampler_calibration_set, single_steps, uniform_steps)
from paperzoo.diffusion.noise_refine import (NoiseRefiner, multistep_score_distillation_loss, noise_refining_targets,
                                             refiner_regression_loss, sample_refined, train_noise_refiner)
from paperzoo.diffusion.sdi import (distillation_gradient, distillation_timesteps, score_distillation,
                                    sdi_inversion_sigmas, sdi_noise)
from paperzoo.diffusion.uni_instruct import (uni_instruct_distill, uni_instruct_loss)
from paperzoo.diffusion.golden_noise import (NoisePromptNet, golden_noise, re_denoise, select_pairs, train_npnet)
from paperzoo.diffusion.diffusion_gan import (AdaptiveT, TimeConditionedMLP, diffuse, diffusion_gan_alphas_cumprod,
                                              instance_noise_levels, sample_diffusion_timesteps, train_diffusion_gan)
from paperzoo.diffusion.ddgan import (DDGANDiscriminator, DDGANGenerator, DDGANLosses, ddgan_optimizers, ddgan_sigmas,
                                      ddgan_train_step, forward_pairs, posterior_sample, r1_penalty, sample_ddgan)
from paperzoo.diffusion.reflected_diffusion import (CosineSeriesDensity, cosine_series_estimate, minimax_terms,
                                                    neumann_heat_kernel, reflect_unit, reflected_step,
                                                    sample_reflected_em)
from paperzoo.diffusion.one_more_step import (one_more_step, one_more_step_denoiser, oms_loss, sample_one_more_step,
                                              train_one_more_step)
from paperzoo.diffusion.improved_lcm import (cauchy_loss, adaptive_c, improved_lcm_loss, train_improved_lcm)
from paperzoo.diffusion.ddo import (ddo_loss, ddo_log_ratio, ddo_round)
from paperzoo.diffusion.hspace import (BottleneckMLP, HSpaceRecord, PCADirections, JacobianDirections, hspace_shift,
                                       record_hspace, pca_directions, supervised_direction, project_out,
                                       jacobian_directions, hspace_jacobian_directions,
                                       trajectory_jacobian_directions)
from paperzoo.diffusion.ntk_score import (TwoLayerReLU, empirical_ntk, KernelPredictions, ntk_predictions,
                                          DSMRegressionData, dsm_regression_data, train_gd, early_stopping_time)
from paperzoo.diffusion.vdm import (LearnedLogSNR, LinearLogSNR, VDMTerms, vdm_nelbo, vdm_diffusion_loss,
                                    sample_vdm_times, schedule_with_derivative, eps_model_from_network,
                                    mixture_eps_model, diagonal_gaussian_eps_model, gaussian_vdm_terms, train_vdm,
                                    bits_per_dim)
from paperzoo.diffusion.diffenc import (DiffEncEncoder, diffenc_encoder, diffenc_mean, weighted_diffusion_loss,
                                        optimal_variance_ratio, INNER_PARAMETRIZATIONS)
from paperzoo.diffusion.sara import (SparseUpdate, sara_masks, sara_threshold, sara_lr, nuclear_norm,
                                     sara_rank_penalty, finetune_sara)
from paperzoo.diffusion.log_variance_sampler import (ControlMLP, path_log_rnd, reverse_kl_loss, log_variance_loss,
                                                     sample_pis, log_normalizer_estimates, train_pis_sampler,
                                                     gaussian_optimal_control)
from paperzoo.diffusion.mulan import (PolynomialNoiseSchedule, GaussianContextEncoder, MuLANEpsNetwork, MuLANTerms,
                                      gaussian_context_kl, mulan_eps_model, mulan_nelbo, train_mulan)

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
    "adams_bashforth_coefficients", "dpmpp_2m_hb_step", "ghvb_coefficients", "ghvb_step", "plms_hb_step",
    "plms_step", "sample_ghvb", "sample_hb", "sample_plms", "sample_plms_hb",
    "guidance_interval_from_steps", "guidance_interval_scale", "limited_interval_guidance",
    "DeblendingNetwork", "alpha_blend", "alpha_from_sigma", "deblending_from_denoiser", "get_sigmas_iadb",
    "iadb_loss", "iadb_step", "iadb_training_sigmas", "sample_iadb", "sigma_from_alpha",
    "EditFriendlyInversion", "ddim_inversion", "edit_friendly_inversion", "noise_map_step",
    "sample_ddpm_noise_maps",
    "adaptive_guidance", "noise_cosine_similarity",
    "gradient_estimation_step", "sample_gradient_estimation",
    "NoiseAssignment", "assign_noises", "ddim_inversion_sigmas", "invert_ddim", "ks_distance",
    "moment_gaussian_kl", "reconstruction_error", "top_k_correlation",
    "EffectiveTargetError", "NoiseUnconditional", "accumulated_error_bound", "conditional_target",
    "effective_target_error", "level_posterior", "optimal_unconditional_denoiser", "unconditional_target",
    "debiased_weight", "debiased_weighting",
    "SearchResult", "crossover_steps", "frechet_distance", "mutate_steps", "random_steps", "schedule_fitness",
    "search_timesteps", "steps_to_sigmas",
    "Degradation", "GaussianBlur", "GaussianNoise", "Interpolation", "Masking", "RestorationMLP", "blur_schedule",
    "cold_levels", "cold_loss", "cold_step", "gaussian_fade_masks", "sample_cold", "train_restoration",
    "DimensionEstimate", "denoiser_jacobian", "dimension_from_spectrum", "gauge_residual", "gauge_rotation",
    "intrinsic_dimension", "mle_intrinsic_dimension", "nonconservativity",
    "cfg_gaussian_output", "pcg_corrector", "pcg_gamma", "pcg_step", "sample_pcg", "tilted_gaussian",
    "tilted_log_density",
    "LogSNRSchedule", "cauchy_schedule", "cosine_logsnr_schedule", "importance_weight", "importance_weighting",
    "laplace_schedule",
    "GaussianPath", "cond_ot_path", "cosine_path", "data_separation_function", "gaussian_eps_mmse",
    "gaussian_path_kinetic_energy", "kinetic_energy_from_separation", "kinetic_optimal_path", "path_to_ve_sigmas",
    "piecewise_linear_path", "tabulate_eps_mmse",
    "LearnedVarianceMLP", "VLBResult", "ddpm_variance_range", "ddpm_variance_step", "gaussian_kl", "hybrid_loss",
    "interpolated_log_variance", "sample_ddpm_variance", "train_hybrid", "vlb_bound", "vlb_term",
    "GammaSchedule", "ScaledInputNetwork", "gamma_cosine", "gamma_linear", "gamma_sigmoid", "noisy_input",
    "EmpiricalPFGMPP", "noise_injected_step", "pfgmpp_noise", "pfgmpp_perturb", "pfgmpp_posterior_mean",
    "pfgmpp_prior", "pfgmpp_radius_cdf", "radius_to_sigma", "sigma_to_radius",
    "SignalLeak", "fit_signal_leak", "low_frequency_basis", "sample_signal_leak", "signal_leak_from_moments",
    "signal_leak_moments", "signal_leak_start",
    "OneStepGenerator", "distill_one_step", "f_distill_direction", "f_distill_loss", "f_divergence_function",
    "f_divergence_weight", "student_density",
    "ConsistencyModel", "consistency_scalings", "consistency_step", "consistency_training_loss",
    "ct_discretization_steps", "ct_ema_decay", "ict_discretization_steps", "karras_levels",
    "lognormal_level_probs", "pseudo_huber", "pseudo_huber_c", "sample_consistency", "sample_level_indices",
    "train_consistency",
    "interpolate_images", "lerp", "noisediffusion_coefficients", "noisediffusion_latent", "slerp",
    "affine_sampler_law", "biased_denoiser", "ddim_gaussian_error", "degradation", "predicted_noise", "rd_step",
    "restoration", "restoration_level", "sample_rd",
    "MinorityClassifier", "classifier_guidance", "minority_guidance", "minority_score", "minority_score_classes",
    "mixture_class_log_posterior", "train_minority_classifier",
    "EmpiricalDenoiser", "JacobianSpectrum", "cross_network_distance", "jacobian_spectrum", "memorization_ratio",
    "nearest_neighbor_distances",
    "QuantLinear", "fake_quantize", "fit_range", "gaussian_calibration_set", "ndtc_steps", "quantize_network",
    "sampler_calibration_set", "single_steps", "uniform_steps",
    "NoiseRefiner", "multistep_score_distillation_loss", "noise_refining_targets", "refiner_regression_loss",
    "sample_refined", "train_noise_refiner",
    "distillation_gradient", "distillation_timesteps", "score_distillation", "sdi_inversion_sigmas", "sdi_noise",
    "uni_instruct_distill", "uni_instruct_loss",
    "NoisePromptNet", "golden_noise", "re_denoise", "select_pairs", "train_npnet",
    "AdaptiveT", "TimeConditionedMLP", "diffuse", "diffusion_gan_alphas_cumprod", "instance_noise_levels",
    "sample_diffusion_timesteps", "train_diffusion_gan",
    "DDGANDiscriminator", "DDGANGenerator", "DDGANLosses", "ddgan_optimizers", "ddgan_sigmas", "ddgan_train_step",
    "forward_pairs", "posterior_sample", "r1_penalty", "sample_ddgan",
    "CosineSeriesDensity", "cosine_series_estimate", "minimax_terms", "neumann_heat_kernel", "reflect_unit",
    "reflected_step", "sample_reflected_em",
    "one_more_step", "one_more_step_denoiser", "oms_loss", "sample_one_more_step", "train_one_more_step",
    "cauchy_loss", "adaptive_c", "improved_lcm_loss", "train_improved_lcm",
    "ddo_loss", "ddo_log_ratio", "ddo_round",
    "BottleneckMLP", "HSpaceRecord", "PCADirections", "JacobianDirections", "hspace_shift", "record_hspace",
    "pca_directions", "supervised_direction", "project_out", "jacobian_directions", "hspace_jacobian_directions",
    "trajectory_jacobian_directions",
    "TwoLayerReLU", "empirical_ntk", "KernelPredictions", "ntk_predictions", "DSMRegressionData",
    "dsm_regression_data", "train_gd", "early_stopping_time",
    "LearnedLogSNR", "LinearLogSNR", "VDMTerms", "vdm_nelbo", "vdm_diffusion_loss", "sample_vdm_times",
    "schedule_with_derivative", "eps_model_from_network", "mixture_eps_model", "diagonal_gaussian_eps_model",
    "gaussian_vdm_terms", "train_vdm", "bits_per_dim",
    "DiffEncEncoder", "diffenc_encoder", "diffenc_mean", "weighted_diffusion_loss", "optimal_variance_ratio",
    "INNER_PARAMETRIZATIONS",
    "SparseUpdate", "sara_masks", "sara_threshold", "sara_lr", "nuclear_norm", "sara_rank_penalty",
    "finetune_sara",
    "ControlMLP", "path_log_rnd", "reverse_kl_loss", "log_variance_loss", "sample_pis",
    "log_normalizer_estimates", "train_pis_sampler", "gaussian_optimal_control",
    "PolynomialNoiseSchedule", "GaussianContextEncoder", "MuLANEpsNetwork", "MuLANTerms", "gaussian_context_kl",
    "mulan_eps_model", "mulan_nelbo", "train_mulan",
]
