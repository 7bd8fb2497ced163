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
worker trusts the demo CA besides the public ones through ``SSL_CERT_FILE``. No name is
resolved differently. The CA and the certificate are made with ``cryptography``
(:func:`make_tls`), which the end-to-end test of the seed uses too.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from elastic_emulator.elasticsearch import ElasticsearchEmulator
from elastic_emulator.kibana import API_KEY as KIBANA_API_KEY
from elastic_emulator.kibana import KibanaEmulator
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
                                     "headers": dict(self.headers), "body": body})
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
        self.ca, cert, key = make_tls(self.directory)
        self.edr = StandInEDR(cert, key)
        edr_port = self.edr.port
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


def make_tls(directory: Path, host: str = EDR_HOST) -> tuple[Path, Path, Path]:
    """A CA made for the occasion and a certificate for ``host`` it signed, written in
    ``directory``: (the CA's certificate, the host's certificate, its key), PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def built(subject: str, issuer: str, public: Any, signer: Any, *, ca: bool) -> Any:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(public).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        else:
            builder = (builder
                       .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]),
                                      critical=False)
                       .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                      critical=False))
        return builder.sign(signer, hashes.SHA256())

    ca_key, host_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_cert = built("Signoff stand-in CA", "Signoff stand-in CA", ca_key.public_key(), ca_key,
                    ca=True)
    host_cert = built(host, "Signoff stand-in CA", host_key.public_key(), ca_key, ca=False)
    ca, cert, key = directory / "stand-in-ca.pem", directory / "edr.pem", directory / "edr.key"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert.write_bytes(host_cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(host_key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca, cert, key


def _trust_bundle(ca: Path) -> Path:
    """A CA bundle of the public CAs httpx trusts by default (certifi's) and ``ca``."""
    import certifi

    bundle = ca.with_name("trusted-cas.pem")
    bundle.write_text(Path(certifi.where()).read_text(encoding="ascii") + "\n"
                      + ca.read_text(encoding="ascii"), encoding="ascii")
    return bundle
