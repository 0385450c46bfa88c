"""The checkpoint writer: atomic, durable (file and directory fsynced), failable by the fault hook."""

from __future__ import annotations

import errno
import os

import pytest

from tidelog.storage.checkpoint import read_checkpoint, remove_file, write_checkpoint, write_checkpoint_file
from tidelog.storage.faults import FaultInjector, faults


@pytest.fixture(autouse=True)
def reset_faults():
    faults.reset()
    yield
    faults.reset()


def spy_fsyncs(monkeypatch) -> list[str]:
    """What each fsync synced: "dir" or the file's name."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        synced.append("dir" if os.path.isdir(path) else os.path.basename(path))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_write_replaces_the_file_and_syncs_file_then_directory(tmp_path, monkeypatch):
    path = tmp_path / "recovery-point"
    write_checkpoint(path, 41)
    synced = spy_fsyncs(monkeypatch)
    write_checkpoint(path, 42)
    assert read_checkpoint(path) == 42
    assert synced == ["recovery-point.tmp", "dir"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recovery-point"]


@pytest.mark.parametrize(("op", "target"), [("write", "checkpoint"), ("fsync", "checkpoint"), ("fsync", "dir")])
def test_every_step_can_be_failed_by_the_fault_hook(tmp_path, op, target):
    path = tmp_path / "state.json"
    write_checkpoint_file(path, b"old")
    getattr(faults, f"fail_next_{op}")(errno.EIO, target=target)
    with pytest.raises(OSError) as e:
        write_checkpoint_file(path, b"new")
    assert e.value.errno == errno.EIO
    assert path.read_bytes() == (b"new" if target == "dir" else b"old")  # a failed dir fsync comes after the rename
    assert not (tmp_path / "state.json.tmp").exists()


def test_a_fault_for_another_target_does_not_fire(tmp_path):
    faults.fail_next_fsync(errno.EIO, target="segment")
    write_checkpoint_file(tmp_path / "x", "1")
    assert faults.armed


def test_remove_file_syncs_the_directory(tmp_path, monkeypatch):
    path = tmp_path / ".clean-shutdown"
    path.touch()
    synced = spy_fsyncs(monkeypatch)
    assert remove_file(path) and not path.exists()
    assert synced == ["dir"]
    assert remove_file(path) is False


def test_unreadable_checkpoint_reads_as_none(tmp_path):
    (tmp_path / "bad").write_text("not a number")
    assert read_checkpoint(tmp_path / "bad") is None
    assert read_checkpoint(tmp_path / "missing") is None


def test_env_spec_names_operation_and_target():
    injector = FaultInjector()
    injector.load_env("fsync.checkpoint:EIO:1,write:ENOSPC:0")
    injector.check("fsync", "segment")  # not this target
    injector.check("write", "segment")  # probability 0
    with pytest.raises(OSError) as e:
        injector.check("fsync", "checkpoint")
    assert e.value.errno == errno.EIO
    for bad in ("fsync.disk:EIO:1", "sync:EIO:1", "fsync:NOPE:1", "fsync:EIO"):
        with pytest.raises(ValueError, match="TIDELOG_FAULTS"):
            FaultInjector().load_env(bad)


def _producer_state(dir):
    from tidelog.storage.producer_state import ProducerState

    ProducerState().save(dir, 0)


def _metadata(dir):
    from tidelog.cluster.metadata import EmbeddedMetadataStore

    EmbeddedMetadataStore(dir).load("cluster")


def _leader_epochs(dir):
    from tidelog.storage.leader_epoch import LeaderEpochCache

    from .storage_helpers import append, open_log

    log = open_log(dir)
    append(log)
    LeaderEpochCache(log)  # no file yet: rebuilt from the log and saved, synced by the next flush
    log.flush()


@pytest.mark.parametrize("writer", [_producer_state, _metadata, _leader_epochs])
@pytest.mark.parametrize("op", ["write", "fsync"])
def test_every_checkpoint_writer_goes_through_the_fault_hook(tmp_path, writer, op):
    from tidelog.storage.errors import StorageError

    getattr(faults, f"fail_next_{op}")(errno.EIO, target="checkpoint")
    with pytest.raises((OSError, StorageError)) as e:  # a log's files: StorageError (the directory goes offline)
        writer(tmp_path)
    assert "injected" in str(e.value)


def test_many_checkpoints_are_written_with_two_filesystem_syncs_and_no_fsync(tmp_path, monkeypatch):
    """A clean stop of thousands of partitions wrote a producer-state snapshot each with two
    fsyncs (issue 19: 10,000 partitions took 91 s to stop); the batch writes the temporary
    files, syncs once, renames, syncs once more."""
    from tidelog.storage.checkpoint import write_checkpoint_files

    paths = [tmp_path / f"p{i}" / "producer-state.json" for i in range(50)]
    for path in paths:
        path.parent.mkdir()
        path.write_text("old")
    synced = spy_fsyncs(monkeypatch)
    syncs: list[tuple[list[str], list[str]]] = []  # (fault targets, files in place) at each sync
    write_checkpoint_files([(path, f"new {i}") for i, path in enumerate(paths)],
                           lambda targets: syncs.append((targets, [p.read_text() for p in paths])))
    assert synced == []
    assert syncs[0] == (["checkpoint"] * 50, ["old"] * 50)  # the new contents synced before any rename
    assert syncs[1] == (["dir"], [f"new {i}" for i in range(50)])
    assert not list(tmp_path.glob("*/*.tmp"))


def test_a_failed_checkpoint_batch_leaves_every_file_as_it_was(tmp_path):
    from tidelog.storage.checkpoint import write_checkpoint_files

    paths = [tmp_path / f"c{i}" for i in range(10)]
    for path in paths:
        path.write_text("old")

    def failing_sync(targets):
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError):
        write_checkpoint_files([(path, "new") for path in paths], failing_sync)
    assert [p.read_text() for p in paths] == ["old"] * 10 and sorted(tmp_path.iterdir()) == sorted(paths)
    faults.fail_next_write(errno.EIO, target="checkpoint")
    with pytest.raises(OSError):
        write_checkpoint_files([(path, "new") for path in paths], lambda targets: None)
    assert [p.read_text() for p in paths] == ["old"] * 10 and sorted(tmp_path.iterdir()) == sorted(paths)
