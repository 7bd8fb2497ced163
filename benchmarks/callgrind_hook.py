"""``python -m engine.cli`` under valgrind's callgrind, counting only when told
(benchmarks/instructions.py): SIGUSR1 zeroes callgrind's counts and starts counting,
SIGUSR2 stops and writes them out, each time to a file of its own (``part-1``, ``part-2``,
...). The signals go through callgrind's client requests, which are machine code
(valgrind's callgrind.h): a few lines of C, compiled by instructions.py, whose path is
``SIGNOFF_CALLGRIND_SHIM``."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHIM_C = """
#include <valgrind/callgrind.h>
void signoff_count_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
void signoff_count_stop(const char *label) {
  CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(label);
}
"""


def install(shim: str) -> None:
    """Count between SIGUSR1 and SIGUSR2 through the compiled ``shim``."""
    library = ctypes.CDLL(shim)
    parts = [0]

    def start(signum: int, frame: Any) -> None:
        library.signoff_count_start()

    def stop(signum: int, frame: Any) -> None:
        parts[0] += 1
        library.signoff_count_stop(f"part-{parts[0]}".encode())

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


if __name__ == "__main__":
    install(os.environ["SIGNOFF_CALLGRIND_SHIM"])
    from engine.cli import main

    sys.exit(main(sys.argv[1:]))
