"""The ``signoff`` command: validate, run, status, resume, cancel, pending, audit, connectors
check, worker, serve, token.

Exit codes: 0 ok, 1 a user error (with a message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from engine.errors import (
    AlreadyDecided,
    ConnectorsInvalid,
    InputInvalid,
    Problem,
    SignoffError,
    WorkflowInvalid,
)
from engine.notify import Actor
from engine.settings import Settings, connectors_from_env

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class UserError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.command in ("worker", "serve")
                        else logging.WARNING, format=LOG_FORMAT)
    try:
        return int(args.func(args) or 0)
    except AlreadyDecided as exc:
        print(f"signoff: {exc}", file=sys.stderr)
        return 1
    except InputInvalid as exc:
        print("signoff: the input does not match the step's schema:", file=sys.stderr)
        for v in exc.violations:
            print(f"  {v['path'] or '(input)'}: {v['message']}", file=sys.stderr)
        return 1
    except WorkflowInvalid as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except (SignoffError, UserError) as exc:
        print(f"signoff: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signoff", description="Human-in-the-loop workflows "
                                     "on RQ and Redis, decided in Slack.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("validate", help="check workflow files; exit 1 on any problem")
    p.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument("--elastic", action="store_true",
                   help="also report what Kibana 9.5 would refuse or drop (for files kept for both)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="start a workflow (a file, or a name in SIGNOFF_WORKFLOWS)")
    p.add_argument("workflow", metavar="FILE|NAME")
    p.add_argument("--event", default="{}", help="the event as JSON, or @file.json")
    p.add_argument("--requested-by", help="who asked for it (Slack user id or e-mail)")
    p.add_argument("--wait", action="store_true",
                   help="wait until the run pauses or ends, then print its status")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="an execution's status and step results, as JSON")
    p.add_argument("id")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("resume", help="answer a waiting step and continue the run")
    p.add_argument("id")
    p.add_argument("--input", required=True, help="the answer as JSON, or @file.json")
    p.add_argument("--actor", default=None, help="who decided (default: cli:$USER)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("cancel", help="cancel a run that has not finished")
    p.add_argument("id")
    p.add_argument("--reason", default="")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("pending", help="reviews waiting for input, oldest first")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_pending)

    p = sub.add_parser("audit", help="an execution's audit trail")
    p.add_argument("id")
    p.add_argument("--verify", action="store_true",
                   help="check the hash chain (with SIGNOFF_AUDIT_KEY when set); exit 1 if "
                   "broken, 2 if keyed and no key is set")
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("worker", help="run an RQ worker (with the scheduler) for Signoff jobs")
    p.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("serve", help="serve the HTTP API (and Slack, when configured)")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="serve /api without a token (local use only)")
    p.add_argument("--socket-mode", action="store_true",
                   help="also connect to Slack over Socket Mode (SLACK_APP_TOKEN), so no "
                        "public Request URL is needed")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="answer from N processes sharing the port, each started again if it "
                        "dies (default: WEB_CONCURRENCY, else 1)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("token", help="API tokens: create, list, revoke")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = actions.add_parser("create", help="make a token; prints it once, alone on the first line")
    t.add_argument("name")
    t.add_argument("--scopes", required=True,
                   help="what it may do, comma-separated: run, read, decide, act-as, admin")
    t.add_argument("--principal", default=None,
                   help="who it acts as: requester of its runs, actor of its decisions "
                        "(default: its name)")
    t.set_defaults(func=cmd_token_create)
    t = actions.add_parser("list", help="every token: name, scopes, principal, created")
    t.set_defaults(func=cmd_token_list)
    t = actions.add_parser("revoke", help="refuse a token from its next request on")
    t.add_argument("name")
    t.set_defaults(func=cmd_token_revoke)

    p = sub.add_parser("connectors", help="the connections of SIGNOFF_CONNECTORS")
    c = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c.add_parser("check", help="call each connection's cheapest authenticated read; exit 1 "
                 "if one does not answer or authenticate").set_defaults(
                     func=cmd_connectors_check)

    from engine.ask import register as register_ask
    from engine.hooks import register as register_hooks
    from engine.policy_commands import register as register_policy_commands

    register_policy_commands(sub)
    register_ask(sub)
    register_hooks(sub)

    # Plug-ins add commands through the signoff.commands entry-point group: each entry
    # point is a function register(subparsers) that adds its parsers with set_defaults(func=...).
    for ep in entry_points(group="signoff.commands"):
        ep.load()(sub)
    return parser


# -- commands --------------------------------------------------------------------------------

def cmd_validate(args: argparse.Namespace) -> int:
    from engine.definition.loader import validate_paths, workflow_files
    from engine.definition.policy import is_policy_file, policy_problems

    policies = [path for path in workflow_files(args.paths) if is_policy_file(path)]
    workflow_paths = list(args.paths)
    if policies:  # policy files are checked as one policy, the rest as workflows
        chosen = {path.resolve() for path in policies}
        workflow_paths = [os.fspath(path) for path in workflow_files(args.paths)
                          if path.resolve() not in chosen]
        problems = [*validate_paths(workflow_paths), *policy_problems(policies)]
    else:
        problems = validate_paths(args.paths)
    problems += _connector_problems(workflow_paths)
    if args.elastic:  # Kibana has no policy files: only the workflows are compared
        problems = _with_kibana_problems(problems, workflow_paths)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("all workflows are valid")
    return 0


def _with_kibana_problems(problems: list[Problem], paths: list[str]) -> list[Problem]:
    """Signoff's problems and Kibana's, file by file in the order the files were read."""
    from engine.definition.kibana_rules import kibana_problems
    from engine.definition.loader import workflow_files

    files = workflow_files(paths)
    order = {os.fspath(path): index for index, path in enumerate(files)}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # Signoff's own checks already say why
        problems = [*problems, *kibana_problems(text, os.fspath(path))]
    return sorted(problems, key=lambda p: (order.get(p.source, -1), p.line, p.column))


def _connector_problems(paths: list[str]) -> list[Problem]:
    """The SIGNOFF_CONNECTORS file's own problems, else what the workflows' ``with.channels``
    ask of it (a connector of the wrong type, a channel it does not allow)."""
    from engine.connectors import check_workflow
    from engine.definition.loader import workflow_files

    try:
        connectors = connectors_from_env()
    except ConnectorsInvalid as exc:
        return exc.problems
    if not connectors.connections:
        return []
    problems: list[Problem] = []
    for path in workflow_files(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # validate_paths reported it
        problems += check_workflow(text, str(path), connectors)
    return problems


def cmd_connectors_check(args: argparse.Namespace) -> int:
    from engine.connectors import connection_check
    from engine.definition.egress import EgressPolicy

    settings = Settings.from_env()
    if not settings.connectors.connections:
        print("signoff: no connections: SIGNOFF_CONNECTORS names no file, or an empty one",
              file=sys.stderr)
        return 1
    egress = EgressPolicy.from_entries(settings.http_allow, settings.http_deny)
    failed = 0
    for connector_id, connection in settings.connectors.connections.items():
        check = connection_check(connection.type)
        if check is None:
            print(f"{connector_id} ({connection.type}): not checked: a {connection.type} "
                  "connection has no read to try")
            continue
        try:
            print(f"{connector_id} ({connection.type}): ok: {check(connection, egress)}")
        except SignoffError as exc:
            failed += 1
            print(f"{connector_id} ({connection.type}): FAILED: {exc}")
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    from engine.definition.loader import WorkflowCatalog, load_workflow
    from engine.errors import RunSkipped
    from engine.state.execution import ExecutionStatus

    settings = Settings.from_env()
    rt = _runtime(settings)
    path = Path(args.workflow)
    if path.suffix in (".yml", ".yaml") or path.exists():
        workflow = load_workflow(path)
    else:
        workflow = WorkflowCatalog(settings.workflows_dir).get(args.workflow)
    event = _json_arg(args.event, "--event")
    started = rt.engine.start(workflow, event, requested_by=args.requested_by,
                              actor=_cli_actor(None))
    execution_id = started.execution_id
    if started.status is ExecutionStatus.SKIPPED:
        raise RunSkipped(execution_id, workflow.name, started.group or "",
                         started.skipped_because or "dropped", started.reason or "")
    if started.status is ExecutionStatus.QUEUED:
        print(f"signoff: {execution_id} is queued (position {started.position}) for a slot "
              f"of concurrency group {started.group!r}", file=sys.stderr)
    if not args.wait:
        print(execution_id)
        return 0
    state = _wait_until_settled(rt, execution_id, args.timeout)
    print(json.dumps(_status_view(state), indent=2))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    rt = _runtime(Settings.from_env())
    print(json.dumps(_status_view(rt.engine.get(args.id)), indent=2))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    rt = _runtime(Settings.from_env())
    result = rt.engine.resume(args.id, _json_arg(args.input, "--input"), _cli_actor(args.actor))
    if result.decision is None:
        print(f"approval recorded: {result.approvals} of {result.required} for {args.id}")
        return 0
    print(f"{result.decision.outcome}: step {result.decision.step} of {args.id} "
          f"by {result.decision.actor['name']} at {result.decision.at}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    rt = _runtime(Settings.from_env())
    rt.engine.cancel(args.id, _cli_actor(None), args.reason)
    print(f"cancelled {args.id}")
    return 0


def cmd_pending(args: argparse.Namespace) -> int:
    rt = _runtime(Settings.from_env())
    reviews, total = rt.engine.pending(limit=args.limit)
    if not reviews:
        print("no reviews are waiting")
        return 0
    for review in reviews:
        due = f" due {review.due_at.isoformat()}" if review.due_at else ""
        print(f"{review.execution_id}  {review.workflow}/{review.step}  "
              f"waiting since {review.created_at.isoformat()}{due}\n    {review.title}")
    if total > len(reviews):
        print(f"... and {total - len(reviews)} more")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    rt = _runtime(Settings.from_env())
    entries = rt.engine.audit_entries(args.id)
    if args.format == "jsonl":
        for entry in entries:
            print(json.dumps({"id": entry.id, "hash": entry.hash, **entry.event},
                             ensure_ascii=False))
    elif not args.verify:
        for entry in entries:
            event = dict(entry.event)
            line = f"{event.pop('at', '')}  {event.pop('type', '')}"
            rest = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in event.items()
                            if k != "message")
            print(f"{line}  {rest}".rstrip())
    if args.verify:
        check = rt.engine.verify_audit(args.id)
        if check.needs_key:
            print(f"audit trail of {args.id} cannot be verified here: {check.problem}",
                  file=sys.stderr)
            return 2
        if not check.ok:
            print(f"audit trail of {args.id} is BROKEN: {check.problem}", file=sys.stderr)
            return 1
        if check.keyed_from is None:
            scheme = ("unkeyed sha256 links, written before SIGNOFF_AUDIT_KEY was set (or "
                      "rewritten whole by someone without it)" if rt.settings.audit_key
                      else "unkeyed sha256 links")
        elif check.keyed_from == "1":
            scheme = "every link keyed with SIGNOFF_AUDIT_KEY"
        else:
            scheme = (f"sha256 links up to event {int(check.keyed_from) - 1}, keyed with "
                      f"SIGNOFF_AUDIT_KEY from event {check.keyed_from} on")
        print(f"audit trail of {args.id} verified: {check.checked} events, chain intact "
              f"({scheme})", file=sys.stderr if args.format == "jsonl" else sys.stdout)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.state.store import connect
    from engine.worker.runtime import build_runtime, install_runtime
    from engine.worker.worker import SignoffWorker

    settings = Settings.from_env()
    connection = connect(settings.redis_url)
    install_runtime(build_runtime(settings, connection))
    worker = SignoffWorker([settings.queue, *_extra_queues()], connection=connection,
                           name=args.name, maintenance_interval=settings.sweep_seconds)
    worker.work(burst=args.burst, with_scheduler=True, logging_level="INFO")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env()
    _check_token(settings, args.insecure_no_auth)
    processes = settings.web_processes if args.processes is None else args.processes
    if processes < 1:
        raise UserError(f"--processes {processes}: 1 or more")
    host, port = args.host or settings.host, args.port or settings.port
    # One process builds the app here, so a problem stops the command before it listens;
    # more each build their own (started fresh, not forked: the app holds threads and
    # connections), and a problem in one stops them all.
    app = build_web_app(settings, insecure=args.insecure_no_auth) if processes == 1 else None
    if args.socket_mode:  # one connection to Slack, from this process, whatever the count
        plugins = list(entry_points(group="signoff.socket_mode"))
        if not plugins:
            raise UserError("--socket-mode needs the Slack bot, which is not installed")
        rt = _runtime(settings)
        for ep in plugins:
            ep.load()(settings=settings, engine=rt.engine)
    if app is not None:
        uvicorn.run(app, host=host, port=port, log_level="info")
        return 0
    return serve_processes(INSECURE_APP if args.insecure_no_auth else APP, host, port,
                           processes)


# The app each process of ``signoff serve --processes N`` builds: a factory named by import
# path, one for each choice of --insecure-no-auth, so no setting a process inherits can
# turn the API's token check off.
APP = "engine.cli:web_app"
INSECURE_APP = "engine.cli:insecure_web_app"


def web_app() -> Any:
    """The web app as a process of ``signoff serve --processes N`` builds it."""
    return built_in_process(build_web_app)


def insecure_web_app() -> Any:
    """The same, for ``signoff serve --insecure-no-auth --processes N``."""
    return built_in_process(lambda settings: build_web_app(settings, insecure=True))


def built_in_process(build: Callable[[Settings], Any]) -> Any:
    """``build(settings)`` in a process of ``serve --processes``, logging as ``main``
    does; a failure is logged and ends the process as one that could not start, which
    stops its supervisor (started again, it would fail the same way, forever)."""
    from uvicorn.config import STARTUP_FAILURE

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        return build(Settings.from_env())
    except Exception:
        logging.getLogger(__name__).exception("the web app could not be built")
        sys.exit(STARTUP_FAILURE)


def serve_processes(app: str, host: str, port: int, processes: int) -> int:
    """Answer on ``host``:``port`` from ``processes`` processes, each building the app from
    the factory ``app`` ("module:function"), under uvicorn's supervisor: the socket is
    bound once and shared; a process that dies or stops answering its health check is
    started again; SIGHUP restarts them one at a time, each new one ready before its old
    one goes; SIGTTIN / SIGTTOU add and remove one; SIGINT / SIGTERM stop them all. A
    process that cannot start (its app does not build) stops them all: UserError."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(app, factory=True, host=host, port=port, workers=processes,
                            log_level="info")
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        raise UserError("a web process could not start (its error is above); stopped")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from engine.state import tokens
    from engine.state.execution import iso, utcnow

    secret, token = tokens.issue(args.name, tokens.parse_scopes(args.scopes), args.principal,
                                 iso(utcnow()) or "")
    _store(Settings.from_env()).add_token(token, tokens.digest(secret))
    print(secret)  # alone on the first line, so `$(signoff token create ...)` is the token
    print(f"token {token.name}: scopes {_scopes(token)}, acts as {token.acts_as}. It is "
          "shown this once: only its hash is kept.", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    found = _store(Settings.from_env()).tokens()
    if not found:
        print("no tokens (SIGNOFF_API_TOKEN, the operator's, is not stored)")
        return 0
    rows = [("NAME", "SCOPES", "PRINCIPAL", "CREATED")] + [
        (t.name, _scopes(t), t.acts_as, t.created_at or "") for t in found]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)),
                         row[3]]))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    _store(Settings.from_env()).revoke_token(args.name)
    print(f"revoked {args.name}: every web process refuses it within 0.1 s")
    return 0


