"""``signoff hook claude-code``: Claude Code's PreToolUse hook, decided by the gate and in Slack.

Claude Code runs the hook before each tool call, with the event on stdin
(``hook_event_name``, ``tool_name``, ``tool_input``, ``session_id``, ``cwd``, ...), and reads
its answer on stdout::

    {"hookSpecificOutput": {"hookEventName": "PreToolUse",
                            "permissionDecision": "allow" | "deny",
                            "permissionDecisionReason": "..."}}

The call is checked against the policy at ``SIGNOFF_URL`` as ``signoff ask`` checks it (the
tool's name is ``tool_name``, its arguments ``tool_input``, and the session in ``context``):
``allow`` allows, ``block`` denies with the rule's reason, ``escalate`` waits for the review
and allows once approved (reporting the use: the approval is spent on this call; arguments a
reviewer edited are passed back as ``updatedInput``) or denies, naming who denied and why.
Anything else denies: a time-out, a cancellation, an event that is not a PreToolUse, a
server that cannot be reached. It always exits 0, so Claude Code reads the answer rather
than treating the hook as broken.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

from engine.ask import EXIT_APPROVED, Unavailable, ask_and_wait, open_client, report_use
from engine.definition.durations import parse_duration
from engine.errors import DurationError

DEFAULT_WAIT = "9m"  # under the 10 minutes the README's settings give the hook


def register(sub: Any) -> None:
    """Add ``hook claude-code`` to the ``signoff`` command's subparsers."""
    p = sub.add_parser("hook", help="agent hooks: decide an agent's tool calls with the gate")
    kinds = p.add_subparsers(dest="hook", metavar="AGENT", required=True)
    c = kinds.add_parser("claude-code", help="Claude Code's PreToolUse hook: the event on "
                                             "stdin, the decision on stdout")
    c.add_argument("--timeout", default=DEFAULT_WAIT,
                   help=f"wait at most this long for a review, then deny (default "
                        f"{DEFAULT_WAIT}; keep it under the hook's timeout in settings.json)")
    c.set_defaults(func=cmd_claude_code)


def cmd_claude_code(args: argparse.Namespace) -> int:
    print(json.dumps(claude_code_answer(sys.stdin.read(), args.timeout)))
    return 0


def claude_code_answer(event_text: str, wait: str = DEFAULT_WAIT) -> dict[str, Any]:
    """The hook's answer to one PreToolUse event (as JSON text)."""
    try:
        event = json.loads(event_text)
        limit = parse_duration(wait).total_seconds()
    except (ValueError, DurationError) as exc:
        return _answer("deny", f"Signoff could not read the hook event: {exc}")
    if not isinstance(event, dict) or not isinstance(event.get("tool_name"), str) \
            or event.get("hook_event_name", "PreToolUse") != "PreToolUse":
        return _answer("deny", "Signoff answers PreToolUse events with a tool_name only")
    tool_input = event.get("tool_input")
    call = {
        "tool": event["tool_name"],
        "args": tool_input if isinstance(tool_input, dict) else {"input": tool_input},
        "summary": f"Claude Code wants to use {event['tool_name']}"
                   + (f" in {event['cwd']}" if isinstance(event.get("cwd"), str) else ""),
        "context": {"agent": "claude-code",
                    **{key: event[key] for key in ("session_id", "cwd", "permission_mode")
                       if isinstance(event.get(key), str)}},
    }
    try:
        with open_client() as (client, _url):
            code, body = ask_and_wait(client, _url, call, limit=limit, limit_text=wait,
                                      out=io.StringIO())
            if code == EXIT_APPROVED:
                report_use(client, body, call)
    except Unavailable as exc:
        return _answer("deny", f"Signoff could not decide, so the call is denied: {exc}")
    decided = _answer(*_decision(code, body))
    if code == EXIT_APPROVED and body.get("edited"):  # the reviewer's arguments run
        decided["hookSpecificOutput"]["updatedInput"] = body["args"]
    return decided


def _decision(code: int, body: dict[str, Any]) -> tuple[str, str]:
    status = body.get("status") or body.get("decision")
    reason = str(body.get("reason") or "")
    if code == EXIT_APPROVED:
        who = body.get("decidedBy")
        return "allow", (f"approved by {who} in Signoff" + (f": {body['comment']}"
                                                            if body.get("comment") else "")
                         if who else f"allowed by the Signoff policy: {reason}")
    if status == "block":
        return "deny", f"blocked by the Signoff policy: {reason}"
    if status == "denied":
        comment = f": {body['comment']}" if body.get("comment") else ""
        return "deny", f"denied by {body.get('decidedBy')} in Signoff{comment}"
    return "deny", f"no approval in Signoff ({status}); the call is denied"


def _answer(decision: str, reason: str) -> dict[str, Any]:
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse",
                                   "permissionDecision": decision,
                                   "permissionDecisionReason": reason}}
