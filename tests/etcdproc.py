"""Start and stop a real etcd (the Debian package ``etcd-server``) on loopback ports, by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

INSTALL_HINT = "etcd is not installed: apt-get install -y etcd-server"


# A port handed to a broker or etcd member that the test kills and starts again on the same port
# must stay free while it is down. bind(0) picks from the kernel's ephemeral range, where any
# program's bind(0) and any outgoing connection's local port can take it in that gap ("address
# already in use" at the restart: two concurrent test runs did). So ports come from below the
# ephemeral range, from a block this test process claims by holding the block's first port bound
# (not listening): no bind(0), no outgoing connection and no other test run hands them out.
PORT_BLOCK = 256
_PORTS_BELOW_EPHEMERAL = 12_288  # the span below the ephemeral range that blocks are drawn from


class _PortBlock:
    """The block of loopback ports this process hands out (claimed on first use, and again in a
    forked child: the parent's block is the parent's)."""

    def __init__(self) -> None:
        self.owner = -1
        self.claim: socket.socket | None = None
        self.first = self.next = 0

    def port(self) -> int:
        if self.owner != os.getpid():
            self._claim()
        for _ in range(PORT_BLOCK - 1):
            port = self.next
            self.next = port + 1 if port + 1 < self.first + PORT_BLOCK else self.first + 1
            if _bindable(port):  # not held by some other program (or a process a test left behind)
                return port
        raise RuntimeError(f"no free port in the test block {self.first}-{self.first + PORT_BLOCK - 1}")

    def _claim(self) -> None:
        low, high = _ephemeral_range()
        # Below the ephemeral range first, then above it; a machine whose range leaves neither
        # a block (e.g. "1024 65535") gets a block inside it: rarely hit by an outgoing
        # connection's port, and still claimed against other test runs.
        spans = [(max(1024, low - _PORTS_BELOW_EPHEMERAL), low),
                 (high + 1, min(65536, high + 1 + _PORTS_BELOW_EPHEMERAL)), (1024, 65536)]
        for start, end in spans:
            blocks = max(0, end - start) // PORT_BLOCK
            for i in range(blocks):
                first = start + (os.getpid() + i) % blocks * PORT_BLOCK  # spread concurrent runs
                claim = socket.socket()
                try:
                    claim.bind(("127.0.0.1", first))  # no SO_REUSEADDR: a probe with it cannot bind here either
                except OSError:
                    claim.close()
                    continue
                if self.claim is not None:
                    self.claim.close()
                self.owner, self.claim, self.first, self.next = os.getpid(), claim, first, first + 1
                return
        raise RuntimeError("every test port block is taken")


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split()[:2])
            return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker and etcd bind: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


_ports = _PortBlock()


def free_port() -> int:
    """A free loopback port that stays this test process's while its user is down (above)."""
    return _ports.port()


def etcd_binary() -> str:
    """The etcd binary; installs etcd-server when running as root, else skips the test."""
    found = shutil.which("etcd")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"], check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, capture_output=True)
        found = shutil.which("etcd")
        if found:
            return found
    pytest.skip(INSTALL_HINT)


class EtcdProcess:
    """One etcd member on free loopback ports with its data under ``data_dir``; a member of
    ``initial_cluster`` ("name=peer-url,...") when given, else a cluster of its own."""

    def __init__(self, data_dir: Path, name: str = "tidelog-test", peer_port: int | None = None,
                 initial_cluster: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.name = name
        self.client_port = free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = initial_cluster
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-etcd.log"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def command(self) -> list[str]:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [etcd_binary(), "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self.initial_cluster or f"{self.name}={peer}", "--max-txn-ops", "10000",
                "--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "warn"]

    def start(self, timeout_s: float = 30.0, wait_healthy: bool = True) -> "EtcdProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait_healthy:
            self.start_waiting(timeout_s)
        return self

    def start_waiting(self, timeout_s: float = 30.0) -> None:
        """Wait until this (started) member reports healthy."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as response:
                    if b"true" in response.read():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"etcd did not become healthy within {timeout_s}s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-10000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class EtcdCluster:
    """``size`` etcd members on loopback forming one cluster; each member stopped by its PID."""

    def __init__(self, root: Path, size: int = 3) -> None:
        peer_ports = [free_port() for _ in range(size)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{port}" for i, port in enumerate(peer_ports))
        self.members = [EtcdProcess(Path(root) / f"etcd-m{i}", f"m{i}", port, initial) for i, port in enumerate(peer_ports)]

    @property
    def endpoint(self) -> str:
        """All client endpoints, comma-separated (as ``--cluster etcd://...`` takes them)."""
        return ",".join(member.endpoint for member in self.members)

    def start(self) -> "EtcdCluster":
        for member in self.members:  # a member is healthy only once a quorum has started
            member.start(wait_healthy=False)
        for member in self.members:
            member.start_waiting()
        return self

    def kill(self) -> None:
        for member in self.members:
            member.kill()
