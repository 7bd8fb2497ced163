"""``python -m openai_emulator [--port 8010] [--model gpt-4o-mini] [--api-key KEY]``: serve
the emulator in the foreground, answering every structured request with a value that
satisfies its schema (no answers are scripted from the command line)."""

from __future__ import annotations

import argparse

from openai_emulator.server import DEFAULT_KEY, DEFAULT_MODELS, OpenAIEmulator


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m openai_emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--model", action="append", help="a model it serves (repeatable)")
    parser.add_argument("--api-key", default=DEFAULT_KEY)
    args = parser.parse_args()
    emulator = OpenAIEmulator(models=tuple(args.model or DEFAULT_MODELS), api_key=args.api_key,
                              host=args.host, port=args.port)
    print(f"OpenAI emulator on {emulator.root_url}/v1 (models: {', '.join(emulator.models)})",
          flush=True)
    emulator.serve_forever()


if __name__ == "__main__":
    main()
