"""SLA timers: how late escalations are after their deadlines, with one ``signoff worker``.

    python benchmarks/timers.py [--reviews 500] [--spread 30] [--lead 10] [--no-slack]

Starts a private Redis (REDIS_URL when set), the Slack emulator and one
``signoff worker`` process, as production runs it: RQ's scheduler inside, serving the
engine's queue and the bot's ``slack`` queue. Starts ``--reviews`` runs whose review
names U0ALICE with an SLA chosen so the deadlines spread evenly over ``--spread``
seconds, the first ``--lead`` seconds from now; when the SLA passes the review
escalates to U0BOB, who gets it by DM. The same worker posts the reviews, the DMs,
the thread notes and the message rewrites.

The baseline, in the same run on the same worker: as many bare RQ jobs scheduled with
``enqueue_in`` over the same window, each recording when it ran. RQ's scheduler keeps
whole seconds and polls once a second, so those run up to ~1 s late (and sometimes
early: the escalation timer re-checks its deadline and defers when early).

Prints p50 / p99 / max lateness of: the bare scheduled job (ran - due); the escalation
(the ``review.escalated`` audit event's time - the SLA deadline; target p99 < 2 s); the
escalation DM (its timestamp in the emulator - the deadline); and how many escalations
happened before their deadline (must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rq import Queue, Worker, get_current_job  # noqa: E402

from benchmarks.slack import percentile  # noqa: E402
from bot.delivery import load_delivery  # noqa: E402
from engine.definition.loader import parse_workflow  # noqa: E402
from engine.notify import NullNotifier  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.state import audit  # noqa: E402
from engine.state.embedded_redis import EmbeddedRedis  # noqa: E402
from engine.state.execution import parse_iso  # noqa: E402
from engine.state.store import connect  # noqa: E402
from engine.worker.runtime import build_runtime  # noqa: E402
from slack_emulator import MethodLimits, PostingLimit, SlackEmulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "C0REVIEWS"
ESCALATE_TO = "U0BOB"
BASELINE_JOB = "benchmarks.timers.ran_at"  # by name: this file runs as __main__
BASELINE_KEY = "bench:timers:baseline"  # the benchmark's own list, not Signoff's
TARGET_P99 = 2.0  # seconds
SETTLE = 60.0  # seconds allowed after the last deadline

TIMED = """
name: bench-timers
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [U0ALICE]
      message: "Isolate `{{ event.host }}`?"
      sla: "{{ event.sla }}"
      escalation:
        - approvers: [U0BOB]
          sla: 1h
      schema:
        type: object
        properties:
          approved: {type: boolean}
        required: [approved]
