"""storage/offset_checkpoint.py: Kafka's replication-offset-checkpoint format, byte for byte."""

from __future__ import annotations

from tidelog.storage.offset_checkpoint import read_offset_checkpoint, render_offset_checkpoint, write_offset_checkpoint


def test_written_as_kafka_writes_it_and_read_back(tmp_path):
    path = tmp_path / "replication-offset-checkpoint"
    offsets = {("orders", 1): 987, ("orders", 0): 1234, ("a.b-c_d", 10): 0}
    text = render_offset_checkpoint(offsets)
    assert text == "0\n3\na.b-c_d 10 0\norders 0 1234\norders 1 987\n"
    write_offset_checkpoint(path, text)
    assert path.read_text() == text
    assert read_offset_checkpoint(path) == offsets


def test_a_missing_file_is_empty_and_unreadable_lines_are_skipped(tmp_path):
    path = tmp_path / "replication-offset-checkpoint"
    assert read_offset_checkpoint(path) == {}
    path.write_text("0\n4\norders 0 12\norders x 3\norders 1 torn\nno-fields\n")
    assert read_offset_checkpoint(path) == {("orders", 0): 12}
