"""Training-dynamics measurements: Hessian spectra, trajectories, noise scales, stability."""

from paperzoo.diagnostics.hessian import (class_wise_hessian_extremes, gauss_newton_operator,
                                          gradient_eigenspace_overlap, hessian_operator, hutchinson_trace,
                                          hvp_operator, lanczos, LanczosResult, PowerResult, sharpness_threshold,
                                          SpectralDensity, spectral_density, stability_ratio, top_eigenpairs,
                                          top_eigenvalue, TopEigenpairs, TraceEstimate)
from paperzoo.diagnostics.trajectories import gd_trajectory, Trajectory
from paperzoo.diagnostics.neural_collapse import (neural_collapse_metrics, NeuralCollapseMetrics, class_mean_geometry,
                                                  ClassMeanGeometry, simplex_etf)
from paperzoo.diagnostics.gradient_noise import (PerSampleGradients, GradientStatistics, NoiseScaleEstimate,
                                                 TradeoffFit, HessianNoiseScale, per_sample_gradients,
                                                 gradient_statistics, simple_noise_scale, two_batch_noise_scale,
                                                 steps_examples_tradeoff, critical_batch_size, fit_steps_examples,
                                                 hessian_weighted_noise_scale)
from paperzoo.diagnostics.smoothers import (tree_smoother_weights, knn_smoother_weights, effective_parameters)
from paperzoo.diagnostics.trajectory_pca import (trajectory_pca, TrajectoryPCA, random_walk_pca_prediction,
                                                 RandomWalkPCAPrediction, lissajous_correlation)
from paperzoo.diagnostics.spectral_risk import (EffectiveRegularization, RidgeRisk, OptimalRidge, CostOfOverfitting,
                                                EmpiricalRidgeRisk, effective_regularization, ridge_risk,
                                                optimal_ridge, cost_of_overfitting, empirical_ridge_risk)
from paperzoo.diagnostics.pretraining import (GaussianMixtureFit, PretrainThenERM, gaussian_mixture_em,
                                              mixture_posterior, erm_label_map, pretrain_then_erm,
                                              supervised_plugin_rule, linear_rule_risk, two_component_bayes_error)
from paperzoo.diagnostics.deep_linear_collapse import (DeepLinearUFMFit, ImbalancedGeometry, GeometryDeviation,
                                                       LayerwiseCollapse, deep_linear_ufm_loss, train_deep_linear_ufm,
                                                       imbalanced_mse_geometry, layer_features,
                                                       imbalanced_geometry_deviation, layerwise_collapse)
from paperzoo.diagnostics.tiny_subspace import (subspace_overlap, random_subspace, SubspaceTracker, subspace_tracker,
                                                SubspaceTrace)
from paperzoo.diagnostics.large_batch import (BatchGradientNorms, StepsToTarget, NoiseScaleTracker,
                                              batch_gradient_norms, dataset_noise_scale, steps_to_target)
from paperzoo.diagnostics.learning_curves import (LearningCurve, SamplesToReach, GaussianNBParams, learning_curve,
                                                  samples_to_reach, gaussian_nb_fit, gaussian_nb_log_proba,
                                                  gaussian_nb_predict, gaussian_nb_fit_predict, bayes_error,
                                                  naive_bayes_asymptotic_error)
from paperzoo.diagnostics.sgd_stability import (SecondMomentOperator, sgd_second_moment_operator, StabilityRadius,
                                                sgd_stability_radius, HessianCoherence, hessian_coherence,
                                                StabilityCondition, sgd_stability_condition, LinearizedSGDRuns,
                                                simulate_linearized_sgd, batch_noise_factor)
from paperzoo.diagnostics.linear_interpolation import (DeepLinearRegressionFit, ConditionalVariance,
                                                       min_norm_interpolant, train_deep_linear_regression,
                                                       linear_excess_risk, conditional_variance,
                                                       min_norm_conditional_variance)
from paperzoo.diagnostics.vicinity_ufm import (VicinityUFMResult, VicinityNC1Prediction, solve_vicinity_ufm,
                                               vicinity_ufm_objective, vicinity_nc1_prediction)
from paperzoo.diagnostics.dynamical_stability import (hessian_trace, hessian_frobenius, FrobeniusEstimate,
                                                      output_jacobian, sgd_stability, SGDStability,
                                                      trace_stability_ratio)
from paperzoo.diagnostics.accelerated_sgd import (ASGDParams, StreamingRegression, RiskDecomposition,
                                                  asgd_linear_regression, sgd_linear_regression,
                                                  asgd_risk_decomposition, sgd_risk_decomposition,
                                                  excess_risk_per_direction)
