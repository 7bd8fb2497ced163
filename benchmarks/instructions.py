"""Instructions per lone click against a bare RQ job's, counted by callgrind: what noise does not move.

    python benchmarks/instructions.py [--clicks 10] [--rounds 2]

``benchmarks/slack.py --lone`` measures what the target is set on: the worker's CPU per
lone click against a bare RQ no-op job's, in the same run. That ratio moves by a few
percent from run to run, with what else the machine is doing. This counts the worker's
instructions instead (valgrind's callgrind), which repeat to within a fraction of a
percent: it tells whether a change to the click's path made the worker do less.

It starts slack.py's stack (a private Redis, the Slack emulator, the web process) with its
one worker under ``valgrind --tool=callgrind``, counting nothing until told
(benchmarks/callgrind_hook.py: SIGUSR1 starts counting, SIGUSR2 writes the count out).
After a few clicks and jobs to warm the worker up, each of ``--rounds`` rounds counts
``--clicks`` lone clicks (each sent once the last one's run finished and its message was
rewritten), then as many lone bare RQ no-op jobs. It prints instructions per lone click,
per bare job, and their ratio. Compare figures taken with the same ``--clicks``: what a
block pays once (its first click comes through RQ's loop, its first job after the
drain's own wait) is shared by that many.

What it does not give is time. On the 2-CPU machines this was written on, the click's
instructions took ~1.4x as long each as the bare job's (0.72x the instructions, ~1.0x the
CPU): the job's 60 Redis commands ping-pong with Redis on one CPU, while the click's
worker blocks 4-5 times and wakes after the web process and the Slack emulator ran their
own Python (see the README's production notes). Under valgrind the worker runs some 50x slower, so what
depends on time (RQ's heartbeats, the drain's chain of 10 s) may differ a little from a
real run. Needs valgrind, its headers (Debian's valgrind package has both) and a C
compiler (``cc``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.callgrind_hook import SHIM_C  # noqa: E402
from benchmarks.slack import (  # noqa: E402
    LoneSender,
    PreparingDriver,
    Stack,
    on_stack,
    prepare_clicks,
    stack_runtime,
    start_one_click,
    wait_posted,
)

WARM = 4  # clicks and jobs before counting: imports, connections, caches
PAUSE = 0.5  # seconds after each click or job: the worker is ~50x slower under callgrind
SIGNALLED = 0.5  # seconds for the worker to take a signal (it may be in a blocking pop)
SETTLE_TIMEOUT = 120.0
START_TIMEOUT = 300.0  # seconds for the worker to start under callgrind


@dataclass(frozen=True)
class Counts:
    clicks: list[int]  # instructions per lone click, one figure per round
    jobs: list[int]  # instructions per lone bare RQ job, one figure per round

    @property
    def ratio(self) -> float:
        return sum(self.clicks) / sum(self.jobs)


def build_shim(directory: Path) -> Path:
    """The C that asks callgrind to start and stop counting, compiled into ``directory``."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if shutil.which("valgrind") is None or compiler is None:
        raise RuntimeError("needs valgrind and a C compiler (cc)")
    source, shim = directory / "callgrind_shim.c", directory / "callgrind_shim.so"
    source.write_text(SHIM_C)
    done = subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(shim), str(source)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"could not compile the callgrind shim (valgrind's headers?): "
                           f"{done.stderr.strip()}")
    return shim


def start_stack(stack: Stack) -> None:
    shim = build_shim(stack.logs)
    stack.start(workers=1, load_processes=1, client="raw",
                env={"SIGNOFF_CALLGRIND_SHIM": str(shim)},
                worker_command=["valgrind", "--tool=callgrind", "--collect-atstart=no",
                                f"--callgrind-out-file={stack.logs}/callgrind.%p",
                                sys.executable, "-m", "benchmarks.callgrind_hook"],
                worker_start=START_TIMEOUT)


def total(path: Path) -> int:
    """The instructions a callgrind dump counted."""
    found = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no count in {path}")
    return int(found.group(1))


def count(stack: Stack, *, clicks: int, rounds: int) -> Counts:
    assert stack.emulator is not None and stack.workers
    worker = stack.workers[0].pid
    rt = stack_runtime(stack)
    ids = start_one_click(rt, WARM + clicks * rounds)
    wait_posted(rt, ids)
    driver = PreparingDriver(stack.emulator, stack.web_url + "/slack/events")
    requests = prepare_clicks(driver, rt.engine, ids)
    driver.close()
    sender = LoneSender(stack, rt, pause=PAUSE, timeout=SETTLE_TIMEOUT)
    dumps = [stack.logs / f"callgrind.{worker}.{n}" for n in range(1, 2 * rounds + 1)]

    def counted(send: Callable[[], None]) -> None:
        os.kill(worker, signal.SIGUSR1)
        time.sleep(SIGNALLED)
        send()
        os.kill(worker, signal.SIGUSR2)
        time.sleep(SIGNALLED)

    try:
        for n in range(WARM):
            sender.job()
            sender.click(ids[n], requests[n])
        for r in range(rounds):
            first = WARM + r * clicks

            def send_clicks(first: int = first) -> None:
                for n in range(first, first + clicks):
                    sender.click(ids[n], requests[n])

            def send_jobs() -> None:
                for _ in range(clicks):
                    sender.job()

            counted(send_clicks)
            counted(send_jobs)
    finally:
        sender.close()
    deadline = time.monotonic() + 30
    while not all(p.exists() for p in dumps):  # callgrind writes them as the signals come
        if time.monotonic() > deadline:
            raise RuntimeError("callgrind did not write its counts")
        time.sleep(0.2)
    figures = [total(p) // clicks for p in dumps]
    return Counts(figures[0::2], figures[1::2])


def report(c: Counts) -> None:
    def figures(values: list[int]) -> str:
        return ", ".join(f"{v:,}" for v in values)

    print(f"instructions per lone click: {figures(c.clicks)}; per lone bare RQ no-op job on "
          f"the same worker: {figures(c.jobs)}; ratio {c.ratio:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clicks", type=int, default=10,
                        help="lone clicks (then as many bare jobs) counted in each round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    return on_stack("benchmarks/instructions.py", start_stack,
                    lambda stack: count(stack, clicks=args.clicks, rounds=args.rounds), report)


if __name__ == "__main__":
    sys.exit(main())
