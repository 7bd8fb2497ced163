"""Stories told with the example workflows: the Slack side from tests/bot, a stand-in target.

Each example in ``examples/`` runs as written, its HTTP steps pointed at a local
:class:`demo.target.Target` through the workflow's URL input, its reviews decided by
the workspace's people through the Slack emulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.target import Target
from slack_emulator.server import BackgroundServer
from tests.bot.conftest import (  # noqa: F401 - fixtures reused as they are
    bot_settings,
    running_slack,
    signoff,
    slack,
    start_signoff,
)
from tests.support.services import ROOT

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def running_target() -> Iterator[tuple[Target, str]]:
    target = Target(echo=None)
    with BackgroundServer(target.app) as server:
        yield target, server.base_url


@pytest.fixture
def target(running_target: tuple[Target, str]) -> Target:
    """The stand-in target, its request log emptied for the test; ``target.url`` is its address."""
    stand_in, url = running_target
    stand_in.requests.clear()
    stand_in.url = url
    return stand_in


def example(name: str) -> str:
    return Path(EXAMPLES / f"{name}.yaml").read_text()
