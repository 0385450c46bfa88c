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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