from paperzoo.diagnostics.spectral_algorithms import (SpectralProfile, SpectralLoss, EmpiricalSpectralRisk,
                                                      PowerLawRates, krr_profile, gradient_flow_profile,
                                                      gradient_descent_profile, profile_loss, empirical_spectral_risk,
                                                      power_law_rates)
from paperzoo.diagnostics.spectral_bias import (fourier_features, FourierFeatures, coordinate_mlp,
                                                frequency_residuals, FrequencyResiduals, count_activation_regions_1d,
                                                ActivationRegions, SpectralBiasTracker, SpectralBiasTrace)
from paperzoo.diagnostics.scaling_laws import (RFLossCurve, ScalingExponents, PowerLawFit, ComputeFrontier,
                                               power_law_task, random_feature_gd_loss, infinite_width_loss,
                                               predicted_exponents, fit_power_law, compute_optimal_frontier)
from paperzoo.diagnostics.diagonal_networks import (DiagonalNetworkRuns, train_diagonal_network, MinL1Interpolant,
                                                    min_l1_interpolant, step_decay_schedule)
from paperzoo.diagnostics.batch_hessian import (BatchHessianSpectrum, BatchSharpnessFit, DivergenceThreshold,
                                                LogLogSlope, batch_hessian_spectrum, fit_batch_sharpness,
                                                divergence_threshold_lr, loglog_slope)
from paperzoo.diagnostics.outlier_eigenspaces import (GMatrix, OutlierCount, OutlierEigenspace, OutlierTrace,
                                                      OutlierTracker, g_matrix, count_outliers, outlier_eigenspace,
                                                      outlier_alignment, outlier_tracker)
from paperzoo.diagnostics.semi_supervised_gmm import (SelfTrainingFit, labeled_direction, self_training_direction,
                                                      sample_shifted_unlabeled, shift_tv_bound, linear_rule_error)
from paperzoo.diagnostics.input_sensitivity import (InputDerivatives, PermutationImportance, loss_input_derivatives,
                                                    permutation_importance, sensitivity_scores)
from paperzoo.diagnostics.comp_sum import (comp_sum_loss, comp_sum_conditional_risk, comp_sum_conditional_min,
                                           comp_sum_transform, comp_sum_gamma, class_posterior, mixture_excess_losses,
                                           MixtureExcess)
from paperzoo.diagnostics.run_variance import (SplitHalfCorrelation, EnsembleCalibration, per_example_correct_prob,
                                               binomial_accuracy_std, split_half_correlation, ensemble_calibration)
from paperzoo.diagnostics.it_bounds import (LinearGaussianPushforwards, ITBounds, GapEstimate,
                                            linear_gaussian_pushforwards, layerwise_it_bounds,
                                            generalization_gap_monte_carlo, ramp_loss_expectation)
from paperzoo.diagnostics.bandlimited_features import (HiddenParameters, sample_hidden_parameters, random_feature_map,
                                                       Readout, fit_readout, RandomNetFit, random_net_error)
from paperzoo.diagnostics.information_plane import (Compression, InformationPlaneTrace, LayerInformation,
                                                    binned_information, compression, information_plane,
                                                    kde_information, tishby_dataset)
from paperzoo.diagnostics.sgd_generalization_gap import (EpochShift, EpochSimulation, gd_step_gap_change,
                                                         expected_gd_step_gap_change, gradient_noise_trace,
                                                         sgd_epoch_shift, simulate_epochs)
from paperzoo.diagnostics.quotient_frechet import (QuotientFrechetMean, ConsistencyBias, register_to_template,
                                                   apply_group_action, quotient_distance, quotient_frechet_mean,
                                                   oracle_template_mean, fixed_point_bias_constant, consistency_bias)
from paperzoo.diagnostics.double_descent import (KNNAgreement, WidthSweep, knn_noisy_label_agreement, mlp_width_sweep)
from paperzoo.diagnostics.inductive_bias import (GeneralizedChi2, GeneralizedChi2CDF, ScaledNcx2Fit,
                                                 InductiveBiasEstimate, LinearPosterior, estimate_inductive_bias,
                                                 sample_hypothesis_losses, fit_scaled_ncx2, inductive_bias_bits,
                                                 bayesian_linear_posterior, gaussian_linear_loss_distribution,
                                                 gaussian_linear_hypothesis_losses, generalized_chi2_cdf)
from paperzoo.diagnostics.active_mtrl import (RelevanceVectors, LassoRelevance, LinearRepresentation,
                                              ActiveMTRLResult, relevance_vectors, lasso_relevance, source_allocation,
                                              predicted_representation_error, fit_linear_representation,
                                              linear_mtrl_sampler, active_mtrl, subspace_target_error)
