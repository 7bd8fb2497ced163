"""Workflows written as for Elastic 9.5 load with `signoff validate`, each construct once.

The files in ``elastic_corpus/`` are our own, one per construct of Kibana's workflow
spec that Signoff reads: inputs under the manual trigger (a JSON Schema or the legacy
list) or at the top level, ``rrule`` schedules, every ``settings`` key, ``tags`` and
``version``, the loop keys and ``foreach`` forms, ``while`` loops, ``loop.break`` and
``loop.continue``, ``foreach`` on any step, retry options, ``continue`` as a string, step
names with spaces, and a connector step's own keys.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main
from engine.definition import step_types as registry
from engine.definition.loader import load_workflow
from engine.definition.step_types import StepKind, StepType

CORPUS = Path(__file__).parent / "elastic_corpus"
FILES = sorted(CORPUS.glob("*.yaml"))


@pytest.fixture(autouse=True)
def acme_ticket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plug-in's step type, as `signoff.steps` would register it."""
    registry.get_step_type("console")  # the built-ins register first
    monkeypatch.setitem(registry._registry, "acme.ticket", StepType(
        name="acme.ticket", kind=StepKind.ACTION, run=lambda ctx: {"id": 1},
        options_schema={"type": "object", "required": ["title"]}))


def test_the_corpus_has_a_file_per_construct() -> None:
    assert len(FILES) >= 10


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_each_file_passes_signoff_validate(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", str(path)])
    out = capsys.readouterr().out
    assert (code, out) == (0, "all workflows are valid\n")


def test_the_whole_corpus_passes_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(CORPUS)]) == 0, capsys.readouterr().out


def test_what_the_corpus_means() -> None:
    schema = load_workflow(CORPUS / "manual-inputs-json-schema.yaml")
    assert schema.inputs == () and schema.inputs_schema is not None
    assert schema.inputs_schema["required"] == ["host"]

    legacy = load_workflow(CORPUS / "manual-inputs-legacy-list.yaml")
    assert [spec["name"] for spec in legacy.inputs] == ["user", "role", "days", "break_glass",
                                                        "systems"]
    assert legacy.inputs_schema is None

    settings = load_workflow(CORPUS / "settings-tags-version.yaml")
    assert settings.tags == ("security", "approvals") and settings.version == "1"
    assert settings.settings.timezone == "Europe/London"
    assert settings.settings.max_step_size == 10 * 1024 * 1024
    assert settings.steps[0].max_step_size == 512 * 1024
    assert settings.settings.concurrency["strategy"] == "queue"

    loops = load_workflow(CORPUS / "foreach-forms.yaml")
    from_json, from_list, from_expression = loops.steps
    assert from_json.foreach == ("web-1", "web-2", "db-1")
    assert from_list.foreach == ({"host": "web-1", "port": 443}, {"host": "web-2", "port": 8443})
    assert from_list.max_iterations is not None and from_list.max_iterations.limit == 1
    assert from_list.max_iterations.on_limit == "continue"
    assert from_expression.foreach == "{{ event.alerts | json }}"
    assert from_json.max_iterations is not None and from_json.max_iterations.on_limit == "continue"

    retry = load_workflow(CORPUS / "retry-and-continue.yaml")
    policy = retry.steps[0].on_failure
    assert policy is not None and policy.retry is not None and policy.continue_ is True
    assert (policy.retry.multiplier, policy.retry.jitter) == (3.0, True)
    assert policy.retry.condition is not None
    second = retry.steps[1].on_failure
    assert second is not None and second.continue_ is False and second.continue_if is not None

    names = load_workflow(CORPUS / "step-names.yaml")
    assert [s.name for s in names.steps] == ["Look up the host", "Étape 2 — notify", "3rd step"]


def test_the_signoff_command_validates_the_corpus(tmp_path: Path) -> None:
    """The real `signoff validate`, as a user runs it (the connector step needs a plug-in)."""
    import subprocess
    import sys

    from tests.support.services import ROOT

    files = [str(p) for p in FILES if p.name != "custom-step-keys.yaml"]
    done = subprocess.run([sys.executable, "-m", "engine.cli", "validate", *files], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "all workflows are valid\n"), done.stdout
