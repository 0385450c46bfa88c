"""The deployment files, run as plain processes (Docker and systemd do not run on the test
machines): the Dockerfile's promises (slim base, non-root user, data volume, health check on
/ready), the image's entry point as the image runs it (alone, and as the compose file's three
brokers with etcd, its HEALTHCHECK command probing each), and the systemd unit's ExecStart
with its environment, open-files limit and stop signal."""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.brokerproc import wait_until
from tests.etcdproc import EtcdProcess, etcd_binary, free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
COMPOSE = ROOT / "deploy" / "compose.yaml"
UNIT = ROOT / "deploy" / "tidelog.service"
BIN = Path(sys.executable).parent  # the venv's tidelog console script is here


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def healthcheck_command() -> list[str]:
    [healthcheck] = [args for name, args in dockerfile_instructions() if name == "HEALTHCHECK"]
    return shlex.split(healthcheck.split(" CMD ", 1)[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDELOG_")}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1", **extra}


class Started:
    """A process started from a deployment file, on loopback, with its ports from --port-file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, port_file: Path, **popen) -> None:
        self.port_file = port_file
        self.log_path = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen)
        wait_until(lambda: port_file.exists() or self.proc.poll() is not None, 60, message=f"{args[0]} to bind")
        assert self.proc.poll() is None, log.read_text()
        self.port, self.http_port = (int(x) for x in port_file.read_text().split())

    def healthy(self) -> bool:
        """The image's HEALTHCHECK command, as Docker would run it inside the container."""
        env = clean_env(TIDELOG_HTTP_PORT=str(self.http_port))
        return subprocess.run(healthcheck_command(), env=env, capture_output=True, timeout=30).returncode == 0

    def stop(self, sig: int | None = signal.SIGTERM, timeout_s: float = 90) -> int:
        """Send ``sig`` (None: it was sent already) and wait for the exit code."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_dockerfile_is_slim_non_root_with_a_volume_and_a_ready_health_check():
    instructions = dockerfile_instructions()
    named = {}
    for name, args in instructions:
        named.setdefault(name, []).append(args)
    # A build stage compiles the C extension; the image itself is the slim base without a compiler.
    assert all(re.fullmatch(r"python:3\.1\d-slim(-\w+)?( AS \w+)?", base) for base in named["FROM"]), named["FROM"]
    assert "setup.py" in " ".join(named["COPY"]) and "gcc" not in " ".join(named["RUN"][1:])
    [user] = named["USER"]
    assert user not in ("root", "0") and "useradd --system" in " ".join(named["RUN"])
    # The USER comes after every RUN of the image's stage: the broker never runs as root.
    positions = [name for name, _ in instructions]
    assert max(i for i, n in enumerate(positions) if n == "RUN") < positions.index("USER")
    assert positions.index("USER") > max(i for i, n in enumerate(positions) if n == "FROM")
    assert named["VOLUME"] == ['["/var/lib/tidelog"]']
    assert "/ready" in named["HEALTHCHECK"][0] and "--start-period" in named["HEALTHCHECK"][0]
    assert named["ENTRYPOINT"] == ['["docker-entrypoint.sh"]']
    assert "deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh" in named["COPY"]
    assert os.access(ENTRYPOINT, os.X_OK)


def test_image_entrypoint_serves_and_the_health_check_follows_ready(tmp_path):
    data = tmp_path / "volume"
    env = clean_env(TIDELOG_DATA_DIR=str(data), TIDELOG_HOST="127.0.0.1", TIDELOG_HTTP_HOST="127.0.0.1",
                    TIDELOG_HTTP_PORT="0")
    broker = Started([str(ENTRYPOINT), "--port", "0", "--port-file", str(tmp_path / "ports")], env, tmp_path / "log",
                     tmp_path / "ports")
    try:
        wait_until(broker.healthy, 60, interval_s=0.2, message="the image's health check to pass")
        assert (data / ".lock").exists()  # the volume is the data directory
        with urllib.request.urlopen(f"http://127.0.0.1:{broker.http_port}/api/v1/cluster", timeout=10) as response:
            assert b'"ready": true' in response.read()
        # Another command runs as given, next to the broker.
        result = subprocess.run([str(ENTRYPOINT), "tidelog", "topics", "list", "-b", f"127.0.0.1:{broker.port}", "--internal"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.split() == ["__consumer_offsets"], result.stderr
        assert broker.stop() == 0  # docker stop: SIGTERM, a clean shutdown
    finally:
        broker.kill()
    assert not broker.healthy()
    assert "shutdown complete" in (tmp_path / "log").read_text()
    assert (data / ".clean-shutdown").exists()


@pytest.mark.slow
def test_compose_cluster_as_plain_processes(tmp_path):
    """The compose file's three brokers, each run through the image's entry point with its
    environment (the service names mapped to loopback ports), and its etcd."""
    etcd_binary()  # skips without etcd
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    brokers = {name: s for name, s in services.items() if name.startswith("broker-")}
    assert sorted(brokers) == ["broker-1", "broker-2", "broker-3"] and "etcd" in services
    assert sorted(s["environment"]["TIDELOG_NODE_ID"] for s in brokers.values()) == ["1", "2", "3"]
    for name, service in brokers.items():
        assert service["environment"]["TIDELOG_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert service["environment"]["TIDELOG_CLUSTER"] == "etcd://etcd:2379"
        assert service["volumes"] == [f"{name}-data:/var/lib/tidelog"] and f"{name}-data" in compose["volumes"]
        assert all(port.startswith("127.0.0.1:") for port in service["ports"]), "HTTP is published on loopback only"
        assert service["depends_on"]["etcd"]["condition"] == "service_healthy"
        assert service["build"]["context"] == ".." and (COMPOSE.parent / service["build"]["context"] / "Dockerfile").exists()

    etcd = EtcdProcess(tmp_path / "etcd")
    etcd.start()
    started: dict[str, Started] = {}
    try:
        kafka_ports = {name: free_port() for name in brokers}
        for name, service in sorted(brokers.items()):
            env = {k: str(v) for k, v in service["environment"].items()}
            env["TIDELOG_CLUSTER"] = env["TIDELOG_CLUSTER"].replace("etcd:2379", etcd.endpoint)
            env["TIDELOG_ADVERTISED_LISTENERS"] = f"PLAINTEXT://127.0.0.1:{kafka_ports[name]}"
            env.update(TIDELOG_PORT=str(kafka_ports[name]), TIDELOG_HOST="127.0.0.1", TIDELOG_HTTP_HOST="127.0.0.1",
                       TIDELOG_HTTP_PORT="0", TIDELOG_DATA_DIR=str(tmp_path / f"{name}-data"),
                       TIDELOG_BROKER_SESSION_TIMEOUT_MS="2000")
            started[name] = Started([str(ENTRYPOINT), "--port-file", str(tmp_path / f"{name}.ports")], clean_env(**env),
                                    tmp_path / f"{name}.log", tmp_path / f"{name}.ports")
        for name, broker in started.items():
            wait_until(broker.healthy, 60, interval_s=0.2, message=f"{name}'s health check")
        bootstrap = ",".join(f"127.0.0.1:{port}" for port in kafka_ports.values())
        # The compose file's defaults are the cluster's: replication factor 3.
        created = subprocess.run([sys.executable, "-m", "tidelog", "topics", "create", "orders", "--partitions", "3", "-b", bootstrap],
                                 capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        http = started["broker-2"].http_port
        def described():
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/v1/topics/orders", timeout=10) as response:
                import json

                return json.loads(response.read())
        wait_until(lambda: all(len(p["isr"]) == 3 for p in described()["partitions"]), 30, message="orders fully replicated")
        assert all(sorted(p["replicas"]) == [1, 2, 3] for p in described()["partitions"])
        assert {c["name"]: c["value"] for c in described()["configs"]}["min.insync.replicas"] == "2"
    finally:
        for broker in started.values():
            broker.proc.send_signal(signal.SIGTERM)
        for broker in started.values():
            try:
                broker.stop(None)
            finally:
                broker.kill()
        etcd.kill()
    assert all(broker.proc.returncode == 0 for broker in started.values()), [b.proc.returncode for b in started.values()]


def unit_service_section() -> dict[str, list[str]]:
    section: dict[str, list[str]] = {}
    current = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line
            continue
        if current == "[Service]":
            key, _, value = line.partition("=")
            section.setdefault(key, []).append(value)
    return section


def test_systemd_unit_verifies_and_its_command_line_runs_with_its_limits(tmp_path):
    service = unit_service_section()
    assert service["User"] == ["tidelog"] and service["KillSignal"] == ["SIGTERM"]
    limit = int(service["LimitNOFILE"][0])
    assert limit >= 100000
    [exec_start] = service["ExecStart"]
    args = shlex.split(exec_start)
    assert args[0] == "/opt/tidelog/venv/bin/tidelog" and args[1] == "serve"

    if shutil.which("systemd-analyze"):
        local_unit = tmp_path / "tidelog.service"
        local_unit.write_text(UNIT.read_text().replace("/opt/tidelog/venv/bin/tidelog", str(BIN / "tidelog")))
        verified = subprocess.run(["systemd-analyze", "verify", str(local_unit)], capture_output=True, text=True, timeout=60)
        assert verified.returncode == 0 and verified.stderr == "", verified.stderr

    # ExecStart as systemd would run it: the unit's environment (the Kafka listener on loopback
    # here), its paths mapped into the test's directory, its open-files limit; free ports.
    config = tmp_path / "etc" / "broker.toml"
    config.parent.mkdir()
    shutil.copyfile(ROOT / "deploy" / "broker.toml", config)
    paths = {"/opt/tidelog/venv/bin/tidelog": str(BIN / "tidelog"), "/etc/tidelog/broker.toml": str(config),
             "/var/lib/tidelog": str(tmp_path / "state")}
    args = [paths.get(arg, arg) for arg in args] + ["--port", "0", "--port-file", str(tmp_path / "ports")]
    env = dict(value.split("=", 1) for value in service.get("Environment", []))
    assert env["TIDELOG_HOST"] == "0.0.0.0"
    env.update(TIDELOG_HOST="127.0.0.1", TIDELOG_HTTP_PORT="0")
    # The unit's limit where this machine allows it (raising the hard limit needs CAP_SYS_RESOURCE).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {max(limit, hard)}))"
    raisable = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30).returncode == 0
    wanted, wanted_hard = (limit, max(limit, hard)) if raisable else (min(limit, hard), hard)

    def apply_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted_hard))

    broker = Started(args, clean_env(**env), tmp_path / "log", tmp_path / "ports", preexec_fn=apply_limit)
    try:
        wait_until(broker.healthy, 60, interval_s=0.2, message="the unit's broker to be ready")
        limits = Path(f"/proc/{broker.proc.pid}/limits").read_text()
        assert re.search(rf"Max open files\s+{wanted}\s", limits), limits
        started = time.monotonic()
        assert broker.stop(getattr(signal, service["KillSignal"][0]), float(service["TimeoutStopSec"][0])) == 0
        assert time.monotonic() - started < float(service["TimeoutStopSec"][0])
    finally:
        broker.kill()
    log = (tmp_path / "log").read_text()
    assert log.lstrip().startswith("{") and '"message": "shutdown complete' in log  # TIDELOG_LOG_FORMAT=json
    assert (tmp_path / "state" / ".clean-shutdown").exists()
