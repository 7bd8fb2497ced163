"""`signoff ask` as a CI job runs it: a real process against a real `signoff serve`, a real
`signoff worker`, Redis, and reviewers clicking in the Slack emulator."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import httpx
import pytest

from bot.blocks import ACTION_APPROVE, ACTION_DENY, ACTION_RESPOND
from slack_emulator import SlackDriver, SlackEmulator
from tests.support.services import ROOT, ServeProcess, free_port, wait_until

POLICY = textwrap.dedent("""\
    rules:
      - tool: "search.web"
        action: allow
      - tool: "shell.execute"
        action: block
        reason: "No shell in CI"
      - tool: "deploy.*"
        action: escalate
        reason: "Production deploys need a second pair of eyes"
        approvers: ["U0ALICE"]
        channel: C0REVIEWS
      - tool: "Bash"
        action: escalate
        approvers: ["U0ALICE"]
        channel: C0REVIEWS
        editable: [command]
      - tool: "canary.deploy"
        action: escalate
        approvers: ["U0ALICE"]
        channel: C0REVIEWS
        timeout: 1s
""")
TOKEN = "operator-secret"


@pytest.fixture
def stack(redis_url, redis_client, tmp_path, worker_process):  # redis_client: a clean database
    (tmp_path / "policy.yml").write_text(POLICY)
    with SlackEmulator() as slack:
        env = {"SIGNOFF_API_TOKEN": TOKEN, "SLACK_BOT_TOKEN": slack.bot_token,
               "SLACK_SIGNING_SECRET": slack.signing_secret, "SLACK_API_URL": slack.api_url,
               "SIGNOFF_WORKFLOWS": str(tmp_path), "SIGNOFF_POLICY": str(tmp_path / "policy.yml")}
        worker_process(extra_env=env)
        serve = ServeProcess(redis_url, tmp_path / "serve.log", env)
        driver = SlackDriver(slack, f"{serve.url}/slack/events")
        api = httpx.Client(base_url=serve.url, timeout=10,
                           headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            yield serve, slack, driver, api
        finally:
            api.close()
            driver.close()
            serve.stop()


def ask(url: str, *args: str, program: str = "ask") -> subprocess.Popen[str]:
    env = {**os.environ, "SIGNOFF_URL": url, "SIGNOFF_API_TOKEN": TOKEN}
    return subprocess.Popen([sys.executable, "-m", "engine.cli", program, *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=90)
    return process.returncode, out, err


def posted_review(slack: SlackEmulator) -> dict:
    wait_until(lambda: slack.workspace.messages("C0REVIEWS"), timeout=30,
               message="the review to be posted in #reviews")
    [message] = slack.workspace.messages("C0REVIEWS")
    return message


def review_of(slack: SlackEmulator, request_id: str) -> dict | None:
    found = [m for m in slack.workspace.messages("C0REVIEWS") if request_id in json.dumps(m)]
    return found[0] if found else None


def test_allow_and_block_answer_without_slack(stack):
    serve, slack, _, _ = stack
    assert finish(ask(serve.url, "search.web", "--args", '{"q": "rq"}'))[0] == 0
    code, out, _ = finish(ask(serve.url, "shell.execute", "--args", '{"cmd": "ls"}'))
    assert (code, out.strip()) == (3, "block: No shell in CI")
    assert slack.workspace.messages("C0REVIEWS") == []


def test_an_approver_approves_in_slack_after_a_non_approvers_click_changed_nothing(stack):
    serve, slack, driver, _ = stack
    process = ask(serve.url, "deploy.prod", "--args", '{"version": "1.4.2"}',
                  "--summary", "Ship 1.4.2", "--json")
    message = posted_review(slack)
    assert "deploy.prod" in json.dumps(message)
    assert driver.click("U0CAROL", ("C0REVIEWS", message["ts"]), ACTION_APPROVE).ok
    wait_until(lambda: slack.workspace.ephemeral_messages("U0CAROL"), timeout=30,
               message="Carol to be told she may not decide")
    assert process.poll() is None  # still waiting
    assert driver.click("U0ALICE", ("C0REVIEWS", message["ts"]), ACTION_APPROVE).ok
    code, out, err = finish(process)
    assert code == 0, err
    body = json.loads(out)
    assert (body["status"], body["decidedBy"]) == ("approved", "U0ALICE")
    assert body["args"] == {"version": "1.4.2"}
    assert "waiting for a decision on request" in err


def test_a_deny_in_slack_exits_1(stack):
    serve, slack, driver, _ = stack
    process = ask(serve.url, "deploy.prod", "--args", '{"version": "9"}')
    message = posted_review(slack)
    assert driver.click("U0ALICE", ("C0REVIEWS", message["ts"]), ACTION_DENY).ok
    code, out, _ = finish(process)
    assert code == 1
    assert out.startswith("denied by U0ALICE")


def test_no_wait_pending_review_timeout_and_interrupt(stack):
    serve, slack, _, api = stack
    code, out, _ = finish(ask(serve.url, "deploy.prod", "--no-wait"))
    assert code == 75
    request_id = out.strip()
    assert api.get(f"/api/gate/requests/{request_id}").json()["status"] == "pending"

    # the review's own timeout (1s, on-timeout: fail) passes undecided
    code, out, _ = finish(ask(serve.url, "canary.deploy"))
    assert (code, out.split()[0]) == (4, "timed_out")

    # SIGINT while waiting withdraws the request, and the review says so
    process = ask(serve.url, "deploy.prod", "--args", '{"version": "2"}', "--json")
    line = wait_until(lambda: _waiting_line(process.stderr.readline()), timeout=30,
                      message="ask to wait for the review")
    request_id = re.search(r"on request (\S+):", line).group(1)  # what ask itself waits on
    wait_until(lambda: review_of(slack, request_id), timeout=30,
               message="the review to be posted")
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process)
    assert code == 5, err
    withdrawn = json.loads(out)
    assert withdrawn["status"] == "cancelled"
    wait_until(lambda: "Cancelled" in json.dumps(review_of(slack, withdrawn["requestId"])),
               timeout=30, message="the review to show it was cancelled")


def _waiting_line(line: str) -> str | None:
    return line if "waiting for a decision" in line else None


def test_an_unreachable_server_fails_closed():
    code, _, err = finish(ask(f"http://127.0.0.1:{free_port()}", "search.web"))
    assert code == 69
    assert "failing closed" in err


def test_bad_usage_is_2():
    code, _, err = finish(ask("http://127.0.0.1:9", "x", "--args", "[1]"))
    assert code == 2 and "--args must be a JSON object" in err


def test_exec_runs_the_command_only_when_approved_and_spends_the_approval(stack, tmp_path):
    serve, slack, driver, api = stack
    marker = tmp_path / "ran"
    command = ["--", sys.executable, "-c",
               f"import pathlib, sys; pathlib.Path({str(marker)!r}).write_text('ran'); "
               "sys.exit(7)"]
    code, _, _ = finish(ask(serve.url, "shell.execute", *command, program="exec"))  # blocked
    assert code == 3 and not marker.exists()

    process = ask(serve.url, "deploy.prod", "--args", '{"version": "3"}', *command,
                  program="exec")
    message = posted_review(slack)
    assert not marker.exists()  # not before the decision
    assert driver.click("U0ALICE", ("C0REVIEWS", message["ts"]), ACTION_APPROVE).ok
    code, _, err = finish(process)
    assert code == 7, err  # the command's own status
    assert marker.read_text() == "ran"
    request_id = api.get("/api/workflowExecutions").json()["results"][0]["id"]  # the newest
    state = api.get(f"/api/gate/requests/{request_id}").json()
    assert state["args"] == {"version": "3"}
    assert state["used"]["by"] == "operator"
    replay = api.post(f"/api/gate/requests/{request_id}/use",
                      json={"tool": "deploy.prod", "args": {"version": "3"}})
    assert replay.status_code == 409 and replay.json()["error"] == "already_used"


def hook(url: str, event: dict) -> subprocess.Popen[str]:
    env = {**os.environ, "SIGNOFF_URL": url, "SIGNOFF_API_TOKEN": TOKEN}
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "hook", "claude-code"],
                               cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdin is not None
    process.stdin.write(json.dumps(event))
    process.stdin.close()
    process.stdin = None  # written and closed: communicate() leaves it alone
    return process


def hook_answer(process: subprocess.Popen[str]) -> tuple[str, str]:
    code, out, err = finish(process)
    assert code == 0, err
    answer = json.loads(out)["hookSpecificOutput"]
    assert answer["hookEventName"] == "PreToolUse"
    return answer["permissionDecision"], answer["permissionDecisionReason"]


def pre_tool_use(tool: str, tool_input: dict) -> dict:
    return {"session_id": "s-1", "hook_event_name": "PreToolUse", "tool_name": tool,
            "tool_input": tool_input, "cwd": "/repo", "permission_mode": "default"}


def test_the_claude_code_hook_allows_denies_and_waits_for_slack(stack):
    serve, slack, driver, api = stack
    assert hook_answer(hook(serve.url, pre_tool_use("search.web", {"q": "x"})))[0] == "allow"
    assert hook_answer(hook(serve.url, pre_tool_use("shell.execute", {}))) == \
        ("deny", "blocked by the Signoff policy: No shell in CI")

    pushing = hook(serve.url, pre_tool_use("Bash", {"command": "git push origin main"}))
    message = posted_review(slack)
    assert "git push origin main" in json.dumps(message)
    assert driver.click("U0ALICE", ("C0REVIEWS", message["ts"]), ACTION_APPROVE).ok
    assert hook_answer(pushing) == ("allow", "approved by U0ALICE in Signoff")
    request_id = api.get("/api/workflowExecutions").json()["results"][0]["id"]
    assert api.get(f"/api/gate/requests/{request_id}").json()["used"]["by"] == "operator"

    forcing = hook(serve.url, pre_tool_use("Bash", {"command": "git push --force"}))
    wait_until(lambda: len(slack.workspace.messages("C0REVIEWS")) == 2, timeout=30,
               message="the second review to be posted")
    second = next(m for m in slack.workspace.messages("C0REVIEWS") if "force" in json.dumps(m))
    assert driver.click("U0ALICE", ("C0REVIEWS", second["ts"]), ACTION_DENY).ok
    assert hook_answer(forcing) == ("deny", "denied by U0ALICE in Signoff")


def test_the_claude_code_hook_denies_when_signoff_is_unreachable_or_the_event_is_odd():
    url = f"http://127.0.0.1:{free_port()}"
    decision, reason = hook_answer(hook(url, pre_tool_use("Bash", {"command": "ls"})))
    assert decision == "deny" and "could not decide" in reason
    assert hook_answer(hook(url, {"hook_event_name": "Stop"}))[0] == "deny"


def test_the_hook_passes_a_reviewers_edit_in_slack_back_as_updated_input(stack):
    serve, slack, driver, api = stack
    forcing = hook(serve.url, pre_tool_use("Bash", {"command": "git push --force"}))
    message = posted_review(slack)
    request_id = api.get("/api/workflowExecutions").json()["results"][0]["id"]
    assert driver.click("U0ALICE", ("C0REVIEWS", message["ts"]), ACTION_RESPOND).ok
    wait_until(lambda: slack.workspace.views.modals("U0ALICE"), timeout=30,
               message="the review's form to open")
    [form] = slack.workspace.views.modals("U0ALICE")
    assert "git push --force" in json.dumps(form)  # the value asked for, to edit
    submitted = driver.submit_view("U0ALICE", form["id"],
                                   {"approved": "true", "command": "git push"})
    assert submitted.ok
    code, out, err = finish(forcing)
    assert code == 0, err
    answer = json.loads(out)["hookSpecificOutput"]
    assert answer["permissionDecision"] == "allow"
    assert answer["updatedInput"] == {"command": "git push"}
    assert api.get(f"/api/gate/requests/{request_id}").json()["used"] is not None


def test_exec_does_not_run_a_command_whose_arguments_a_reviewer_changed(stack, tmp_path):
    serve, slack, _, api = stack
    marker = tmp_path / "ran"
    running = ask(serve.url, "Bash", "--args", '{"command": "rm -rf build"}', "--",
                  sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ran')",
                  program="exec")
    posted_review(slack)
    request_id = api.get("/api/workflowExecutions").json()["results"][0]["id"]
    api.post(f"/api/workflowExecutions/{request_id}/resume",
             json={"approved": True, "command": "rm -rf build/tmp"},
             headers={"X-Signoff-Actor": "U0ALICE"})
    code, _, err = finish(running)
    assert code == 1 and "the reviewer changed command" in err
    assert not marker.exists()
