"""Optimizers, gradient transforms, optimizer wrappers and iterative solvers.

Optimizers follow ``torch.optim`` exactly (hyperparameters in ``param_groups``, lazy state, ``step(closure)``,
``state_dict`` round trips); wrappers take any base optimizer; constrained, composite, zeroth-order and online
methods are functions ``solve_<name>(..., *, max_iter, tol)`` returning a NamedTuple with diagnostics.
"""

from paperzoo.core.convergence import ConvergenceWarning
from paperzoo.optim._common import CheckedOptimizer, ElementwiseOptimizer, NonFiniteGradientError
from paperzoo.optim.clipping import clip_by_norm, clip_coordinatewise, global_norm
from paperzoo.optim.gradient_filters import ema_update, window_average, window_update
from paperzoo.optim.wrappers import ClosureWrapper
from paperzoo.optim.schedules import step_decay_schedule, StepDecay
from paperzoo.optim.rates import (BoundCheck, check_bound, fit_linear_rate, fit_loglog_slope, gd_convex_bound,
                                  gd_strongly_convex_bound, run_gradient_method, sgd_strongly_convex_bound, SlopeFit,
                                  soft_threshold, Trajectory)
from paperzoo.optim.subgradient import lasso_objective, LassoResult, solve_lasso_ista, solve_lasso_subgradient
from paperzoo.optim.adopt import ADOPT, adopt_clip, adopt_update
from paperzoo.optim.amsgrad import AMSGrad, amsgrad_update
from paperzoo.optim.mars import MARS, mars_update
from paperzoo.optim.diffgrad import DiffGrad, diffgrad_update
from paperzoo.optim.lion_k import GRAD_K, Lion, lion_k_update, LionK
from paperzoo.optim.adagrad_norm import AdaGradNorm
from paperzoo.optim.clip_adagrad import ClipAdamD, ClipRAdaGradD
from paperzoo.optim.normalized_gd import beta_normalized_step, BetaNormalizedGD, NormalizedSPIDER
from paperzoo.optim.median_clipping import (geometric_median_spp, median_tracking_update, MedianTrackingSGD,
                                            weiszfeld_geometric_median)
from paperzoo.optim.pcngd import class_mean_losses, PCNGD, per_class_normalized_grad
from paperzoo.optim.smb import SMB, smb_model_step
from paperzoo.optim.o2nc import goldstein_stationarity, min_norm_in_hull, O2NC
from paperzoo.optim.psgd import PSGD
from paperzoo.optim.adog import ADoG
from paperzoo.optim.lie_group import fit_inverse_hessian, HessianFitResult, LieGroupHessianFitter
from paperzoo.optim.subset_norm import AdamWSN, optimizer_state_bytes, SNSM, subset_norm_sq
from paperzoo.optim.step_sparsity import nm_mask, srste_adam, STEPAdam
from paperzoo.optim.sso import SSO, target_surrogate
from paperzoo.optim.gsnr import gsnr, gsnr_scale, VRGD
from paperzoo.optim.discover import Discover
from paperzoo.optim.grokfast import gradfilter_ema, gradfilter_ma, Grokfast, MovingWindow
from paperzoo.optim.sam import SAM
from paperzoo.optim.amp import AMP
from paperzoo.optim.finite_diff_gr import FiniteDifferenceGR
from paperzoo.optim.mup import InfShape, infshape, mup_init_, mup_param_groups, MuReadout, set_readout_width_mult
from paperzoo.optim.clipping_bias import (clipped_fixed_point, clipping_bias_bounds, simulate_clipped_sgd,
                                          worst_case_two_point_noise)
from paperzoo.optim.gradient_free import (smoothed_gradient, solve_gfm, solve_gfm_plus, two_point_estimate,
                                          uniform_sphere, ZerothOrderResult)
from paperzoo.optim.optimistic_omd import OptimisticOMD
from paperzoo.optim.nonconvex_penalties import (mcp_penalty, ncvx_objective, NonconvexAGResult, prox_mcp, prox_scad,
                                                scad_penalty, solve_ncvx_ag, solve_ncvx_proximal_gradient)
