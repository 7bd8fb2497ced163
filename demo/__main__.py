"""Run Signoff end to end with a Slack you can click in a browser: ``make demo``.

    python -m demo            # start everything, seed reviews, print the sandbox URL; Ctrl-C stops
    python -m demo --approve  # approve the isolate-host review (Elastic's example, with the
                              # model's classification) as alice, through the sandbox, print
                              # what happened, and exit when the run completes
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType
from typing import Any

from bot.blocks import ACTION_APPROVE
from demo.seeds import ISOLATE_HOST, ISOLATE_TITLE, SEEDS
from demo.stack import Stack
from slack_emulator.workspace import REVIEWS_CHANNEL

FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
POLL = 0.25  # the demo's console watching runs; the runs themselves never sleep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo")
    parser.add_argument("--approve", action="store_true",
                        help="approve the isolate-host review as alice, then exit")
    parser.add_argument("--port", type=int, default=3900,
                        help="the sandbox's port (another free one if it is taken)")
    args = parser.parse_args(argv)
    # Ctrl-C even when started in the background of a script (which ignores SIGINT), and
    # SIGTERM, both stop everything as cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    stack = Stack(sandbox_port=args.port)
    try:
        stack.start()
        stack.start_agent()  # first, so the isolate-host review is still the last posted
        started = stack.seed()
        _print_seeded(stack, started)
        if args.approve:
            return approve(stack)
        watch(stack)
        return 0
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # A second Ctrl-C or SIGTERM (``timeout`` signals the whole process group) must not
        # cut the stop short and leave processes behind; stop() bounds its own waits.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_seeded(stack: Stack, started: list[str]) -> None:
    assert stack.sandbox is not None
    waiting = sum(seed.waits_for_review for seed in SEEDS)
    print(f"\nseeded   {len(started)} runs from examples/ and Elastic's example "
          f"({len(started) - waiting} went through on policy alone) and the agent's calls: "
          f"{waiting + 1} reviews wait in #reviews\n", flush=True)
    print(f"  ➜  Open {stack.sandbox.url} : as alice, read the model's classification in "
          f"\"{ISOLATE_TITLE}\", click Approve,\n"
          "     and watch the EDR isolate the host and the Kibana case record the decision;\n"
          "     approve the agent's email.send, and the agent sends its mail.\n", flush=True)


def watch(stack: Stack) -> None:
    """Print each run's status as it changes, until Ctrl-C."""
    print("Ctrl-C stops everything.\n", flush=True)
    seen = {run["id"]: run["status"] for run in stack.executions()}
    while True:
        time.sleep(POLL)
        for run in stack.executions():
            if seen.get(run["id"]) != run["status"]:
                seen[run["id"]] = run["status"]
                print(f"run      {run['workflow']} {run['id'][:8]}: {run['status']}", flush=True)


def approve(stack: Stack) -> int:
    """What a person does in the sandbox, done for them: alice clicks Approve."""
    assert stack.sandbox is not None and stack.emulator is not None
    execution_id = next(run for seed, run in stack.seeded if seed.workflow == ISOLATE_HOST)
    state = stack.execution(execution_id)
    print(f"status   {state['status']}", flush=True)
    print(state["waitingFor"]["message"].rstrip(), flush=True)
    message = _review_message(stack, ISOLATE_TITLE)
    button = next(e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
                  if e["action_id"] == ACTION_APPROVE)
    answer = stack.sandbox.click({"user": "U0ALICE", "channel": REVIEWS_CHANNEL,
                                  "ts": message["ts"], "action_id": ACTION_APPROVE,
                                  "value": button["value"]})
    print(f"\nalice clicks Approve in #reviews (--approve): Slack's request answered "
          f"{answer.status}", flush=True)
    final = _wait_until_finished(stack, execution_id)
    print(f"\nfinished {final['status']}", flush=True)
    for name, step in final["steps"].items():
        error = f": {step['error']}" if step.get("error") else ""
        print(f"  {name:16} {step['status']}{error}", flush=True)
    updated = stack.emulator.workspace.message(REVIEWS_CHANNEL, message["ts"])
    print(f"\nthe review message now says: {updated['text']}", flush=True)
    print("Kibana and the EDR:", flush=True)
    for line in stack.elastic.lines():
        print(f"  {line}", flush=True)
    audit = stack.api.get(f"/api/workflowExecutions/{execution_id}/audit").json()
    verdict = "hash chain verified" if audit["verified"] else f"BROKEN: {audit['problem']}"
    print(f"audit trail: {len(audit['events'])} events, {verdict}", flush=True)
    return 0 if final["status"] == "COMPLETED" else 1


def _review_message(stack: Stack, title: str) -> dict[str, Any]:
    assert stack.emulator is not None
    for message in stack.emulator.workspace.messages(REVIEWS_CHANNEL):
        blocks = message.get("blocks") or []
        if blocks and blocks[0].get("text", {}).get("text") == title:
            return message
    raise RuntimeError(f"no review titled {title!r} in #reviews")


def _wait_until_finished(stack: Stack, execution_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = stack.execution(execution_id)
        if state["status"] in FINISHED:
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"the run is still {state['status']} after {timeout:.0f}s")
        time.sleep(POLL)


if __name__ == "__main__":
    sys.exit(main())
