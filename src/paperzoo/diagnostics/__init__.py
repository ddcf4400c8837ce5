"""Training-dynamics measurements: Hessian spectra, trajectories, noise scales, stability."""

from paperzoo.diagnostics.hessian import (class_wise_hessian_extremes, hvp_operator, lanczos, LanczosResult,
                                          PowerResult, top_eigenvalue)
from paperzoo.diagnostics.trajectories import gd_trajectory, Trajectory

__all__ = ["class_wise_hessian_extremes", "gd_trajectory", "hvp_operator", "lanczos", "LanczosResult", "PowerResult",
           "top_eigenvalue", "Trajectory"]
