"""Run Signoff end to end: Redis, a worker, the API, a stand-in EDR, and a run waiting for you.

    python -m demo            # interactive: resume the run with the printed command
    python -m demo --approve  # approve it automatically and exit when the run completes
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from engine.embedded_redis import INSTALL_HINT, EmbeddedRedis
from engine.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
EVENT = {
    "alerts": [{
        "host": {"name": "web-prod-07"},
        "rule": {"name": "Outbound connection to known C2 infrastructure"},
        "ai": {"category": "confirmed_compromise",
               "rationale": "Beaconing every 60 s to 203.0.113.9, a listed C2 address; "
                            "new persistence service installed 4 minutes earlier."},
    }]
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo")
    parser.add_argument("--approve", action="store_true",
                        help="approve the waiting review automatically, then exit")
    args = parser.parse_args(argv)
    stack = Stack()
    try:
        stack.start()
        return stack.play(auto_approve=args.approve)
    except KeyboardInterrupt:
        print("\nstopping…")
        return 0
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


class Stack:
    """Everything the demo starts, stopped in reverse order however it ends."""

    def __init__(self) -> None:
        self.redis: EmbeddedRedis | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.servers: list[Any] = []
        self.token = secrets.token_urlsafe(16)
        self.api = ""
        self.target_url = ""

    def start(self) -> None:
        import uvicorn  # noqa: F401 - fail early if the install is broken

        from demo.target import Target
        from engine.cli import build_web_app
        from slack_emulator.server import BackgroundServer

        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            try:
                self.redis = EmbeddedRedis().start()
            except RuntimeError:
                raise RuntimeError(INSTALL_HINT) from None
            redis_url = self.redis.url
        print(f"redis    {redis_url}" + ("  (private, in a temp dir)" if self.redis else ""))
        env = {**os.environ, "REDIS_URL": redis_url, "SIGNOFF_API_TOKEN": self.token,
               "SIGNOFF_WORKFLOWS": str(ROOT / "examples")}
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        print("worker   signoff worker (RQ SimpleWorker with the scheduler)")

        target = BackgroundServer(Target().app).start()
        self.servers.append(target)
        self.target_url = target.base_url
        print(f"target   {self.target_url}  (stand-in EDR and case API)")

        settings = Settings(redis_url=redis_url, api_token=self.token,
                            workflows_dir=str(ROOT / "examples"))
        api = BackgroundServer(build_web_app(settings)).start()
        self.servers.append(api)
        self.api = api.base_url
        print(f"api      {self.api}  (token: {self.token})")

    def play(self, *, auto_approve: bool) -> int:
        client = httpx.Client(base_url=self.api, timeout=10,
                              headers={"Authorization": f"Bearer {self.token}"})
        event = {**EVENT, "inputs": {"edr_url": self.target_url}}
        started = client.post("/api/workflows/isolate-host-with-approval/run", json=event)
        started.raise_for_status()
        execution_id = started.json()["executionId"]
        print(f"\nstarted  isolate-host-with-approval  execution {execution_id}")
        state = self._wait(client, execution_id, {"WAITING_FOR_INPUT"})
        waiting = state["waitingFor"]
        print("\n── waiting for a decision " + "─" * 44)
        print(waiting["message"].rstrip())
        print("─" * 70)
        resume = (f"curl -X POST {self.api}/api/workflowExecutions/{execution_id}/resume \\\n"
                  f"     -H 'Authorization: Bearer {self.token}' \\\n"
                  "     -H 'Content-Type: application/json' \\\n"
                  "     -d '{\"approved\": true, \"notes\": \"confirmed C2, isolating\"}'")
        print(f"\nTo approve, in another terminal:\n\n{resume}\n")
        print("(or deny with \"approved\": false). Ctrl-C stops everything.\n")
        if auto_approve:
            answer = client.post(f"/api/workflowExecutions/{execution_id}/resume",
                                 json={"approved": True, "notes": "demo: auto-approved"},
                                 headers={"X-Signoff-Actor": "demo"})
            answer.raise_for_status()
            print("approved automatically (--approve)")
        final = self._wait(client, execution_id, {"COMPLETED", "FAILED", "CANCELLED",
                                                  "TIMED_OUT"}, timeout=None if not
                           auto_approve else 60)
        print(f"\nfinished {final['status']}")
        for name, step in final["steps"].items():
            print(f"  {name:16} {step['status']}")
        audit = client.get(f"/api/workflowExecutions/{execution_id}/audit").json()
        print(f"\naudit trail: {len(audit['events'])} events, "
              f"{'hash chain verified' if audit['verified'] else 'BROKEN: ' + audit['problem']}")
        client.close()
        return 0 if final["status"] == "COMPLETED" else 1

    def _wait(self, client: httpx.Client, execution_id: str, statuses: set[str],
              timeout: float | None = 30) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            state = client.get(f"/api/workflowExecutions/{execution_id}").json()
            if state["status"] != last:
                last = state["status"]
                print(f"status   {last}")
            if state["status"] in statuses:
                return dict(state)
            if deadline is not None and time.monotonic() > deadline:
                raise RuntimeError(f"the run is still {state['status']} after {timeout}s: "
                                   f"{json.dumps(state['steps'])}")
            time.sleep(0.2)  # the demo's own console polling; the run never sleeps

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        if self.redis is not None:
            self.redis.close()


if __name__ == "__main__":
    sys.exit(main())
