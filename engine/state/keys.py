"""Every Redis key the engine uses, built in one place (the Slack bot adds its caches: bot.keys).

    signoff:x:{id}          hash    one execution (fields below)
    signoff:a:{id}          list    its audit trail: entries of a marker, sha256 (32 bytes) and
                                    canonical JSON (engine.state.audit.stored),
                                    hash-chained, only ever appended to
    signoff:lease:{id}      string  the worker currently advancing it (token, expiring)
    signoff:def:{digest}    string  a workflow definition's YAML, shared by its executions
    signoff:idx:st:{STATUS} zset    executions in a status, scored by start time (ms); those
                                    WAITING_FOR_INPUT by when they started waiting: it is
                                    also the waiting index (INDEX_WAITING), one index not two
    signoff:idx:wf:{name}   zset    executions of a workflow, scored by start time (ms)
    signoff:idx:timers      zset    every timer RQ holds (job name and args as JSON), by when it is
                                    due; workers run those RQ's scheduler has left overdue
    signoff:idx:approver:{U} zset   reviews user U may decide, scored by when they started waiting
    signoff:stats:{wf}:{step} zset  closed reviews of a step (outcome, time to decision, level,
                                    SLA breach), scored by when they closed
    signoff:stats:index     zset    every {wf}\x1f{step} with stats, scored by the last close
    signoff:sched:{name}:{n} string  the next due time of a workflow's n-th scheduled trigger
    signoff:idx:running     zset    executions a worker should be advancing, scored by lease deadline;
                                    the sweeper re-enqueues those whose lease has lapsed
    signoff:inboxes         set     the RQ queues that have an inbox (engine.state.inbox)
    signoff:inbox:{q}       list    small tasks waiting for a drain job on queue q (JSON: import
                                    path, args, retry intervals, on_failure, failed tries)
    signoff:inbox:{q}:later zset    tasks of that inbox that failed, waiting for their next try
                                    (tag|task JSON), scored by when it is due (ms since the epoch)
    signoff:inbox:{q}:drain string  set while a drain job is queued and not yet started (expiring)
    signoff:inbox:{q}:first string  how many tasks at the head of the inbox were put first
                                    (clicks, ahead of run segments; engine.state.lua)
    signoff:inbox:{q}:takers set    drains of that inbox that may hold a task
    signoff:inbox-taking:{t} list   the task drain t is running
    signoff:inbox-alive:{t} string  drain t's heartbeat (expiring); the sweep puts back the task
                                    of a drain whose heartbeat lapsed
    signoff:tokens          hash    API token names, each to the SHA-256 (hex) of its secret
    signoff:token:{sha256}  string  an API token's record (JSON: name, scopes, principal,
                                    createdAt), found by the hash of its secret; never the secret
    signoff:refused:{id}:{U} string set for a minute after U's refused attempt on an execution
                                    was audited (expiring): repeats in that minute are not
    signoff:tmp:{token}     zset    a scratch result of one read (Store.index_union_page), deleted
                                    in the same transaction that made it
    signoff:gate-use:{id}   string  set once when the approved agent call of gate request {id} is
                                    run (JSON: who, when): a second use is refused
    signoff:gate-shadow     hash    per shadow policy rule, the calls it matched and those whose
                                    decision it would have changed (counters; see
                                    engine.run.gate.shadow_field)
    signoff:kids:{id}       hash    what the finished children of execution {id} reported, by
                                    "{step path}#{branch}" (JSON: engine.state.execution.ChildReport),
                                    each written in the child's own final commit
    signoff:conc:groups     hash    every concurrency group with a run holding or waiting for a
                                    slot: its id (below) -> its key as rendered; the sweep's list
    signoff:conc:{g}:slots  zset    runs holding a slot of concurrency group g (the first 32 hex of
                                    the SHA-256 of its rendered key), scored by admission (ms)
    signoff:conc:{g}:queue  zset    runs waiting for a slot of g (strategy queue), scored by
                                    arrival (signoff:conc:seq)
    signoff:conc:{g}:meta   hash    a waiting run of g -> "queued-ms ttl-ms max" (its own settings)
    signoff:conc:seq        string  the counter that orders arrivals in every queue
    signoff:conc:displaced  hash    a run cancel-in-progress took the slot of, until it is
                                    cancelled -> "{the run that took it} {group}"
    signoff:status:{id}     channel pub/sub, told each new status of an execution (not a key)

Execution hash fields: ``wf`` workflow name, ``d`` definition digest, ``st`` status,
``t0``/``t1`` started/finished (ISO 8601), ``t0ms`` started (epoch ms, its score in the
indexes), ``ev`` event JSON (zlib-compressed above 256 bytes: engine.state.compact),
``rb`` requested by, ``err`` run error, ``ah`` audit head hash, ``v`` variables JSON,
``w`` what it waits for (JSON; its message's hash and first line, the message being in
the audit trail: engine.state.messages), ``s:{path}`` one step's result
(JSON; its end as ms after its start, ``d1``), ``dec:{path}`` a decision (JSON), ``out``
the run's outputs (JSON, from ``workflow.output``), ``par`` a child's link to its parent
(JSON), ``n:{key}`` a plug-in's annotation (JSON, compressed above 256 bytes; the bot keeps
where it posted a review under ``n:slack:{step}``).
"""

