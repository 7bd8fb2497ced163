"""An alert storm: many runs of one workflow at once, every review reaching Slack within
Slack's posting limit.

    python benchmarks/storm.py [--runs 1000] [--within 10] [--workers 2]
                               [--digest-after 20] [--post-rate 1] [--post-burst 30]
                               [--no-method-limits]

Starts what ``benchmarks/slack.py`` starts (its ``Stack``: a private Redis, or REDIS_URL;
the Slack emulator; the web process; ``signoff worker`` processes, RQ's scheduler inside),
with the emulator enforcing Slack's ``chat.postMessage`` limit (about one a second per
channel, short bursts: ``slack_emulator.ratelimit``) and the other methods' tiers (unless
``--no-method-limits``), and Signoff's digests on at
``--digest-after`` (``SIGNOFF_SLACK_DIGEST_AFTER``). Starts ``--runs`` runs of one workflow
evenly over ``--within`` seconds, each waiting on the same review step, all posted to one
channel, as an alert storm does.

A review has reached Slack when its delivery record names a message: its own, or the
step's digest (``bot.digest``). The benchmark polls the records every
:data:`POLL_SECONDS`, so each time is late by up to that much. Prints start -> review
posted (or in the digest) p50/p99 with its target, how many messages were posted to the
channel and how many posts and other calls Slack (the emulator) refused with 429, the digest's count once
everything settled (every review counted), and the workers' CPU per run. Stops everything
it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rq import Queue  # noqa: E402

from benchmarks.load import Stolen  # noqa: E402
from benchmarks.slack import (  # noqa: E402
    CHANNEL,
    Stack,
    cpu_seconds,
    on_stack,
    percentile,
    wait_until,
)
from bot.delivery import Delivery, annotation_key  # noqa: E402
from bot.digest import digest_text  # noqa: E402
from bot.outbox import QUEUE as SLACK_QUEUE  # noqa: E402
from engine.definition.loader import parse_workflow  # noqa: E402
from engine.notify import NullNotifier  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.state.execution import parse_iso  # noqa: E402
from engine.state.store import connect  # noqa: E402
from engine.worker.runtime import Runtime, build_runtime  # noqa: E402
from slack_emulator import MethodLimits, PostingLimit  # noqa: E402
from slack_emulator.ratelimit import DEFAULT_BURST, DEFAULT_RATE  # noqa: E402

STEP = "isolate-host"
POLL_SECONDS = 0.05
SETTLE_TIMEOUT = 300.0
# start -> review in Slack, p99: within this long after the last run started. Every worker
# serves the engine's queue before the slack queue, so reviews go to Slack as the storm's
# runs leave the workers time; one message each at Slack's limit would take ~1,000 s.
AFTER_THE_STORM = 5.0

STORM = f"""
name: edr-alert
steps:
  - name: {STEP}
    type: waitForApproval
    with:
      approvers: [U0ALICE, U0BOB]
      message: |
        ## Isolate `{{{{ event.host }}}}`?
        **Rule:** {{{{ event.rule }}}}
        {{{{ event.evidence }}}}
