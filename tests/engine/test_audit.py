"""The audit trail's hash chain detects edits and deletions made directly in Redis."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from engine.definition.loader import parse_workflow
from engine.errors import SettingsInvalid
from engine.notify import Actor, NullNotifier
from engine.settings import Settings
from engine.state import audit, keys
from engine.worker.runtime import build_runtime, install_runtime

FLOW = """
name: audited
steps:
  - name: prep
    type: console
    with: {message: "prepared {{ event.id }}"}
  - name: review
    type: waitForApproval
    with: {message: "Disable account {{ event.id }}?"}
  - name: act
    type: console
    if: "steps.review.output.approved : true"
    with: {message: disabled}
"""


def decided_run(runtime, work):
    execution_id = runtime.engine.run(parse_workflow(FLOW), {"id": "jdoe"})
    work()
    runtime.engine.resume(execution_id, {"approved": True},
                          Actor(id="U0ALICE", name="alice", source="slack", team="T1"))
    work()
    return execution_id


def test_an_untouched_trail_verifies(runtime, work):
    execution_id = decided_run(runtime, work)
    check = runtime.engine.verify_audit(execution_id)
    assert check.ok and check.checked == len(runtime.engine.audit_entries(execution_id))


def test_an_edited_decision_is_detected(runtime, work, redis_client):
    execution_id = decided_run(runtime, work)
    key = keys.audit(execution_id)
    entries = redis_client.lrange(key, 0, -1)
    index = next(i for i, raw in enumerate(entries) if '"step.decided"' in audit.split(raw)[1])
    digest, text = audit.split(entries[index])
    body = json.loads(text)
    body["actor"]["id"] = "U0MALLORY"  # rewrite who decided, keep the old hash
    redis_client.lset(key, index, audit.stored(digest, json.dumps(body, sort_keys=True,
                                                                  separators=(",", ":"))))
    check = runtime.engine.verify_audit(execution_id)
    assert not check.ok
    assert check.entry_id == str(index + 1)
    assert "edited" in check.problem


def test_a_deleted_middle_event_is_detected(runtime, work, redis_client):
    execution_id = decided_run(runtime, work)
    key = keys.audit(execution_id)
    victim = redis_client.lindex(key, 2)
    redis_client.lrem(key, 1, victim)
    assert not runtime.engine.verify_audit(execution_id).ok


def test_a_deleted_last_event_is_detected_by_the_stored_head(runtime, work, redis_client):
    execution_id = decided_run(runtime, work)
    redis_client.rpop(keys.audit(execution_id))
    check = runtime.engine.verify_audit(execution_id)
    assert not check.ok and "removed from the end" in check.problem


def test_the_decision_event_records_who_what_when_and_what_they_saw(runtime, work):
    execution_id = decided_run(runtime, work)
    events = [e.event for e in runtime.engine.audit_entries(execution_id)]
    shown = next(e for e in events if e["type"] == "step.waiting_for_input")
    decided = next(e for e in events if e["type"] == "step.decided")
    assert shown["message"] == "Disable account jdoe?"
    assert decided["messageSha256"] == shown["sha256"]
    assert decided["actor"] == {"id": "U0ALICE", "name": "alice", "source": "slack",
                                "team": "T1"}
    assert decided["input"] == {"approved": True} and decided["at"]


# -- SIGNOFF_AUDIT_KEY: links are HMACs under a key that is not in Redis -----------------------

KEY = "k3y-that-lives-outside-redis-0123456789"


def keyed_runtime(settings, redis_client, key=KEY):
    """A runtime whose store links the trail with ``key``, installed for the jobs."""
    rt = build_runtime(replace(settings, audit_key=key), redis_client, notifier=NullNotifier())
    install_runtime(rt)
    return rt


def stored_hashes(redis_client, execution_id):
    return [audit.split(raw)[0] for raw in
            redis_client.lrange(keys.audit(execution_id), 0, -1)]


def test_a_keyed_trail_is_hmac_linked_throughout_and_verifies_with_the_key(
        settings, redis_client, work):
    rt = keyed_runtime(settings, redis_client)
    execution_id = decided_run(rt, work)
    hashes = stored_hashes(redis_client, execution_id)
    assert len(hashes) > 4 and all(h.startswith("hmac:") and len(h) == 69 for h in hashes)
    assert audit.head_text(redis_client.hget(keys.execution(execution_id), "ah")) == hashes[-1]
    check = rt.engine.verify_audit(execution_id)
    assert check.ok and check.keyed_from == "1" and check.checked == len(hashes)


def test_without_the_key_a_keyed_trail_is_unverifiable_not_broken(settings, redis_client, work,
                                                                  runtime):
    execution_id = decided_run(keyed_runtime(settings, redis_client), work)
    check = runtime.engine.verify_audit(execution_id)  # the fixture's runtime has no key
    assert not check.ok and check.needs_key
    assert "keyed" in check.problem and "set SIGNOFF_AUDIT_KEY" in check.problem
    assert "edited" not in check.problem


def test_with_another_key_the_first_keyed_event_fails_and_says_so(settings, redis_client, work):
    execution_id = decided_run(keyed_runtime(settings, redis_client), work)
    other = keyed_runtime(settings, redis_client, key="an-entirely-different-key-42")
    check = other.engine.verify_audit(execution_id)
    assert not check.ok and check.entry_id == "1" and "not the key" in check.problem


def test_a_trail_begun_before_the_key_is_keyed_from_the_first_event_written_with_it(
        settings, redis_client, runtime, work):
    execution_id = runtime.engine.run(parse_workflow(FLOW), {"id": "jdoe"})
    work()  # unkeyed up to the review
    before = len(stored_hashes(redis_client, execution_id))
    rt = keyed_runtime(settings, redis_client)  # the key is set; the workers restart
    rt.engine.resume(execution_id, {"approved": True}, Actor(id="U0ALICE", name="alice"))
    work()
    hashes = stored_hashes(redis_client, execution_id)
    assert not any(h.startswith("hmac:") for h in hashes[:before])
    assert all(h.startswith("hmac:") for h in hashes[before:])
    check = rt.engine.verify_audit(execution_id)
    assert check.ok and check.keyed_from == str(before + 1)
    unkeyed = runtime.engine.verify_audit(execution_id)
    assert unkeyed.needs_key and unkeyed.checked == before  # the sha256 part still checks


def test_a_process_without_the_key_refuses_to_extend_a_keyed_trail(settings, redis_client,
                                                                   runtime, work):
    rt = keyed_runtime(settings, redis_client)
    execution_id = rt.engine.run(parse_workflow(FLOW), {"id": "jdoe"})
    work()
    state = runtime.store.load(execution_id)  # a store without the key
    with pytest.raises(SettingsInvalid, match="SIGNOFF_AUDIT_KEY"):
        runtime.store.append_audit(state, [audit.event(audit.REMINDED, "2025-01-01T00:00:00Z")])
    assert rt.engine.verify_audit(execution_id).ok  # nothing was written


def test_an_unkeyed_link_after_keyed_ones_is_named_as_a_rewrite(settings, redis_client, work):
    rt = keyed_runtime(settings, redis_client)
    execution_id = decided_run(rt, work)
    key = keys.audit(execution_id)
    raws = redis_client.lrange(key, 0, -1)
    previous = audit.split(raws[-2])[0]
    body = audit.split(raws[-1])[1]
    forged = audit.link(previous, body)  # what someone without the key can compute
    redis_client.lset(key, len(raws) - 1, audit.stored(forged, body))
    redis_client.hset(keys.execution(execution_id), "ah", forged)
    check = rt.engine.verify_audit(execution_id)
    assert not check.ok and check.entry_id == str(len(raws))
    assert "without the audit key" in check.problem


def test_the_audit_key_never_prints_and_a_short_one_is_refused():
    settings = Settings.from_env({"SIGNOFF_AUDIT_KEY": KEY})
    assert settings.audit_key == KEY and KEY not in repr(settings) and KEY not in str(settings)
    with pytest.raises(SettingsInvalid, match="SIGNOFF_AUDIT_KEY"):
        Settings.from_env({"SIGNOFF_AUDIT_KEY": "short"})


@pytest.mark.parametrize("key", [None, KEY.encode()], ids=["sha256", "hmac"])
def test_an_entry_is_stored_with_its_hash_as_32_bytes_and_read_back_as_the_chain_links_it(key):
    body = '{"at":"2026-12-04T00:00:00.000Z","type":"execution.started"}'
    digest = audit.link(audit.GENESIS, body, key)
    entry = audit.stored(digest, body)
    assert len(entry) == 1 + 32 + len(body)  # 31 bytes less than hex (36 with hmac:)
    assert audit.split(entry) == (digest, body)
    assert audit.split((digest + body).encode()) == (digest, body)  # as earlier versions stored


def test_a_large_entry_is_stored_compressed_and_read_back_as_it_was_hashed():
    body = ('{"message":"## Isolate web-1?\\nprocess powershell.exe ran '
            + "the same command line again " * 20 + '","type":"step.waiting_for_input"}')
    digest = audit.link(audit.GENESIS, body)
    entry = audit.stored(digest, body)
    assert audit.is_packed(entry) and len(entry) < len(body) / 2
    assert audit.split(entry) == (digest, body)
    assert audit.verify([("1", *reversed(audit.split(entry)))], digest).ok
