"""``/approvals`` with 100,000 pending reviews across 1,000 approvers, against one Redis round trip.

    python benchmarks/approvals.py [--reviews 100000] [--approvers 1000] [--requests 2000]
                                   [--concurrency 32] [--load-processes 4]
                                   [--all-requests 400] [--web-processes N]

(issue #15's command; creating the 100,000 reviews takes 5-20 minutes on 2 CPUs).

Starts a private Redis (REDIS_URL when set), the Slack emulator and the web process
(what ``signoff serve --processes N`` serves, plus a no-op route) as
``benchmarks/slack.py`` does: ``--web-processes`` processes sharing the port, by default
one per CPU this process may use, as the README advises (the web process's CPU below is
theirs together).
Creates ``--reviews`` waiting executions through ``Engine.run`` and an in-process
worker, each naming one of ``--approvers`` people. Delivering them the production way
(rendering Block Kit, posting over HTTP) would take minutes, so each review's message
is stored straight into the emulator (the approver's DM) and its delivery record,
audience and visibility index are written with the bot's own functions
(``new_delivery``, ``save_delivery``, ``Deliverer.share_audience``,
``Deliverer.index_viewers``): the same records a post job leaves. Every review escalates
to U0ALICE at its second level, so she (no admin) may see all of them.

Then it sends signed ``/approvals`` slash commands, built by ``SlackDriver``, to the
web process, ``--concurrency`` at a time from several load processes, and measures
ack latency: the answer is the list itself (the command's ack), so this is also the
response latency. Figures: one Redis round trip (PING) from this process, the no-op
route at the same concurrency with the same bodies, ``/approvals help`` (the command
without Redis), each person's first ``/approvals`` (its decision lines parsed, its links
written from the workspace address, its page read in one Redis command), then
``/approvals`` (each person's second and third: one Redis command, the reviews as the web
process kept them from the first) and ``/approvals all``.
``/approvals all`` is measured for people who are not admins: the approvers (each may
see ``--reviews / --approvers`` reviews) and U0ALICE (every review), at the benchmark's
concurrency and one request at a time; each row also gives its p50 as a multiple of the
trivial route's in the same run, at the same concurrency (``x trivial``), and the web
processes' CPU time per request (``web CPU``: what a command costs the web tier, which
the queueing behind the requests in flight does not enter, so it moves less from run to
run than the p99, which swings with the machine's speed). Target:
``/approvals`` p99 < 100 ms, for a person's first too. Each row is printed as it is
measured; a phase whose requests fail (time out) is reported as failed and the others
are still measured. The load average is printed last.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rq import Queue  # noqa: E402
from slack_sdk import WebClient  # noqa: E402

from benchmarks.load import CLIENTS, PreparedRequest, Stolen  # noqa: E402
from benchmarks.slack import (  # noqa: E402
    Phase,
    PreparingDriver,
    Stack,
    at_noop,
    measure,
    percentile,
    web_cpu,
)
from bot.delivery import Deliverer, Post, new_delivery, save_delivery  # noqa: E402
from bot.directory import Directory  # noqa: E402
from engine.definition.loader import parse_workflow  # noqa: E402
from engine.notify import NullNotifier  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.state.store import connect  # noqa: E402
from engine.worker.runtime import build_runtime  # noqa: E402
from slack_emulator import SlackDriver, User  # noqa: E402

TARGET_P99 = 0.100  # seconds
LATER_LEVEL = "U0ALICE"  # every review's second level: no admin, may see them all

WAITING = """
name: bench-approvals
steps:
  - name: review
    type: waitForInput
    with:
      approvers: ["{{ event.approver }}"]
      message: |
        ## Isolate `{{ event.host }}`?
        **Rule:** {{ event.rule }}. The host talked to a known C2 address.
      sla: 4h
      escalation:
        - approvers: [U0ALICE]
          sla: 8h
      schema:
        type: object
        properties:
          approved: {type: boolean, title: Isolate the host}
          notes: {type: string, title: Analyst notes}
        required: [approved]
