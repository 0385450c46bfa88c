"""What etcd says when it refuses a call reaches the error (and so the broker's log): a put under a
lease etcd does not know is refused with HTTP 404 and "lease not found", the error a broker meets
standing for controller under a lapsed lease."""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.etcdproc import EtcdProcess
from tidelog.cluster.etcd_store import EtcdClient, EtcdUnavailable


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    proc = EtcdProcess(tmp_path_factory.mktemp("etcd") / "member").start()
    yield proc
    proc.kill()


def test_a_refused_put_names_etcds_reason_and_the_call(etcd):
    async def put_under_unknown_lease() -> str:
        client = EtcdClient([f"http://{etcd.endpoint}"], timeout_s=5.0)
        try:
            await client.call("kv/put", {"key": base64.b64encode(b"/refusal").decode(),
                                         "value": base64.b64encode(b"x").decode(), "lease": "7587884417382121"})
        except EtcdUnavailable as e:
            return str(e)
        finally:
            await client.close()
        raise AssertionError("etcd accepted a put under a lease it never granted")

    message = asyncio.run(asyncio.wait_for(put_under_unknown_lease(), 30))
    assert "lease not found" in message
    assert "kv/put answered 404" in message
    assert "watch" not in message