from paperzoo.diagnostics.attention_svm import (optimal_tokens, AttSVMSolution, att_svm, AttentionGDRun, attention_gd,
                                                direction_cosine, stable_rank, random_attention_problem)
from paperzoo.diagnostics.dropout_noise import (DropoutGradientNoise, HessianCovarianceAlignment, VarianceFlatness,
                                                dropout_gradient_noise, hessian_covariance_alignment,
                                                variance_flatness)
from paperzoo.diagnostics.layer_alignment import (LayerAlignment, SignalPropagation, kernel_alignment,
                                                  layerwise_tangent_alignment, mlp_signal_propagation)
from paperzoo.diagnostics.halfspace_tester import (LearnedHalfspace, leaky_relu_halfspace, BandTest, HalfspaceTests,
                                                   halfspace_band_tests, HalfspaceTesterResult,
                                                   halfspace_tester_learner, massart_halfspace_error)
from paperzoo.diagnostics.benign_oscillation import (PatchData, make_weak_strong_patch_data, PatchCNN,
                                                     FeatureAlignment, feature_alignment, oscillation_index, TrainRun,
                                                     train_to_loss)
from paperzoo.diagnostics.ito_chains import (standard_noise, ItoChainRun, simulate_ito_chain, GaussianLaw,
                                             ou_marginal, euler_maruyama_ou_law, wasserstein2_to_gaussian,
                                             gaussian_w2, BoundExponent, ito_chain_bound_exponent, W2Curve,
                                             ito_chain_w2_curve)
from paperzoo.diagnostics.attention_lowrank import (polynomial_rank, max_degree_for_rank, taylor_features,
                                                    LowRankAttention, fast_attention, exact_attention,
                                                    taylor_error_bound, critical_gamma, bounded_sign_inputs,
                                                    polynomial_attention_error)
from paperzoo.diagnostics.lojasiewicz import (LGIFit, fit_uniform_lgi, lgi_constant, trajectory_length_bound,
                                              lgi_convergence_bound, LGITrajectory, lgi_trajectory,
                                              linear_ball_rademacher, rademacher_generalization_bound, LinearLGIBound,
                                              lgi_linear_generalization_bound)
from paperzoo.diagnostics.sgd_noise_regimes import (sample_boundary_density_data, PerceptronTraining,
                                                    train_hinge_perceptron_sgd, train_hinge_perceptron_gd,
                                                    crossover_temperature)
from paperzoo.diagnostics.sparse_vi import (SpikeSlabVI, WidthSelection, hat_relu_features, weierstrass_target,
                                            spike_slab_cavi, integrated_l2_risk, elbo_width_selection)
from paperzoo.diagnostics.heavy_tail_sgd import (CoupledStability, HeavyTailedRun, heavy_tailed_langevin,
                                                 strongly_convex_stability_bound, symmetric_stable_noise,
                                                 wasserstein_stability)
from paperzoo.diagnostics.simplex_learning import (regular_simplex, sample_noisy_simplex,
                                                   simplex_characteristic_function, DeconvolvedCF,
                                                   deconvolved_characteristic_function, SimplexFit,
                                                   fit_simplex_fourier, vertex_matching_error)
from paperzoo.diagnostics.hierarchical_poly import (ThreeLayerFit, hermite_features, quadratic_feature,
                                                    layerwise_three_layer, three_layer_predict, learned_feature,
                                                    feature_correlation)