from __future__ import annotations

import hashlib

PREFIX = "signoff:"


def execution(execution_id: str) -> str:
    return f"{PREFIX}x:{execution_id}"


def audit(execution_id: str) -> str:
    return f"{PREFIX}a:{execution_id}"


def lease(execution_id: str) -> str:
    return f"{PREFIX}lease:{execution_id}"


def children(execution_id: str) -> str:
    """What the finished children of an execution reported (engine.run.children)."""
    return f"{PREFIX}kids:{execution_id}"


def child_field(path: str, branch: int | None) -> str:
    """A child's field in its parent's children hash: the step that started it, and its
    branch (0 for workflow.execute)."""
    return f"{path}#{branch or 0}"


def definition(digest: str) -> str:
    return f"{PREFIX}def:{digest}"


INDEX_RUNNING = f"{PREFIX}idx:running"
INDEX_TIMERS = f"{PREFIX}idx:timers"
# Timers due beyond the scheduling horizon: no RQ job yet; a worker's sweep schedules each
# as it comes within reach (member -> due, epoch seconds).
INDEX_TIMERS_LATER = f"{PREFIX}idx:timers:later"


def status_channel(execution_id: str) -> str:
    """Pub/sub channel told each new status of the execution (``signoff run --wait``)."""
    return f"{PREFIX}status:{execution_id}"


def index_status(status: str) -> str:
    return f"{PREFIX}idx:st:{status}"


# Executions waiting for input, scored by when they started waiting: the status index of
# WAITING_FOR_INPUT. The commit script moves a run into its status index (scored by its
# start), then adds it to the waiting index (scored by when it started waiting), so one
# sorted set serves both.
INDEX_WAITING = index_status("WAITING_FOR_INPUT")


def index_workflow(name: str) -> str:
    return f"{PREFIX}idx:wf:{name}"


STATS_INDEX = f"{PREFIX}stats:index"

TOKEN_NAMES = f"{PREFIX}tokens"


def token(secret_digest: str) -> str:
    """An API token's record, by the SHA-256 of its secret (engine.state.tokens)."""
    return f"{PREFIX}token:{secret_digest}"

INBOXES = f"{PREFIX}inboxes"


def inbox(queue: str) -> str:
    return f"{PREFIX}inbox:{queue}"


def inbox_drain(queue: str) -> str:
    return f"{PREFIX}inbox:{queue}:drain"


def inbox_first(queue: str) -> str:
    return f"{PREFIX}inbox:{queue}:first"


def inbox_later(queue: str) -> str:
    return f"{PREFIX}inbox:{queue}:later"


def inbox_takers(queue: str) -> str:
    return f"{PREFIX}inbox:{queue}:takers"


def inbox_taking(taker: str) -> str:
    return f"{PREFIX}inbox-taking:{taker}"


def inbox_alive(taker: str) -> str:
    return f"{PREFIX}inbox-alive:{taker}"


def scratch(token: str) -> str:
    """A key one read builds and deletes in the same MULTI (never outlives it)."""
    return f"{PREFIX}tmp:{token}"


def index_approver(user_id: str) -> str:
    return f"{PREFIX}idx:approver:{user_id}"


def stats(workflow: str, step: str) -> str:
    return f"{PREFIX}stats:{workflow}:{step}"


def schedule(workflow: str, index: int) -> str:
    return f"{PREFIX}sched:{workflow}:{index}"


STEP_FIELD = "s:"  # execution hash fields: these prefixes, then a step's path or a plug-in's key
DECISION_FIELD = "dec:"
ANNOTATION_FIELD = "n:"


def refused(execution_id: str, actor_id: str) -> str:
    """Set while a refused attempt by ``actor_id`` on the execution is in the audit trail's
    window: repeats in that window are not audited again (see Reviews.record_refusal)."""
    return f"{PREFIX}refused:{execution_id}:{actor_id}"


def step_field(path: str) -> str:
    return f"{STEP_FIELD}{path}"


def decision_field(path: str) -> str:
    return f"{DECISION_FIELD}{path}"


def annotation_field(key: str) -> str:
    return f"{ANNOTATION_FIELD}{key}"


GATE_SHADOW = f"{PREFIX}gate-shadow"


def gate_use(execution_id: str) -> str:
    """Set once when the call gate request ``execution_id`` approved is run."""
    return f"{PREFIX}gate-use:{execution_id}"
CONCURRENCY_GROUPS = f"{PREFIX}conc:groups"
CONCURRENCY_SEQ = f"{PREFIX}conc:seq"
CONCURRENCY_DISPLACED = f"{PREFIX}conc:displaced"


def concurrency_group_id(group: str) -> str:
    """A concurrency group's id in keys: its rendered key can be long or hold anything."""
    return hashlib.sha256(group.encode("utf-8")).hexdigest()[:32]


def concurrency_slots(group_id: str) -> str:
    return f"{PREFIX}conc:{group_id}:slots"


def concurrency_queue(group_id: str) -> str:
    return f"{PREFIX}conc:{group_id}:queue"


def concurrency_meta(group_id: str) -> str:
    return f"{PREFIX}conc:{group_id}:meta"
