"""A push subscription's status over brokers (http/push_routes.combine_statuses): each broker
delivers the share-partitions it leads, and any broker's API answers the sum."""

from tidelog.http.push_routes import combine_statuses


def _status(node_id: int, **fields) -> dict:
    base = {"name": "hook", "node_id": node_id, "state": "idle", "last_error": None, "last_error_ms": None,
            "concurrency": 0, "in_flight": 0, "delivered": 0, "acknowledged": 0, "failed_by_status": {}, "retries": 0,
            "rejected": 0, "dead_lettered": 0, "backlog": 0, "latency_p50_ms": None, "latency_p99_ms": None,
            "partitions": []}
    return {**base, **fields}


def test_counters_are_summed_and_the_worst_state_and_latest_error_win():
    one = _status(1, state="active", delivered=10, acknowledged=9, backlog=5, concurrency=4, in_flight=2,
                  failed_by_status={"500": 1}, latency_p50_ms=12, latency_p99_ms=40,
                  partitions=[{"topic": "t", "partition": 0}])
    two = _status(2, state="failing", delivered=3, acknowledged=1, backlog=7, concurrency=1, in_flight=1, retries=2,
                  failed_by_status={"500": 2, "timeout": 1}, last_error="HTTP 500", last_error_ms=2000,
                  latency_p50_ms=30, latency_p99_ms=35, partitions=[{"topic": "t", "partition": 1}])
    three = _status(3, last_error="refused", last_error_ms=1000)
    combined = combine_statuses([one, two, three], [4])
    assert combined["state"] == "failing"
    assert (combined["delivered"], combined["acknowledged"], combined["backlog"], combined["retries"]) == (13, 10, 12, 2)
    assert (combined["concurrency"], combined["in_flight"]) == (5, 3)
    assert combined["failed_by_status"] == {"500": 3, "timeout": 1}
    assert (combined["last_error"], combined["last_error_ms"]) == ("HTTP 500", 2000)
    assert (combined["latency_p50_ms"], combined["latency_p99_ms"]) == (30, 40)  # the highest broker's
    assert combined["partitions"] == [{"topic": "t", "partition": 0}, {"topic": "t", "partition": 1}]
    assert combined["brokers"] == [1, 2, 3] and combined["unreachable"] == [4] and "node_id" not in combined


def test_paused_wins_and_a_single_broker_is_its_own_sum():
    assert combine_statuses([_status(1, state="active"), _status(2, state="paused")], [])["state"] == "paused"
    alone = combine_statuses([_status(1, delivered=4)], [])
    assert (alone["state"], alone["delivered"], alone["brokers"], alone["latency_p99_ms"]) == ("idle", 4, [1], None)