__all__ = [
    "class_wise_hessian_extremes", "hvp_operator", "lanczos", "LanczosResult", "PowerResult", "top_eigenvalue",
    "gd_trajectory", "Trajectory",
    "neural_collapse_metrics", "NeuralCollapseMetrics", "class_mean_geometry", "ClassMeanGeometry", "simplex_etf",
    "PerSampleGradients", "GradientStatistics", "NoiseScaleEstimate", "TradeoffFit", "HessianNoiseScale",
    "per_sample_gradients", "gradient_statistics", "simple_noise_scale", "two_batch_noise_scale",
    "steps_examples_tradeoff", "critical_batch_size", "fit_steps_examples", "hessian_weighted_noise_scale",
    "hessian_operator", "gauss_newton_operator", "top_eigenpairs", "TopEigenpairs", "hutchinson_trace",
    "TraceEstimate", "spectral_density", "SpectralDensity", "gradient_eigenspace_overlap", "sharpness_threshold",
    "stability_ratio",
    "tree_smoother_weights", "knn_smoother_weights", "effective_parameters",
    "trajectory_pca", "TrajectoryPCA", "random_walk_pca_prediction", "RandomWalkPCAPrediction",
    "lissajous_correlation",
    "EffectiveRegularization", "RidgeRisk", "OptimalRidge", "CostOfOverfitting", "EmpiricalRidgeRisk",
    "effective_regularization", "ridge_risk", "optimal_ridge", "cost_of_overfitting", "empirical_ridge_risk",
    "GaussianMixtureFit", "PretrainThenERM", "gaussian_mixture_em", "mixture_posterior", "erm_label_map",
    "pretrain_then_erm", "supervised_plugin_rule", "linear_rule_risk", "two_component_bayes_error",
    "DeepLinearUFMFit", "ImbalancedGeometry", "GeometryDeviation", "LayerwiseCollapse", "deep_linear_ufm_loss",
    "train_deep_linear_ufm", "imbalanced_mse_geometry", "layer_features", "imbalanced_geometry_deviation",
    "layerwise_collapse",
    "subspace_overlap", "random_subspace", "SubspaceTracker", "subspace_tracker", "SubspaceTrace",
    "BatchGradientNorms", "StepsToTarget", "NoiseScaleTracker", "batch_gradient_norms", "dataset_noise_scale",
    "steps_to_target",
    "LearningCurve", "SamplesToReach", "GaussianNBParams", "learning_curve", "samples_to_reach",
    "gaussian_nb_fit", "gaussian_nb_log_proba", "gaussian_nb_predict", "gaussian_nb_fit_predict", "bayes_error",
    "naive_bayes_asymptotic_error",
    "SecondMomentOperator", "sgd_second_moment_operator", "StabilityRadius", "sgd_stability_radius",
    "HessianCoherence", "hessian_coherence", "StabilityCondition", "sgd_stability_condition", "LinearizedSGDRuns",
    "simulate_linearized_sgd", "batch_noise_factor",
    "DeepLinearRegressionFit", "ConditionalVariance", "min_norm_interpolant", "train_deep_linear_regression",
    "linear_excess_risk", "conditional_variance", "min_norm_conditional_variance",
    "VicinityUFMResult", "VicinityNC1Prediction", "solve_vicinity_ufm", "vicinity_ufm_objective",
    "vicinity_nc1_prediction",
    "hessian_trace", "hessian_frobenius", "FrobeniusEstimate", "output_jacobian", "sgd_stability", "SGDStability",
    "trace_stability_ratio",
    "ASGDParams", "StreamingRegression", "RiskDecomposition", "asgd_linear_regression", "sgd_linear_regression",
    "asgd_risk_decomposition", "sgd_risk_decomposition", "excess_risk_per_direction",
    "SpectralProfile", "SpectralLoss", "EmpiricalSpectralRisk", "PowerLawRates", "krr_profile",
    "gradient_flow_profile", "gradient_descent_profile", "profile_loss", "empirical_spectral_risk",
    "power_law_rates",
    "fourier_features", "FourierFeatures", "coordinate_mlp", "frequency_residuals", "FrequencyResiduals",
    "count_activation_regions_1d", "ActivationRegions", "SpectralBiasTracker", "SpectralBiasTrace",
    "RFLossCurve", "ScalingExponents", "PowerLawFit", "ComputeFrontier", "power_law_task",
    "random_feature_gd_loss", "infinite_width_loss", "predicted_exponents", "fit_power_law",
    "compute_optimal_frontier",
    "DiagonalNetworkRuns", "train_diagonal_network", "MinL1Interpolant", "min_l1_interpolant",
    "step_decay_schedule",
    "BatchHessianSpectrum", "BatchSharpnessFit", "DivergenceThreshold", "LogLogSlope", "batch_hessian_spectrum",
    "fit_batch_sharpness", "divergence_threshold_lr", "loglog_slope",
    "GMatrix", "OutlierCount", "OutlierEigenspace", "OutlierTrace", "OutlierTracker", "g_matrix",
    "count_outliers", "outlier_eigenspace", "outlier_alignment", "outlier_tracker",
    "SelfTrainingFit", "labeled_direction", "self_training_direction", "sample_shifted_unlabeled",
    "shift_tv_bound", "linear_rule_error",
    "InputDerivatives", "PermutationImportance", "loss_input_derivatives", "permutation_importance",
    "sensitivity_scores",
    "comp_sum_loss", "comp_sum_conditional_risk", "comp_sum_conditional_min", "comp_sum_transform",
    "comp_sum_gamma", "class_posterior", "mixture_excess_losses", "MixtureExcess",
    "SplitHalfCorrelation", "EnsembleCalibration", "per_example_correct_prob", "binomial_accuracy_std",
    "split_half_correlation", "ensemble_calibration",
    "LinearGaussianPushforwards", "ITBounds", "GapEstimate", "linear_gaussian_pushforwards",
    "layerwise_it_bounds", "generalization_gap_monte_carlo", "ramp_loss_expectation",
    "HiddenParameters", "sample_hidden_parameters", "random_feature_map", "Readout", "fit_readout",
    "RandomNetFit", "random_net_error",
    "Compression", "InformationPlaneTrace", "LayerInformation", "binned_information", "compression",
    "information_plane", "kde_information", "tishby_dataset",
    "EpochShift", "EpochSimulation", "gd_step_gap_change", "expected_gd_step_gap_change", "gradient_noise_trace",
    "sgd_epoch_shift", "simulate_epochs",
    "QuotientFrechetMean", "ConsistencyBias", "register_to_template", "apply_group_action", "quotient_distance",
    "quotient_frechet_mean", "oracle_template_mean", "fixed_point_bias_constant", "consistency_bias",
    "KNNAgreement", "WidthSweep", "knn_noisy_label_agreement", "mlp_width_sweep",
    "GeneralizedChi2", "GeneralizedChi2CDF", "ScaledNcx2Fit", "InductiveBiasEstimate", "LinearPosterior",
    "estimate_inductive_bias", "sample_hypothesis_losses", "fit_scaled_ncx2", "inductive_bias_bits",
    "bayesian_linear_posterior", "gaussian_linear_loss_distribution", "gaussian_linear_hypothesis_losses",
    "generalized_chi2_cdf",
    "RelevanceVectors", "LassoRelevance", "LinearRepresentation", "ActiveMTRLResult", "relevance_vectors",
    "lasso_relevance", "source_allocation", "predicted_representation_error", "fit_linear_representation",
    "linear_mtrl_sampler", "active_mtrl", "subspace_target_error",
    "optimal_tokens", "AttSVMSolution", "att_svm", "AttentionGDRun", "attention_gd", "direction_cosine",
    "stable_rank", "random_attention_problem",
    "DropoutGradientNoise", "HessianCovarianceAlignment", "VarianceFlatness", "dropout_gradient_noise",
    "hessian_covariance_alignment", "variance_flatness",
    "LayerAlignment", "SignalPropagation", "kernel_alignment", "layerwise_tangent_alignment",
    "mlp_signal_propagation",
    "LearnedHalfspace", "leaky_relu_halfspace", "BandTest", "HalfspaceTests", "halfspace_band_tests",
    "HalfspaceTesterResult", "halfspace_tester_learner", "massart_halfspace_error",
    "PatchData", "make_weak_strong_patch_data", "PatchCNN", "FeatureAlignment", "feature_alignment",
    "oscillation_index", "TrainRun", "train_to_loss",
    "standard_noise", "ItoChainRun", "simulate_ito_chain", "GaussianLaw", "ou_marginal", "euler_maruyama_ou_law",
    "wasserstein2_to_gaussian", "gaussian_w2", "BoundExponent", "ito_chain_bound_exponent", "W2Curve",
    "ito_chain_w2_curve",
    "polynomial_rank", "max_degree_for_rank", "taylor_features", "LowRankAttention", "fast_attention",
    "exact_attention", "taylor_error_bound", "critical_gamma", "bounded_sign_inputs",
    "polynomial_attention_error",
    "LGIFit", "fit_uniform_lgi", "lgi_constant", "trajectory_length_bound", "lgi_convergence_bound",
    "LGITrajectory", "lgi_trajectory", "linear_ball_rademacher", "rademacher_generalization_bound",
    "LinearLGIBound", "lgi_linear_generalization_bound",
    "sample_boundary_density_data", "PerceptronTraining", "train_hinge_perceptron_sgd",
    "train_hinge_perceptron_gd", "crossover_temperature",
    "SpikeSlabVI", "WidthSelection", "hat_relu_features", "weierstrass_target", "spike_slab_cavi",
    "integrated_l2_risk", "elbo_width_selection",
    "CoupledStability", "HeavyTailedRun", "heavy_tailed_langevin", "strongly_convex_stability_bound",
    "symmetric_stable_noise", "wasserstein_stability",
    "regular_simplex", "sample_noisy_simplex", "simplex_characteristic_function", "DeconvolvedCF",
    "deconvolved_characteristic_function", "SimplexFit", "fit_simplex_fourier", "vertex_matching_error",
    "ThreeLayerFit", "hermite_features", "quadratic_feature", "layerwise_three_layer", "three_layer_predict",
    "learned_feature", "feature_correlation",
]
