"""The run layer: advancing executions and deciding reviews.

Owns the runner (walking a workflow's steps until the run pauses or ends, with its
handlers of actions, flow steps and loops, child executions and parallel branches), reviews
(decisions, quorum, escalation, reminders, reassignment, time-outs), the rules for
who may act on a review, timers (what must happen later, and the seam that makes it
happen), concurrency groups (``settings.concurrency``: who runs, waits or is skipped),
review statistics, and :class:`engine.run.engine.Engine`, the front door
the API, CLI, bot and jobs use. Imports the definition layer, the steps and the
state layer; never RQ (timers go through the ``Scheduler`` seam) nor the worker.
"""