"""


def approver_id(n: int) -> str:
    return f"U0BENCH{n:04d}"


def add_approvers(stack: Stack, count: int) -> list[str]:
    assert stack.emulator is not None
    ids = []
    for n in range(count):
        user = User(id=approver_id(n), name=f"approver{n}", real_name=f"Approver {n}")
        stack.emulator.workspace.add_user(user)
        ids.append(user.id)
    return ids


def create_reviews(stack: Stack, reviews: int, approvers: Sequence[str],
                   processes: int) -> tuple[list[str], float]:
    """``reviews`` waiting executions, each posted to one approver; returns ids and seconds.

    ``processes`` processes share the work, each calling for its share what ``Engine.run``,
    the advance job and the post job call; the advance jobs ``Engine.run`` enqueued, which
    would find nothing left to do, are dropped.
    """
    assert stack.emulator is not None
    started = time.perf_counter()
    work = [(stack.redis_url, stack.emulator.api_url, stack.emulator.bot_token,
             list(range(n, reviews, processes)), list(approvers)) for n in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        ids = [i for share in pool.starmap(start_and_deliver, work) for i in share]
    Queue(Settings().queue, connection=connect(stack.redis_url)).empty()
    return ids, time.perf_counter() - started


def start_and_deliver(redis_url: str, api_url: str, token: str, numbers: Sequence[int],
                      approvers: Sequence[str]) -> list[str]:
    """In a process of its own: start review ``n`` for each of ``numbers``, advance it to its
    review and deliver it (its message is a line of text rather than the rendered review)."""
    connection = connect(redis_url)
    rt = build_runtime(Settings(redis_url=redis_url), connection, notifier=NullNotifier())
    workflow = parse_workflow(WAITING)
    client = WebClient(token=token, base_url=api_url)
    directory = Directory(client, rt.engine.store)
    deliverer = Deliverer(rt.engine, client, directory, None)
    dms: dict[str, str] = {}
    ids = []
    for n in numbers:
        approver = approvers[n % len(approvers)]
        execution_id = rt.engine.run(workflow, {"host": f"web-{n:05d}",
                                                "rule": "Outbound C2 beacon", "approver": approver})
        rt.runner.advance(execution_id)
        review = rt.engine.review(execution_id)
        assert review is not None, execution_id
        if approver not in dms:
            dms[approver] = str(client.conversations_open(users=approver)["channel"]["id"])
        posted = client.chat_postMessage(channel=dms[approver], text=review.title)
        delivery = replace(new_delivery(review, directory), posts=(
            Post(to=approver, channel=str(posted["channel"]), ts=str(posted["ts"])),))
        save_delivery(rt.engine, delivery)
        review = deliverer.share_audience(review, delivery)
        deliverer.index_viewers(review, delivery)
        ids.append(execution_id)
    return ids


def commands(stack: Stack, users: Sequence[str], count: int, text: str = "") -> list[PreparedRequest]:
    """``count`` signed ``/approvals text`` requests, from ``users`` in turn."""
    assert stack.emulator is not None
    driver = PreparingDriver(stack.emulator, stack.web_url + "/slack/events")
    for n in range(count):
        driver.slash_command(users[n % len(users)], "/approvals", text)
    driver.close()
    return driver.prepared


def check_answer(stack: Stack, user: str, expected_total: int, text: str = "") -> None:
    """One real /approvals, read back: of ``expected_total``; the first page of one's own,
    ten reviews, each linked to its message."""
    assert stack.emulator is not None
    with SlackDriver(stack.emulator, stack.web_url + "/slack/events") as driver:
        answer = driver.slash_command(user, "/approvals", text,
                                      channel_id=stack.emulator.workspace.open_dm(user))
    body: dict[str, Any] = answer.body
    shown = str(body.get("blocks"))
    assert answer.status == 200 and f"of {expected_total:,}" in shown, shown[:2000]
    if not text:
        assert shown.count("/archives/") == 10, shown[:2000]
        assert shown.count("signoff.approve") == 10, shown[:2000]


def redis_round_trips(url: str, count: int = 2000) -> list[float]:
    client = connect(url)
    client.ping()
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        client.ping()
        samples.append(time.perf_counter() - t0)
    return samples


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.1f} ms"


def row(name: str, latencies: Sequence[float], rate: float | None, rtt: float, note: str = "",
        trivial: float | None = None, phase: Phase | None = None) -> None:
    """One figure; ``trivial``: the trivial route's p50, for the ``x trivial`` column;
    ``phase``: what it was measured in, for the web processes' CPU per request."""
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    rate_text = f"{rate:9.0f}" if rate is not None else f"{'':9}"
    cpu_text = ms(web_cpu(phase)) if phase is not None else ""
    versus = f"{p50 / trivial:10.1f}x" if trivial else f"{'':11}"
    print(f"{name:48}{ms(p50):>11}{ms(p99):>12}{rate_text}{cpu_text:>10}{p99 / rtt:10.0f}x"
          f"{versus}   {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reviews", type=int, default=100_000)
    parser.add_argument("--approvers", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000, help="/approvals commands measured")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="commands in flight (the click benchmark's default)")
    parser.add_argument("--load-processes", type=int, default=4)
    parser.add_argument("--client", choices=CLIENTS, default="raw")
    parser.add_argument("--all-requests", type=int, default=400,
                        help="/approvals all commands measured per kind of viewer")
    parser.add_argument("--web-processes", type=int, default=len(os.sched_getaffinity(0)),
                        help="as `signoff serve --processes N` (default: one per CPU, as the "
                             "README advises)")
    args = parser.parse_args()

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    stack = Stack()
    stolen = Stolen()
    try:
        stack.start(workers=0, load_processes=args.load_processes, client=args.client,
                    web_processes=args.web_processes)
        users = add_approvers(stack, args.approvers)
        ids, created = create_reviews(stack, args.reviews, users, os.cpu_count() or 2)
        per_person = args.reviews // args.approvers
        check_answer(stack, users[-1], per_person)  # also warms the web process up
        # No cap: all they may see. Each time on a new connection, so each web process most
        # likely makes its first look at the reviews created since it started here.
        for _ in range(4 * args.web_processes):
            check_answer(stack, users[-1], per_person, "all")
        check_answer(stack, LATER_LEVEL, args.reviews, "all")
        rtt = redis_round_trips(stack.redis_url)
        rtt_p50 = percentile(rtt, 0.5)
        print(f"{len(ids):,} pending reviews across {args.approvers} approvers ({per_person} "
              f"each), created and delivered in {created:.1f} s; {args.concurrency} concurrent "
              f"requests from {args.load_processes} load processes, {os.cpu_count()} CPUs; "
              f"{args.web_processes} web process{'es' if args.web_processes > 1 else ''}")
        print(f"{'':48}{'p50':>11}{'p99':>12}{'req/s':>9}{'web CPU':>10}{'p99/RTT':>11}"
              f"{'x trivial':>11}"
              "   target")
        print(f"{'one Redis round trip (PING, this process)':48}{ms(rtt_p50):>11}"
              f"{ms(percentile(rtt, 0.99)):>12}{'':9}{'':10}{'':11}{'':11}   (baseline)", flush=True)

        noop = at_noop(commands(stack, users, 200), stack.web_url, 2000)
        stolen = Stolen()  # from here: the commands
        measure(stack, noop[:args.concurrency * 10], args.concurrency)
        noop_phase = measure(stack, noop, args.concurrency)
        trivial = percentile(noop_phase.latencies(), 0.5)
        row("trivial route (same bodies, same concurrency)", noop_phase.latencies(),
            noop_phase.rate, rtt_p50, f"({len(noop_phase.samples)} requests)", trivial,
            noop_phase)
        noop_alone = measure(stack, noop[:200], 1)
        trivial_alone = percentile(noop_alone.latencies(), 0.5)

        def phase(name: str, requests: Sequence[PreparedRequest], concurrency: int,
                  base: float, target: bool = False) -> Phase | None:
            """Measure and print one row at once; a phase whose requests fail (time out)
            is reported as such, and the others are still measured."""
            try:
                measured = measure(stack, requests, concurrency)
            except RuntimeError as exc:
                print(f"{name:48}   FAILED: {exc}", flush=True)
                return None
            note = f"({len(measured.samples)} requests)"
            if target:
                ok = percentile(measured.latencies(), 0.99) < TARGET_P99
                note = f"p99 < {TARGET_P99 * 1e3:.0f} ms  {'PASS' if ok else 'FAIL'} {note}"
            row(name, measured.latencies(), measured.rate, rtt_p50, note, base, measured)
            return measured

        phase("/approvals help (no Redis)", commands(stack, users, 1000, "help"),
              args.concurrency, trivial)
        phase("/approvals, a person's first (links)",
              commands(stack, users[:-1], len(users) - 1), args.concurrency, trivial,
              target=True)
        mine = phase("/approvals (ack = the list)", commands(stack, users, args.requests),
                     args.concurrency, trivial, target=True)
        row("trivial route, one request at a time", noop_alone.latencies(), noop_alone.rate,
            rtt_p50, f"({len(noop_alone.samples)} requests)", trivial_alone, noop_alone)
        alone = max(20, args.all_requests // 8)
        phase(f"/approvals all, an approver (sees {per_person:,})",
              commands(stack, users, args.all_requests, "all"), args.concurrency, trivial)
        phase("  the same, one request at a time", commands(stack, users, alone, "all"), 1,
              trivial_alone)
        phase(f"/approvals all, U0ALICE (sees all {args.reviews:,})",
              commands(stack, [LATER_LEVEL], args.all_requests, "all"), args.concurrency,
              trivial)
        phase("  the same, one request at a time", commands(stack, [LATER_LEVEL], alone, "all"),
              1, trivial_alone)
    except KeyboardInterrupt:
        print("interrupted; stopping", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmarks/approvals.py: {exc} (logs in {stack.logs})", file=sys.stderr)
        return 1
    finally:
        stack.stop()

    if mine is not None:
        cpu = ", ".join(f"{name} {share * 100:.0f}%" for name, share in mine.cpu.items())
        print(f"CPU during /approvals, share of one core: {cpu}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; during the "
          f"commands, {stolen.text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
