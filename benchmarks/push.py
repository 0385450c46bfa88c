"""Push delivery (issue 15): records per second a broker POSTs to a local receiver that answers 200
at once, by batch size; and the delivery latency at a steady 1,000 records/s.

One broker (``log.durability.profile`` balanced, the default, or ``--durability``), one topic of ``--partitions``
partitions, an aiohttp receiver on 127.0.0.1 in this process (its own thread and loop) that parses
each JSON body and answers 200.

- Throughput: for each batch size, a new subscription is created paused, ``--records`` records
  (``--record-bytes`` each) are produced, the subscription is resumed, and the clock runs from the
  resume to the receiver having every record (``linger_ms`` 0: a full backlog needs no linger).
- Latency: a subscription with the default batch size (100) and linger (50 ms), and one with
  linger 0, while a producer (confluent-kafka, linger.ms 5) sends 1,000 records/s for
  ``--latency-seconds`` to a topic with ``message.timestamp.type=LogAppendTime``; latency is the
  receiver's clock at arrival minus the record's timestamp, the broker's append time (the same
  machine's clock): from the append to the POST's arrival, p50 and p99.

    python -m benchmarks push [--records 20000] [--batch-sizes 1,100,1000] [--latency-seconds 10]

Bounded: at most 200,000 records a phase and 60 s of latency load; every phase times out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import confluent_kafka as ck
from aiohttp import web
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.peers import Tidelog


class Receiver:
    """Answers 200 at once; counts records and notes each one's latency (arrival minus timestamp)."""

    def __init__(self) -> None:
        self.records = 0
        self.requests = 0
        self.latencies_ms: list[int] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> "Receiver":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _handle(self, request: web.Request) -> web.Response:
        records = json.loads(await request.read())["records"]
        now_ms = int(time.time() * 1000)
        with self.lock:
            self.requests += 1
            self.records += len(records)
            self.latencies_ms.extend(now_ms - r["timestamp"] for r in records)
        return web.Response(status=200)

    def reset(self) -> None:
        with self.lock:
            self.records = self.requests = 0
            self.latencies_ms = []

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def api(http: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(f"http://{http}/api/v1{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def produce(bootstrap: str, topic: str, count: int, record_bytes: int, rate: float | None = None) -> None:
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5 if rate else 20,
                            "batch.num.messages": 2000, "compression.type": "none"})
    value = b"x" * record_bytes
    started = time.monotonic()
    for n in range(count):
        if rate:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.poll(0)
        while True:
            try:
                producer.produce(topic, value=value, key=str(n).encode())
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("produce did not finish")


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.01)


def percentile(values: list[int], q: float) -> int | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks push", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per throughput phase (batch size 1: a fifth)")
    parser.add_argument("--record-bytes", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-sizes", default="1,100,1000")
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on each phase (s)")
    parser.add_argument("--durability", default="balanced", help="log.durability.profile of the broker")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here too")
    args = parser.parse_args(argv)
    if args.records > 200_000 or args.latency_seconds > 60:
        parser.error("bounded load: --records at most 200,000, --latency-seconds at most 60")
    target = Tidelog(args.durability)
    target.extra_settings = ("http.port=0",)
    receiver = Receiver().start()
    rows: list[dict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="tidelog-bench-push-") as workdir:
            server = target.start(Path(workdir))
            try:
                http = f"127.0.0.1:{int((Path(workdir) / 'port').read_text().split()[1])}"
                bootstrap = target.bootstrap
                topic = "pushed"
                admin = AdminClient({"bootstrap.servers": bootstrap})
                admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
                appended = "pushed-append-time"
                admin.create_topics([NewTopic(appended, args.partitions, 1,
                                              config={"message.timestamp.type": "LogAppendTime"})])[appended].result(30)
                endpoint = f"http://127.0.0.1:{receiver.port}/hook"
                for batch_size in (int(b) for b in args.batch_sizes.split(",")):
                    records = args.records if batch_size > 1 else max(1, args.records // 5)
                    name = f"bench-batch-{batch_size}"
                    api(http, "POST", "/push-subscriptions", {"name": name, "topics": [topic], "endpoint": endpoint,
                                                              "batch_size": batch_size, "linger_ms": 0, "paused": True,
                                                              "max_concurrency": args.max_concurrency})
                    produce(bootstrap, topic, records, args.record_bytes)
                    receiver.reset()
                    cpu0 = server.cpu_seconds()
                    started = time.perf_counter()
                    api(http, "POST", f"/push-subscriptions/{name}/resume")
                    wait_until(lambda: receiver.records >= records, args.timeout, f"{records} records pushed")
                    seconds = time.perf_counter() - started
                    rows.append({"phase": "throughput", "batch_size": batch_size, "records": receiver.records,
                                 "requests": receiver.requests, "seconds": round(seconds, 2),
                                 "records_per_s": round(records / seconds), "broker_cpu_s": round(server.cpu_seconds() - cpu0, 2)})
                    print(json.dumps(rows[-1]), flush=True)
                    api(http, "DELETE", f"/push-subscriptions/{name}")
                for linger_ms in (50, 0):
                    name = f"bench-latency-{linger_ms}"
                    api(http, "POST", "/push-subscriptions", {"name": name, "topics": [appended], "endpoint": endpoint,
                                                              "linger_ms": linger_ms, "max_concurrency": args.max_concurrency})
                    receiver.reset()
                    count = int(1000 * args.latency_seconds)
                    produce(bootstrap, appended, count, args.record_bytes, rate=1000)
                    wait_until(lambda: receiver.records >= count, args.timeout, f"{count} records pushed")
                    with receiver.lock:
                        latencies = list(receiver.latencies_ms)
                    rows.append({"phase": "latency", "rate": 1000, "batch_size": 100, "linger_ms": linger_ms,
                                 "records": len(latencies), "requests": receiver.requests,
                                 "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
                                 "max_ms": max(latencies)})
                    print(json.dumps(rows[-1]), flush=True)
                    api(http, "DELETE", f"/push-subscriptions/{name}")
            finally:
                server.stop()
    finally:
        receiver.stop()
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
