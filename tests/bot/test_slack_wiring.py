"""How the bot plugs into Signoff: entry points, settings, redelivery, the import rule."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from bot.notifier import SlackNotifier
from bot.outbox import QUEUE
from bot.settings import BotSettings
from engine.cli import build_web_app, main
from engine.notify import load_notifier
from engine.settings import Settings
from engine.state.execution import ExecutionStatus
from slack_emulator import SlackDriver, Tamper
from tests.bot.conftest import REVIEWS, Signoff
from tests.bot.test_slack_reviews import EVENT, ISOLATE, only_message

ROOT = Path(__file__).resolve().parents[2]


def slack_env(monkeypatch: pytest.MonkeyPatch, slack, redis_url: str, **extra: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack.bot_token)
    monkeypatch.setenv("SLACK_API_URL", slack.api_url)
    monkeypatch.setenv("SIGNOFF_SLACK_CHANNEL", REVIEWS)
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


def test_the_engine_never_imports_the_bot_or_slack():
    for path in sorted((ROOT / "engine").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in ("bot", "slack_bolt", "slack_sdk", "slack_emulator"), (
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")


def bot_imports(node: ast.AST) -> list[str]:
    """The bot modules an import statement names (``from bot import texts``: ``bot.texts``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("bot.")]
    if isinstance(node, ast.ImportFrom) and node.module == "bot":
        return [f"bot.{a.name}" for a in node.names]
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bot."):
        return [str(node.module)]
    return []


def test_bot_modules_import_each_other_at_the_top_and_one_way():
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "bot").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        graph[f"bot.{path.stem}"] = {m for node in tree.body for m in bot_imports(node)}
        deferred = [(node.lineno, m) for node in ast.walk(tree) for m in bot_imports(node)
                    if node not in tree.body]
        # The CLI plug-in loads with every `signoff` command: it imports the Slack side late.
        if path.name != "cli.py":
            assert deferred == [], f"bot/{path.name} imports inside a function: {deferred}"
    assert "bot.handlers" in graph["bot.jobs"] and "bot.outbox" in graph["bot.handlers"]
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError on a cycle
    assert order.index("bot.outbox") < order.index("bot.handlers") < order.index("bot.jobs")


def test_settings_never_show_secrets():
    settings = BotSettings.from_env({"SLACK_BOT_TOKEN": "xoxb-hunter2-1",
                                     "SLACK_SIGNING_SECRET": "hunter2-2",
                                     "SLACK_APP_TOKEN": "xapp-hunter2-3",
                                     "SLACK_API_URL": "http://127.0.0.1:9/api"})
    shown = repr(settings)
    assert "hunter2" not in shown and shown.count("'***'") == 3
    assert settings.api_url == "http://127.0.0.1:9/api/"


def test_the_notifier_is_found_by_name(redis_client):
    notifier = load_notifier("slack", settings=Settings(), connection=redis_client)
    assert isinstance(notifier, SlackNotifier)


def test_signoff_serve_mounts_slack_only_with_a_signing_secret(
        monkeypatch, slack, redis_url, redis_client, served, tmp_path):
    settings = Settings(redis_url=redis_url, api_token="t", workflows_dir=str(tmp_path))
    slack_env(monkeypatch, slack, redis_url)
    without = served(build_web_app(settings))
    with without.client() as http:
        assert http.post("/slack/events", content=b"payload=%7B%7D").status_code == 404

    slack_env(monkeypatch, slack, redis_url, SLACK_SIGNING_SECRET=slack.signing_secret)
    web = served(build_web_app(settings))
    with SlackDriver(slack, f"{web.url}/slack/events") as driver:
        assert driver.slash_command("U0ALICE", "/nothing").status == 404  # verified, unhandled
        assert driver.slash_command("U0ALICE", "/nothing",
                                    tamper=Tamper.WRONG_SIGNATURE).status == 401


def test_a_review_slack_could_not_take_waits_and_redeliver_posts_it(
        signoff: Signoff, monkeypatch, slack, redis_url, capsys):
    slack.fail_next("chat.postMessage", status=503, count=3)
    execution_id = signoff.run(ISOLATE, EVENT)

    assert signoff.messages() == []
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    scheduled = ScheduledJobRegistry(queue=Queue(QUEUE, connection=signoff.engine.store.redis))
    assert len(scheduled) == 1  # RQ retries the post later, with backoff

    slack_env(monkeypatch, slack, redis_url)
    assert main(["redeliver", execution_id]) == 0
    assert f"to {REVIEWS}" in capsys.readouterr().out
    message = only_message(signoff)

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), "signoff.approve").ok
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert main(["redeliver", execution_id]) == 1


def test_socket_mode_requests_reach_the_same_listeners(signoff: Signoff):
    from slack_bolt.adapter.socket_mode.internals import run_bolt_app
    from slack_sdk.socket_mode.request import SocketModeRequest

    from bot.app import build_app

    execution_id = signoff.run(ISOLATE, EVENT)
    message = only_message(signoff)
    # The driver builds the exact payload; a bad signature keeps the HTTP app out of it.
    payload = signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), "signoff.approve",
                                   tamper=Tamper.WRONG_SIGNATURE).sent
    socket_app = build_app(BotSettings(bot_token=signoff.slack.bot_token, app_token="xapp-1",
                                       api_url=signoff.slack.api_url), signoff.engine)

    answer = run_bolt_app(socket_app, SocketModeRequest(type="interactive", envelope_id="e1",
                                                        payload=payload))
    assert answer.status == 200
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED


def test_manifests_ask_for_what_the_bot_uses_and_no_more():
    import yaml

    expected = {"chat:write", "commands", "im:write", "users:read", "users:read.email",
                "usergroups:read", "channels:read", "groups:read"}
    http = yaml.safe_load((ROOT / "manifests/slack-app.yaml").read_text())
    socket = yaml.safe_load((ROOT / "manifests/slack-app-socket.yaml").read_text())
    for manifest in (http, socket):
        assert set(manifest["oauth_config"]["scopes"]["bot"]) == expected
        assert manifest["settings"]["interactivity"]["is_enabled"] is True
        assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/approvals"]
        assert manifest["features"]["app_home"]["home_tab_enabled"] is True
        assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    assert http["settings"]["interactivity"]["request_url"].endswith("/slack/events")
    assert http["features"]["slash_commands"][0]["url"].endswith("/slack/events")
    assert http["settings"]["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert http["settings"]["socket_mode_enabled"] is False
    assert socket["settings"]["socket_mode_enabled"] is True
