"""The gate's answer at once: ``POST /api/gate/check`` on allow and block, 1,000 rules loaded.

    python benchmarks/gate.py [--rules 1000] [--requests 4000] [--concurrency 32]
                              [--load-processes 4]

Starts what ``benchmarks/slack.py`` starts (a private Redis unless REDIS_URL is set, the
Slack emulator, the web process as ``signoff serve`` runs it plus a no-op route, a worker,
load processes) with ``SIGNOFF_POLICY`` naming a policy of ``--rules`` rules: most for other
tools (globs, half of them with a ``when`` over the arguments, so each call is matched
against every glob), then the two the benchmark calls. It sends ``--requests`` checks of
an allowed call, then of a blocked one, and the same bodies to the no-op route, each
``--concurrency`` at a time, and reports p50 and p99 with each as a multiple of the no-op
route's. Target: the allow and block paths' p99 within 2x of the trivial route's.

Not measured here: the issue's second target, a click in Slack to ``signoff ask`` exiting
(p99 < 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load import PreparedRequest  # noqa: E402
from benchmarks.slack import NOOP_PATH, Phase, Stack, measure, percentile  # noqa: E402
from engine.state import tokens  # noqa: E402
from engine.state.store import Store, connect  # noqa: E402

TARGET_RATIO = 2.0  # the gate's p99 over the trivial route's, at the same concurrency


def write_policy(directory: Path, rules: int) -> Path:
    """``rules`` rules: ``rules - 2`` for other tools, then the allow and the block."""
    lines = ["rules:"]
    for n in range(rules - 2):
        lines.append(f'  - tool: "svc{n}.*"')
        lines.append(f"    action: {('allow', 'escalate', 'block')[n % 3]}")
        if n % 2:
            lines.append(f'    when: "args.amount > {n} and context.env : prod"')
    lines += ['  - tool: "bench.read*"', "    action: allow",
              '  - tool: "bench.delete*"', "    action: block", '    reason: "never"']
    path = directory / "policy.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def checks(url: str, token: str, tool: str, count: int) -> list[PreparedRequest]:
    headers = (("Authorization", f"Bearer {token}"), ("Content-Type", "application/json"))
    return [PreparedRequest("POST", url + "/api/gate/check", json.dumps(
        {"tool": tool, "args": {"id": n, "amount": n % 100}, "context": {"env": "prod"}}
    ).encode(), headers) for n in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--load-processes", type=int, default=4)
    args = parser.parse_args()

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    policy_dir = Path(tempfile.mkdtemp(prefix="signoff-bench-gate-"))
    os.environ["SIGNOFF_POLICY"] = str(write_policy(policy_dir, args.rules))
    stack = Stack()
    try:
        stack.start(workers=1, load_processes=args.load_processes, client="raw")
        secret, record = tokens.issue("bench-gate", {tokens.Scope.RUN}, None, "")
        Store(connect(stack.redis_url)).add_token(record, tokens.digest(secret))
        allow = checks(stack.web_url, secret, "bench.read.user", args.requests)
        block = checks(stack.web_url, secret, "bench.delete.user", args.requests)
        noop = [PreparedRequest(r.method, stack.web_url + NOOP_PATH, r.body, r.headers)
                for r in allow]
        measure(stack, allow[: args.concurrency * 4], args.concurrency)  # warm up
        phases = {"no-op route": measure(stack, noop, args.concurrency),
                  "check: allow": measure(stack, allow, args.concurrency),
                  "check: block": measure(stack, block, args.concurrency)}
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


if __name__ == "__main__":
    sys.exit(main())
