"""Share groups under faults, with confluent-kafka's ShareConsumer and real processes: a SIGKILLed
consumer's records go to another consumer with a higher delivery count; a broker SIGKILLed
mid-run loses no acknowledgement and delivers again what was in flight."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import AcknowledgeType

from tests.integration.share_clients import create_topic, produce_values, share_consumer, wait_for, wait_members

VICTIM = """
import json, sys
from confluent_kafka import ShareConsumer
consumer = ShareConsumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                          "share.acknowledgement.mode": "explicit"})
consumer.subscribe([sys.argv[3]])
while True:  # takes records and never acknowledges them
    for message in consumer.poll(0.5):
        print(json.dumps([message.value().decode(), message.delivery_count()]), flush=True)
"""


def test_a_killed_consumers_records_go_to_another_consumer(broker, tmp_path):
    create_topic(broker.bootstrap, "tasks", 1)
    script = tmp_path / "victim.py"
    script.write_text(VICTIM)
    victim = subprocess.Popen([sys.executable, str(script), broker.bootstrap, "crew", "tasks"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    taken: list = []
    reader = threading.Thread(target=lambda: taken.extend(json.loads(line) for line in victim.stdout), daemon=True)
    reader.start()
    survivor = None
    try:
        wait_members(broker, "crew", 1)
        values = produce_values(broker.bootstrap, "tasks", 200, 1, prefix="task-")
        wait_for(lambda: taken, 30, "the victim's first records")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        reader.join(10)
        survivor = share_consumer(broker.bootstrap, "crew", ["tasks"])
        seen: dict[bytes, int] = {}

        def poll():
            for message in survivor.poll(0.2):
                assert message.error() is None, message.error()
                seen[message.value()] = message.delivery_count()
        wait_for(lambda: set(seen) == values, 60, "every record at the survivor", poll)
        survivor.commit_sync(30)
        assert {v.encode() for v, _ in taken} <= set(seen)
        assert all(seen[v.encode()] >= 2 for v, _ in taken)  # their delivery to the victim counted
    finally:
        if victim.poll() is None:
            victim.kill()
        if survivor is not None:
            survivor.close()


@pytest.mark.slow
def test_broker_sigkill_loses_no_acknowledgement_and_redelivers_what_was_in_flight(broker):
    create_topic(broker.bootstrap, "ledger", 3)
    consumer = share_consumer(broker.bootstrap, "auditors", ["ledger"], **{"share.acknowledgement.mode": "explicit"})
    try:
        wait_members(broker, "auditors", 1, [consumer])
        values = produce_values(broker.bootstrap, "ledger", 3000, 3, prefix="entry-")
        confirmed: set[bytes] = set()  # acknowledged, and the broker said so
        deliveries: dict[bytes, list[int]] = {}
        killed = False
        deadline = time.monotonic() + 120
        while confirmed != values:
            assert time.monotonic() < deadline, f"{len(confirmed)} of {len(values)} confirmed"
            try:
                messages = list(consumer.poll(0.5))
            except Exception:  # noqa: BLE001 - the broker is down for a moment
                continue
            batch = []
            for message in messages:
                if message.error() is not None:
                    continue
                value = message.value()
                assert value not in confirmed, f"{value!r} delivered again after its acknowledgement was confirmed"
                deliveries.setdefault(value, []).append(message.delivery_count())
                consumer.acknowledge(message, AcknowledgeType.ACCEPT)
                batch.append(message)
            if not batch:
                continue
            if not killed and len(confirmed) >= 1000:
                broker.kill()  # with this batch acquired and its acknowledgement not sent
                broker.restart()
                killed = True
            try:
                results = consumer.commit_sync(30)
            except Exception:  # noqa: BLE001 - not confirmed: these records may come again
                continue
            failed = {(tp.topic, tp.partition) for tp, error in results.items() if error is not None}
            confirmed |= {m.value() for m in batch if (m.topic(), m.partition()) not in failed}
        assert killed
        redelivered = [v for v, counts in deliveries.items() if len(counts) > 1]
        assert redelivered  # the batch in flight at the kill came again...
        assert all(counts == sorted(counts) and counts[-1] >= 2 for counts in
                   (deliveries[v] for v in redelivered))  # ...with its delivery count kept and raised
    finally:
        consumer.close()
