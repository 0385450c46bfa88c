"""ShareStateKey keeps its hash (computed once, share13): equal keys hash alike whatever UUID object
they hold, a changed copy hashes as a new key, and a key pickled in one process is found in another
process's dict (a str's hash differs between processes, so the kept hash must not travel)."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import uuid

from tidelog.queues.state_records import ShareStateKey

TOPIC = uuid.UUID("6118ca48-b00c-4775-8e78-a76a2dec7998")


def test_equal_keys_hash_alike_and_find_each_other():
    a = ShareStateKey("g", TOPIC, 1)
    b = ShareStateKey("g", uuid.UUID(str(TOPIC)), 1)  # (another UUID object, equal)
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert ShareStateKey("g", TOPIC, 2) != a and ShareStateKey("h", TOPIC, 1) != a
    moved = dataclasses.replace(a, partition=2)
    assert moved == ShareStateKey("g", TOPIC, 2) and hash(moved) == hash(ShareStateKey("g", TOPIC, 2))
    assert repr(a) == f"ShareStateKey(group_id='g', topic_id={TOPIC!r}, partition=1)"


def test_a_key_pickled_in_another_process_is_found_here():
    code = ("import pickle, sys, uuid; from tidelog.queues.state_records import ShareStateKey; "
            f"sys.stdout.buffer.write(pickle.dumps(ShareStateKey('group-a', uuid.UUID('{TOPIC}'), 3)))")
    env = {**os.environ, "PYTHONHASHSEED": "12345" if os.environ.get("PYTHONHASHSEED") != "12345" else "54321"}
    pickled = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True).stdout
    key = pickle.loads(pickled)
    assert {ShareStateKey("group-a", TOPIC, 3): "here"}[key] == "here"
