"""A closed-loop HTTP load generator for the benchmarks: several processes, each with its own client.

One Python process with httpx tops out near 430 requests/s, below what the web
app serves, so the connections are spread over processes (``spawn``ed, so they
share nothing with the caller, its threads included). Each process keeps its
share of the connections busy with threads: a thread sends a request, reads the
whole answer, and only then sends its next one, so exactly ``concurrency``
requests are in flight until the work runs out.

The default client (``raw``) writes the prepared bytes to a kept-alive socket and
reads the answer by its Content-Length: ~0.1 ms of CPU a request here, against
~0.7 ms for httpx. That matters on a small machine, where every core the client
burns is taken from the server it measures; ``httpx`` is there to compare.

    with LoadGenerator(processes=4) as load:
        samples = load.run(requests, concurrency=32)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from urllib.parse import urlsplit

import httpx

READY = "ready"
CLIENTS = ("raw", "httpx")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 2.0


@dataclass(frozen=True)
class PreparedRequest:
    """A request built ahead of time, sent as is (a signed Slack request stays signed)."""

    method: str
    url: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    """One request as the load generator saw it."""

    index: int  # position in the list given to :meth:`LoadGenerator.run`
    sent_at: float  # time.time() just before the request went out
    latency: float  # seconds from then until the whole answer was read
    status: int  # HTTP status; 0 when the request failed (error says why)
    error: str = ""


class LoadGenerator:
    """``processes`` load processes, started once and reused for every :meth:`run`."""

    def __init__(self, processes: int = 4, *, client: str = "raw", timeout: float = 30.0) -> None:
        if client not in CLIENTS:
            raise ValueError(f"client must be one of {', '.join(CLIENTS)}, not {client!r}")
        self.size = processes
        self.client = client
        self.timeout = timeout
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self._pipes: list[Connection] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def start(self) -> LoadGenerator:
        context = multiprocessing.get_context("spawn")
        # Started with Ctrl-C ignored (they inherit it), so it stops them only through us.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for n in range(self.size):
                ours, theirs = context.Pipe()
                process = context.Process(target=_load_process,
                                          args=(theirs, self.client, self.timeout),
                                          name=f"load-{n}", daemon=True)
                process.start()
                theirs.close()
                self.processes.append(process)
                self._pipes.append(ours)
        finally:
            signal.signal(signal.SIGINT, previous)
        for pipe in self._pipes:
            if not pipe.poll(START_TIMEOUT):
                raise RuntimeError("a load process did not start")
            pipe.recv()
        return self

    def run(self, requests: Sequence[PreparedRequest], concurrency: int) -> list[Sample]:
        """Send every request, ``concurrency`` at a time; the samples in request order."""
        used = self._pipes[:max(1, min(len(self._pipes), concurrency))]
        shares = [concurrency // len(used) + (1 if n < concurrency % len(used) else 0)
                  for n in range(len(used))]
        # Hand every process its work first, then start them together.
        for n, pipe in enumerate(used):
            work = [(i, requests[i]) for i in range(n, len(requests), len(used))]
            pipe.send((work, shares[n]))
        for pipe in used:
            pipe.recv()
        for pipe in used:
            pipe.send(True)
        samples: list[Sample] = []
        for pipe in used:
            samples.extend(pipe.recv())
        return sorted(samples, key=lambda s: s.index)

    def close(self) -> None:
        """Stop the load processes; any still busy after STOP_TIMEOUT (an interrupted run) is killed."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=STOP_TIMEOUT)
        for pipe in self._pipes:
            pipe.close()
        self.processes.clear()
        self._pipes.clear()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _load_process(pipe: Connection, client: str, timeout: float) -> None:
    shared = (httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=None,
                                                                max_keepalive_connections=None))
              if client == "httpx" else None)
    connections: list[_RawConnection] = []  # kept open from one run to the next
    pipe.send(READY)
    try:
        while True:
            order = pipe.recv()
            if order is None:
                return
            work, threads = order
            senders: list[Sender]
            if shared is not None:
                senders = [_httpx_sender(shared) for _ in range(threads)]
            else:
                connections += [_RawConnection(timeout) for _ in range(threads - len(connections))]
                senders = list(connections[:threads])
            pipe.send(READY)
            pipe.recv()
            pipe.send(_drive(work, senders))
    finally:
        for connection in connections:
            connection.close()
        if shared is not None:
            shared.close()


Sender = Callable[[PreparedRequest], int]


def _drive(work: list[tuple[int, PreparedRequest]], senders: Sequence[Sender]) -> list[Sample]:
    """Send ``work`` over ``senders``, one thread each, each thread one request at a time."""
    pending = iter(work)
    lock = threading.Lock()
    samples: list[Sample] = []

    def loop(send: Sender) -> None:
        while True:
            with lock:
                item = next(pending, None)
            if item is None:
                return
            index, request = item
            sent_at = time.time()
            started = time.perf_counter()
            try:
                status, error = send(request), ""
            except (OSError, ValueError, httpx.HTTPError) as exc:
                status, error = 0, f"{type(exc).__name__}: {exc}"
            sample = Sample(index, sent_at, time.perf_counter() - started, status, error)
            with lock:
                samples.append(sample)

    threads = [threading.Thread(target=loop, args=(send,), daemon=True) for send in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples


def _httpx_sender(client: httpx.Client) -> Sender:
    def send(request: PreparedRequest) -> int:
        response = client.request(request.method, request.url, content=request.body,
                                  headers=request.headers)
        return response.status_code

    return send


class _RawConnection:
    """HTTP/1.1 on one kept-alive socket; reads answers framed by Content-Length only."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.address: tuple[str, int] | None = None
        self.buffer = b""

    def __call__(self, request: PreparedRequest) -> int:
        url = urlsplit(request.url)
        address = (url.hostname or "127.0.0.1", url.port or 80)
        if self.sock is None or self.address != address:
            self.close()
            self.sock = socket.create_connection(address, timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.address = address
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        head = [f"{request.method} {target} HTTP/1.1", f"Host: {url.netloc}",
                f"Content-Length: {len(request.body)}"]
        head += [f"{name}: {value}" for name, value in request.headers]
        try:
            self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + request.body)
            return self._read_answer()
        except (OSError, ValueError):
            self.close()
            raise

    def _read_answer(self) -> int:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = None
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise ValueError("chunked answers are not supported")
        if length is None:
            raise ValueError("an answer without Content-Length")
        self.buffer = rest
        while len(self.buffer) < length:
            self._fill()
        self.buffer = self.buffer[length:]
        if close:
            self.close()
        return status

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buffer = b""


class Stolen:
    """The share of the machine's CPU time its hypervisor gave to others (``steal`` in
    /proc/stat) since this was made: on a shared virtual machine, CPU times and latencies
    swing with it, so the benchmarks print it beside the load average."""

    def __init__(self) -> None:
        self.start = _cpu_times()

    def share(self) -> float | None:
        """Stolen / all CPU time since, or None where /proc/stat cannot be read."""
        now = _cpu_times()
        if self.start is None or now is None:
            return None
        total = now[0] - self.start[0]
        return (now[1] - self.start[1]) / total if total > 0 else 0.0

    def text(self) -> str:
        share = self.share()
        return "stolen by the hypervisor: unknown" if share is None else (
            f"stolen by the hypervisor: {share * 100:.0f}%")


def _cpu_times() -> tuple[int, int] | None:
    """All CPUs' time and the part stolen, in clock ticks (/proc/stat's ``cpu`` line)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(f) for f in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks), ticks[7]