def build_web_app(settings: Settings, *, insecure: bool = False) -> Any:
    """The whole web process: the API plus whatever ``signoff.web`` plug-ins add (the bot).
    Without ``insecure``, SIGNOFF_API_TOKEN must be set (UserError): with no operator
    token the API would answer anyone as the operator."""
    _check_token(settings, insecure)
    from rq import Worker

    from engine.api import build_api
    from engine.definition.loader import WorkflowCatalog
    from engine.definition.policy import PolicySource
    from engine.gate_api import gate_extension
    from engine.run.gate import Gate

    rt = _runtime(settings)
    extensions = [ep.load()(settings=settings, engine=rt.engine)
                  for ep in entry_points(group="signoff.web")]
    extensions.append(gate_extension(Gate(rt.engine, PolicySource(settings.policy_path))))
    return build_api(rt.engine, WorkflowCatalog(settings.workflows_dir),
                     api_token=None if insecure else settings.api_token,
                     workers_seen=lambda: Worker.count(connection=rt.store.redis),
                     extensions=extensions)


# -- plumbing --------------------------------------------------------------------------------

def _check_token(settings: Settings, insecure: bool) -> None:
    if not settings.api_token and not insecure:
        raise UserError("SIGNOFF_API_TOKEN is not set: set it, or pass --insecure-no-auth "
                        "for local use")


