"""The runs the demo starts from ``examples/``, so reviews are waiting when the sandbox opens.

Each seed is one API call: a workflow, an event (its URL inputs pointed at the stand-in
target) and who asked. The isolate-host seed runs Elastic's own example workflow
(``tests/engine/workflows/isolate-host-with-approval.yml``, unchanged) on the Kibana,
Elasticsearch and OpenAI emulators (:mod:`demo.elastic`), so it takes no URL input.
Seeds whose run waits for a review are posted to #reviews in the order listed; the
isolate-host review comes last, so it is at the bottom of the channel, where the sandbox
opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ISOLATE_HOST = "isolate-host-with-approval"
ALERT_HOST = "web-prod-07"
ISOLATE_TITLE = f"Alert on {ALERT_HOST}"


@dataclass(frozen=True)
class Seed:
    workflow: str
    event: dict[str, Any]
    url_input: str | None  # the workflow input naming the system it acts on, if any
    requested_by: str | None = None
    waits_for_review: bool = True
    inputs: dict[str, Any] = field(default_factory=dict)

    def body(self, target_url: str) -> dict[str, Any]:
        if self.url_input is None:
            return dict(self.event)
        return {**self.event, "inputs": {**self.inputs, self.url_input: target_url}}


SEEDS = (
    Seed("access-request", {"request": {
        "user": "dave", "resource": "billing-db", "role": "read", "level": "standard",
        "duration": "8h", "justification": "monthly report", "owner": "alice@signoff.test"}},
        "iam_url", requested_by="dave@signoff.test", waits_for_review=False),
    Seed("change-risk-gate", {"change": {
        "id": "CHG-1041", "service": "search", "version": "3.2.1", "score": 92,
        "summary": "copy change on the results page", "reasons": []}},
        "deploy_url", waits_for_review=False),
    Seed("post-hoc-review", {
        "account": "j.doe", "agent": "the triage agent",
        "reason": "impossible travel (Lyon, then Singapore 40 minutes later), then a new MFA device"},
        "iam_url"),
    Seed("refund-approval", {"refund": {
        "amount": 249.0, "currency": "EUR", "customer": "Jane Roe", "order": "ORD-88213",
        "reason": "parcel lost in transit, carrier confirmed", "agent": "carol",
        "ticket": "T-5521"}},
        "payments_url", requested_by="carol@signoff.test"),
    Seed("change-risk-gate", {"change": {
        "id": "CHG-1042", "service": "checkout", "version": "2.14.0", "score": 62,
        "summary": "new payment retry policy",
        "reasons": ["touches payments", "no canary stage", "deployed on a Friday"]}},
        "deploy_url", requested_by="bob@signoff.test"),
    Seed("access-request", {"request": {
        "user": "dave", "resource": "prod-db", "role": "admin", "level": "privileged",
        "duration": "4h", "justification": "INC-20431: repair corrupted orders",
        "owner": "alice@signoff.test"}},
        "iam_url", requested_by="dave@signoff.test"),
    Seed("phishing-triage", {"report": {
        "message_id": "<a81f3@mail.evil-invoices.test>", "subject": "Your invoice is overdue",
        "sender": "billing@evil-invoices.test", "reporter": "carol@signoff.test",
        "urls": ["https://evil-invoices.test/pay", "https://bit.ly/3xAmPl"]}},
        "mail_api"),
    Seed(ISOLATE_HOST, {"alerts": [{
        "_id": "demo-alert-1", "host": {"name": ALERT_HOST},
        "kibana.alert.rule.name": "Outbound connection to known C2 infrastructure"}]},
        None),
)
