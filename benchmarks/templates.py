"""CPU time of one template render and one condition evaluation, the engine's hot path.

    python benchmarks/templates.py [--number 5000] [--repeat 25]

Each case is rendered (or evaluated) ``--number`` times, ``--repeat`` times over, and the
best run is printed per call. The clock is the thread's CPU time, not the wall clock, so
other processes on a shared machine barely move the figures (benchmarks/engine.py's
end-to-end figures do move with them): compare two checkouts by running this file from
each, one after the other.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.definition.conditions import parse_condition  # noqa: E402
from engine.definition.templates import render_text, render_value  # noqa: E402

SCOPE: dict[str, Any] = {
    "event": {"alert": {"id": "a-1", "host": "web-01", "score": 73, "severity": "high",
                        "tags": ["ssh", "prod"]}},
    "inputs": {"limit": 5, "kind": "page"},
    "variables": {"score": 73},
}

CASES: dict[str, Callable[[], object]] = {
    "text": lambda: render_text("alert {{ event.alert.id }} on {{ event.alert.host | upcase }}",
                                SCOPE),
    "typed value": lambda: render_value("${{ event.alert.score }}", SCOPE),
    "comparison": lambda: render_value("${{ inputs.limit > 3 and inputs.kind == 'page' }}",
                                       SCOPE),
    "contains": lambda: render_value("${{ event.alert.tags contains 'prod' }}", SCOPE),
    "if tag": lambda: render_text("{% if event.alert.score >= 50 %}high{% endif %}", SCOPE),
    "default": lambda: render_value("${{ inputs.hosts | default: 'none' }}", SCOPE),
    "arithmetic": lambda: render_text("{{ event.alert.score | divided_by: 2 | round }}", SCOPE),
    "for loop": lambda: render_text("{% for t in event.alert.tags %}{{ t }},{% endfor %}", SCOPE),
    "KQL condition": lambda: parse_condition(
        "variables.score >= 50 and event.alert.severity : (high or critical)").evaluate(SCOPE),
    "KQL wildcard": lambda: parse_condition("event.alert.host : web-*").evaluate(SCOPE),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()
    for name, case in CASES.items():
        case()  # compile and cache first
        runs = timeit.repeat(case, number=args.number, repeat=args.repeat,
                             timer=time.thread_time)
        print(f"{name + ':':16s} {min(runs) / args.number * 1e6:7.2f} µs")


if __name__ == "__main__":
    main()
