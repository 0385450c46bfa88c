"""A Tidelog cluster of real processes for tests: one etcd and N ``tidelog serve --cluster``
brokers on loopback ports, each stopped by PID."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from tests.brokerproc import BrokerProcess, _wait_listening, spawn_broker
from tests.etcdproc import EtcdCluster, EtcdProcess, free_port

# Quick failure detection for tests: a dead broker's lease lapses after 2 s. A new group's first
# rebalance after 100 ms, not 3 s (tests/conftest.py TEST_SETTINGS).
CLUSTER_TEST_SETTINGS = {"broker.session.timeout.ms": "2000", "replica.lag.time.max.ms": "2000",
                         "http.port": "-1", "log.retention.check.interval.ms": "1000",
                         "group.initial.rebalance.delay.ms": "100"}


class ClusterBrokerProcess(BrokerProcess):
    """A broker of a cluster: fixed port (so it comes back where clients know it), ``--broker-id``."""

    def __init__(self, data_dir: Path, cluster: str, broker_id: int, settings: dict[str, str] | None = None) -> None:
        super().__init__(data_dir, {**CLUSTER_TEST_SETTINGS, **(settings or {})}, port=free_port())
        self.cluster = cluster
        self.broker_id = broker_id
        self.env: dict[str, str] = {}  # extra environment for the next start (TIDELOG_FAULTS, ...)

    @property
    def _port_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.port"

    def start(self, timeout_s: float = 30.0) -> "ClusterBrokerProcess":
        return self.launch().wait_started(timeout_s)

    def launch(self) -> "ClusterBrokerProcess":
        """Start the process without waiting for it (``wait_started``): a cluster's brokers start
        side by side (each forked from the zygote, tests/brokerproc.spawn_broker)."""
        port_file = self._port_file
        port_file.unlink(missing_ok=True)
        args = [sys.executable, "-m", "tidelog", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--port-file", str(port_file),
                "--cluster", self.cluster, "--broker-id", str(self.broker_id)]
        for name, value in self.settings.items():
            args += ["--set", f"{name}={value}"]
        self.proc = spawn_broker(args, self.log_path, {**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        return self

    def wait_started(self, timeout_s: float = 30.0) -> "ClusterBrokerProcess":
        port_file = self._port_file
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"broker did not start within {timeout_s:.0f} s:\n{self.log()}")
            time.sleep(0.02)
        self.metrics_port = int(port_file.read_text().split()[1])
        _wait_listening(self.port, deadline)
        return self

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        super().kill()


class Cluster:
    def __init__(self, root: Path, brokers: int = 3, settings: dict[str, str] | None = None,
                 etcd_members: int = 1) -> None:
        self.etcd = EtcdProcess(root / "etcd") if etcd_members == 1 else EtcdCluster(root, etcd_members)
        self.root = root
        self.count = brokers
        self.settings = settings or {}
        self.brokers: dict[int, ClusterBrokerProcess] = {}

    def start(self) -> "Cluster":
        try:
            self.etcd.start()
            for node_id in range(1, self.count + 1):
                self.brokers[node_id] = ClusterBrokerProcess(self.root / f"broker-{node_id}", f"etcd://{self.etcd.endpoint}",
                                                             node_id, self.settings).launch()
            deadline = time.monotonic() + 30.0 * self.count  # what starting them one by one allowed
            for broker in self.brokers.values():
                broker.wait_started(deadline - time.monotonic())
        except BaseException:
            self.stop()  # the fixture never yields: nothing else would stop what did start
            raise
        return self

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values())

    def stop(self) -> None:
        for broker in self.brokers.values():
            broker.kill()
        self.etcd.kill()

    def logs(self) -> str:
        return "\n".join(f"--- broker {i}\n{b.log()[-4000:]}" for i, b in self.brokers.items())


async def start_in_process_broker(data_dir: Path, etcd_endpoint: str, prefix: str, node_id: int,
                                  settings: dict[str, str] | None = None):
    """A real broker in cluster mode on the caller's event loop (port 0), for replication races
    a test must hold still at one point (the test then drives it over real sockets).
    ``prefix`` keeps clusters sharing one etcd apart. Stop it with ``await broker.stop()``."""
    from tidelog.config import BrokerConfig
    from tidelog.node import make_broker

    overrides = {**CLUSTER_TEST_SETTINGS, "controlled.shutdown.enable": "false", **(settings or {}), "node.id": str(node_id)}
    config = BrokerConfig.load(env={}, overrides=overrides)
    broker = make_broker(config, data_dir, "127.0.0.1", 0, cluster=f"etcd://{etcd_endpoint}{prefix}")
    await broker.start()
    return broker
