"""Start and stop real Tidelog broker processes for tests (by PID, never by name)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


class BrokerProcess:
    """A ``tidelog serve`` subprocess on a free loopback port with its own data dir."""

    def __init__(self, data_dir: Path, settings: dict[str, str] | None = None, port: int = 0,
                 nofile: tuple[int, int] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.settings = dict(settings or {})
        self.port = port
        self.nofile = nofile  # (soft, hard) RLIMIT_NOFILE for the broker process
        self.proc: subprocess.Popen | None = None
        self.metrics_port = -1
        self.listener_ports: dict[str, int] = {}
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> "BrokerProcess":
        port_file = self.data_dir.parent / f"{self.data_dir.name}.port"
        port_file.unlink(missing_ok=True)
        args = [sys.executable, "-m", "tidelog", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--port-file", str(port_file)]
        for name, value in self.settings.items():
            args += ["--set", f"{name}={value}"]
        log = open(self.log_path, "ab")
        limits = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)) if self.nofile else None
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                     preexec_fn=limits)
        log.close()
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"broker did not start within {timeout_s}s:\n{self.log()}")
            time.sleep(0.02)
        kafka_port, http_port, *listeners = port_file.read_text().split()
        self.port, self.metrics_port = int(kafka_port), int(http_port)
        # Several listeners (``listeners``): their ports by name, NAME=port,...
        self.listener_ports = {name: int(port) for name, port in (item.split("=") for item in
                                                                  (listeners[0].split(",") if listeners else []))}
        _wait_listening(self.port, deadline)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait: a clean shutdown. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"broker ignored SIGTERM for {timeout_s}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> "BrokerProcess":
        """Start again on the same port and data dir."""
        return self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _wait_listening(port: int, deadline: float) -> None:
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def wait_until(condition, timeout_s: float = 15.0, interval_s: float = 0.02, message: str = "condition"):
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)
