"""The demo's agent: three tool calls through the gate, with the SDK, as any agent makes them.

``make demo`` runs it beside the seeded workflows, with ``demo/policy.yaml`` as the server's
policy: a web search the policy allows (it runs at once), a shell command it blocks (it never
runs), and an e-mail to a customer it escalates, which waits in #reviews until a person
decides in the sandbox; approved, the mail goes out with the subject the reviewer left.

    SIGNOFF_URL=… SIGNOFF_API_TOKEN=… python -m demo.agent   # against any Signoff server
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from signoff import Blocked, Gate, GateError

Say = Callable[[str], None]

EMAIL_TO = "jane.roe@example.test"
EMAIL_SUBJECT = "Your refund for ORD-88213"


class Agent:
    """A support agent's tools, each guarded by the gate under its tool name."""

    def __init__(self, gate: Gate, say: Say) -> None:
        self.gate = gate
        self.say = say
        self.pending = threading.Event()  # set once the e-mail's review is asked for
        self.request_id: str | None = None
        self.stopping = threading.Event()  # the demo is stopping: no more to say

        @gate.guard("search.web", summary="look up the refund policy")
        def search_web(query: str) -> str:
            return f"3 results for {query!r}"

        @gate.guard("shell.execute", summary="clear old logs on web-prod-07")
        def shell_execute(command: str, host: str) -> str:
            return f"ran {command!r} on {host}"  # never reached: the policy blocks it

        self.search_web = search_web
        self.shell_execute = shell_execute

    def run(self) -> None:
        """Make the three calls, saying what the gate answered to each."""
        self.say(f"agent    search.web: {self.search_web('refund policy lost parcel')}"
                 " (allowed by the policy)")
        try:
            self.shell_execute("rm -rf /var/log/nginx", "web-prod-07")
        except Blocked as exc:
            self.say(f"agent    shell.execute: blocked ({exc.decision.reason if exc.decision else exc})")
        self.send_email(EMAIL_TO, EMAIL_SUBJECT,
                        "Hello Jane, the carrier confirmed the loss: 249 EUR are on their way.")

    def send_email(self, to: str, subject: str, body: str) -> None:
        """Ask for the e-mail (it escalates), then wait for the decision in #reviews."""
        args = {"to": to, "subject": subject, "body": body}
        decision = self.gate.check("email.send", args, wait=False,
                                   summary=f"tell {to} their refund is on its way")
        self.request_id = decision.request_id
        self.say(f"agent    email.send: {decision.status}, waiting in #reviews "
                 f"(request {decision.request_id})")
        self.pending.set()
        if decision.request_id is None:
            return
        try:
            decided = self.gate.wait(decision.request_id).raise_for_status()
            self.gate.spend(decided)
        except GateError as exc:
            if not self.stopping.is_set():
                self.say(f"agent    email.send: {exc}")
            return
        self.say(f"agent    email.send: approved by {decided.decided_by}; sent to "
                 f"{decided.args['to']}: {decided.args['subject']!r}")


def run_in_thread(gate: Gate, say: Say) -> Agent:
    """Run the agent in a thread; return once its e-mail's review is asked for (or it failed)."""
    agent = Agent(gate, say)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            agent.run()
        except GateError as exc:
            failed.append(exc)
            agent.pending.set()

    thread = threading.Thread(target=run, name="demo-agent", daemon=True)
    thread.start()
    agent.pending.wait(timeout=30)
    if failed or agent.request_id is None:
        raise RuntimeError(f"the demo agent could not ask the gate: {failed or 'no request'}")
    return agent


if __name__ == "__main__":
    agent = Agent(Gate(), lambda line: print(line, flush=True))
    try:
        agent.run()
    except GateError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        sys.exit(1)
