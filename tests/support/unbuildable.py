"""An app factory whose build fails, as a web plug-in that cannot load would, built the
way ``signoff serve --processes`` builds its app: for tests/engine/test_serve_processes.py."""

from __future__ import annotations

from typing import Any

from engine.cli import built_in_process
from engine.settings import Settings


def app() -> Any:
    def build(settings: Settings) -> Any:
        raise RuntimeError("this app cannot be built")
    return built_in_process(build)
