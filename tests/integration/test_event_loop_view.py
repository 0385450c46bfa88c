"""The event loop's lag where a user looks (server/loop_monitor.py's ``recent()``): a real broker
SIGSTOPped for longer than the stall threshold shows the stall in ``GET /api/v1/broker``, in
``tidelog cluster`` (table and --json), and, in a cluster, in another broker's ``GET /api/v1/cluster``,
which says so while the stopped broker does not answer."""

from __future__ import annotations

import signal
import time

import pytest
import requests

from tests.brokerproc import wait_until
from tests.etcdproc import etcd_binary
from tests.integration.test_cli import ok, ok_json, tidelog

STOPPED_S = 2.0  # a lag of 1.5 s at least: past the 1 s stall threshold (loop_monitor.WARN_S)


def get(http_port: int, path: str) -> dict:
    response = requests.get(f"http://127.0.0.1:{http_port}/api/v1{path}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def stop_for(broker, seconds: float) -> None:
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the stall itself: a stopped process, for a set time
    finally:
        broker.proc.send_signal(signal.SIGCONT)


def test_a_stall_shows_in_the_brokers_health_and_in_tidelog_cluster(broker_factory):
    broker, stranger = broker_factory(), broker_factory(name="stranger")  # another cluster's broker
    http = broker.metrics_port
    wait_until(lambda: get(http, "/broker")["event_loop"]["samples"] >= 2, 10, message="the first lag samples")
    calm = get(http, "/broker")
    assert calm["node_id"] == 1 and calm["ready"] and calm["not_ready_reasons"] == []
    assert calm["event_loop"]["window_s"] == 60 and calm["event_loop"]["p50_ms"] < 1000
    before = calm["event_loop"]["stalls_since_start"]  # a start starved of CPU at load may have one

    stop_for(broker, STOPPED_S)
    wait_until(lambda: get(http, "/broker")["event_loop"]["stalls_since_start"] == before + 1, 10,
               message="the stall counted")
    loop = get(http, "/broker")["event_loop"]
    assert 1400 <= loop["max_ms"] < 30_000 and loop["max_since_start_ms"] == loop["max_ms"]
    assert loop["stalls"] >= 1 and loop["p50_ms"] < 1000
    assert "event loop stalled" in broker.log()

    url = f"http://127.0.0.1:{http}"
    info = ok_json("cluster", "--url", url, broker=broker)
    assert info["brokers"][0]["event_loop"]["stalls_since_start"] == before + 1
    assert info["brokers"][0]["event_loop_error"] is None
    plain = ok("cluster", "--url", url, broker=broker)
    header, row = [line.split("\t") for line in plain.splitlines()[-2:]]
    assert header[-4:] == ["LOOP_LAG_P99_1M", "LOOP_LAG_MAX_1M", "STALLS_1M/TOTAL", "WRITE_TIMEOUTS"]
    column = dict(zip(header, row))
    assert row[0] == "1" and column["STALLS_1M/TOTAL"] == f"{loop['stalls']}/{before + 1}", row
    assert column["LOOP_LAG_MAX_1M"].endswith(" s") and column["WRITE_TIMEOUTS"] == "0", row

    # No HTTP API at --url, or another cluster's: the Kafka part as ever, the lag left out with a note.
    for url, why in (("http://127.0.0.1:1", b"cannot reach the HTTP API"),
                     (f"http://127.0.0.1:{stranger.metrics_port}", b"is of cluster")):
        result = tidelog("cluster", "--url", url, broker=broker)
        assert result.returncode == 0 and result.stderr.startswith(b"event-loop lag not shown: "), result.stderr
        assert why in result.stderr and b"Traceback" not in result.stderr
        assert result.stdout.decode().splitlines()[-1].split("\t")[-4:] == ["-", "-", "-", "-"]


def test_the_cluster_view_shows_every_brokers_lag_and_a_stopped_one_as_unanswered(tmp_path):
    etcd_binary()  # skips without etcd
    from tests.clusterproc import Cluster

    # A lease long enough that broker 2 stays live while stopped.
    cluster = Cluster(tmp_path, 2, settings={"http.port": "0", "broker.session.timeout.ms": "15000"}).start()
    try:
        viewer, stopped = cluster.brokers[1], cluster.brokers[2]
        http = viewer.metrics_port

        def loops() -> dict[int, dict]:
            return {b["node_id"]: b for b in get(http, "/cluster")["brokers"]}

        wait_until(lambda: len(loops()) == 2 and all(b["event_loop"] and b["event_loop"]["samples"] >= 2
                                                     for b in loops().values()), 20, message="both brokers' lag")
        assert all(b["event_loop_error"] is None for b in loops().values())
        before = loops()[2]["event_loop"]["stalls_since_start"]

        stopped.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            seen = loops()
            took = time.monotonic() - started
            time.sleep(max(STOPPED_S - took, 0))  # the stall itself: a stopped process, for a set time
        finally:
            stopped.proc.send_signal(signal.SIGCONT)
        assert seen[2]["event_loop"] is None and "within 1 s" in seen[2]["event_loop_error"], seen[2]
        assert seen[1]["event_loop"] is not None and seen[1]["event_loop_error"] is None and took < 5
        wait_until(lambda: (loops()[2]["event_loop"] or {}).get("stalls_since_start") == before + 1, 20,
                   message="broker 2's stall, seen through broker 1")
        assert loops()[2]["event_loop"]["max_ms"] >= 1400
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


@pytest.mark.parametrize("path", ["/broker", "/cluster"])
def test_openapi_documents_the_event_loop_fields(broker, path):
    document = requests.get(f"http://127.0.0.1:{broker.metrics_port}/api/v1/openapi.json", timeout=10).json()
    assert path in document["paths"]
    loop = document["components"]["schemas"]["EventLoop"]["properties"]
    assert set(get(broker.metrics_port, "/broker")["event_loop"]) == set(loop)
