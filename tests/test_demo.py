"""`make demo`'s program, run as a person would, on embedded defaults."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.services import ROOT


def test_demo_runs_the_example_to_completion_and_cleans_up():
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SLACK_BOT_TOKEN")}
    result = subprocess.run([sys.executable, "-m", "demo", "--approve"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "WAITING_FOR_INPUT" in out and "Isolate `web-prod-07`?" in out
    assert "POST /isolate" in out  # the approved action reached the stand-in EDR
    assert "finished COMPLETED" in out and "hash chain verified" in out
    leftover = subprocess.run(["pgrep", "-f", "engine.cli worker"], capture_output=True,
                              text=True)
    own = [pid for pid in leftover.stdout.split() if pid]
    assert all(_parent_is_not_demo(pid) for pid in own)


def _parent_is_not_demo(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return b"SIGNOFF_WORKFLOWS=" + str(ROOT / "examples").encode() not in handle.read()
    except OSError:
        return True
