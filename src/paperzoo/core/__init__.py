"""The spine of paperzoo: catalog, claim registry, argument checks, evidence primitives, results store, runner.

Names are imported lazily, so that torch-free parts (the catalog, the results store, ``paperzoo list``) load fast.
"""

import importlib

# The catalog is torch-free and imported eagerly: its function ``catalog`` shares the submodule's name, and the
# function must win.
from paperzoo.core.catalog import PACKAGES, Catalog, CatalogError, Fidelity, Paper, catalog, load_catalog

_EXPORTS = {
    "paperzoo.core.checks": ("check_choice", "check_int", "check_nonnegative", "check_number", "check_positive",
                             "check_probability", "check_same_shape", "check_tensor"),
    "paperzoo.core.registry": ("BUDGETS", "Claim", "ClaimContext", "ClaimResult", "Verdict", "claim", "derive_seed",
                               "registered_claims"),
    "paperzoo.core.evidence": ("Control", "Selection", "PairedComparison", "select_on_grid", "tune",
                               "paired_comparison"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ["PACKAGES", "Catalog", "CatalogError", "Fidelity", "Paper", "catalog", "load_catalog"]


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'paperzoo.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
