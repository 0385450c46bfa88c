"""Client quotas applied to responses, as Kafka's ClientQuotaManager and KafkaApis do (KIP-219).

When a request takes its client (user, client id) over a quota (security/quotas.py resolves
which), the response goes out at once carrying ``throttle_time_ms``, and the connection stops
reading from that client for as long (``KafkaConnection``): the client waits too, and a client
that does not is held back by the muted socket.

- Produce: the request's bytes against ``producer_byte_rate``, measured as the request is read
  (``produce_throttle_ms``): a client pipelining requests is held back from the first one over
  its quota, as Kafka, which reads one request of a connection at a time, holds it.
- Fetch: the response's bytes against ``consumer_byte_rate``, its time against
  ``request_percentage``; a throttled fetch is answered empty, its bytes taken back.
- Every other API except ApiVersions and the SASL exchange: request time.

``throttle`` returns the response to send (the same, with its throttle time set) and the time
to mute. Not thread-safe; the event loop owns the quota managers.
"""

from __future__ import annotations

import dataclasses
import datetime
import struct
from typing import Any

from tidelog.protocol.fetch import encode_fetch_response
from tidelog.security.quotas import QuotaManagers

PRODUCE, FETCH, SHARE_FETCH = 0, 1, 78
EXEMPT = frozenset({17, 18, 36})  # SaslHandshake, ApiVersions, SaslAuthenticate (as Kafka)
_I32 = struct.Struct(">i")


def quota_type(api_key: int) -> str:
    """The metric label of the quota a request is throttled by."""
    return "produce" if api_key == PRODUCE else "fetch" if api_key == FETCH else "request"


def enabled(quotas: QuotaManagers) -> bool:
    return quotas.produce.enabled or quotas.fetch.enabled or quotas.request.enabled


_last_expiry_ms = [0]


def expire_idle(quotas: QuotaManagers, now_ms: int) -> None:
    """Drop the rates of clients idle for an hour (Kafka's inactive sensors), at most once a minute."""
    if now_ms - _last_expiry_ms[0] >= 60_000:
        _last_expiry_ms[0] = now_ms
        quotas.expire(now_ms)


def produce_throttle_ms(quotas: QuotaManagers, user: str, client_id: str, request_bytes: int, now_ms: int) -> int:
    """A Produce request's throttle, decided as it is read (its waits are not request time)."""
    return quotas.produce_throttle_ms(user, client_id, request_bytes, 0, 0, now_ms)


def throttle(quotas: QuotaManagers, api_key: int, api_version: int, flexible: bool, user: str, client_id: str,
             request_bytes: int, request_time_ns: int, response: Any, now_ms: int,
             decided_ms: int = 0) -> tuple[Any, int]:
    """(the response to send, ms to throttle the client) for one answered request;
    ``decided_ms`` is a Produce request's throttle, decided when it was read."""
    if api_key in EXEMPT:
        return response, 0
    if api_key == PRODUCE:
        if decided_ms and response is not None:
            response = _with_produce_throttle(response, flexible, decided_ms)
        return response, decided_ms
    if api_key == FETCH:
        response_bytes = sum(len(part) for part in response)
        throttle_ms = quotas.fetch_throttle_ms(user, client_id, response_bytes, request_time_ns, now_ms)
        if throttle_ms:
            response = encode_fetch_response(api_version, [], throttle_time_ms=throttle_ms)
        return response, throttle_ms
    throttle_ms = quotas.request_time_throttle_ms(user, client_id, request_time_ns, now_ms)
    if throttle_ms and api_key == SHARE_FETCH and isinstance(response, list):  # protocol/share_fetch.py
        response = [_I32.pack(throttle_ms) + bytes(response[0][4:]), *response[1:]]
    elif throttle_ms and dataclasses.is_dataclass(response) and hasattr(response, "throttle_time"):
        response = dataclasses.replace(response, throttle_time=datetime.timedelta(milliseconds=throttle_ms))
    return response, throttle_ms


def _with_produce_throttle(response: list, flexible: bool, throttle_ms: int) -> list:
    """A Produce response (protocol/produce.py, one buffer) with its throttle_time_ms set: the
    last field, before the empty tagged fields of a flexible version."""
    body = bytearray(b"".join(response))
    end = len(body) - (1 if flexible else 0)
    body[end - 4:end] = _I32.pack(throttle_ms)
    return [bytes(body)]
