"""What Elastic's own example workflow calls, on loopback, for ``make demo``.

The seed workflow (``tests/engine/workflows/isolate-host-with-approval.yml``, Elastic's
human-in-the-loop guide, byte for byte) opens a case in Kibana, searches the host's logs
in Elasticsearch, has a model classify them through an OpenAI connector, asks a person,
isolates the host through ``https://edr.example.com/isolate`` and comments on the case.
Here those are the Kibana, Elasticsearch and OpenAI emulators (in this process), and a
stand-in EDR serving TLS on a loopback port with a certificate for ``edr.example.com``
from a CA made for this demo. The connections file names them as an operator would; its
secrets are ``${ENV}`` references to variables :meth:`ElasticSide.env` sets. The
``edr-connector`` reaches the stand-in with ``connect-to`` (curl's ``--connect-to``): the
step's URL, Host header, SNI and certificate check stay ``edr.example.com``'s, and the
worker trusts the demo CA besides the public ones through ``SSL_CERT_FILE``. No name is resolved differently.

Without the ``openssl`` command, no certificate can be made: the stand-in EDR is not
started, ``connect-to`` points at a port that speaks no TLS, and the isolate step fails
visibly instead of pretending.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from elastic_emulator.elasticsearch import ElasticsearchEmulator
from elastic_emulator.kibana import API_KEY as KIBANA_API_KEY
from elastic_emulator.kibana import KibanaEmulator
from engine.state.embedded_redis import free_port
from openai_emulator import OpenAIEmulator

EDR_HOST = "edr.example.com"
LOG_INDEX = "logs-endpoint"
CATEGORY = "confirmed_compromise"
RATIONALE = ("Beaconing every 60 s to 203.0.113.9, a listed C2 address; a new persistence "
             "service was installed 4 minutes earlier.")
CATEGORIES = ("confirmed_compromise", "likely_benign", "needs_review")


def host_logs(host: str) -> list[dict[str, Any]]:
    """The logs the demo indexes: three for the alert's host, one for another."""
    return [
        {"@timestamp": "2026-12-04T09:56:02Z", "host": {"name": host},
         "event": {"action": "service-installed"},
         "message": "new service 'WinUpdateHelper' installed, runs C:\\ProgramData\\wuh.exe"},
        {"@timestamp": "2026-12-04T10:00:00Z", "host": {"name": host},
         "destination": {"ip": "203.0.113.9", "port": 443},
         "message": "outbound connection to 203.0.113.9:443 (every 60 s since 09:56)"},
        {"@timestamp": "2026-12-04T10:01:00Z", "host": {"name": host},
         "process": {"name": "wuh.exe"}, "message": "wuh.exe read lsass.exe memory"},
        {"@timestamp": "2026-12-04T10:02:00Z", "host": {"name": "web-prod-08"},
         "message": "nightly backup finished"},
    ]


