"""The gate's speeds: ``POST /api/gate/check`` with 1,000 rules; a click to ``signoff ask`` exiting.

    python benchmarks/gate.py [--rules 1000] [--requests 4000] [--concurrency 32]
                              [--load-processes 4] [--ask-samples 30]

Starts what ``benchmarks/slack.py`` starts (a private Redis unless REDIS_URL is set, the
Slack emulator, the web process as ``signoff serve`` runs it plus a no-op route, a worker,
load processes) with ``SIGNOFF_POLICY`` naming a policy of ``--rules`` rules: most for other
tools (globs, half of them with a ``when`` over the arguments, so each call is matched
against every glob), then the three it calls. It sends ``--requests`` checks of
an allowed call, then of a blocked one, and the same bodies to the no-op route, each
``--concurrency`` at a time, and reports p50 and p99 with each as a multiple of the no-op
route's. Target: the allow and block paths' p99 within 2x of the trivial route's.

Then, on the same processes, ``--ask-samples`` times one after the other: a real ``signoff
ask`` process asks for an escalating tool and waits; once its review is posted in the
emulator's #reviews, the approver clicks Approve (a signed ``block_actions`` request from
``SlackDriver``), timed from just before the click's HTTP request to the ask process's exit
(``waitpid``), and to its answer's line on stdout (the rest is the process shutting down).
Target: p99 < 1 s. Beside it, in the same run: the click's own ack, and a
``signoff ask`` for an allowed tool from its start to its exit (an interpreter starting,
one check, exiting: the least any ``signoff ask`` costs), each sample interleaved with the
click's. Two clicks are sent first and not counted (the web process's first click calls
``auth.test``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load import PreparedRequest  # noqa: E402
from benchmarks.slack import (  # noqa: E402
    CHANNEL,
    CLICKER,
    NOOP_PATH,
    ROOT,
    Phase,
    Stack,
    measure,
    percentile,
    wait_until,
)
from bot.blocks import ACTION_APPROVE  # noqa: E402
from engine.state import tokens  # noqa: E402
from engine.state.store import Store, connect  # noqa: E402
from slack_emulator import SlackDriver  # noqa: E402

TARGET_RATIO = 2.0  # the gate's p99 over the trivial route's, at the same concurrency
ASK_TARGET = 1.0  # seconds, click to ``signoff ask`` exiting, p99
ASK_WARMUP = 2
ASK_TIMEOUT = 60.0
ESCALATED_TOOL = "bench.deploy.prod"
ALLOWED_TOOL = "bench.read.user"


def write_policy(directory: Path, rules: int) -> Path:
    """``rules`` rules: ``rules - 3`` for other tools, then the allow, the block and the
    escalation ``signoff ask`` waits on."""
    lines = ["rules:"]
    for n in range(rules - 3):
        lines.append(f'  - tool: "svc{n}.*"')
        lines.append(f"    action: {('allow', 'escalate', 'block')[n % 3]}")
        if n % 2:
            lines.append(f'    when: "args.amount > {n} and context.env : prod"')
    lines += ['  - tool: "bench.read*"', "    action: allow",
              '  - tool: "bench.delete*"', "    action: block", '    reason: "never"',
              '  - tool: "bench.deploy*"', "    action: escalate",
              f"    approvers: [{CLICKER}]", f"    channel: {CHANNEL}"]
    path = directory / "policy.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def checks(url: str, token: str, tool: str, count: int) -> list[PreparedRequest]:
    headers = (("Authorization", f"Bearer {token}"), ("Content-Type", "application/json"))
    return [PreparedRequest("POST", url + "/api/gate/check", json.dumps(
        {"tool": tool, "args": {"id": n, "amount": n % 100}, "context": {"env": "prod"}}
    ).encode(), headers) for n in range(count)]


@dataclass(frozen=True)
class AskTimes:
    """Seconds per sample: the click's ack, click to ``signoff ask`` printing its answer and
    to its exit, and an allowed ``signoff ask`` from start to exit."""

    ack: list[float]
    click_to_answer: list[float]
    click_to_exit: list[float]
    allowed_ask: list[float]


def start_ask(url: str, token: str, tool: str, n: int) -> subprocess.Popen[str]:
    env = {**os.environ, "SIGNOFF_URL": url, "SIGNOFF_API_TOKEN": token}
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "ask", tool, "--args",
                             json.dumps({"n": n})], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def exited(process: subprocess.Popen[str], what: str) -> None:
    try:
        out, err = process.communicate(timeout=ASK_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError(f"{what} did not exit within {ASK_TIMEOUT:.0f}s") from None
    if process.returncode != 0:
        raise RuntimeError(f"{what} exited {process.returncode}: {out.strip()} {err.strip()}")


def allowed_ask(url: str, token: str, n: int) -> float:
    """An allowed ``signoff ask``, from its start to its exit."""
    started = time.perf_counter()
    process = start_ask(url, token, ALLOWED_TOOL, n)
    process.wait(timeout=ASK_TIMEOUT)
    took = time.perf_counter() - started
    exited(process, f"signoff ask {ALLOWED_TOOL}")
    return took


def approved_ask(stack: Stack, driver: SlackDriver, token: str,
                 n: int) -> tuple[float, float, float]:
    """Ask for the escalating tool, approve its review once posted: (ack, click to the
    answer on stdout, click to exit)."""
    assert stack.emulator is not None
    process = start_ask(stack.web_url, token, ESCALATED_TOOL, n)
    assert process.stderr is not None and process.stdout is not None
    request_id = ""
    while not request_id:  # ask prints this just before it starts waiting
        line = process.stderr.readline()
        if not line:
            exited(process, f"signoff ask {ESCALATED_TOOL}")
            raise RuntimeError(f"signoff ask {ESCALATED_TOOL} did not wait for a review")
        found = re.search(r"waiting for a decision on request (\S+):", line)
        request_id = found.group(1) if found else ""
    workspace = stack.emulator.workspace
    review: list[dict[str, Any]] = []

    def posted() -> bool:
        review[:] = [m for m in workspace.messages(CHANNEL) if request_id in json.dumps(m)]
        return bool(review)

    wait_until(posted, f"the review of request {request_id} to be posted")
    clicked = time.perf_counter()
    acked = driver.click(CLICKER, (CHANNEL, review[0]["ts"]), ACTION_APPROVE)
    ack = time.perf_counter() - clicked
    answer = process.stdout.readline()  # one line: "approved by U0ALICE ..."
    answered = time.perf_counter() - clicked
    process.wait(timeout=ASK_TIMEOUT)
    took = time.perf_counter() - clicked
    if not acked.ok:
        raise RuntimeError(f"the click on request {request_id} was not acknowledged")
    if not answer.startswith("approved"):
        raise RuntimeError(f"signoff ask {ESCALATED_TOOL} answered {answer.strip()!r}")
    exited(process, f"signoff ask {ESCALATED_TOOL} (request {request_id})")
    return ack, answered, took


def measure_ask(stack: Stack, token: str, samples: int) -> AskTimes:
    assert stack.emulator is not None
    driver = SlackDriver(stack.emulator, stack.web_url + "/slack/events")
    times = AskTimes([], [], [], [])
    try:
        for n in range(ASK_WARMUP + samples):
            allowed = allowed_ask(stack.web_url, token, n)
            ack, answered, took = approved_ask(stack, driver, token, n)
            if n >= ASK_WARMUP:
                times.ack.append(ack)
                times.click_to_answer.append(answered)
                times.click_to_exit.append(took)
                times.allowed_ask.append(allowed)
    finally:
        driver.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--load-processes", type=int, default=4)
    parser.add_argument("--ask-samples", type=int, default=30,
                        help="clicks timed to signoff ask exiting (0: skip)")
    args = parser.parse_args()

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    policy_dir = Path(tempfile.mkdtemp(prefix="signoff-bench-gate-"))
    os.environ["SIGNOFF_POLICY"] = str(write_policy(policy_dir, args.rules))
    stack = Stack()
    try:
        stack.start(workers=1, load_processes=args.load_processes, client="raw")
        secret, record = tokens.issue("bench-gate", {tokens.Scope.RUN, tokens.Scope.READ},
                                      None, "")
        Store(connect(stack.redis_url)).add_token(record, tokens.digest(secret))
        allow = checks(stack.web_url, secret, "bench.read.user", args.requests)
        block = checks(stack.web_url, secret, "bench.delete.user", args.requests)
        noop = [PreparedRequest(r.method, stack.web_url + NOOP_PATH, r.body, r.headers)
                for r in allow]
        measure(stack, allow[: args.concurrency * 4], args.concurrency)  # warm up
        phases = {"no-op route": measure(stack, noop, args.concurrency),
                  "check: allow": measure(stack, allow, args.concurrency),
                  "check: block": measure(stack, block, args.concurrency)}
        asks = measure_ask(stack, secret, args.ask_samples) if args.ask_samples > 0 else None
    except KeyboardInterrupt:
        print("interrupted; stopping everything", file=sys.stderr)
        return 130
    except (RuntimeError, AssertionError) as exc:
        print(f"benchmarks/gate.py: {exc}; logs in {stack.logs}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        shutil.rmtree(policy_dir, ignore_errors=True)
    report(phases, args)
    if asks is not None:
        report_ask(asks)
    return 0


def report(phases: dict[str, Phase], args: argparse.Namespace) -> None:
    trivial = phases["no-op route"].latencies()
    base50, base99 = percentile(trivial, 0.5), percentile(trivial, 0.99)
    print(f"{args.rules} rules, {args.requests} requests per row, {args.concurrency} in flight")
    print(f"{'':16}{'p50':>10}{'p99':>10}{'p99 x trivial':>15}{'req/s':>9}")
    ok = True
    for name, phase in phases.items():
        p50, p99 = percentile(phase.latencies(), 0.5), percentile(phase.latencies(), 0.99)
        ratio = p99 / base99 if base99 else float("inf")
        within = name == "no-op route" or ratio <= TARGET_RATIO
        ok = ok and within
        print(f"{name:16}{p50 * 1000:>8.1f}ms{p99 * 1000:>8.1f}ms{ratio:>14.2f}x"
              f"{phase.rate:>9.0f}{'' if within else '  over target'}")
    print(f"target: p99 within {TARGET_RATIO:g}x the trivial route's: "
          f"{'met' if ok else 'NOT met'} (trivial p50 {base50 * 1000:.1f} ms)")


def report_ask(times: AskTimes) -> None:
    ack99 = percentile(times.ack, 0.99)
    print(f"\nclick in Slack -> signoff ask exits, {len(times.click_to_exit)} samples "
          f"one at a time (+{ASK_WARMUP} warm-up)")
    print(f"{'':36}{'p50':>10}{'p99':>10}{'p99 x ack':>11}")
    rows = (("click -> ack (POST /slack/events)", times.ack),
            ("allowed signoff ask, start -> exit", times.allowed_ask),
            ("click -> signoff ask prints answer", times.click_to_answer),
            ("click -> signoff ask exits", times.click_to_exit))
    for name, values in rows:
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        ratio = p99 / ack99 if ack99 else float("inf")
        print(f"{name:36}{p50 * 1000:>8.1f}ms{p99 * 1000:>8.1f}ms{ratio:>10.1f}x")
    ok = percentile(times.click_to_exit, 0.99) < ASK_TARGET
    print(f"target: click -> signoff ask exits, p99 < {ASK_TARGET * 1000:.0f} ms: "
          f"{'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