"""
EVIDENCE = ("The host opened 40 connections to a known C2 address in 2 minutes; the EDR agent "
            "is healthy and the process tree starts at an Office macro. ") * 3


@dataclass(frozen=True)
class Results:
    runs: int
    within: float
    start_seconds: float  # how long starting them took
    workers: int
    posted: list[float]  # start -> in Slack, per run (seconds)
    waiting: list[float]  # start -> the review waiting (the engine's part), per run
    own_messages: int  # reviews posted with a message of their own
    digested: int  # reviews shown by the digest
    messages: int  # top-level messages in the channel
    refused: int  # chat.postMessage calls answered 429
    refused_other: dict[str, int]  # other calls answered 429, by method
    updates: int  # chat.update calls (the digest kept up to date)
    digest_count: int | None  # what the digest said once everything settled
    worker_cpu: float  # seconds per run
    limit: PostingLimit
    digest_after: int


class Watcher(threading.Thread):
    """Polls the delivery records of started runs; notes when each first names a message."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__(name="storm-watcher", daemon=True)
        self.rt = rt
        self.lock = threading.Lock()
        self.started: dict[str, float] = {}
        self.posted: dict[str, float] = {}
        self.posts: dict[str, Delivery] = {}
        self.done = threading.Event()

    def add(self, execution_id: str, at: float) -> None:
        with self.lock:
            self.started[execution_id] = at

    def run(self) -> None:
        while not self.done.is_set():
            with self.lock:
                waiting = [i for i in self.started if i not in self.posted]
            if waiting:
                notes = self.rt.engine.annotations(waiting, annotation_key(STEP))
                now = time.time()
                for execution_id, data in zip(waiting, notes, strict=True):
                    if isinstance(data, Mapping) and data.get("posts"):
                        with self.lock:
                            self.posted[execution_id] = now
                            self.posts[execution_id] = Delivery.from_json(
                                data, execution_id, STEP)
            self.done.wait(POLL_SECONDS)


def bench(stack: Stack, *, runs: int, within: float, limit: PostingLimit,
          digest_after: int) -> Results:
    emulator = stack.emulator
    assert emulator is not None
    rt = build_runtime(Settings(redis_url=stack.redis_url), connect(stack.redis_url),
                       notifier=NullNotifier())
    workflow = parse_workflow(STORM)
    watcher = Watcher(rt)
    watcher.start()
    workers = [w.pid for w in stack.workers]
    cpu_before = cpu_seconds(workers)
    t0 = time.monotonic()
    ids = []
    for n in range(runs):
        delay = t0 + n * within / runs - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        at = time.time()
        execution_id = rt.engine.run(workflow, {"host": f"web-{n:05d}", "rule": "C2 beacon",
                                                "evidence": EVIDENCE})
        watcher.add(execution_id, at)
        ids.append(execution_id)
    start_seconds = time.monotonic() - t0

    def all_posted() -> bool:
        with watcher.lock:
            return len(watcher.posted) == runs

    try:
        wait_until(all_posted, f"{runs} reviews to reach Slack", SETTLE_TIMEOUT)
    finally:
        watcher.done.set()
        watcher.join()
    queue = Queue(SLACK_QUEUE, connection=rt.store.redis)

    def settled() -> bool:  # every job done, the digest's last refresh too
        return (queue.count == 0 and queue.started_job_registry.count == 0
                and queue.scheduled_job_registry.count == 0)

    for _ in range(2):  # a refresh handed in by the last job is drained right after it
        wait_until(settled, "the slack queue to empty", SETTLE_TIMEOUT)
        time.sleep(1.0)
    worker_cpu = (cpu_seconds(workers) - cpu_before) / runs

    messages = [m for m in emulator.workspace.messages(CHANNEL) if not m.get("thread_ts")]
    digests = {m["ts"]: m for m in messages if "review them together" in str(m.get("text"))}
    own = sum(1 for d in watcher.posts.values() if d.posts[0].ts not in digests)
    digest_count = None
    for message in digests.values():
        count = int(str(message.get("text")).split()[0])
        if str(message.get("text")) == digest_text(STEP, count):
            digest_count = count
    posted = [watcher.posted[i] - watcher.started[i] for i in ids]
    since = {i: parse_iso(watcher.posts[i].since) for i in ids}
    waiting = [s.timestamp() - watcher.started[i] for i, s in since.items() if s is not None]
    return Results(runs=runs, within=within, start_seconds=start_seconds,
                   workers=len(stack.workers), posted=posted, waiting=waiting,
                   own_messages=own,
                   digested=runs - own, messages=len(messages),
                   refused=emulator.posting.refused,
                   refused_other=dict(emulator.methods.refused_by_key),
                   updates=len(emulator.calls_to("chat.update")), digest_count=digest_count,
                   worker_cpu=worker_cpu, limit=limit, digest_after=digest_after)


_STOLEN = Stolen()  # from the start of the process


