"""A process whose ``http`` steps kept connections open closes them as it exits, rather than
leaving open sockets for the garbage collector to find (ResourceWarning)."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CALL = """
from engine.definition.egress import EgressPolicy, EgressRules
from engine.steps.http import shared_client
policy = EgressPolicy(allow=EgressRules.parse(["127.0.0.1/32"], "SIGNOFF_HTTP_ALLOW"))
answer = shared_client(policy).get("http://127.0.0.1:{port}/kept")
assert answer.status_code == 200, answer.status_code
print("called")
"""


class _KeptOpen(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the connection stays open after the answer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_a_process_closes_its_pooled_http_connections_as_it_exits():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeptOpen)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = subprocess.run(
            [sys.executable, "-X", "dev", "-c", CALL.format(port=server.server_address[1])],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert "called" in done.stdout
    assert "ResourceWarning" not in done.stderr, done.stderr