"""


def ran_at(due: float) -> None:
    """The baseline job: note when it was due and when it ran."""
    job = get_current_job()
    assert job is not None
    job.connection.rpush(BASELINE_KEY, json.dumps([due, time.time()]))


class Stack:
    """Redis, the emulator and one worker process; stopped in reverse."""

    def __init__(self) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="signoff-bench-timers-"))
        self.redis: EmbeddedRedis | None = None
        self.redis_url = ""
        self.emulator: SlackEmulator | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    def start(self, *, slack: bool) -> None:
        self.redis_url = os.environ.get("REDIS_URL") or ""
        if not self.redis_url:
            self.redis = EmbeddedRedis().start()
            self.redis_url = self.redis.url
        connect(self.redis_url).flushdb()
        env = {**os.environ, "REDIS_URL": self.redis_url, "PYTHONUNBUFFERED": "1"}
        for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SIGNOFF_NOTIFIER"):
            env.pop(name, None)
        if slack:
            # Timers are measured here, not Slack's rate limits or digests (benchmarks/storm.py).
            self.emulator = SlackEmulator(posting_limit=PostingLimit.off(),
                                          method_limits=MethodLimits.off()).start()
            env.update({"SIGNOFF_SLACK_DIGEST_AFTER": "0",
                        "SLACK_BOT_TOKEN": self.emulator.bot_token,
                        "SLACK_API_URL": self.emulator.api_url,
                        "SIGNOFF_SLACK_CHANNEL": CHANNEL})
        log = (self.logs / "worker.log").open("wb")
        try:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "worker", "--name", f"bench-timers-{os.getpid()}"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # its RQ scheduler child is stopped with it
        finally:
            log.close()
        client = connect(self.redis_url)
        deadline = time.monotonic() + 30
        while Worker.count(connection=client) < 1:
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; see {self.logs}/worker.log")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait()
        if self.emulator is not None:
            self.emulator.stop()
        if self.redis is not None:
            self.redis.close()


def start(stack: Stack, reviews: int, spread: float, lead: float) -> list[str]:
    """The runs, and the baseline jobs over the same window; returns the run ids."""
    connection = connect(stack.redis_url)
    rt = build_runtime(Settings(redis_url=stack.redis_url), connection, notifier=NullNotifier())
    workflow = parse_workflow(TIMED)
    queue = Queue(rt.settings.queue, connection=connection)
    started = time.time()
    ids = []
    for n in range(reviews):
        offset = lead + spread * n / reviews
        ids.append(rt.engine.run(workflow, {"host": f"web-{n:04d}",
                                            "sla": f"{int(offset * 1000)}ms"}))
        queue.enqueue_in(timedelta(seconds=started + offset - time.time()), BASELINE_JOB,
                         started + offset, result_ttl=0)
    return ids


def settle(stack: Stack, ids: Sequence[str], *, slack: bool, timeout: float) -> None:
    """Until every review escalated (and its DM went out), every baseline job ran."""
    connection = connect(stack.redis_url)
    rt = build_runtime(Settings(redis_url=stack.redis_url), connection, notifier=NullNotifier())
    left = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        for execution_id in list(left):
            state = rt.engine.get(execution_id)
            if state.waiting is None or state.waiting.level < 1:
                continue
            if slack and _dm_of(rt.engine, execution_id) is None:
                continue
            left.discard(execution_id)
        if not left and connection.llen(BASELINE_KEY) >= len(ids):
            return
        if stack.worker is not None and stack.worker.poll() is not None:
            raise RuntimeError(f"the worker exited; see {stack.logs}/worker.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(left)} reviews had not escalated after {timeout:.0f} s; "
                               f"see {stack.logs}/worker.log")
        time.sleep(0.5)


def _dm_of(engine: Any, execution_id: str) -> float | None:
    delivery = load_delivery(engine, execution_id, "review")
    if delivery is None:
        return None
    return next((float(p.ts) for p in delivery.posts if p.to == ESCALATE_TO), None)


def lateness(stack: Stack, ids: Sequence[str], *, slack: bool
             ) -> tuple[list[float], list[float], list[float]]:
    """(baseline, escalation, DM) lateness in seconds."""
    connection = connect(stack.redis_url)
    rt = build_runtime(Settings(redis_url=stack.redis_url), connection, notifier=NullNotifier())
    baseline = [ran - due for due, ran in
                (json.loads(raw) for raw in connection.lrange(BASELINE_KEY, 0, -1))]
    escalations, dms = [], []
    for execution_id in ids:
        events = [e.event for e in rt.engine.audit_entries(execution_id)]
        waiting = next(e for e in events if e["type"] == audit.WAITING_FOR_INPUT)
        escalated = next(e for e in events if e["type"] == audit.ESCALATED)
        assert escalated["actor"]["id"] == "system:sla", escalated
        due = _seconds(waiting["slaDueAt"])
        escalations.append(_seconds(escalated["at"]) - due)
        if slack:
            dm = _dm_of(rt.engine, execution_id)
            assert dm is not None, execution_id
            dms.append(dm - due)
    return baseline, escalations, dms


def _seconds(iso_text: str) -> float:
    moment = parse_iso(iso_text)
    assert moment is not None
    return moment.replace(tzinfo=moment.tzinfo or UTC).timestamp()


def report(reviews: int, spread: float, slack: bool, baseline: list[float],
           escalations: list[float], dms: list[float]) -> None:
    def s(value: float) -> str:
        return f"{value:8.3f} s"

    def row(name: str, values: list[float], note: str = "") -> None:
        print(f"{name:44}{s(percentile(values, 0.5)):>11}{s(percentile(values, 0.99)):>11}"
              f"{s(max(values)):>11}{s(min(values)):>11}   {note}")

    early = sum(1 for v in escalations if v < 0)
    p99 = percentile(escalations, 0.99)
    print(f"{reviews} reviews, SLA deadlines spread over {spread:.0f} s, one `signoff worker` "
          f"(with RQ's scheduler){' also posting to Slack (emulator)' if slack else ''}; "
          f"{os.cpu_count()} CPUs; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"{'lateness after the deadline':44}{'p50':>11}{'p99':>11}{'max':>11}{'min':>11}   target")
    row("bare RQ job scheduled with enqueue_in", baseline, "(baseline)")
    row("escalation (review.escalated - SLA deadline)", escalations,
        f"p99 < {TARGET_P99:.0f} s  {'PASS' if p99 < TARGET_P99 else 'FAIL'}; "
        f"{early} before the deadline  {'PASS' if early == 0 else 'FAIL'}")
    if dms:
        row("escalation DM (emulator ts - SLA deadline)", dms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reviews", type=int, default=500)
    parser.add_argument("--spread", type=float, default=30.0, help="seconds the deadlines span")
    parser.add_argument("--lead", type=float, default=10.0,
                        help="seconds from the start to the first deadline")
    parser.add_argument("--no-slack", action="store_true",
                        help="no Slack side: the worker uses no notifier")
    args = parser.parse_args()
    slack = not args.no_slack

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    stack = Stack()
    try:
        stack.start(slack=slack)
        ids = start(stack, args.reviews, args.spread, args.lead)
        settle(stack, ids, slack=slack, timeout=args.lead + args.spread + SETTLE)
        baseline, escalations, dms = lateness(stack, ids, slack=slack)
    except KeyboardInterrupt:
        print("interrupted; stopping", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmarks/timers.py: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    report(args.reviews, args.spread, slack, baseline, escalations, dms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
