"""Scheduled triggers: computed times, and runs started once per due time across workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.definition.loader import WorkflowCatalog
from engine.definition.model import Trigger
from engine.definition.triggers import next_due
from engine.worker.scheduled_runs import ScheduleKeeper
from tests.support.services import wait_until

EVERY_SECOND = """
name: heartbeat
triggers:
  - type: scheduled
    with: {every: 1s}
steps:
  - name: beat
    type: console
    with: {message: "at {{ event.trigger.scheduledAt }}"}
"""


def test_every_is_aligned_and_cron_follows_its_expression():
    at = datetime(2026, 11, 22, 10, 7, 30, tzinfo=UTC)
    assert next_due(Trigger("scheduled", {"every": "15m"}), at) == at.replace(minute=15,
                                                                              second=0)
    assert next_due(Trigger("scheduled", {"cron": "0 9 * * 1-5"}), at) == \
        datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # the 22nd is a Sunday


def test_a_due_time_is_taken_by_one_keeper_only(runtime, settings, tmp_path):
    (tmp_path / "heartbeat.yaml").write_text(EVERY_SECOND)
    now = [datetime(2026, 11, 22, 10, 0, 0, 500000, tzinfo=UTC)]
    keepers = [ScheduleKeeper(runtime.store, runtime.engine.scheduler,
                              WorkflowCatalog(str(tmp_path)), clock=lambda: now[0])
               for _ in range(3)]
    assert [k.tick(timedelta(milliseconds=200)) for k in keepers] == [[], [], []]  # first sight
    now[0] += timedelta(seconds=1)
    fired = [due for k in keepers for _, due in k.tick(timedelta(milliseconds=200))]
    assert fired == [datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC)]


def test_worker_processes_start_scheduled_runs(runtime, worker_process, tmp_path):
    catalog = tmp_path / "flows"
    catalog.mkdir()
    (catalog / "heartbeat.yaml").write_text(EVERY_SECOND)
    env = {"SIGNOFF_WORKFLOWS": str(catalog), "SIGNOFF_SWEEP_SECONDS": "1"}
    worker_process(extra_env=env)
    worker_process(extra_env=env)

    def completed():
        found, _ = runtime.engine.list_executions(workflow="heartbeat", status="COMPLETED")
        return found if len(found) >= 3 else None

    runs = wait_until(completed, timeout=30, message="three scheduled runs")
    times = [runtime.engine.get(r.id).event["trigger"]["scheduledAt"] for r in runs]
    assert len(set(times)) == len(times), f"a due time fired twice: {times}"
    first = runtime.engine.audit_entries(runs[0].id)[0].event
    assert first["actor"]["id"] == "system:scheduler"


def test_a_scheduled_workflow_that_needs_an_input_is_logged_not_retried(runtime, tmp_path,
                                                                        caplog):
    from engine.worker.scheduled_runs import start_scheduled_run

    (tmp_path / "needs.yaml").write_text(EVERY_SECOND.replace("name: heartbeat", """name: needs
inputs:
  - {name: host, type: string, required: true}"""))
    catalog = WorkflowCatalog(str(tmp_path))
    with caplog.at_level("ERROR", logger="engine.worker.scheduled_runs"):
        started = start_scheduled_run(runtime.engine, catalog, "needs",
                                      datetime(2026, 11, 22, 10, 0, tzinfo=UTC))
    assert started is None
    assert "host" in caplog.text and "not started" in caplog.text
    assert runtime.engine.list_executions()[1] == 0
