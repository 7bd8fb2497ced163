"""The benchmarks are run by hand, not in CI: this keeps them importable as the code moves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["engine", "slack", "slack_calls", "approvals", "timers", "gate",
                                  "storm", "instructions"])
def test_a_benchmark_imports_and_reads_its_options(name: str) -> None:
    done = subprocess.run([sys.executable, f"benchmarks/{name}.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_the_gate_benchmark_times_a_click_to_signoff_ask_exiting() -> None:
    # Its own Redis (without REDIS_URL it starts one), tiny sizes: it runs, not how fast.
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run([sys.executable, "benchmarks/gate.py", "--rules", "10", "--requests",
                           "20", "--concurrency", "2", "--load-processes", "1",
                           "--ask-samples", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "click -> signoff ask exits" in done.stdout
    assert "allowed signoff ask, start -> exit" in done.stdout


def test_the_storm_benchmark_gets_every_review_to_slack_within_the_posting_limit() -> None:
    # Its own Redis, tiny sizes: 30 runs in 1 s, a digest after 5, Slack's limit on.
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run([sys.executable, "benchmarks/storm.py", "--runs", "30", "--within",
                           "1", "--digest-after", "5"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "start -> review in Slack" in done.stdout
    assert "digest; all 30  PASS" in done.stdout
    assert "the digest's count once settled: 30 (target: 30" in done.stdout
