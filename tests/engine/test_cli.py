"""The `signoff` command as a user runs it: a real process against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.support.services import ROOT

GATE = textwrap.dedent("""
    name: access-request
    steps:
      - name: review
        type: waitForInput
        with:
          message: "Grant {{ event.user }} admin on {{ event.system }}?"
          schema:
            type: object
            properties: {approved: {type: boolean}}
            required: [approved]
      - name: grant
        type: console
        if: "steps.review.output.approved : true"
        with: {message: granted}
""")


def signoff(redis_url, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "REDIS_URL": redis_url, **(env or {})}, timeout=60)


def test_validate_reports_file_line_and_exits_1(tmp_path, redis_url):
    good = tmp_path / "good.yaml"
    good.write_text(GATE)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - name: x\n    type: consol\n")
    ok = signoff(redis_url, "validate", str(good))
    assert ok.returncode == 0 and "valid" in ok.stdout
    failed = signoff(redis_url, "validate", str(tmp_path))
    assert failed.returncode == 1
    assert f"{bad}:4:" in failed.stdout
    assert "console" in failed.stdout  # the suggestion


def test_run_wait_resume_status_audit(tmp_path, redis_client, redis_url, worker_process):
    path = tmp_path / "gate.yaml"
    path.write_text(GATE)
    worker_process()
    started = signoff(redis_url, "run", str(path), "--event",
                      json.dumps({"user": "jdoe", "system": "prod-db"}), "--wait")
    assert started.returncode == 0, started.stderr
    status = json.loads(started.stdout)
    assert status["status"] == "WAITING_FOR_INPUT"
    assert status["waitingFor"]["message"] == "Grant jdoe admin on prod-db?"
    execution_id = status["id"]

    pending = signoff(redis_url, "pending")
    assert execution_id in pending.stdout and "Grant jdoe admin" in pending.stdout

    invalid = signoff(redis_url, "resume", execution_id, "--input", '{"approved": "yes"}')
    assert invalid.returncode == 1 and "approved" in invalid.stderr

    resumed = signoff(redis_url, "resume", execution_id, "--input", '{"approved": true}',
                      "--actor", "carol")
    assert resumed.returncode == 0 and "approved" in resumed.stdout and "carol" in resumed.stdout
    again = signoff(redis_url, "resume", execution_id, "--input", '{"approved": false}')
    assert again.returncode == 1 and "already decided by carol" in again.stderr

    from tests.support.services import wait_until

    wait_until(lambda: json.loads(signoff(redis_url, "status", execution_id).stdout)["status"]
               == "COMPLETED", timeout=20, interval=0.2, message="the run to complete")
    audit = signoff(redis_url, "audit", execution_id, "--verify")
    assert audit.returncode == 0 and "chain intact" in audit.stdout
    lines = signoff(redis_url, "audit", execution_id, "--format", "jsonl").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert any(e["type"] == "step.decided" and e["actor"]["id"] == "carol" for e in events)


def test_user_errors_exit_1_and_usage_errors_exit_2(redis_client, redis_url):
    assert signoff(redis_url, "status", "no-such-id").returncode == 1
    assert signoff(redis_url, "resume", "x", "--input", "{bad").returncode == 1
    assert signoff(redis_url, "frobnicate").returncode == 2
    assert signoff(redis_url).returncode == 2


def test_serve_refuses_to_start_without_a_token(redis_url):
    env = {"SIGNOFF_API_TOKEN": ""}
    result = signoff(redis_url, "serve", "--port", "1", env=env)
    assert result.returncode == 1 and "SIGNOFF_API_TOKEN" in result.stderr


def test_token_create_prints_the_token_alone_and_it_authenticates(runtime, served, settings,
                                                                  redis_url):
    from engine.api import build_api
    from engine.definition.loader import WorkflowCatalog

    made = signoff(redis_url, "token", "create", "dashboard", "--scopes", "read",
                   "--principal", "U0ALICE")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.splitlines()[0]
    assert secret == made.stdout.strip() and secret.startswith("signoff_")
    assert "shown this once" in made.stderr

    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token=settings.api_token)
    with served(app).client(headers={"Authorization": f"Bearer {secret}"}) as client:
        assert client.get("/api/workflowExecutions").status_code == 200
        assert client.post("/api/workflows/any/run", json={}).status_code == 403

        again = signoff(redis_url, "token", "create", "dashboard", "--scopes", "run")
        assert again.returncode == 1
        assert "'dashboard' exists already" in again.stderr and again.stdout == ""
        assert client.get("/api/workflowExecutions").status_code == 200  # still the first

        listed = signoff(redis_url, "token", "list").stdout.splitlines()
        assert listed[0].split() == ["NAME", "SCOPES", "PRINCIPAL", "CREATED"]
        assert listed[1].split()[:3] == ["dashboard", "read", "U0ALICE"]

        revoked = signoff(redis_url, "token", "revoke", "dashboard")
        assert revoked.returncode == 0, revoked.stderr
        assert client.get("/api/workflowExecutions").status_code == 401
    assert signoff(redis_url, "token", "revoke", "dashboard").returncode == 1


def test_token_create_refuses_unknown_scopes_and_bad_names(redis_client, redis_url):
    unknown = signoff(redis_url, "token", "create", "ci", "--scopes", "run,deploy")
    assert unknown.returncode == 1 and "'deploy'" in unknown.stderr
    assert "run, read, decide, act-as, admin" in unknown.stderr
    assert signoff(redis_url, "token", "create", "a b", "--scopes", "run").returncode == 1
    assert signoff(redis_url, "token", "create", "operator", "--scopes", "run").returncode == 1
    assert signoff(redis_url, "token", "create", "ci", "--scopes", " , ").returncode == 1
    assert signoff(redis_url, "token", "create", "ci").returncode == 2  # --scopes is required
    assert redis_client.keys("signoff:token*") == []


def test_validate_elastic_adds_what_kibana_would_refuse(tmp_path, redis_url):
    both = tmp_path / "both.yaml"
    both.write_text(GATE.replace("steps:", "triggers:\n  - type: manual\nsteps:", 1)
                    .replace("type: waitForInput", "type: waitForInput\n    timeout: 1h30m"))
    plain = signoff(redis_url, "validate", str(both))
    assert (plain.returncode, plain.stdout) == (0, "all workflows are valid\n")

    elastic = signoff(redis_url, "validate", "--elastic", str(both))

    assert elastic.returncode == 1
    assert elastic.stdout.startswith(f"{both}:8:14: Kibana 9.5 would refuse this file: timeout "
                                     "'1h30m' is not a Kibana duration")
    assert elastic.stderr == "1 problem(s)\n"


def test_the_library_check_script_counts_files_by_cause(tmp_path):
    checkout = tmp_path / "workflows"
    (checkout / "examples" / "cases").mkdir(parents=True)
    (checkout / "library" / "workflows" / "poll").mkdir(parents=True)
    (checkout / "examples" / "hello.yaml").write_text(
        "name: hello\ntriggers:\n  - type: manual\nsteps:\n"
        "  - {name: say, type: console, with: {message: hi}}\n")
    (checkout / "examples" / "cases" / "open.yaml").write_text(
        "name: open\ntriggers:\n  - type: manual\nsteps:\n"
        "  - {name: close, type: cases.closeCase, with: {case_id: c}}\n")
    (checkout / "library" / "workflows" / "poll" / "poll.yaml").write_text(
        "name: poll\ntriggers:\n  - type: manual\nsteps:\n"
        "  - {name: again, type: while, condition: 'true', steps: [{name: s, type: console}]}\n"
        "  - {name: odd, type: console, with: {message: '{{ x | }}'}}\n")

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "elastic-library-check"),
                           str(checkout)], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert "load in Signoff: 1 (33%)" in lines
    assert "refused only for connector steps: 1" in lines
    assert "refused for anything else: 1" in lines
    assert "connector step 1 1" in lines
    assert "liquid syntax 1 1" in lines
    assert lines[lines.index("cause problems files") + 2].startswith("being built ")
