"""The HTTP API's record codec and key partitioner, and the JSON log format."""

from __future__ import annotations

import io
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from tidelog.protocol.consumer_protocol import assignment_partitions
from tidelog.http.codec import bytes_to_json, json_to_bytes, json_to_headers, murmur2, partition_for_key
from tidelog.logging import configure_logging
from tidelog.protocol.errors import KafkaError


@given(st.binary(max_size=64))
def test_murmur2_matches_kafka_python(data):
    assert murmur2(data) == kafka_python_murmur2(data) & 0xFFFFFFFF


def test_partition_for_key_known_values():
    # Values of Kafka's Java DefaultPartitioner (Utils.toPositive(Utils.murmur2(key)) % n).
    assert murmur2(b"21") == (-973932308) & 0xFFFFFFFF
    assert partition_for_key(b"21", 1000) == (-973932308 & 0x7FFFFFFF) % 1000


def test_json_to_bytes_forms():
    assert json_to_bytes({"value": "héllo"}, "value") == "héllo".encode()
    assert json_to_bytes({"value": {"a": [1, 2]}}, "value") == b'{"a":[1,2]}'
    assert json_to_bytes({"value": 5}, "value") == b"5"
    assert json_to_bytes({}, "value") is None and json_to_bytes({"value": None}, "value") is None
    assert json_to_bytes({"value_base64": "AP8="}, "value") == b"\x00\xff"
    with pytest.raises(KafkaError):
        json_to_bytes({"value_base64": "not base64!"}, "value")
    with pytest.raises(KafkaError):
        json_to_bytes({"value": "a", "value_base64": "YQ=="}, "value")


def test_headers_forms():
    assert json_to_headers({"a": "1", "b": None}) == [("a", b"1"), ("b", None)]
    assert json_to_headers([{"key": "a", "value": {"base64": "AA=="}}, {"key": "a", "value": "x"}]) == [("a", b"\x00"), ("a", b"x")]
    for bad in ("x", [{"value": "no key"}], [{"key": "k", "value": 5}]):
        with pytest.raises(KafkaError):
            json_to_headers(bad)


def test_bytes_to_json_text_or_base64():
    assert bytes_to_json(b"plain\ttext\n") == ("plain\ttext\n", "text")
    assert bytes_to_json("ünï".encode()) == ("ünï", "text")
    assert bytes_to_json(b"\xff\xfe") == ("//4=", "base64")
    assert bytes_to_json(b"\x00abc") == ("AGFiYw==", "base64")  # valid UTF-8 but a control character
    assert bytes_to_json(b"abc", force_base64=True) == ("YWJj", "base64")
    assert bytes_to_json(None) == (None, "text")


def test_consumer_assignment_parsing():
    import struct

    topic = b"jobs"
    data = struct.pack(">hih", 3, 1, len(topic)) + topic + struct.pack(">iii", 2, 0, 1) + struct.pack(">i", -1)
    assert assignment_partitions(data) == {"jobs": [0, 1]}
    assert assignment_partitions(b"") == {}
    assert assignment_partitions(b"\x00\x03\x00\x00\x00\x05") is None


def test_json_log_lines():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", "json", stream=stream)
        logging.getLogger("tidelog.test").info("hello %s", "world", extra={"topic": "t"})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("tidelog.test").exception("failed")
        logging.getLogger("tidelog.test").debug("not shown")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["message"] == "hello world" and lines[0]["level"] == "INFO" and lines[0]["logger"] == "tidelog.test"
    assert lines[0]["topic"] == "t" and lines[0]["ts"].endswith("+00:00")
    assert "ValueError: boom" in lines[1]["exception"]
    with pytest.raises(ValueError):
        configure_logging("INFO", "xml")
