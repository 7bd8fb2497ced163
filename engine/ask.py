"""``signoff ask`` and ``signoff exec``: ask a Signoff server whether a tool call may run.

An HTTP client of the gate API (:mod:`engine.gate_api`) at ``SIGNOFF_URL`` with
``SIGNOFF_API_TOKEN`` (scopes ``run`` and ``read``), for CI jobs and scripts: progress on
stderr, the result on stdout (``--json``: the whole answer or request). Its exit status is
the decision, and it fails closed: anything but an approval or an allow is non-zero.

    0  approved, or allowed by the policy      4  timed out with no decision
    1  denied                                 5  cancelled
    3  blocked by the policy                 75  still pending (--no-wait)
    2  bad usage                             69  no decision could be had: the server is
                                                 unreachable or answered an error

While it waits, SIGINT or SIGTERM withdraws the request (the review in Slack says it was
cancelled) and it exits 5; so does its own ``--timeout`` passing (then 4). ``ask`` does not
report the call as used (``POST …/use``): the approval stays bound to that call for its
requester, once, and whoever runs it may report it. ``exec TOOL -- COMMAND...`` asks the
same way, then reports the use and runs the command, exiting with its status.

:func:`open_client`, :func:`ask_and_wait` and :func:`report_use` are the client's parts,
which the Claude Code hook (:mod:`engine.hooks`) uses too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from engine.definition.durations import parse_duration
from engine.errors import DurationError

if TYPE_CHECKING:
    import httpx

EXIT_APPROVED = 0
EXIT_DENIED = 1
EXIT_USAGE = 2
EXIT_BLOCKED = 3
EXIT_TIMED_OUT = 4
EXIT_CANCELLED = 5
EXIT_UNAVAILABLE = 69  # sysexits' EX_UNAVAILABLE
EXIT_PENDING = 75  # sysexits' EX_TEMPFAIL
_BY_STATUS = {"approved": EXIT_APPROVED, "denied": EXIT_DENIED, "failed": EXIT_DENIED,
              "timed_out": EXIT_TIMED_OUT, "cancelled": EXIT_CANCELLED}
POLL_SECONDS = 50  # one long poll; the server answers by then, decided or not
DEFAULT_URL = "http://127.0.0.1:8000"


class Unavailable(Exception):
    """No decision could be had from the server: exit 69."""


class _Stop(Exception):
    """SIGTERM while waiting, handled as SIGINT is."""


def register(sub: Any) -> None:
    """Add ``ask`` and ``exec`` to the ``signoff`` command's subparsers."""
    p = sub.add_parser("ask", help="ask the gate whether a tool call may run; wait for its "
                                   "review (exit 0 approved, 1 denied, 3 blocked, ...)")
    _call_arguments(p)
    p.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait for a review: print the request id, exit 75")
    p.set_defaults(func=cmd_ask)
    p = sub.add_parser("exec", help="run a command only when the gate allows or approves the "
                                    "call, and report its use: signoff exec TOOL -- COMMAND...")
    _call_arguments(p)
    p.add_argument("program", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    p.set_defaults(func=cmd_exec, json=False, no_wait=False)


def _call_arguments(p: argparse.ArgumentParser, *, tool: bool = True) -> None:
    if tool:
        p.add_argument("tool")
    p.add_argument("--args", default="{}", help="the call's arguments: JSON or @file")
    p.add_argument("--summary", default="", help="what the call does, for the reviewer")
    p.add_argument("--context", default="{}", help="context for the policy: JSON or @file")
    p.add_argument("--timeout", default=None,
                   help="stop waiting after this long (e.g. 30m): the request is withdrawn, "
                        "exit 4")


def cmd_ask(args: argparse.Namespace) -> int:
    return _session(args, lambda client, call, url, limit: ask_and_wait(
        client, url, call, limit=limit, limit_text=args.timeout, out=sys.stdout,
        as_json=args.json, no_wait=args.no_wait)[0])


def cmd_exec(args: argparse.Namespace) -> int:
    """Run the command only when the call is allowed or approved, spending the approval."""
    # argparse leaves everything after TOOL to the command, options included: read the
    # options written between TOOL and `--` here.
    head, command = ([], args.program)
    if "--" in args.program:
        cut = args.program.index("--")
        head, command = args.program[:cut], args.program[cut + 1:]
    if head:
        options = argparse.ArgumentParser(prog="signoff exec TOOL", add_help=False)
        _call_arguments(options, tool=False)
        try:
            options.parse_args(head, namespace=args)
        except SystemExit:
            return EXIT_USAGE
    if not command:
        print("signoff exec: give the command after --: signoff exec TOOL -- COMMAND...",
              file=sys.stderr)
        return EXIT_USAGE

    def gated(client: httpx.Client, call: dict[str, Any], url: str, limit: float | None) -> int:
        code, body = ask_and_wait(client, url, call, limit=limit, limit_text=args.timeout,
                                  out=sys.stderr)
        if code != EXIT_APPROVED:
            return code
        if body.get("edited"):  # the command line cannot take the reviewer's arguments
            print(f"signoff exec: the reviewer changed {', '.join(body['edited'])}; the "
                  "command would run what was asked, not what was approved, so it does not "
                  "run", file=sys.stderr)
            return EXIT_DENIED
        report_use(client, body, call)
        return subprocess.call(command)

    return _session(args, gated)


def _session(args: argparse.Namespace, act: Any) -> int:
    try:
        call = {"tool": args.tool, "args": json_object(args.args, "--args"),
                "summary": args.summary, "context": json_object(args.context, "--context")}
        limit = parse_duration(args.timeout).total_seconds() if args.timeout else None
    except (ValueError, DurationError) as exc:
        print(f"signoff {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with open_client() as (client, url):
        try:
            code: int = act(client, call, url, limit)
            return code
        except Unavailable as exc:
            print(f"signoff: no decision: {exc} (failing closed)", file=sys.stderr)
            return EXIT_UNAVAILABLE


@contextmanager
def open_client() -> Iterator[tuple[httpx.Client, str]]:
    """An HTTP client of the server at SIGNOFF_URL, with SIGNOFF_API_TOKEN, and its URL."""
    import httpx  # here, so other commands do not load it

    url = (os.environ.get("SIGNOFF_URL") or DEFAULT_URL).rstrip("/")
    token = os.environ.get("SIGNOFF_API_TOKEN") or ""
    with httpx.Client(base_url=url, timeout=POLL_SECONDS + 15,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        yield client, url


def report_use(client: httpx.Client, answer: dict[str, Any], call: dict[str, Any]) -> None:
    """Spend an approval on the call about to run, with the arguments approved (nothing to
    do for a policy's allow); Unavailable when the server refuses it (used already) or
    cannot be reached."""
    if answer.get("requestId"):
        to_run = answer.get("args") if isinstance(answer.get("args"), dict) else call["args"]
        _call(client, "POST", f"/api/gate/requests/{answer['requestId']}/use",
              json={"tool": call["tool"], "args": to_run})


def ask_and_wait(client: httpx.Client, url: str, call: dict[str, Any], *,
                 limit: float | None, limit_text: str | None, out: TextIO,
                 as_json: bool = False, no_wait: bool = False) -> tuple[int, dict[str, Any]]:
    """Check the call and wait for its review (at most ``limit`` seconds, then withdraw
    it): the exit status and the last answer, printed on ``out``; progress on stderr.
    Unavailable when no decision can be had."""
    tool = call["tool"]
    answer = _call(client, "POST", "/api/gate/check", json=call)
    decision = answer.get("decision")
    if decision != "escalate":
        _print(answer, as_json, f"{decision}: {answer.get('reason')}", out)
        return (EXIT_APPROVED if decision == "allow" else EXIT_BLOCKED), answer
    request_id = str(answer["requestId"])
    where = f"{url}/api/gate/requests/{request_id}"
    if no_wait:
        _print(answer, as_json, request_id, out)
        print(f"signoff: {tool} needs a review ({answer.get('reason')}); "
              f"request {request_id} is pending: {where}", file=sys.stderr)
        return EXIT_PENDING, answer
    deadline = None if limit is None else time.monotonic() + limit
    try:
        with _sigterm_stops():
            print(f"signoff: {tool} needs a review ({answer.get('reason')}); waiting "
                  f"for a decision on request {request_id}: {where}", file=sys.stderr)
            state = _wait(client, request_id, deadline)
    except (KeyboardInterrupt, _Stop):
        state = _withdraw(client, request_id, "the caller stopped waiting (signal)")
        _print(state, as_json, _line(state), out)
        return EXIT_CANCELLED, state
    if state["status"] == "pending":  # our own --timeout passed
        state = _withdraw(client, request_id, f"no decision within {limit_text}")
        _print(state, as_json, _line(state), out)
        code = EXIT_TIMED_OUT if state["status"] == "cancelled" else \
            _BY_STATUS.get(state["status"], EXIT_DENIED)
        return code, state
    _print(state, as_json, _line(state), out)
    return _BY_STATUS.get(state["status"], EXIT_DENIED), state


def _wait(client: httpx.Client, request_id: str, deadline: float | None) -> dict[str, Any]:
    while True:
        seconds = POLL_SECONDS
        if deadline is not None:
            seconds = max(0, min(seconds, int(deadline - time.monotonic())))
        state = _call(client, "GET", f"/api/gate/requests/{request_id}/wait",
                      params={"timeout": f"{seconds}s"})
        if state["status"] != "pending":
            return state
        if deadline is not None and time.monotonic() >= deadline:
            return state


def _withdraw(client: httpx.Client, request_id: str, reason: str) -> dict[str, Any]:
    """Cancel the request; if it was decided meanwhile, its decision stands."""
    import httpx

    try:
        response = client.post(f"/api/gate/requests/{request_id}/cancel",
                               json={"reason": reason}, timeout=15)
        if response.status_code == 200:
            state: dict[str, Any] = response.json()
            return state
        return _call(client, "GET", f"/api/gate/requests/{request_id}")
    except httpx.HTTPError as exc:
        raise Unavailable(f"could not withdraw request {request_id}: {exc}") from exc


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    import httpx

    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise Unavailable(f"cannot reach {client.base_url}: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or not isinstance(body, dict):
        detail = body.get("message") if isinstance(body, dict) else None
        raise Unavailable(f"{method} {path} answered {response.status_code}"
                          f"{': ' + str(detail) if detail else ''}")
    return body


def _line(state: dict[str, Any]) -> str:
    status = state.get("status")
    who = f" by {state['decidedBy']}" if state.get("decidedBy") else ""
    when = f" at {state['decidedAt']}" if state.get("decidedAt") else ""
    comment = f": {state['comment']}" if state.get("comment") else ""
    return f"{status}{who}{when}{comment}"


def _print(body: dict[str, Any], as_json: bool, line: str, out: TextIO) -> None:
    print(json.dumps(body, indent=2, ensure_ascii=False) if as_json else line, file=out)


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    def stop(signum: int, frame: Any) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def json_object(raw: str, flag: str) -> dict[str, Any]:
    """The JSON object a flag gives, written inline or as ``@file``; ValueError saying
    what is wrong."""
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{flag}: cannot read {raw[1:]}: {exc.strerror}") from exc
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{flag} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object")
    return value