def report(r: Results) -> None:
    def mark(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    p50, p99 = percentile(r.posted, 0.5), percentile(r.posted, 0.99)
    target = r.start_seconds + AFTER_THE_STORM
    limit = (f"{r.limit.rate:g}/s per channel, bursts of {r.limit.burst}" if r.limit.enabled
             else "off")
    print(f"{r.runs} runs started over {r.start_seconds:.1f} s (asked: {r.within:g} s) on "
          f"{r.workers} workers; Slack's posting limit {limit}; digest after "
          f"{r.digest_after or 'never'}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; over the run, {_STOLEN.text()}")
    print(f"{'':38}{'p50':>9}{'p99':>9}   target")
    print(f"{'start -> review in Slack':38}{p50:>8.2f}s{p99:>8.2f}s   p99 < the storm's "
          f"{r.start_seconds:.1f} s + {AFTER_THE_STORM:g} s  {mark(p99 < target)}   (polled "
          f"every {POLL_SECONDS * 1e3:.0f} ms)")
    w50, w99 = percentile(r.waiting, 0.5), percentile(r.waiting, 0.99)
    print(f"{'  of which start -> review waiting':38}{w50:>8.2f}s{w99:>8.2f}s   (the engine's "
          "part: the run's first segment, queued behind the storm's others)")
    one_by_one = max(0.0, (r.runs - r.limit.burst) / r.limit.rate) if r.limit.enabled else 0.0
    print(f"reviews in Slack: {r.own_messages} with a message of their own, {r.digested} in the "
          f"digest; all {r.runs}  {mark(r.own_messages + r.digested == r.runs)}")
    print(f"messages posted to the channel: {r.messages} (target: at most "
          f"{r.digest_after + 1 if r.digest_after else r.runs}; one per review would be "
          f"{r.runs}, the last ~{one_by_one:.0f} s after the storm at Slack's limit)  "
          f"{mark(r.messages <= (r.digest_after + 1 if r.digest_after else r.runs))}")
    others = ", ".join(f"{method} {n}" for method, n in sorted(r.refused_other.items()))
    print(f"posts Slack refused (429): {r.refused}; other calls refused: "
          f"{sum(r.refused_other.values())}{f' ({others})' if others else ''}; digest "
          f"rewrites (chat.update): {r.updates}")
    if r.digested:
        print(f"the digest's count once settled: {r.digest_count} (target: {r.runs}, every "
              f"waiting review)  {mark(r.digest_count == r.runs)}")
    print(f"workers' CPU per run, start to review in Slack: {r.worker_cpu * 1e3:.1f} ms")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--within", type=float, default=10.0, help="seconds to start them over")
    parser.add_argument("--workers", type=int, default=2, help="signoff worker processes")
    parser.add_argument("--digest-after", type=int, default=20,
                        help="SIGNOFF_SLACK_DIGEST_AFTER (0: no digests)")
    parser.add_argument("--post-rate", type=float, default=DEFAULT_RATE,
                        help="the emulator's chat.postMessage per second per channel (0: off)")
    parser.add_argument("--post-burst", type=int, default=DEFAULT_BURST)
    parser.add_argument("--no-method-limits", action="store_true",
                        help="no limit on the emulator's other methods (default: Slack's tiers)")
    args = parser.parse_args(argv)

    limit = (PostingLimit(rate=args.post_rate, burst=args.post_burst) if args.post_rate > 0
             else PostingLimit.off())
    return on_stack("benchmarks/storm.py", lambda stack: stack.start(
        workers=args.workers, load_processes=0, client="raw", posting_limit=limit,
        method_limits=MethodLimits.off() if args.no_method_limits else MethodLimits.slack(),
        env={"SIGNOFF_SLACK_DIGEST_AFTER": str(args.digest_after)}),
        lambda stack: bench(stack, runs=args.runs, within=args.within, limit=limit,
                            digest_after=args.digest_after), report)


if __name__ == "__main__":
    sys.exit(main())
