"""A bounded black-box fuzz campaign against a running broker (the slow tier): frames of every
API the broker advertises, written from Kafka's schemas or captured from real clients, mutated,
sent pipelined on many connections (see tests/integration/fuzzer.py).

It fails on an ERROR line or traceback in the broker's log, a response out of order, a hang (a
connection neither answered nor closed), broker RSS above the bound, or a dead broker. The seed
is printed; ``FUZZ_SEED`` replays one and ``FUZZ_ROUNDS`` runs longer, e.g.
``FUZZ_SEED=7 FUZZ_ROUNDS=200000 ./scripts/test tests/integration/test_fuzz_campaign.py -s``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.integration.fuzzer import Campaign, advertised_apis, broker_log_errors, golden_bodies

ROUNDS = int(os.environ.get("FUZZ_ROUNDS", "25000"))  # about 3 frames a round; ~1 min on 2 cores
MAX_SECONDS = float(os.environ.get("FUZZ_SECONDS", "150"))

# Group waits bounded by short session timeouts (a JoinGroup may wait for members that the
# campaign never brings back), quick group starts; everything else as shipped.
CAMPAIGN_SETTINGS = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "10",
    "group.max.session.timeout.ms": "2000",
}


@pytest.mark.slow
@pytest.mark.timeout(MAX_SECONDS + 120)
def test_fuzz_campaign(broker_factory):
    seed = int(os.environ.get("FUZZ_SEED", random.randrange(1 << 32)))
    print(f"fuzz campaign seed {seed} (replay: FUZZ_SEED={seed})")
    broker = broker_factory(CAMPAIGN_SETTINGS)
    campaign = Campaign("127.0.0.1", broker.port, seed, advertised_apis("127.0.0.1", broker.port),
                        golden_bodies(Path(__file__).parent.parent / "golden"), broker_pid=broker.proc.pid)
    campaign.run(ROUNDS, MAX_SECONDS)
    print(campaign.summary())
    assert broker.alive, f"the broker died (seed {seed}):\n{broker.log()[-3000:]}"
    assert not campaign.failures, "\n\n".join(campaign.failures)
    errors = broker_log_errors(broker.log_path.read_text(errors="replace"))
    assert not errors, f"ERROR lines in the broker log (seed {seed}):\n" + "\n".join(errors[:20])
    assert campaign.rounds >= min(ROUNDS, 2000), f"only {campaign.rounds} rounds in {MAX_SECONDS} s"
