"""The diagnostics benchmark runs end to end in its quick mode and prints its curvature table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def test_diagnostics_benchmark_quick(capsys):
    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(bench))  # for its _timing helper, as `paperzoo bench` runs it from there
    try:
        spec = importlib.util.spec_from_file_location("diagnostics_benchmark", bench / "diagnostics.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main(["--quick"]) == 0
    finally:
        sys.path.remove(str(bench))
    out = capsys.readouterr().out
    assert "top-3 eigenvalues" in out and "Hutchinson trace" in out and "PyHessian" in out
