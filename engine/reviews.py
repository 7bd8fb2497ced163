"""Turn a waiting execution into the :class:`ReviewRequest` a reviewer sees."""

from __future__ import annotations

from engine.definitions import Workflow
from engine.execution import ExecutionState, Waiting, parse_iso
from engine.notify import ReviewRequest


def review_request(state: ExecutionState, workflow: Workflow | None,
                   waiting: Waiting) -> ReviewRequest:
    opts = waiting.options
    labels = ({"approve_label": str(opts.get("approveLabel") or "Approve"),
               "reject_label": str(opts.get("rejectLabel") or "Decline")}
              if waiting.step_type == "waitForApproval" else {})
    created = parse_iso(waiting.since)
    assert created is not None
    return ReviewRequest(
        execution_id=state.id,
        workflow=workflow.name if workflow else state.workflow,
        step=waiting.step,
        step_type=waiting.step_type,
        message=waiting.message,
        message_sha256=waiting.message_sha256,
        schema=waiting.schema,
        created_at=created,
        decision_field=str(opts.get("decision-field") or "approved"),
        approvers=tuple(waiting.approvers),
        channel=opts.get("channel"),
        requested_by=state.requested_by,
        due_at=parse_iso(waiting.due_at),
        allow_self_approval=bool(opts.get("allow-self-approval", False)),
        approvals_required=int(opts.get("approvals-required") or 1),
        options=dict(opts),
        level=waiting.level,
        sla_due_at=parse_iso(waiting.level_due),
        approvals=tuple(waiting.approvals),
        audience=tuple(waiting.audience),
        **labels,
    )
