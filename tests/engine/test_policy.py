"""Policy rules for the agent and CI gate: loading, evaluation, problems, and the CLI."""

from __future__ import annotations

import json
import textwrap

import pytest

from engine.definition.policy import Action, load_policy, parse_policy, run_tests
from engine.errors import PolicyInvalid
from tests.engine.test_cli import signoff

# The reference article's policy ("What is human-in-the-loop AI?", Authensor), as printed.
ARTICLE = """\
rules:
  # Low-risk: automatic
  - tool: "search.web"
    action: allow
  - tool: "file.read"
    action: allow

  # Medium-risk: human review
  - tool: "file.write"
    action: escalate
    reason: "File writes require review"
  - tool: "email.send"
    action: escalate
    reason: "Outbound email requires review"

  # High-risk: blocked
  - tool: "shell.execute"
    action: block
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(textwrap.dedent(text), "policy.yml")
    return [str(problem) for problem in caught.value.problems]


def test_the_articles_policy_loads_verbatim_and_means_what_it_says():
    policy = parse_policy(ARTICLE, "article.yml")
    assert [(r.tool, r.action) for r in policy.rules] == [
        ("search.web", Action.ALLOW), ("file.read", Action.ALLOW),
        ("file.write", Action.ESCALATE), ("email.send", Action.ESCALATE),
        ("shell.execute", Action.BLOCK)]
    assert policy.decide("search.web").action is Action.ALLOW
    write = policy.decide("file.write", {"path": "/tmp/x"})
    assert write.action is Action.ESCALATE
    assert write.reason == "File writes require review"
    assert str(write.deciding.location) == "article.yml:9:5"
    assert policy.decide("shell.execute").action is Action.BLOCK
    assert policy.decide("calendar.create").action is Action.ESCALATE  # the default default


def test_tool_is_a_glob_and_when_reads_the_arguments_and_context():
    policy = parse_policy(textwrap.dedent("""
        rules:
          - tool: "stripe.*"
            action: allow
          - tool: "stripe.refund"
            action: escalate
            when: "args.amount > 50"
            reason: Large refund
          - tool: "mcp__*"
            action: block
            when: "context.environment : prod"
          - tool: Bash
            action: allow
        default: block
    """))
    assert policy.decide("stripe.refund", {"amount": 20}).action is Action.ALLOW
    large = policy.decide("stripe.refund", {"amount": 80})
    assert large.action is Action.ESCALATE and large.reason == "Large refund"
    assert [r.tool for r in large.rules] == ["stripe.*", "stripe.refund"]  # every match counts
    assert policy.decide("mcp__github__push", {}, {"environment": "prod"}).action is Action.BLOCK
    # mcp__* does not match outside prod, and nothing else does: the default
    assert policy.decide("mcp__github__push", {}, {"environment": "dev"}).action is Action.BLOCK
    assert policy.decide("mcp__github__push", {}, {"environment": "dev"}).deciding is None
    assert policy.decide("Bash").action is Action.ALLOW
    assert policy.decide("bash").action is Action.BLOCK  # globs are case-sensitive


def test_the_strictest_matching_rule_wins_whatever_the_order():
    policy = parse_policy(textwrap.dedent("""
        rules:
          - {tool: "deploy.*", action: block, reason: frozen}
          - {tool: "deploy.prod", action: escalate}
          - {tool: "*", action: allow}
    """))
    decision = policy.decide("deploy.prod")
    assert decision.action is Action.BLOCK
    assert decision.reason == "frozen"
    assert len(decision.rules) == 3
    assert policy.decide("search").action is Action.ALLOW


def test_matching_rules_come_in_the_files_order_whatever_their_globs_literal_start():
    policy = parse_policy(textwrap.dedent("""
        rules:
          - {tool: "payments.refund", action: escalate, reason: first}
          - {tool: "*", action: escalate, reason: second}
          - {tool: "pay*", action: escalate, reason: third}
          - {tool: "payments.[rx]efund", action: allow}
          - {tool: "payments.refunds", action: block}
          - {tool: "Bash", action: block}
    """))
    decision = policy.decide("payments.refund")
    assert [rule.index for rule in decision.rules] == [0, 1, 2, 3]
    assert decision.reason == "first"  # the first escalating rule gives the review
    assert [rule.index for rule in policy.decide("Bash").rules] == [1, 5]
    assert [rule.index for rule in policy.decide("bash").rules] == [1]


def test_default_applies_when_no_rule_matches():
    policy = parse_policy("rules: []\ndefault: allow\n")
    decision = policy.decide("anything")
    assert decision.action is Action.ALLOW and decision.deciding is None
    assert "default" in decision.reason


def test_a_shadow_rule_is_reported_but_not_enforced():
    policy = parse_policy(textwrap.dedent("""
        rules:
          - {tool: "email.send", action: allow}
          - {tool: "email.send", action: escalate, when: "args.to : *@competitor.example",
             shadow: true, reason: trying this}
    """))
    decision = policy.decide("email.send", {"to": "ceo@competitor.example"})
    assert decision.action is Action.ALLOW
    assert [r.reason for r in decision.shadow] == ["trying this"]
    assert decision.would_be is Action.ESCALATE
    assert decision.to_json()["shadow"]["decision"] == "escalate"
    quiet = policy.decide("email.send", {"to": "bob@example.com"})
    assert quiet.shadow == () and quiet.to_json()["shadow"] is None


def test_an_escalating_rule_takes_the_human_steps_review_options():
    policy = parse_policy(textwrap.dedent("""
        rules:
          - tool: payments.refund
            action: escalate
            approvers: ["U0ALICE", "U0BOB"]
            approvals-required: 2
            channel: C0REVIEWS
            sla: 15m
            remind: 10m
            escalation: [{approvers: ["U0LEAD"], sla: 30m}]
            allow-self-approval: false
            timeout: 2h
            on-timeout: deny
            message: "Refund of {{ args.amount }} for {{ context.customer }}: {{ summary }}"
            editable: [amount]
    """))
    rule = policy.rules[0]
    assert rule.review["approvers"] == ["U0ALICE", "U0BOB"]
    assert rule.review["on-timeout"] == "deny"
    assert rule.timeout.total_seconds() == 7200
    assert rule.editable == ("amount",)


def test_problems_name_file_line_and_column():
    found = problems_of("""\
        rules:
          - tool: x
            action: deny
          - tool: y
            action: escalate
            sla: 15x
            approvers: U0ALICE
            tol: 3
            timeout: soon
          - tool: z
            action: allow
            approvers: ["U0ALICE"]
            when: "event.severity : high"
          - tool: w
            action: block
            when: "args.a : (1"
        default: nope
        """)
    assert found == [
        "policy.yml:3:13: rules[0].action must be one of 'allow', 'escalate', 'block', "
        "not 'deny'",
        "policy.yml:6:10: rules[1].sla: '15x' is not a duration; write a number and a unit: "
        "500ms, 30s, 15m, 2h, 1d or 1w (parts may combine, as in 1h30m)",
        "policy.yml:7:16: rules[1].approvers must be a list, not the string 'U0ALICE'",
        "policy.yml:8:5: unknown key 'tol' in rules[1] (did you mean 'tool'?)",
        f"policy.yml:9:14: {found[4].split(': ', 1)[1]}",
        "policy.yml:12:5: rules[2].approvers: only an escalating rule takes review options, "
        "and this rule's action is allow",
        "policy.yml:13:12: rules[2].when reads 'event.severity', which a policy rule does not "
        "have; it reads args, context, tool",
        f"policy.yml:16:{found[7].split(':')[2]}: {found[7].split(': ', 1)[1]}",
        "policy.yml:17:10: default must be one of 'allow', 'escalate', 'block', not 'nope'",
    ]
    assert found[4].startswith("policy.yml:9:14: rules[1].timeout: ")
    assert "invalid condition in rules[3].when" in found[7]


def test_a_message_template_that_does_not_parse_or_reads_unknown_names_is_a_problem():
    found = problems_of("""\
        rules:
          - tool: y
            action: escalate
            message: "Pay {{ event.amount }}"
          - tool: z
            action: escalate
            message: "Pay {{ args.amount"
        """)
    assert found[0] == ("policy.yml:4:22: rules[0].message reads 'event.amount', which a policy "
                        "rule does not have; it reads tool, args, context, summary, reason")
    assert found[1].startswith("policy.yml:7:") and "template error in rules[1].message" in found[1]


def test_editable_is_for_escalating_rules_and_not_the_answers_own_fields():
    found = problems_of("""\
        rules:
          - {tool: a, action: allow, editable: [amount]}
          - {tool: b, action: escalate, editable: [amount, approved]}
        """)
    assert found == [
        "policy.yml:2:30: rules[0].editable: only an escalating rule's arguments can be "
        "edited by a reviewer",
        "policy.yml:3:52: rules[1].editable[1]: 'approved' is the review's own answer field; "
        "it cannot also be an argument the reviewer edits"]


def test_a_directory_is_one_policy_with_one_default(tmp_path):
    (tmp_path / "a.yml").write_text("rules:\n  - {tool: a, action: allow}\ndefault: block\n")
    (tmp_path / "b.yaml").write_text("rules:\n  - {tool: b, action: block}\n")
    policy = load_policy(tmp_path)
    assert [r.tool for r in policy.rules] == ["a", "b"]
    assert [r.index for r in policy.rules] == [0, 1]
    assert policy.default is Action.BLOCK
    (tmp_path / "c.yml").write_text("rules: []\ndefault: allow\n")
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(tmp_path)
    assert str(caught.value.problems[0]).startswith(f"{tmp_path / 'c.yml'}:2:10: default is "
                                                    "allow here but block in")


def test_the_policys_tests_are_run():
    policy = parse_policy(ARTICLE + textwrap.dedent("""
        tests:
          - {tool: search.web, expect: allow}
          - {tool: shell.execute, args: {cmd: ls}, expect: allow}
    """), "p.yml")
    results = run_tests(policy)
    assert [r.passed for r in results] == [True, False]
    assert results[1].decision.action is Action.BLOCK
    assert str(results[1].test.location) == "p.yml:22:5"


# -- the command line, as a user runs it ---------------------------------------------------


def test_validate_checks_policy_files_beside_workflows(tmp_path, redis_url):
    (tmp_path / "policy.yml").write_text(ARTICLE)
    assert signoff(redis_url, "validate", str(tmp_path)).returncode == 0
    (tmp_path / "bad.yml").write_text("rules:\n  - tool: x\n    action: maybe\n")
    result = signoff(redis_url, "validate", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'bad.yml'}:3:13: rules[0].action must be one of" in result.stdout
    (tmp_path / "bad.yml").unlink()
    elastic = signoff(redis_url, "validate", "--elastic", str(tmp_path))
    assert elastic.returncode == 0, elastic.stdout  # Kibana's rules are not a policy's


def test_policy_check_says_which_rules_matched_and_the_decision(tmp_path, redis_url):
    path = tmp_path / "policy.yml"
    path.write_text(ARTICLE)
    result = signoff(redis_url, "policy", "check", "file.write", "--args", '{"path": "/x"}',
                     env={"SIGNOFF_POLICY": str(path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "file.write: escalate (File writes require review)"
    assert f"matched rule 3 at {path}:9:5" in result.stdout
    as_json = signoff(redis_url, "policy", "check", "shell.execute", "--json", "--policy",
                      str(path))
    body = json.loads(as_json.stdout)
    assert body["decision"] == "block" and body["rule"]["tool"] == "shell.execute"
    bad = signoff(redis_url, "policy", "check", "x", "--args", "[1]", "--policy", str(path))
    assert bad.returncode == 2 and "--args must be a JSON object" in bad.stderr


def test_policy_test_fails_ci_on_a_wrong_expectation(tmp_path, redis_url):
    path = tmp_path / "policy.yml"
    path.write_text(ARTICLE + "tests:\n  - {tool: file.write, expect: escalate}\n")
    passed = signoff(redis_url, "policy", "test", "--policy", str(path))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 of 1 policy test(s) passed" in passed.stderr
    path.write_text(ARTICLE + "tests:\n  - {tool: file.write, expect: allow}\n")
    failed = signoff(redis_url, "policy", "test", "--policy", str(path))
    assert failed.returncode == 1
    assert failed.stdout.startswith(f"{path}:20:5: file.write {{}} got escalate, expected allow")
