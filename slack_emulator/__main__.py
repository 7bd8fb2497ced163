"""``python -m slack_emulator --port N``: serve the seeded workspace standalone."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

from slack_emulator.server import SlackEmulator
from slack_emulator.workspace import APP, default_workspace


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slack_emulator",
        description="Serve a fake slack.com (Web API + response URLs) for the seeded workspace.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3900)
    parser.add_argument(
        "--bot-token", default=APP.bot_token, help="token the app must send (default: dev token)"
    )
    parser.add_argument(
        "--signing-secret", default=APP.signing_secret, help="app signing secret (default: dev one)"
    )
    args = parser.parse_args(argv)
    workspace = default_workspace()
    workspace.app = replace(
        workspace.app, bot_token=args.bot_token, signing_secret=args.signing_secret
    )
    emulator = SlackEmulator(workspace, host=args.host, port=args.port)
    print(
        f"Slack emulator for {workspace.team.id} ({workspace.team.domain}): "
        f"WebClient(base_url={emulator.api_url!r}); state at "
        f"{emulator.base_url}/_emulator/state",
        file=sys.stderr,
    )
    emulator.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
