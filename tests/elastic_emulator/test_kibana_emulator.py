"""The Kibana emulator over real HTTP: the Cases API, alerts' status, spaces, and Kibana's
manners (API-key auth, kbn-xsrf on writes, its error shape, 429 with Retry-After)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from elastic_emulator.kibana import API_KEY, USER, KibanaEmulator

AUTH = {"Authorization": f"ApiKey {API_KEY}"}
WRITE = {**AUTH, "kbn-xsrf": "true"}
NEW_CASE = {"title": "Host web-1", "description": "seen", "owner": "securitySolution",
            "tags": ["auto"], "settings": {"syncAlerts": True},
            "connector": {"id": "none", "name": "none", "type": ".none", "fields": None}}


@pytest.fixture(scope="module")
def running() -> Iterator[KibanaEmulator]:
    with KibanaEmulator(spaces=("default", "soc")) as kibana:
        yield kibana


@pytest.fixture
def kibana(running: KibanaEmulator) -> Iterator[httpx.Client]:
    running.reset()
    with httpx.Client(base_url=running.base_url) as client:
        yield client


def test_a_case_is_created_read_commented_and_updated(kibana, running):
    created = kibana.post("/api/cases", json=NEW_CASE, headers=WRITE)
    assert created.status_code == 200
    case = created.json()
    assert (case["status"], case["severity"], case["totalComment"]) == ("open", "low", 0)

    commented = kibana.post(f"/api/cases/{case['id']}/comments", headers=WRITE,
                            json={"type": "user", "comment": "looking", "owner": "securitySolution"})
    assert commented.json()["comments"][0]["comment"] == "looking"
    assert commented.json()["totalComment"] == 1
    alert = kibana.post(f"/api/cases/{case['id']}/comments", headers=WRITE, json={
        "type": "alert", "alertId": "a-1", "index": ".alerts-security.alerts-default",
        "rule": {"id": "r-1", "name": "Malware"}, "owner": "securitySolution"}).json()
    assert alert["totalAlerts"] == 1 and alert["comments"][1]["type"] == "alert"

    read = kibana.get(f"/api/cases/{case['id']}", headers=AUTH).json()
    updated = kibana.patch("/api/cases", headers=WRITE, json={"cases": [
        {"id": case["id"], "version": read["version"], "status": "closed"}]})
    assert updated.status_code == 200
    [closed] = updated.json()
    assert closed["status"] == "closed" and closed["closed_at"] is not None
    assert closed["version"] != read["version"]

    stale = kibana.patch("/api/cases", headers=WRITE, json={"cases": [
        {"id": case["id"], "version": read["version"], "status": "open"}]})
    assert stale.status_code == 409
    assert stale.json()["error"] == "Conflict"


def test_errors_have_kibanas_shape(kibana):
    missing = kibana.get("/api/cases/nope", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json() == {"statusCode": 404, "error": "Not Found",
                              "message": "Saved object [cases/nope] not found"}
    unknown = kibana.get("/api/no/such/thing", headers=AUTH)
    assert unknown.json() == {"statusCode": 404, "error": "Not Found", "message": "Not Found"}
    bad = kibana.post("/api/cases", headers=WRITE, json={**NEW_CASE, "severity": "huge"})
    assert bad.status_code == 400 and bad.json()["error"] == "Bad Request"
    assert "severity" in bad.json()["message"]


def test_writes_need_kbn_xsrf_and_every_call_a_valid_key(kibana):
    no_xsrf = kibana.post("/api/cases", json=NEW_CASE, headers=AUTH)
    assert no_xsrf.status_code == 400
    assert no_xsrf.json()["message"] == "Request must contain a kbn-xsrf header."
    for headers in ({}, {"Authorization": "ApiKey wrong"}, {"Authorization": "Bearer x"}):
        denied = kibana.get("/api/status", headers=headers)
        assert denied.status_code == 401
        assert denied.json()["error"] == "Unauthorized"
        assert "unable to authenticate" in denied.json()["message"]
    basic = kibana.get("/api/status", auth=USER)
    assert basic.status_code == 200
    assert basic.json()["status"]["overall"]["level"] == "available"


def test_spaces_keep_their_own_cases_and_an_unknown_space_is_not_found(kibana, running):
    in_soc = kibana.post("/s/soc/api/cases", json=NEW_CASE, headers=WRITE).json()
    assert kibana.get(f"/s/soc/api/cases/{in_soc['id']}", headers=AUTH).status_code == 200
    assert kibana.get(f"/api/cases/{in_soc['id']}", headers=AUTH).status_code == 404
    assert [c["id"] for c in running.cases("soc")] == [in_soc["id"]]
    assert kibana.get("/s/elsewhere/api/status", headers=AUTH).status_code == 404


def test_alerts_status_is_set_by_ids_or_by_an_ids_query(kibana, running):
    running.add_alert("a-1")
    running.add_alert("a-2")
    answer = kibana.post("/api/detection_engine/signals/status", headers=WRITE,
                         json={"signal_ids": ["a-1", "gone"], "status": "closed"}).json()
    assert (answer["updated"], answer["total"], answer["failures"]) == (1, 1, [])
    assert running.alert_status("a-1") == "closed"
    kibana.post("/api/detection_engine/signals/status", headers=WRITE,
                json={"query": {"ids": {"values": ["a-2"]}}, "status": "acknowledged"})
    assert running.alert_status("a-2") == "acknowledged"
    wrong = kibana.post("/api/detection_engine/signals/status", headers=WRITE,
                        json={"signal_ids": ["a-1"], "status": "gone"})
    assert wrong.status_code == 400


def test_it_answers_429_with_retry_after_or_a_5xx_when_told_to(kibana, running):
    running.fail_next(status=429, retry_after=7, path="/api/cases", count=2)
    for _ in range(2):
        limited = kibana.post("/api/cases", json=NEW_CASE, headers=WRITE)
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "7"
        assert limited.json()["error"] == "Too Many Requests"
    assert kibana.get("/api/status", headers=AUTH).status_code == 200  # another path
    assert kibana.post("/api/cases", json=NEW_CASE, headers=WRITE).status_code == 200
    running.fail_next(status=503)
    assert kibana.get("/api/status", headers=AUTH).status_code == 503
    assert len(running.requests) == 5
