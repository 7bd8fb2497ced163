"""A private ``redis-server`` on a free loopback port, for the demo and the tests.

Production points ``REDIS_URL`` at a real, persistent Redis; this exists so that
``make demo`` and ``make test`` work on a machine with nothing configured.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

INSTALL_HINT = (
    "redis-server is not installed. Install it (Debian/Ubuntu: 'sudo apt-get install "
    "redis-server'; macOS: 'brew install redis') or set REDIS_URL to a Redis you run."
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Start, stop and restart a throwaway redis-server; ``appendonly`` keeps data across restarts."""

    def __init__(self, *, appendonly: bool = False, port: int | None = None,
                 directory: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.binary = binary
        self.appendonly = appendonly
        self.port = port or free_port()
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="signoff-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", self.directory, "--save", "", "--daemonize", "no",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always" if self.appendonly else "everysec",
            "--logfile", str(Path(self.directory) / "redis.log"),
            # README's production setting: an execution's hash stays one listpack.
            "--hash-max-listpack-value", "4096",
        ]
        # Its own session: a Ctrl-C in the terminal reaches our processes, which stop the
        # server after their workers, instead of killing it under them.
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}; "
                                       f"see {self.directory}/redis.log") from None
                try:  # waits 20 ms, and notices a server that exited at once
                    self.process.wait(timeout=0.02)
                    raise RuntimeError(f"redis-server exited at start; "
                                       f"see {self.directory}/redis.log")
                except subprocess.TimeoutExpired:
                    pass
        client.close()
        return self

    def stop(self, *, hard: bool = False) -> None:
        """Stop the server; ``hard`` kills it with SIGKILL, as a crash would."""
        if self.process is None:
            return
        if hard:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, *, hard: bool = False) -> None:
        self.stop(hard=hard)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def env_or_private_url() -> Iterator[str]:
    """REDIS_URL when set, else a private redis-server's URL (on a free port), the server
    stopped when the block ends: the tests' and the benchmarks' Redis."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis().start()
    try:
        yield server.url
    finally:
        server.close()
