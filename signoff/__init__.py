"""Signoff's Python SDK: ask a Signoff server before a tool call runs.

    from signoff import Gate, Denied

    gate = Gate()  # SIGNOFF_URL and SIGNOFF_API_TOKEN

    @gate.guard("payments.refund")
    def refund(customer: str, amount: int) -> None:
        ...  # runs only once the policy allows it or a reviewer approves it

    with gate.approval("deploy.prod", args={"sha": sha}) as decision:
        deploy(sha)

An HTTP client of the gate API, with no dependency on the server's own packages.
"""

from signoff.gate import (
    Blocked,
    Cancelled,
    Decision,
    Denied,
    Gate,
    GateError,
    TimedOut,
    Unavailable,
)

__all__ = ["Blocked", "Cancelled", "Decision", "Denied", "Gate", "GateError", "TimedOut",
           "Unavailable"]