from paperzoo.optim.grad_regularized_newton import (empirical_fisher, gauss_newton_hessian, GradRegNewtonResult,
                                                    solve_grad_regularized_newton)
from paperzoo.optim.prospect import (cvar_spectrum, esrm_spectrum, extremile_spectrum, logistic_loss_oracle,
                                     prospect_objective, ProspectResult, solve_prospect, spectral_risk_objective,
                                     spectral_risk_weights, squared_loss_oracle)
from paperzoo.optim.cyclic_bcd import CyclicBCDResult, prox_gradient_mapping_norm, solve_cyclic_bcd
from paperzoo.optim.srrw import (sa_srrw, sa_srrw_covariance, SASRRWResult, srrw_kernel, srrw_sampling_covariance,
                                 SRRWToken)
from paperzoo.optim.sketched_eal import sketch_solve_kkt, SketchedEALResult, solve_sketched_eal

__all__ = [
    "AdaGradNorm", "AdamWSN", "ADoG", "ADOPT", "adopt_clip", "adopt_update", "AMP", "AMSGrad", "amsgrad_update",
    "beta_normalized_step", "BetaNormalizedGD", "BoundCheck", "check_bound", "class_mean_losses", "clip_by_norm",
    "clip_coordinatewise", "ClipAdamD", "clipped_fixed_point", "clipping_bias_bounds", "ClipRAdaGradD", "CheckedOptimizer",
    "ClosureWrapper", "ConvergenceWarning", "cvar_spectrum", "CyclicBCDResult", "DiffGrad", "diffgrad_update",
    "Discover", "ElementwiseOptimizer", "ema_update", "empirical_fisher", "esrm_spectrum", "extremile_spectrum",
    "FiniteDifferenceGR", "fit_inverse_hessian", "fit_linear_rate", "fit_loglog_slope", "gauss_newton_hessian",
    "gd_convex_bound", "gd_strongly_convex_bound", "geometric_median_spp", "global_norm", "goldstein_stationarity",
    "GRAD_K", "gradfilter_ema", "gradfilter_ma", "GradRegNewtonResult", "Grokfast", "gsnr", "gsnr_scale",
    "HessianFitResult", "InfShape", "infshape", "lasso_objective", "LassoResult", "LieGroupHessianFitter", "Lion",
    "lion_k_update", "LionK", "logistic_loss_oracle", "MARS", "mars_update", "mcp_penalty", "median_tracking_update",
    "MedianTrackingSGD", "min_norm_in_hull", "MovingWindow", "NonFiniteGradientError", "mup_init_", "mup_param_groups", "MuReadout",
    "ncvx_objective", "nm_mask", "NonconvexAGResult", "NormalizedSPIDER", "O2NC", "OptimisticOMD",
    "optimizer_state_bytes", "PCNGD", "per_class_normalized_grad", "prospect_objective", "ProspectResult",
    "prox_gradient_mapping_norm", "prox_mcp", "prox_scad", "PSGD", "run_gradient_method", "sa_srrw",
    "sa_srrw_covariance", "SAM", "SASRRWResult", "scad_penalty", "set_readout_width_mult",
    "sgd_strongly_convex_bound", "simulate_clipped_sgd", "sketch_solve_kkt", "SketchedEALResult", "SlopeFit", "SMB",
    "smb_model_step", "smoothed_gradient", "SNSM", "soft_threshold", "solve_cyclic_bcd", "solve_gfm",
    "solve_gfm_plus", "solve_grad_regularized_newton", "solve_lasso_ista", "solve_lasso_subgradient", "solve_ncvx_ag",
    "solve_ncvx_proximal_gradient", "solve_prospect", "solve_sketched_eal", "spectral_risk_objective",
    "spectral_risk_weights", "squared_loss_oracle", "srrw_kernel", "srrw_sampling_covariance", "SRRWToken",
    "srste_adam", "SSO", "step_decay_schedule", "STEPAdam", "StepDecay", "subset_norm_sq", "target_surrogate",
    "Trajectory", "two_point_estimate", "uniform_sphere", "VRGD", "weiszfeld_geometric_median", "window_average",
    "window_update", "worst_case_two_point_noise", "ZerothOrderResult",
]
