"""``tidelog dev-cluster``: etcd and N brokers on loopback, for development and tests.

Starts one etcd member (the ``etcd`` binary on PATH: Debian's ``etcd-server`` package) and N
``tidelog serve --cluster`` processes, all on 127.0.0.1, with their data and logs under one
folder; prints the bootstrap servers; on Ctrl-C (or SIGTERM) stops the brokers then etcd, each
by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import click


def etcd_command(etcd: str, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [etcd, "--name", "tidelog-dev", "--data-dir", str(data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"tidelog-dev={peer}", "--max-txn-ops", "10000", "--log-level", "warn"]


def _wait_healthy(client_port: int, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"etcd exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{client_port}/health", timeout=1) as response:
                if b"true" in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"etcd did not become healthy within {timeout_s:.0f}s")


def _wait_port_file(path: Path, proc: subprocess.Popen, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"a broker exited with {proc.returncode}; see its log beside {path}")
        if path.exists():
            return int(path.read_text().split()[0])
        time.sleep(0.05)
    raise click.ClickException(f"a broker did not start within {timeout_s:.0f}s")


@click.command("dev-cluster")
@click.option("--brokers", default=3, show_default=True, type=click.IntRange(1, 32), help="Number of brokers.")
@click.option("--data-dir", default="./tidelog-cluster", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--base-port", default=9092, show_default=True, type=int, help="Broker N listens on base-port + N - 1.")
@click.option("--etcd-port", default=2379, show_default=True, type=int, help="etcd client port (the peer port is the next one).")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="A setting for every broker (repeatable).")
def dev_cluster(brokers: int, data_dir: Path, base_port: int, etcd_port: int, sets: tuple[str, ...]) -> None:
    """Run etcd and BROKERS brokers on loopback until Ctrl-C."""
    etcd = shutil.which("etcd")
    if etcd is None:
        raise click.ClickException("etcd is not installed (Debian/Ubuntu: sudo apt-get install -y etcd-server)")
    data_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    stop_requested = False

    def request_stop(*_):
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        with open(data_dir / "etcd.log", "ab") as log:
            etcd_proc = subprocess.Popen(etcd_command(etcd, data_dir / "etcd", etcd_port, etcd_port + 1),
                                         stdout=log, stderr=subprocess.STDOUT)
        procs.append(etcd_proc)
        _wait_healthy(etcd_port, etcd_proc)
        cluster = f"etcd://127.0.0.1:{etcd_port}"
        ports = []
        for node_id in range(1, brokers + 1):
            port_file = data_dir / f"broker-{node_id}.port"
            port_file.unlink(missing_ok=True)
            args = [sys.executable, "-m", "tidelog", "serve", "--cluster", cluster, "--broker-id", str(node_id),
                    "--host", "127.0.0.1", "--port", str(base_port + node_id - 1), "--http-port", "-1",
                    "--data-dir", str(data_dir / f"broker-{node_id}"), "--port-file", str(port_file)]
            for setting in sets:
                args += ["--set", setting]
            with open(data_dir / f"broker-{node_id}.log", "ab") as log:
                procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                              env={**os.environ, "PYTHONUNBUFFERED": "1"}))
            ports.append(port_file)
        bootstrap = ",".join(f"127.0.0.1:{_wait_port_file(path, proc)}" for path, proc in zip(ports, procs[1:]))
        click.echo(f"etcd:      {cluster}")
        click.echo(f"brokers:   {brokers} (logs and data in {data_dir})")
        click.echo(f"bootstrap: {bootstrap}")
        click.echo("Ctrl-C stops them all.")
        while not stop_requested:
            for proc in procs:
                if proc.poll() is not None:
                    click.echo(f"process {proc.pid} exited with {proc.returncode}", err=True)
                    procs.remove(proc)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("stopping", err=True)
        for proc in reversed(procs):  # brokers first, etcd last
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
