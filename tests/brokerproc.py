"""Start and stop real Tidelog broker processes for tests (by PID, never by name)."""

from __future__ import annotations

import atexit
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# Environment variables that may differ between a broker's request and the zygote's own
# environment (tests/broker_zygote.py): read after the broker's start, not by an import or the
# interpreter's start-up. Any other difference and the broker is started by an exec instead.
_READ_AT_RUN_TIME = ("PYTEST_CURRENT_TEST", "TIDELOG_")
_READ_AT_IMPORT = ("TIDELOG_CLOCK_SKEW_MS", "TIDELOG_FAULTS")  # tidelog/clock.py, tidelog/storage/faults.py


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
        self.proc = spawn_broker(args, self.log_path, {**os.environ, "PYTHONUNBUFFERED": "1"}, self.nofile)
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


def spawn_broker(args: list[str], log_path: Path, env: dict[str, str], nofile: tuple[int, int] | None = None):
    """``subprocess.Popen(args, stdout=log, stderr=STDOUT, env=env)`` of a ``python -m tidelog``
    command with RLIMIT_NOFILE ``nofile``: forked from the zygote (tests/broker_zygote.py, the
    imports paid once) where the command and environment allow, else exec'd. Either way the
    result has Popen's ``pid``, ``returncode``, ``poll``, ``wait``, ``send_signal``, ``kill``.
    TESTS_BROKER_ZYGOTE=0 execs every broker."""
    if _zygote.fits(args, env):
        try:
            return _zygote.spawn(args, log_path, env, nofile)
        except _ZygoteGone:
            pass  # the zygote failed to start or died: exec (its error is in its log)
    limits = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)) if nofile else None
    with open(log_path, "ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=limits)


class _ZygoteGone(Exception):
    pass


class _Zygote:
    """This test process's zygote: started at the first broker, stopped when the process exits
    (its socket closes). One request at a time (tests start brokers from threads too)."""

    def __init__(self) -> None:
        self.owner = -1
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.reader = None
        self.env: dict[str, str] = {}
        self.lock = threading.Lock()
        self.broken = False

    def fits(self, args: list[str], env: dict[str, str]) -> bool:
        if self.broken or os.environ.get("TESTS_BROKER_ZYGOTE") == "0" or args[:3] != [sys.executable, "-m", "tidelog"]:
            return False
        base = self.env if self.owner == os.getpid() else _zygote_env(env)
        return all(env.get(name) == base.get(name) for name in env.keys() | base.keys()
                   if name in _READ_AT_IMPORT or not name.startswith(_READ_AT_RUN_TIME))

    def spawn(self, args: list[str], log_path: Path, env: dict[str, str], nofile) -> "ZygoteChild":
        with self.lock:
            if self.owner != os.getpid():
                self._start(env, log_path.parent)
            pid = self._ask({"spawn": {"args": args, "env": env, "cwd": os.getcwd(), "log": str(log_path),
                                       "nofile": list(nofile) if nofile else None}})["pid"]
        return ZygoteChild(self, pid, args)

    def poll(self, child: "ZygoteChild") -> int | None:
        """``child.returncode``, asked of the zygote until it has one (one question at a time:
        the zygote answers a child's exit once, then forgets it)."""
        with self.lock:
            if child.returncode is None:
                child.returncode = self._ask({"poll": child.pid})["returncode"]
                if child.returncode is not None:
                    os.close(child._pidfd)
                    child._pidfd = None
            return child.returncode

    def _start(self, env: dict[str, str], log_dir: Path) -> None:
        ours, theirs = socket.socketpair()
        log = open(log_dir / "zygote.log", "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("broker_zygote.py")), str(theirs.fileno())],
                                         stdout=log, stderr=subprocess.STDOUT, env=_zygote_env(env), pass_fds=(theirs.fileno(),))
        finally:
            log.close()
            theirs.close()
        self.owner, self.sock, self.reader, self.env = os.getpid(), ours, ours.makefile("rb"), _zygote_env(env)
        atexit.register(self._stop)

    def _ask(self, request: dict) -> dict:
        try:
            self.sock.sendall(json.dumps(request).encode() + b"\n")
            line = self.reader.readline()
        except OSError:
            line = b""
        if not line:
            self.broken = True
            raise _ZygoteGone()
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"broker zygote: {answer['error']}")
        return answer

    def _stop(self) -> None:
        if self.owner == os.getpid() and self.sock is not None:
            self.reader.close()
            self.sock.close()  # the zygote reads the end of its input and exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _zygote_env(env: dict[str, str]) -> dict[str, str]:
    """The zygote's own environment: a broker's without what one broker's start reads for itself."""
    return {name: value for name, value in env.items() if not name.startswith(_READ_AT_RUN_TIME)}


_zygote = _Zygote()


class ZygoteChild:
    """A broker forked by the zygote, seen as its Popen would be. The zygote reaps it when asked
    (``poll``), so its pid stays its own until then; ``wait`` sleeps on a pidfd."""

    def __init__(self, zygote: _Zygote, pid: int, args: list[str]) -> None:
        self.zygote = zygote
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            return self.zygote.poll(self)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            select.select([self._pidfd], [], [], left)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __del__(self) -> None:
        if getattr(self, "_pidfd", None) is not None:
            try:
                os.close(self._pidfd)
            except OSError:
                pass


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
