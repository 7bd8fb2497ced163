"""`make demo`'s program, run as a person runs it, on embedded defaults."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from bot.blocks import ACTION_APPROVE
from demo.elastic import CATEGORY, RATIONALE
from tests.support.services import ROOT

MARKER = "DEMO_TEST_MARKER"  # inherited by everything the demo starts, so we can find it


def demo_env(marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith(("SLACK_", "SIGNOFF_"))}
    return {**env, MARKER: marker, "PYTHONUNBUFFERED": "1"}


def processes_with(marker: str) -> list[str]:
    """Every live process (but zombies) whose environment carries ``marker``."""
    found = []
    needle = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:
                    found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()!r}")
        except OSError:
            continue
    return found


def redis_still_listening(output: str) -> bool:
    """Whether the private Redis the demo printed still answers (its environ is not readable:
    redis-server writes its title over it)."""
    port = int(re.search(r"redis    redis://127\.0\.0\.1:(\d+)/0", output).group(1))  # type: ignore[union-attr]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def panel_lines_once(url: str, wanted: str) -> list[str]:
    """The sandbox's panel lines, once one of them holds ``wanted`` (the run is working)."""
    deadline = time.monotonic() + 60
    while True:
        state = httpx.get(f"{url}/api/state", params={"user": "U0ALICE"}, timeout=10).json()
        lines = [line for panel in state["panels"] for line in panel["lines"]]
        if any(wanted in line for line in lines):
            return lines
        assert time.monotonic() < deadline, f"no {wanted!r} in the panels:\n" + "\n".join(lines)
        time.sleep(0.25)


def test_demo_approve_runs_the_example_through_slack_and_cleans_up():
    marker = uuid.uuid4().hex
    result = subprocess.run([sys.executable, "-m", "demo", "--approve", "--port", "0"], cwd=ROOT,
                            env=demo_env(marker), capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert ("seeded   8 runs from examples/ and Elastic's example (2 went through on policy "
            "alone) and the agent's calls: 7 reviews wait in #reviews") in out
    # The agent's three calls, through the SDK: one allowed, one blocked, one waiting.
    assert "agent    search.web: 3 results for 'refund policy lost parcel' (allowed" in out
    assert "agent    shell.execute: blocked (Agents do not get a shell on production hosts)" in out
    assert "agent    email.send: pending, waiting in #reviews (request " in out
    assert "agent    email.send: approved" not in out  # nobody approved it
    assert "/sandbox" in out
    # Elastic's example, unchanged: its review carries the model's classification of the logs.
    assert "WAITING_FOR_INPUT" in out and "## Alert on `web-prod-07`" in out
    assert f"**AI classification:** {CATEGORY}" in out and f"**Rationale:** {RATIONALE}" in out
    assert "alice clicks Approve in #reviews (--approve): Slack's request answered 200" in out
    for step in ("open_case", "investigate", "classify", "review", "isolate", "record_decision"):
        assert re.search(rf"^  {step} +COMPLETED$", out, re.MULTILINE), step
    assert "finished COMPLETED" in out and "hash chain verified" in out
    assert "the review message now says: ✅ Approved: Alert on web-prod-07" in out
    # The approved action reached the EDR at its own URL, over TLS it verified (connect-to).
    assert 'EDR POST https://edr.example.com/isolate {"host": "web-prod-07"' in out
    assert "case " in out and "'Potential compromise: web-prod-07'" in out
    assert "comment: **Decision:** isolated" in out
    assert processes_with(marker) == []
    assert not redis_still_listening(out)


def test_demo_serves_the_sandbox_until_ctrl_c_then_leaves_nothing_running():
    marker = uuid.uuid4().hex
    # A process group of its own, like a terminal's foreground job: Ctrl-C reaches the whole
    # group (the private redis-server too), not the demo alone.
    demo = subprocess.Popen([sys.executable, "-m", "demo", "--port", "0"], cwd=ROOT,
                            env=demo_env(marker), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, process_group=0)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout or []],
                              daemon=True)
    reader.start()
    seen: list[str] = []

    def read_until(pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, f"no {pattern!r} printed:\n" + "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                assert demo.poll() is None, "the demo exited:\n" + "".join(seen)
                continue
            found = re.search(pattern, seen[-1])
            if found:
                return found

    try:
        url = read_until(r"Open (http://127\.0\.0\.1:\d+/sandbox)").group(1)
        read_until("Ctrl-C stops everything")

        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "Signoff sandbox" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        state = httpx.get(f"{url}/api/state", params={"user": "U0ALICE"}, timeout=10).json()
        [reviews] = [c for c in state["conversations"] if c["name"] == "reviews"]
        assert len(reviews["messages"]) == 7
        [mail] = [m for m in reviews["messages"] if "email.send" in str(m["blocks"])]
        button = next(e for b in mail["blocks"] if b["type"] == "actions"
                      for e in b["elements"] if e["action_id"] == ACTION_APPROVE)
        assert "jane.roe@example.test" in str(mail["blocks"])

        # alice approves the agent's e-mail in the sandbox: the waiting agent sends it.
        clicked = httpx.post(f"{url}/api/click", timeout=10, json={
            "user": "U0ALICE", "channel": reviews["id"], "ts": mail["ts"],
            "action_id": ACTION_APPROVE, "value": button["value"]})
        assert clicked.status_code == 200
        read_until(r"agent    email\.send: approved by U0ALICE; sent to jane\.roe@example\.test")

        # Elastic's example waits beside it, the model's classification in its review.
        [alert] = [m for m in reviews["messages"]
                   if m["blocks"][0].get("text", {}).get("text") == "Alert on web-prod-07"]
        assert CATEGORY in json.dumps(alert["blocks"]) and RATIONALE in json.dumps(alert["blocks"])
        assert not [line for p in state["panels"] for line in p["lines"] if "Decision" in line]
        button = next(e for b in alert["blocks"] if b["type"] == "actions"
                      for e in b["elements"] if e["action_id"] == ACTION_APPROVE)
        clicked = httpx.post(f"{url}/api/click", timeout=10, json={
            "user": "U0ALICE", "channel": reviews["id"], "ts": alert["ts"],
            "action_id": ACTION_APPROVE, "value": button["value"]})
        assert clicked.status_code == 200
        # The run goes on: the host is isolated, and the Kibana case records the decision.
        panels = panel_lines_once(url, "**Decision:** isolated")
        assert any(line.startswith("EDR POST https://edr.example.com/isolate") for line in panels)

        started = time.monotonic()
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C
        assert demo.wait(timeout=30) == 0
        assert time.monotonic() - started < 10
    finally:
        if demo.poll() is None:  # the test failed: still stop it the clean way first
            demo.terminate()
            try:
                demo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
        reader.join(timeout=5)
        if demo.stdout is not None:
            demo.stdout.close()
    while not lines.empty():
        seen.append(lines.get())
    assert "stopping…" in "".join(seen)
    assert processes_with(marker) == []
    assert not redis_still_listening("".join(seen))
