"""RabbitMQ streams as a peer: a private rabbitmq-server node (Debian package, stream plugin)
with its own epmd, ports, data and config under the run's temp dir; client rstream."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

from benchmarks import kafka_load
from benchmarks.peers import Target, _records_per_batch, _run_version
from benchmarks.procs import ServerProcess, free_port, port_open

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


class RabbitMQ(Target):
    kind = name = "rabbitmq"

    def unavailable(self) -> str | None:
        if not Path(SERVER).exists():
            return "Debian package rabbitmq-server is not installed (apt-get install rabbitmq-server)"
        if shutil.which("epmd") is None:
            return "epmd (Erlang) not found"
        try:
            import rstream  # noqa: F401
        except ImportError:
            return "Python client rstream is not installed"
        return None

    def version(self) -> str:
        from importlib.metadata import version

        deb = _run_version(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"])
        erl = _run_version(["dpkg-query", "-W", "-f=${Version}", "erlang-base"])
        return f"rabbitmq-server {deb} (Erlang {erl}); rstream {version('rstream')}"

    def settings(self) -> dict[str, str]:
        return {"plugin": "rabbitmq_stream, one stream, defaults (confirms after the write, no fsync per confirm)",
                "client": "rstream send_batch (~1 MiB batches, raw bytes bodies), confirms counted by callback; "
                          "Consumer.subscribe from the first offset with a raw-bytes decoder"}

    def start(self, workdir: Path) -> ServerProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        epmd_port, amqp_port, dist_port, self.port = free_port(), free_port(), free_port(), free_port()
        (workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
            f"stream.listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            f"stream.advertised_host = 127.0.0.1\nstream.advertised_port = {self.port}\n")
        (workdir / "enabled_plugins").write_text("[rabbitmq_stream].\n")
        epmd = ServerProcess("epmd", [shutil.which("epmd"), "-port", str(epmd_port)], workdir).start(lambda: port_open(epmd_port))
        env = {
            "HOME": str(workdir), "ERL_EPMD_PORT": str(epmd_port), "RABBITMQ_NODENAME": f"bench{self.port}@localhost",
            "RABBITMQ_DIST_PORT": str(dist_port), "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"), "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(workdir / "plugins-expand"),
        }
        server = ServerProcess(self.name, [SERVER], workdir, env)
        server.companions.append(epmd)
        try:
            return server.start(lambda: port_open(self.port), timeout_s=120)
        except BaseException:
            epmd.stop()
            raise

    def _kwargs(self):
        return {"username": "guest", "password": "guest"}

    def prepare(self, topic, workload):
        from rstream import Producer

        async def run():
            async with Producer("127.0.0.1", self.port, **self._kwargs()) as producer:
                await producer.create_stream(topic, exists_ok=True)

        asyncio.run(run())

    def produce(self, topic, records, workload, timeout_s):
        from rstream import Producer

        record_bytes = workload.record_bytes
        value = os.urandom(record_bytes)
        per_batch = _records_per_batch(record_bytes)

        async def run():
            confirmed = 0
            failed = 0
            done = asyncio.Event()

            async def on_confirm(status):
                nonlocal confirmed, failed
                confirmed += 1
                failed += not status.is_confirmed
                if confirmed >= records:
                    done.set()

            async with Producer("127.0.0.1", self.port, **self._kwargs()) as producer:
                deadline = time.monotonic() + timeout_s
                sent = 0
                cpu0 = time.process_time()
                start = time.perf_counter()
                while sent < records and time.monotonic() < deadline:
                    count = min(per_batch, records - sent)
                    await producer.send_batch(topic, [value] * count, on_publish_confirm=on_confirm)
                    sent += count
                try:
                    await asyncio.wait_for(done.wait(), max(1.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
                seconds = time.perf_counter() - start
                cpu = time.process_time() - cpu0
            acked = confirmed - failed
            return kafka_load.phase_result(acked, record_bytes, seconds, cpu, "ok" if acked == records else "timeout")

        return asyncio.run(run())

    def consume(self, topic, records, workload, timeout_s):
        from rstream import Consumer, ConsumerOffsetSpecification, OffsetType

        record_bytes = workload.record_bytes
        async def run():
            received = 0
            done = asyncio.Event()

            def on_message(message, context):
                nonlocal received
                received += 1
                if received >= records:
                    done.set()

            consumer = Consumer("127.0.0.1", self.port, **self._kwargs())
            await consumer.start()
            cpu0 = time.process_time()
            start = time.perf_counter()
            try:
                await consumer.subscribe(topic, on_message, decoder=lambda body: body,
                                         offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None))
                try:
                    await asyncio.wait_for(done.wait(), timeout_s)
                except asyncio.TimeoutError:
                    pass
                seconds = time.perf_counter() - start
                cpu = time.process_time() - cpu0
            finally:
                await consumer.close()
            return kafka_load.phase_result(received, record_bytes, seconds, cpu, "ok" if received >= records else "timeout")

        return asyncio.run(run())
