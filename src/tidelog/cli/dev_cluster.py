"""``tidelog dev-cluster``: etcd and N brokers on loopback, for development and tests.

Starts one etcd member (the ``etcd`` binary on PATH: Debian's ``etcd-server`` package) and N
``tidelog serve --cluster`` processes, all on 127.0.0.1, with their data and logs under one
folder. Broker N listens for Kafka on ``--base-port`` + N - 1 and for HTTP (console, API,
metrics) on ``--http-base-port`` + N - 1 (0 for either: free ports). Prints every broker's
addresses, says which broker exited when one does, and on Ctrl-C (or SIGTERM) stops the brokers
then etcd, each by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import click

from tidelog.cli.errors import CliError

# Set per broker by dev-cluster itself; a --set of them would be overridden or collide.
_PER_BROKER = {"http.port": "--http-base-port", "node.id": "the broker's number", "broker.id": "the broker's number"}


@dataclass
class DevBroker:
    node_id: int
    proc: subprocess.Popen
    port_file: Path
    log: Path
    port: int = -1
    http_port: int = -1


def etcd_command(etcd: str, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [etcd, "--name", "tidelog-dev", "--data-dir", str(data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"tidelog-dev={peer}", "--max-txn-ops", "10000", "--log-level", "warn"]


def _http_scheme(sets: tuple[str, ...]) -> str:
    """https when the brokers serve HTTP over TLS (http.ssl.enable from --set or the environment,
    as each broker reads it), else http: the console links printed must be ones that answer."""
    from tidelog.config import BrokerConfig, ConfigError

    try:
        config = BrokerConfig.load(env=dict(os.environ), overrides={name.strip(): value.strip() for name, _, value in (s.partition("=") for s in sets)})
    except ConfigError:  # the brokers started, so they read it; say http rather than fail here
        return "http"
    return "https" if config["http.ssl.enable"] else "http"


def _wait_healthy(client_port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(f"etcd exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{client_port}/health", timeout=1) as response:
                if b"true" in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise CliError(f"etcd did not become healthy within {timeout_s:.0f}s; see {log}")


def _wait_started(broker: DevBroker, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker.proc.poll() is not None:
            raise CliError(f"broker {broker.node_id} exited with {broker.proc.returncode}: {_last_line(broker.log)} (log: {broker.log})")
        if broker.port_file.exists():
            broker.port, broker.http_port = (int(x) for x in broker.port_file.read_text().split()[:2])
            return
        time.sleep(0.05)
    raise CliError(f"broker {broker.node_id} did not start within {timeout_s:.0f}s; see {broker.log}")


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


@click.command("dev-cluster")
@click.option("--brokers", default=3, show_default=True, type=click.IntRange(1, 32), help="Number of brokers.")
@click.option("--data-dir", default="./tidelog-cluster", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--base-port", default=9092, show_default=True, type=click.IntRange(0, 65535),
              help="Broker N's Kafka port is base-port + N - 1 (0: free ports).")
@click.option("--http-base-port", default=9644, show_default=True, type=click.IntRange(-1, 65535),
              help="Broker N's HTTP port (console, API, metrics) is http-base-port + N - 1 (0: free ports, -1: no HTTP).")
@click.option("--etcd-port", default=2379, show_default=True, type=click.IntRange(1, 65534),
              help="etcd client port (the peer port is the next one).")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="A setting for every broker (repeatable).")
def dev_cluster(brokers: int, data_dir: Path, base_port: int, http_base_port: int, etcd_port: int, sets: tuple[str, ...]) -> None:
    """Run etcd and BROKERS brokers on loopback until Ctrl-C."""
    for setting in sets:
        name = setting.partition("=")[0].strip()
        if name in _PER_BROKER:
            raise CliError(f"--set {name}: dev-cluster sets it for each broker (use {_PER_BROKER[name]})")
    for option, base in (("--base-port", base_port), ("--http-base-port", http_base_port)):
        if base > 0 and base + brokers - 1 > 65535:
            raise CliError(f"{option} {base}: {brokers} brokers need ports up to {base + brokers - 1}, above 65535")
    etcd = shutil.which("etcd")
    if etcd is None:
        raise CliError("etcd is not installed (Debian/Ubuntu: sudo apt-get install -y etcd-server)")
    data_dir.mkdir(parents=True, exist_ok=True)
    etcd_proc: subprocess.Popen | None = None
    started: list[DevBroker] = []
    stop_requested = False

    def request_stop(*_):
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        etcd_log = data_dir / "etcd.log"
        with open(etcd_log, "ab") as log:
            etcd_proc = subprocess.Popen(etcd_command(etcd, data_dir / "etcd", etcd_port, etcd_port + 1),
                                         stdout=log, stderr=subprocess.STDOUT)
        _wait_healthy(etcd_port, etcd_proc, etcd_log)
        cluster = f"etcd://127.0.0.1:{etcd_port}"
        for node_id in range(1, brokers + 1):
            port_file = data_dir / f"broker-{node_id}.port"
            port_file.unlink(missing_ok=True)
            http_port = -1 if http_base_port < 0 else 0 if http_base_port == 0 else http_base_port + node_id - 1
            args = [sys.executable, "-m", "tidelog", "serve", "--cluster", cluster, "--broker-id", str(node_id),
                    "--host", "127.0.0.1", "--port", str(base_port + node_id - 1 if base_port else 0),
                    "--http-port", str(http_port),
                    "--data-dir", str(data_dir / f"broker-{node_id}"), "--port-file", str(port_file)]
            for setting in sets:
                args += ["--set", setting]
            log_path = data_dir / f"broker-{node_id}.log"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            started.append(DevBroker(node_id, proc, port_file, log_path))
        for broker in started:
            _wait_started(broker)
        click.echo(f"etcd:      {cluster} (log: {etcd_log})")
        scheme = _http_scheme(sets)
        for broker in started:
            console = f"{scheme}://127.0.0.1:{broker.http_port}/" if broker.http_port >= 0 else "off"
            click.echo(f"broker {broker.node_id}:  kafka 127.0.0.1:{broker.port}  console {console}  "
                       f"pid {broker.proc.pid}  log {broker.log}")
        click.echo(f"bootstrap: {','.join(f'127.0.0.1:{b.port}' for b in started)}")
        click.echo("Ctrl-C stops them all.", nl=True)
        sys.stdout.flush()
        running = list(started)
        while not stop_requested:
            for broker in list(running):
                if broker.proc.poll() is not None:
                    click.echo(f"broker {broker.node_id} exited with {broker.proc.returncode}: "
                               f"{_last_line(broker.log)} (log: {broker.log})", err=True)
                    running.remove(broker)
            if etcd_proc.poll() is not None:
                click.echo(f"etcd exited with {etcd_proc.returncode} (log: {etcd_log}); stopping the brokers", err=True)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("stopping", err=True)
        for broker in started:
            if broker.proc.poll() is None:
                broker.proc.send_signal(signal.SIGTERM)
        for broker in started:
            _wait_or_kill(broker.proc)
        if etcd_proc is not None and etcd_proc.poll() is None:  # etcd last: the brokers' controlled shutdowns need it
            etcd_proc.send_signal(signal.SIGTERM)
            _wait_or_kill(etcd_proc)


def _wait_or_kill(proc: subprocess.Popen, timeout_s: float = 40.0) -> None:
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
