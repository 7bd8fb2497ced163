"""``python -m slack_emulator --port N``: serve the seeded workspace standalone."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

from slack_emulator.ratelimit import DEFAULT_BURST, DEFAULT_RATE, MethodLimits, PostingLimit
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
    parser.add_argument(
        "--post-rate", type=float, default=None,
        help=f"chat.postMessage per second per channel (default {DEFAULT_RATE:g}, Slack's; "
        "0: no limit; or SLACK_EMULATOR_POST_RATE)")
    parser.add_argument(
        "--post-burst", type=int, default=None,
        help=f"posts a channel may take at once (default {DEFAULT_BURST}; "
        "or SLACK_EMULATOR_POST_BURST)")
    parser.add_argument(
        "--no-method-limits", action="store_true",
        help="no limit on methods other than chat.postMessage (default: Slack's tiers; or "
        "SLACK_EMULATOR_METHOD_LIMITS=off, or method=calls_a_minute[:burst],...)")
    args = parser.parse_args(argv)
    limit = PostingLimit.from_env()
    limit = PostingLimit(rate=limit.rate if args.post_rate is None else args.post_rate,
                         burst=limit.burst if args.post_burst is None else args.post_burst)
    workspace = default_workspace()
    workspace.app = replace(
        workspace.app, bot_token=args.bot_token, signing_secret=args.signing_secret
    )
    emulator = SlackEmulator(workspace, host=args.host, port=args.port, posting_limit=limit,
                             method_limits=MethodLimits.off() if args.no_method_limits
                             else MethodLimits.from_env())
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