def _runtime(settings: Settings) -> Any:
    from engine.state.store import connect
    from engine.worker.runtime import build_runtime

    return build_runtime(settings, connect(settings.redis_url))


def _store(settings: Settings) -> Any:
    from engine.state.store import Store, connect

    return Store(connect(settings.redis_url))


def _scopes(token: Any) -> str:
    from engine.state.tokens import Scope

    return ",".join(s.value for s in Scope if token.allows(s))  # in the order of Scope


def _extra_queues() -> list[str]:
    """Queues that plug-ins ask the worker to serve too (the bot's ``slack`` queue)."""
    names = []
    for ep in entry_points(group="signoff.queues"):
        names.append(ep.name)
    return names


def _json_arg(raw: str, flag: str) -> Any:
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text()
        except OSError as exc:
            raise UserError(f"{flag}: cannot read {raw[1:]}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UserError(f"{flag} is not valid JSON: {exc}") from exc


def _cli_actor(name: str | None) -> Actor:
    import getpass

    if name:
        return Actor(id=name, name=name, source="cli")
    user = getpass.getuser()
    return Actor(id=f"cli:{user}", name=f"cli:{user}", source="cli")


def _status_view(state: Any) -> dict[str, Any]:
    from engine.api import execution_view

    return execution_view(state)


def _wait_until_settled(rt: Any, execution_id: str, timeout: float) -> Any:
    """Wait until the run pauses or ends (the store is told of every status change)."""
    from engine.state.execution import ExecutionStatus

    settled = {ExecutionStatus.WAITING_FOR_INPUT, ExecutionStatus.WAITING} | {
        s for s in ExecutionStatus if s.is_terminal}
    status = rt.store.wait_for_status(execution_id, lambda s: s in settled, timeout)
    if status is ExecutionStatus.QUEUED:
        raise UserError(f"{execution_id} is still queued after {timeout:.0f}s: its "
                        "concurrency group has no free slot (settings.concurrency)")
    if status not in settled:
        raise UserError(f"{execution_id} is still {status.value} after {timeout:.0f}s; "
                        "is a worker running? (signoff worker)")
    return rt.engine.get(execution_id)


if __name__ == "__main__":
    sys.exit(main())