class StandInEDR:
    """An EDR's isolate endpoint: HTTPS on a loopback port, recording what it is sent."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.requests: list[dict[str, Any]] = []
        requests, lock = self.requests, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with lock:
                    requests.append({"path": self.path, "host": self.headers.get("Host"),
                                     "body": body})
                answer = json.dumps({"status": "isolation requested"}).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="demo-edr",
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ElasticSide:
    """Kibana, Elasticsearch, the model and the EDR the seed workflow calls."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.kibana = KibanaEmulator()
        self.elasticsearch = ElasticsearchEmulator()
        self.openai_key = f"sk-demo-{secrets.token_hex(12)}"
        self.openai = OpenAIEmulator(api_key=self.openai_key)
        self.edr_token = secrets.token_urlsafe(16)
        self.edr: StandInEDR | None = None
        self.ca: Path | None = None
        self.connectors = directory / "connectors.yaml"

    def start(self) -> ElasticSide:
        self.kibana.start()
        self.elasticsearch.start()
        self.openai.start()
        if shutil.which("openssl") is not None:
            self.ca, cert, key = _tls_files(self.directory)
            self.edr = StandInEDR(cert, key)
            edr_port = self.edr.port
        else:
            edr_port = free_port()  # nothing listens: the isolate step fails, saying so
        self.connectors.write_text(f"""\
# The seed workflow's connections, as an operator writes them; secrets from the environment.
kibana: {{type: kibana, url: "{self.kibana.base_url}", api-key: "${{KIBANA_API_KEY}}"}}
elasticsearch: {{type: elasticsearch, url: "{self.elasticsearch.url}", api-key: "${{ES_API_KEY}}"}}
my-openai: {{type: openai, url: "{self.openai.base_url}", model: {self.openai.models[0]},
             api-key: "${{OPENAI_API_KEY}}"}}
edr-connector: {{type: http, url: "https://{EDR_HOST}", connect-to: "127.0.0.1:{edr_port}",
                 headers: {{Authorization: "Bearer ${{EDR_TOKEN}}"}}}}
""")
        return self

    def env(self) -> dict[str, str]:
        """What ``signoff serve`` and ``signoff worker`` need to use these connections."""
        env = {"SIGNOFF_CONNECTORS": str(self.connectors), "KIBANA_API_KEY": KIBANA_API_KEY,
               "ES_API_KEY": self.elasticsearch.api_key, "OPENAI_API_KEY": self.openai_key,
               "EDR_TOKEN": self.edr_token}
        if self.ca is not None:
            # The public CAs (certifi's, httpx's default) and the demo's: a real HTTPS call
            # from the demo's processes (a Slack workspace, say) still verifies.
            env["SSL_CERT_FILE"] = str(_trust_bundle(self.ca))
        return env

    def prepare_alert(self, host: str) -> None:
        """Index the host's logs and script the model's verdict on them."""
        for number, log in enumerate(host_logs(host), 1):
            self.elasticsearch.put(LOG_INDEX, log, f"demo-{number}")
        self.openai.answer({"category": CATEGORY, "rationale": RATIONALE})

    def lines(self) -> list[str]:
        """The cases with their comments, then what the EDR was asked."""
        found = []
        for case in self.kibana.cases():
            found.append(f"case {case['id'][:8]} {case['title']!r} ({case['status']})")
            found.extend(f"  comment: {' '.join(str(c['comment']).split())}"
                         for c in case["comments"] if c.get("type") == "user")
        for request in self.edr.requests if self.edr is not None else ():
            found.append(f"EDR POST https://{request['host']}{request['path']} "
                         f"{json.dumps(request['body'], ensure_ascii=False)}")
        return found

    def stop(self) -> None:
        if self.edr is not None:
            self.edr.stop()
            self.edr = None
        for emulator in (self.openai, self.elasticsearch, self.kibana):
            emulator.stop()


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA made for this demo and a certificate for :data:`EDR_HOST` it signed."""
    ca, ca_key = directory / "demo-ca.pem", directory / "demo-ca.key"
    cert, key, csr = directory / "edr.pem", directory / "edr.key", directory / "edr.csr"
    extensions = directory / "edr.ext"
    extensions.write_text(f"subjectAltName=DNS:{EDR_HOST}\nbasicConstraints=CA:FALSE\n"
                          "keyUsage=digitalSignature,keyEncipherment\n"
                          "extendedKeyUsage=serverAuth\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", "/CN=Signoff demo CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", f"/CN={EDR_HOST}"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", extensions],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, cert, key


def _trust_bundle(ca: Path) -> Path:
    """A CA bundle of the public CAs httpx trusts by default (certifi's) and ``ca``."""
    import certifi

    bundle = ca.with_name("trusted-cas.pem")
    bundle.write_text(Path(certifi.where()).read_text(encoding="ascii") + "\n"
                      + ca.read_text(encoding="ascii"), encoding="ascii")
    return bundle
