"""Slack Web API calls over HTTPS: the bot's client against slack_sdk's stock WebClient.

    python benchmarks/slack_calls.py [--calls 300] [--rounds 3]

slack.com only speaks HTTPS, and slack_sdk's WebClient opens a new connection, so a new
TLS session, for every call. The bot's client (bot.ratelimit.LimitedClient) keeps its
connection open between calls (bot.slack_http). This starts the Slack emulator over
HTTPS (a CA and a certificate for ``localhost`` made for the run) and times ``--calls``
``chat.update`` calls with each client, alternating, ``--rounds`` times: the calling
thread's CPU per call (to the nanosecond, the emulator's threads excluded) and the wall
time per call, medians of the rounds, and the ratio of the kept connection's CPU to the
stock client's. ``benchmarks/slack.py`` measures a click's worker over plain HTTP, where
this saving is a TCP handshake only.
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slack_sdk import WebClient  # noqa: E402

from bot.ratelimit import LimitedClient  # noqa: E402
from demo.elastic import make_tls  # noqa: E402
from slack_emulator import MethodLimits, PostingLimit, SlackEmulator  # noqa: E402

CHANNEL = "C0REVIEWS"
WARMUP = 20


def per_call(client: WebClient, ts: str, calls: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of this thread per chat.update."""
    for n in range(WARMUP):
        client.chat_update(channel=CHANNEL, ts=ts, text=f"warm {n}")
    cpu, wall = time.thread_time(), time.perf_counter()
    for n in range(calls):
        client.chat_update(channel=CHANNEL, ts=ts, text=f"call {n}")
    return (time.thread_time() - cpu) / calls, (time.perf_counter() - wall) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="chat.update calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each client alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="signoff-bench-tls-") as directory:
        ca, cert, key = make_tls(Path(directory), host="localhost")
        emulator = SlackEmulator(posting_limit=PostingLimit.off(),
                                 method_limits=MethodLimits.off(),
                                 tls=(str(cert), str(key))).start()
        try:
            trust = ssl.create_default_context(cafile=str(ca))
            stock = WebClient(token=emulator.bot_token, base_url=emulator.api_url, ssl=trust)
            kept = LimitedClient(token=emulator.bot_token, base_url=emulator.api_url, ssl=trust)
            ts = str(stock.chat_postMessage(channel=CHANNEL, text="benchmark")["ts"])
            rounds: dict[str, list[tuple[float, float]]] = {"stock": [], "kept": []}
            for _ in range(args.rounds):
                rounds["stock"].append(per_call(stock, ts, args.calls))
                rounds["kept"].append(per_call(kept, ts, args.calls))
            opened = kept.kept.opened
            kept.kept.close()
        finally:
            emulator.stop()
    cpu = {name: statistics.median(c for c, _ in found) for name, found in rounds.items()}
    wall = {name: statistics.median(w for _, w in found) for name, found in rounds.items()}
    print(f"{args.calls} chat.update calls x {args.rounds} rounds over HTTPS to the emulator "
          f"(medians of the rounds)")
    print(f"slack_sdk WebClient (a TLS session per call): CPU {cpu['stock'] * 1e3:.3f} ms, "
          f"wall {wall['stock'] * 1e3:.3f} ms per call")
    print(f"the bot's client (connection kept):           CPU {cpu['kept'] * 1e3:.3f} ms, "
          f"wall {wall['kept'] * 1e3:.3f} ms per call; {opened} connection(s) opened")
    print(f"kept / stock: CPU {cpu['kept'] / cpu['stock']:.2f}x, "
          f"wall {wall['kept'] / wall['stock']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
