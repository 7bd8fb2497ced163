"""``signoff policy check``, ``test`` and ``suggest``: the gate's policy from the command line.

``check TOOL`` says which rules match a call and what the policy decides, asking nobody;
``test`` runs the policy file's own ``tests:`` (for policy changes reviewed in CI);
``suggest`` reads the gate's history in Redis for escalating rules whose reviewers always
approve (:mod:`engine.run.graduation`). They read ``--policy PATH`` or ``SIGNOFF_POLICY``;
exit 1 when the policy has problems (printed as ``file:line:column: message``) or a test
fails, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.definition.policy import Decision, Policy, load_policy, run_tests
from engine.run.graduation import DEFAULT_LAST
from engine.settings import Settings


def register(sub: Any) -> None:
    """Add ``policy check`` and ``policy test`` to the ``signoff`` command's subparsers."""
    p = sub.add_parser("policy", help="the agent and CI gate's policy: check a call, run its "
                                      "tests")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = actions.add_parser("check", help="which rules match a tool call, and the decision")
    c.add_argument("tool")
    c.add_argument("--args", default="{}", help="the call's arguments: JSON or @file")
    c.add_argument("--context", default="{}", help="its context: JSON or @file")
    c.add_argument("--json", action="store_true", help="print the whole decision as JSON")
    c.add_argument("--policy", default=None, help="a policy file or directory "
                                                  "(default: SIGNOFF_POLICY)")
    c.set_defaults(func=cmd_policy_check)
    t = actions.add_parser("test", help="run the policy's tests; exit 1 if one fails")
    t.add_argument("--policy", default=None, help="a policy file or directory "
                                                  "(default: SIGNOFF_POLICY)")
    t.set_defaults(func=cmd_policy_test)
    g = actions.add_parser("suggest", help="escalating rules whose last decisions were all "
                                           "approvals, and the allow rule to replace each")
    g.add_argument("--last", type=int, default=DEFAULT_LAST,
                   help="how many decisions in a row must be approvals "
                        f"(default {DEFAULT_LAST}, as /approvals stats)")
    g.add_argument("--json", action="store_true", help="print the suggestions as JSON")
    g.add_argument("--policy", default=None, help="a policy file or directory "
                                                  "(default: SIGNOFF_POLICY)")
    g.set_defaults(func=cmd_policy_suggest)


def cmd_policy_check(args: argparse.Namespace) -> int:
    policy = _policy(args.policy)
    call_args = _json_object(args.args, "--args")
    context = _json_object(args.context, "--context")
    decision = policy.decide(args.tool, call_args, context)
    if args.json:
        print(json.dumps(decision.to_json(), indent=2, ensure_ascii=False))
        return 0
    print(f"{args.tool}: {decision.action.value} ({decision.reason})")
    for rule in decision.rules:
        print(f"  matched rule {rule.index + 1} at {rule.location}: {rule.tool} -> "
              f"{rule.action.value}{' when ' + rule.when.text if rule.when else ''}")
    _print_shadow(decision)
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    policy = _policy(args.policy)
    results = run_tests(policy)
    failed = [result for result in results if not result.passed]
    for result in failed:
        test, got = result.test, result.decision
        print(f"{test.location}: {test.tool} {json.dumps(dict(test.args), ensure_ascii=False)} "
              f"got {got.action.value}, expected {test.expect.value} ({got.reason})")
    if not results:
        print("the policy has no tests", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} policy test(s) passed",
          file=sys.stderr)
    return 1 if failed else 0


def cmd_policy_suggest(args: argparse.Namespace) -> int:
    from engine.definition.policy import PolicySource
    from engine.run.gate import Gate
    from engine.run.graduation import suggestions
    from engine.state.store import connect
    from engine.worker.runtime import build_runtime

    if args.last < 1:
        raise SystemExit(_usage("--last must be 1 or more"))
    policy = _policy(args.policy)
    settings = Settings.from_env()
    engine = build_runtime(settings, connect(settings.redis_url)).engine
    found = suggestions(Gate(engine, PolicySource(None)), policy, args.last)
    if args.json:
        print(json.dumps([s.to_json() for s in found], indent=2, ensure_ascii=False))
        return 0
    if not found:
        print(f"no escalating rule has had {args.last} approvals in a row")
    for suggestion in found:
        rule = suggestion.rule
        print(f"# rule {rule.index + 1} at {rule.location} ({rule.tool}): the last "
              f"{suggestion.decisions} decisions were approvals, by "
              f"{', '.join(suggestion.deciders) or 'the system'}; it could become:")
        print(suggestion.yaml())
    return 0


def _print_shadow(decision: Decision) -> None:
    for rule in decision.shadow:
        print(f"  shadow rule {rule.index + 1} at {rule.location}: would {rule.action.value}"
              " (not enforced)")
    if decision.shadow and decision.would_be is not decision.action:
        print(f"  with its shadow rules enforced, the decision would be "
              f"{(decision.would_be or decision.action).value}")


def _policy(given: str | None) -> Policy:
    path = given or Settings.from_env().policy_path
    if not path:
        raise SystemExit(_usage("no policy: pass --policy PATH or set SIGNOFF_POLICY"))
    return load_policy(path)


def _json_object(raw: str, flag: str) -> dict[str, Any]:
    from engine.ask import json_object

    try:
        return json_object(raw, flag)
    except ValueError as exc:
        raise SystemExit(_usage(str(exc))) from exc


def _usage(message: str) -> int:
    print(f"signoff policy: {message}", file=sys.stderr)
    return 2
