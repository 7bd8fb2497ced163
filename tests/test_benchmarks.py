"""The benchmarks are run by hand, not in CI: this keeps them importable as the code moves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["engine", "slack", "approvals", "timers", "gate"])
def test_a_benchmark_imports_and_reads_its_options(name: str) -> None:
    done = subprocess.run([sys.executable, f"benchmarks/{name}.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
