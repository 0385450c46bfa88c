"""Test brokers forked from the zygote (tests/broker_zygote.py) behave as exec'd ones: the same
exit codes, log, environment, working directory and limits; and an environment the zygote's
imports would have read differently gets an exec."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.brokerproc import BrokerProcess, ZygoteChild, _zygote, spawn_broker, wait_until
from tests.conftest import TEST_SETTINGS


def serve_args(tmp_path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tidelog", "serve", "--host", "127.0.0.1", "--port", "0",
            "--data-dir", str(tmp_path / "data"), *extra]


def test_a_broker_is_forked_and_exits_as_an_execd_one_does(tmp_path):
    broker = BrokerProcess(tmp_path / "data", dict(TEST_SETTINGS)).start()
    assert isinstance(broker.proc, ZygoteChild)
    assert broker.proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        broker.proc.wait(0.05)
    assert broker.stop() == 0 and "shutdown complete" in broker.log().lower()
    broker.start()
    os.kill(broker.proc.pid, signal.SIGKILL)
    assert broker.proc.wait(10) == -signal.SIGKILL
    broker.proc.send_signal(signal.SIGTERM)  # a reaped child is not signalled (Popen: the same)


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_a_bad_setting_gives_the_same_exit_code_and_log_line_forked_or_execd(tmp_path, monkeypatch, zygote):
    if zygote == "0":
        monkeypatch.setenv("TESTS_BROKER_ZYGOTE", "0")
    log = tmp_path / "broker.log"
    proc = spawn_broker(serve_args(tmp_path, "--set", "no.such.setting=1"), log, {**os.environ, "PYTHONUNBUFFERED": "1"})
    assert isinstance(proc, ZygoteChild) == (zygote == "1")
    assert proc.wait(60) == 1
    assert log.read_text() == "error: unknown broker setting 'no.such.setting' (from --set)\n"



def test_the_zygote_forgets_a_child_once_it_has_given_its_exit_code(tmp_path):
    # Pids wrap within one test run (pid_max 32,768; librdkafka's threads take pids too): a code
    # the zygote kept for a reaped child was given to the next child with the same pid (a CI's
    # broker that exited 1 on a bad setting was reported SIGKILLed, -9).
    proc = spawn_broker(serve_args(tmp_path, "--set", "no.such.setting=1"), tmp_path / "broker.log",
                        {**os.environ, "PYTHONUNBUFFERED": "1"})
    assert isinstance(proc, ZygoteChild)
    assert proc.wait(60) == 1 and proc.poll() == 1  # the child keeps its own code
    with _zygote.lock, pytest.raises(RuntimeError, match=f"no child {proc.pid}"):
        _zygote._ask({"poll": proc.pid})

def test_the_child_has_the_requests_environment_cwd_argv_and_limit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "broker.log"
    # A setting from the environment reaches the broker's own start (config.py reads TIDELOG_*).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TIDELOG_NUM_PARTITIONS": "many"}
    proc = spawn_broker(serve_args(tmp_path), log, env, nofile=(200, 300))
    assert isinstance(proc, ZygoteChild)
    assert proc.wait(60) == 1
    assert "TIDELOG_NUM_PARTITIONS" in log.read_text()
    port_file = tmp_path / "port"
    proc = spawn_broker(serve_args(tmp_path, "--set", "http.port=0", "--port-file", str(port_file)), log,
                        {**os.environ, "PYTHONUNBUFFERED": "1"}, nofile=(200, 300))
    try:
        wait_until(lambda: port_file.exists() or proc.poll() is not None, 60, message="the broker to serve")
        assert proc.poll() is None, log.read_text()
        assert os.readlink(f"/proc/{proc.pid}/cwd") == str(tmp_path)
        limits = open(f"/proc/{proc.pid}/limits").read().split("Max open files")[1].split()[:2]
        assert limits[1] == "300"
        environ = dict(item.split("=", 1) for item in open(f"/proc/{proc.pid}/environ").read().split("\0") if "=" in item)
        assert environ.get("TIDELOG_NUM_PARTITIONS") is None and environ["PYTHONUNBUFFERED"] == "1"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("name", ["TIDELOG_FAULTS", "TIDELOG_CLOCK_SKEW_MS", "PYTHONHASHSEED"])
def test_an_environment_read_at_import_gets_an_exec(tmp_path, name):
    value = "fsync.segment:EIO:0" if name == "TIDELOG_FAULTS" else "7"
    proc = spawn_broker(serve_args(tmp_path, "--set", "no.such.setting=1"), tmp_path / "broker.log",
                        {**os.environ, "PYTHONUNBUFFERED": "1", name: value})
    assert isinstance(proc, subprocess.Popen)
    assert proc.wait(60) == 1
