"""A black-box fuzz campaign against a running broker: frames of every advertised API, generated
from Kafka's schemas (kio's dataclasses) and from captured client frames, then mutated.

Each round opens or reuses a connection, sends a burst of one to five frames pipelined, then an
ApiVersions v0 probe, and reads until the probe is answered or the broker closes. What counts
as a failure (``Campaign.failures``):

- out of order: a response to a request sent after one that got no answer (only Produce may
  go unanswered: acks=0), or a correlation id that was never sent;
- a hang: neither the probe answered nor the connection closed within ``round_timeout_s``;
- memory: the broker's RSS above ``max_rss_mib`` (sampled while the campaign runs; a few
  connections hold frames that announce 100 MiB and send 12 bytes, the whole time);
- the broker's log has an ERROR line or a traceback (checked by the caller, see
  ``broker_log_errors``).

Everything random comes from one ``random.Random(seed)``: a failure prints the seed and the
frames of the failing round (hex), so it replays. Run by hand for longer campaigns::

    python -m tests.integration.fuzzer --port 9092 --seed 7 --rounds 200000
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import time
from dataclasses import dataclass, field

from tests.schema_requests import INTERESTING, PACK, RequestWriter
from tidelog.protocol import apis

PROBE_API_KEY = 18
ANNOUNCED_BYTES = 100 << 20


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four byte-level edits: bit flips, boundary bytes and ints, cuts, inserts, deletes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out += bytes([rng.getrandbits(8)])
            continue
        pos = rng.randrange(len(out))
        kind = rng.randrange(7)
        if kind == 0:
            out[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[pos] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF])
        elif kind == 2:
            size = rng.choice([2, 4])
            out[pos : pos + size] = struct.pack(PACK[size], rng.choice(INTERESTING[size]))
        elif kind == 3:
            del out[pos:]
        elif kind == 4:
            out[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8)))
        elif kind == 5:
            del out[pos : pos + rng.randint(1, 8)]
        else:
            chunk = out[pos : pos + rng.randint(1, 16)]
            out[pos:pos] = chunk
    return bytes(out)


def frame(api_key: int, version: int, correlation_id: int, body: bytes, client_id: bytes = b"fuzz") -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    if apis.is_flexible(api_key, version) and not (api_key == PROBE_API_KEY and version < 3):
        header += b"\x00"
    return struct.pack(">i", len(header) + len(body)) + header + body


def _fetch_max_wait_offset(version: int) -> int:
    return 0 if version >= 15 else 4  # v15 moved replica_id into a tagged field


@dataclass
class Campaign:
    host: str
    port: int
    seed: int
    apis: dict[int, tuple[int, int]]  # advertised: api_key -> (min, max)
    golden: list[tuple[int, int, bytes]] = field(default_factory=list)  # (key, version, body)
    broker_pid: int | None = None
    max_rss_mib: int = 256
    round_timeout_s: float = 15.0
    slow_announcers: int = 4
    failures: list[str] = field(default_factory=list)
    rounds: int = 0
    frames: int = 0
    closed: int = 0
    answered: int = 0
    max_rss_kib: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.writer = RequestWriter(self.rng)
        self._announcers: list[socket.socket] = []
        self._conn: socket.socket | None = None
        self._next_cid = 1

    # --- one round -----------------------------------------------------------------------
    def _request(self) -> tuple[int, int, bytes]:
        """One request: a captured client frame or one written from the schema (well-formed, or
        with a few odd fields), then byte-level mutations one time in three."""
        rng = self.rng
        if self.golden and rng.random() < 0.15:
            api_key, version, body = rng.choice(self.golden)
        else:
            api_key = rng.choice(sorted(self.apis))
            low, high = self.apis[api_key]
            version = rng.randint(max(low, 3) if api_key == 0 else low, high)
            self.writer.wildness = rng.choice([0.0, 0.0, 0.02, 0.1])
            body = self.writer.body(api_key, version)
        if rng.random() < 0.33:
            body = mutate(rng, body)
        if api_key == 1:  # keep long polls short: the max wait is at a fixed place near the start
            at = _fetch_max_wait_offset(version)
            if len(body) >= at + 4:
                (max_wait,) = struct.unpack_from(">i", body, at)
                if max_wait > 500:
                    body = body[:at] + struct.pack(">i", max_wait % 500) + body[at + 4 :]
        if rng.random() < 0.03 and api_key != PROBE_API_KEY:
            version = rng.choice([self.apis[api_key][1] + 1, -1])
        return api_key, version, body

    def _connection(self) -> socket.socket:
        if self._conn is None or self.rng.random() < 0.1:
            if self._conn is not None:
                self._conn.close()
            self._conn = socket.create_connection((self.host, self.port), timeout=self.round_timeout_s)
        return self._conn

    def run_round(self) -> None:
        rng = self.rng
        requests = [self._request() for _ in range(rng.randint(1, 5))]
        sent: list[tuple[int, int, int, bytes]] = []  # (correlation id, api key, version, body)
        payload = bytearray()
        for api_key, version, body in requests:
            cid = self._next_cid
            self._next_cid += 1
            sent.append((cid, api_key, version, body))
            payload += frame(api_key, version, cid, body)
        probe_cid = self._next_cid
        self._next_cid += 1
        payload += frame(PROBE_API_KEY, 0, probe_cid, b"")
        self.rounds += 1
        self.frames += len(requests)
        conn = self._connection()
        problem = self._exchange(conn, bytes(payload), sent, probe_cid)
        if problem is not None:
            if self._conn is not None:  # what it sends next would be read as this round's answers
                self._conn.close()
                self._conn = None
            frames = "\n".join(f"  api {k} v{v} cid {c}: {b.hex()}" for c, k, v, b in sent)
            self.failures.append(f"round {self.rounds} (seed {self.seed}): {problem}\n{frames}")

    def _exchange(self, conn: socket.socket, payload: bytes, sent: list, probe_cid: int) -> str | None:
        try:
            conn.sendall(payload)
        except OSError:
            self._conn = None  # closed by the broker after an earlier round's last frame
            self.closed += 1
            return None
        pending = [(cid, api_key) for cid, api_key, _, _ in sent] + [(probe_cid, PROBE_API_KEY)]
        deadline = time.monotonic() + self.round_timeout_s
        reader = _FrameReader(conn)
        while pending:
            try:
                response = reader.next_frame(deadline)
            except TimeoutError:
                self._conn = None
                conn.close()
                return f"hang: no answer to correlation ids {[c for c, _ in pending]} and the connection is open"
            except (ConnectionError, OSError):
                self._conn = None
                self.closed += 1
                return None
            (cid,) = struct.unpack_from(">i", response)
            ids = [c for c, _ in pending]
            if cid not in ids:
                return f"out of order: response with correlation id {cid}, expected one of {ids}"
            skipped = pending[: ids.index(cid)]
            if any(api_key != 0 for _, api_key in skipped):
                return f"out of order: correlation id {cid} answered after {[c for c, _ in skipped]} got no answer"
            pending = pending[ids.index(cid) + 1 :]
            self.answered += 1
        return None

    # --- the campaign ----------------------------------------------------------------------
    def _open_announcers(self) -> None:
        """Connections that announce a 100 MiB frame and send 12 bytes or 300 KiB of it, held open."""
        for sock in self._announcers:
            sock.close()
        self._announcers = []
        for i in range(self.slow_announcers):
            sock = socket.create_connection((self.host, self.port), timeout=5)
            start = struct.pack(">i", ANNOUNCED_BYTES) + struct.pack(">hhih", 0, 9, 1, -1) + b"\x00\x00"
            sock.sendall(start + bytes(300 << 10 if i % 2 else 0))
            self._announcers.append(sock)

    def sample_rss(self) -> None:
        if self.broker_pid is None:
            return
        rss = rss_kib(self.broker_pid)
        self.max_rss_kib = max(self.max_rss_kib, rss)
        if rss > self.max_rss_mib * 1024 and not any(f.startswith("memory") for f in self.failures):
            self.failures.append(f"memory: broker RSS {rss // 1024} MiB > {self.max_rss_mib} MiB after round {self.rounds} (seed {self.seed})")

    def run(self, rounds: int, max_seconds: float, max_failures: int = 5) -> None:
        started = time.monotonic()
        self._open_announcers()
        try:
            while self.rounds < rounds and time.monotonic() - started < max_seconds and len(self.failures) < max_failures:
                self.run_round()
                if self.rounds % 50 == 0:
                    self.sample_rss()
                if self.rounds % 2000 == 0:
                    self._open_announcers()
            self.sample_rss()
        finally:
            for sock in self._announcers:
                sock.close()
            if self._conn is not None:
                self._conn.close()

    def summary(self) -> str:
        return (f"seed {self.seed}: {self.rounds} rounds, {self.frames} frames, {self.answered} answers, "
                f"{self.closed} connections closed by the broker, max broker RSS {self.max_rss_kib // 1024} MiB, "
                f"{len(self.failures)} failures")


class _FrameReader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self, size: int, deadline: float) -> None:
        while len(self.buffer) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError from None
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk

    def next_frame(self, deadline: float) -> bytes:
        self._fill(4, deadline)
        (size,) = struct.unpack_from(">i", self.buffer)
        self._fill(4 + size, deadline)
        data = bytes(self.buffer[4 : 4 + size])
        del self.buffer[: 4 + size]
        return data


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def advertised_apis(host: str, port: int) -> dict[int, tuple[int, int]]:
    """The broker's ApiVersions v0 answer: api_key -> (min, max)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(frame(PROBE_API_KEY, 0, 1, b""))
        data = _FrameReader(sock).next_frame(time.monotonic() + 10)
    _cid, error_code, count = struct.unpack_from(">ihi", data)
    assert error_code == 0
    return {key: (low, high) for key, low, high in (struct.unpack_from(">hhh", data, 10 + 6 * i) for i in range(count))}


def golden_bodies(folder) -> list[tuple[int, int, bytes]]:
    """Captured client frames (tests/golden/*.hex) as (api key, version, body)."""
    from tidelog.protocol.wire import parse_request_header

    bodies = []
    for path in sorted(folder.glob("*.hex")):
        data = bytes.fromhex(path.read_text().strip())
        api_key, version = struct.unpack_from(">hh", data)
        _, offset = parse_request_header(memoryview(data), apis.is_flexible(api_key, version))
        bodies.append((api_key, version, data[offset:]))
    return bodies


def broker_log_errors(log: str) -> list[str]:
    """Lines of a broker log that are ERROR or CRITICAL records or start a traceback."""
    return [line for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]


def main() -> None:
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 32))
    parser.add_argument("--rounds", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--pid", type=int, help="the broker's pid, to watch its RSS")
    args = parser.parse_args()
    campaign = Campaign(args.host, args.port, args.seed, advertised_apis(args.host, args.port),
                        golden_bodies(Path(__file__).parent.parent / "golden"), broker_pid=args.pid)
    campaign.run(args.rounds, args.seconds, max_failures=50)
    print(campaign.summary())
    for failure in campaign.failures:
        print(failure)


if __name__ == "__main__":
    main()
