"""Client quotas as Kafka's ClientQuotaManager: entities, sampled rates, throttle times.

A quota entity is a user, a client id, or both; either part may be the default (a name of
None, Kafka's ``<default>``). Its values are keyed as in Kafka: ``producer_byte_rate`` and
``consumer_byte_rate`` (bytes a second), ``request_percentage`` (percent of one request thread,
measured over the window), ``controller_mutation_rate`` (stored and described; not enforced).

For each quota type on its own, a client (user U, client id C; U is the principal's name,
``ANONYMOUS`` without authentication) gets the first of these that defines it:

1. user U + client-id C        2. user U + default client-id    3. user U
4. default user + client-id C  5. default user + default client-id
6. default user                7. client-id C                   8. default client-id

The level that decides also decides who shares the budget, as Kafka's metric tags do: levels
1, 2, 4 and 5 give each (user, client id) pair its own rate; 3 and 6 one rate per user across
its client ids; 7 and 8 one rate per client id across users.

Rates are Kafka's sampled windows: ``quota.window.num`` (11) samples of
``quota.window.size.seconds`` (1 s); the rate is the sum of the kept samples over the time they
span, counted as at least ``num - 1`` whole windows so one burst at start-up does not read as a
huge rate. A request that takes the rate above the bound O > T is throttled for
``(O - T) / T * window`` ms, the time after which the rate is back to T if nothing more comes
(request-time throttles are capped at one window). The connection answers at once with that
``throttle_time_ms`` and then stops reading from the client for as long (KIP-219).

``QuotaStore`` is what the metadata store implements; ``describe_client_quotas`` and
``alter_client_quotas`` are DescribeClientQuotas (48) and AlterClientQuotas (49) over it.
Not thread-safe; the event loop owns these objects.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tidelog.protocol.errors import ErrorCode, KafkaError

USER, CLIENT_ID, IP = "user", "client-id", "ip"
ENTITY_TYPES = (USER, CLIENT_ID, IP)

PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
CONTROLLER_MUTATION_RATE = "controller_mutation_rate"
# key -> Kafka's config type, which decides the values allowed (QuotaConfig)
QUOTA_KEYS = {PRODUCER_BYTE_RATE: "LONG", CONSUMER_BYTE_RATE: "LONG", REQUEST_PERCENTAGE: "DOUBLE",
              CONTROLLER_MUTATION_RATE: "DOUBLE"}
_LONG_MAX = 2**63 - 1

# DescribeClientQuotas match types
MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2


class QuotaType(enum.Enum):
    """The enforced quotas, by the key that sets them."""

    PRODUCE = PRODUCER_BYTE_RATE
    FETCH = CONSUMER_BYTE_RATE
    REQUEST = REQUEST_PERCENTAGE


@dataclass(frozen=True)
class QuotaEntity:
    """``entries``: (entity type, name) pairs sorted by type; a name of None is the default."""

    entries: tuple[tuple[str, str | None], ...]

    @classmethod
    def of(cls, entries: Mapping[str, str | None]) -> "QuotaEntity":
        return cls(tuple(sorted(entries.items())))

    def as_dict(self) -> dict[str, str | None]:
        return dict(self.entries)

    def __str__(self) -> str:
        # Kafka's ClientQuotaEntity.toString
        return "ClientQuotaEntity(entries={" + ", ".join(f"{t}={n if n is not None else 'null'}" for t, n in self.entries) + "})"

    def to_json(self) -> dict:
        return {entity_type: name for entity_type, name in self.entries}

    @classmethod
    def from_json(cls, data: dict) -> "QuotaEntity":
        return cls.of(data)


class QuotaStore(Protocol):
    """Client quotas, implemented by the metadata store (embedded file, etcd).

    ``client_quotas`` is read from memory; the one write applies several entities' changes at
    once (a None value removes that key; an entity left without keys goes) and notifies the
    store's listeners, so every broker's ``QuotaManagers.update`` runs.
    """

    def client_quotas(self) -> Mapping[QuotaEntity, Mapping[str, float]]: ...

    async def alter_client_quotas(self, changes: Mapping[QuotaEntity, Mapping[str, float | None]]) -> None: ...


class InMemoryQuotaStore:
    def __init__(self) -> None:
        self.quotas: dict[QuotaEntity, dict[str, float]] = {}

    def client_quotas(self) -> Mapping[QuotaEntity, Mapping[str, float]]:
        return self.quotas

    async def alter_client_quotas(self, changes: Mapping[QuotaEntity, Mapping[str, float | None]]) -> None:
        for entity, values in changes.items():
            current = self.quotas.setdefault(entity, {})
            for key, value in values.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
            if not current:
                del self.quotas[entity]


# --- DescribeClientQuotas / AlterClientQuotas -------------------------------------------------


@dataclass(frozen=True)
class FilterComponent:
    """One DescribeClientQuotas component: ``match`` is the name for MATCH_EXACT, else None."""

    entity_type: str
    match_type: int
    match: str | None = None


def describe_client_quotas(store: QuotaStore, components: Sequence[FilterComponent],
                           strict: bool = False) -> list[tuple[QuotaEntity, dict[str, float]]]:
    """The entities matching the filter and their values, as Kafka's ClientQuotasImage.describe.

    Raises KafkaError (INVALID_REQUEST, UNSUPPORTED_VERSION) for a bad filter: the response's
    top-level error.
    """
    exact: dict[str, str | None] = {}
    specified: set[str] = set()
    for component in components:
        entity_type = component.entity_type
        if not entity_type:
            raise KafkaError(ErrorCode.invalid_request, "Invalid empty entity type.")
        if entity_type in exact or entity_type in specified:
            raise KafkaError(ErrorCode.invalid_request, f"Entity type {entity_type} cannot appear more than once in the filter.")
        if entity_type not in ENTITY_TYPES:
            raise KafkaError(ErrorCode.unsupported_version, f"Unsupported entity type {entity_type}")
        if component.match_type == MATCH_EXACT:
            if component.match is None:
                raise KafkaError(ErrorCode.invalid_request, "Request specified MATCH_TYPE_EXACT, but set match string to null.")
            exact[entity_type] = component.match
        elif component.match_type == MATCH_DEFAULT:
            if component.match is not None:
                raise KafkaError(ErrorCode.invalid_request, "Request specified MATCH_TYPE_DEFAULT, but also specified a match string.")
            exact[entity_type] = None
        elif component.match_type == MATCH_SPECIFIED:
            if component.match is not None:
                raise KafkaError(ErrorCode.invalid_request, "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.")
            specified.add(entity_type)
        else:
            raise KafkaError(ErrorCode.invalid_request, f"Unknown match type {component.match_type}")
    named = set(exact) | specified
    if IP in named and named & {USER, CLIENT_ID}:
        raise KafkaError(ErrorCode.invalid_request, "Invalid entity filter component combination. IP filter component "
                                                    "should not be used with user or clientId filter component.")
    results = []
    for entity, values in store.client_quotas().items():
        entries = entity.as_dict()
        if strict and len(entries) != len(named):
            continue
        if all(t in entries and entries[t] == name for t, name in exact.items()) and specified <= entries.keys():
            results.append((entity, dict(values)))
    return results


@dataclass(frozen=True)
class QuotaAlteration:
    """One AlterClientQuotas entry: the entity as sent, and (key, value or None to remove) ops."""

    entity: tuple[tuple[str, str | None], ...]
    ops: tuple[tuple[str, float | None], ...]


@dataclass(frozen=True)
class AlterResult:
    entity: tuple[tuple[str, str | None], ...]
    error_code: ErrorCode = ErrorCode.none
    error_message: str | None = None


def _entity_text(entries: Iterable[tuple[str, str | None]]) -> str:
    return str(QuotaEntity(tuple(sorted(entries, key=lambda e: e[0]))))


def _check_entity(entries: tuple[tuple[str, str | None], ...]) -> str | None:
    if not entries:
        return "Invalid empty client quota entity"
    seen: set[str] = set()
    for entity_type, name in entries:
        if entity_type in seen:
            return f"Invalid client quota entity, duplicate entity entry {entity_type}"
        seen.add(entity_type)
        if entity_type not in ENTITY_TYPES:
            return f"Unhandled client quota entity type: {entity_type}"
        if name is not None and not name:
            return f"Empty {entity_type} not supported"
    if IP in seen:
        if seen != {IP}:
            return "Invalid quota entity combination, IP entity should not be combined with User or ClientId"
        return "IP quotas (connection_creation_rate) are not supported"
    return None


def _check_value(key: str, value: float) -> str | None:
    kind = QUOTA_KEYS.get(key)
    if kind is None:
        return f"Invalid configuration key {key}"
    if value <= 0.0:
        return f"Quota {key} must be greater than 0"
    if kind == "LONG":
        if value > _LONG_MAX:
            return f"Proposed value for {key} is too large for a LONG."
        if abs(math.fmod(value, 1.0)) > 1e-6:
            return f"{key} cannot be a fractional value."
    return None


async def alter_client_quotas(store: QuotaStore, alterations: Sequence[QuotaAlteration],
                              validate_only: bool = False) -> list[AlterResult]:
    """AlterClientQuotas as Kafka's ClientQuotaControlManager; the valid changes in one store write.

    An entity named twice in one request is refused both times (Kafka reports it once and
    applies its first change).
    """
    counts: dict[tuple, int] = {}
    for alteration in alterations:
        key = tuple(sorted(alteration.entity, key=lambda e: e[0]))
        counts[key] = counts.get(key, 0) + 1
    results = []
    changes: dict[QuotaEntity, dict[str, float | None]] = {}
    current = store.client_quotas()
    for alteration in alterations:
        entries = tuple(alteration.entity)
        text = _entity_text(entries)
        message = _check_entity(entries)
        if message is None and counts[tuple(sorted(entries, key=lambda e: e[0]))] > 1:
            message = f"Ignoring duplicate entity {text}"
        ops: dict[str, float | None] = {}
        for key, value in alteration.ops if message is None else ():
            if key in ops:
                message = f"Duplicate quota key {key} not updating quota for this entity {text}"
                break
            ops[key] = value
            if value is not None:
                message = _check_value(key, value)
                if message is not None:
                    break
        if message is not None:
            results.append(AlterResult(entries, ErrorCode.invalid_request, message))
            continue
        entity = QuotaEntity.of(dict(entries))
        existing = current.get(entity, {})
        effective = {k: v for k, v in ops.items() if (v is None and k in existing) or (v is not None and existing.get(k) != v)}
        if effective:
            changes[entity] = effective
        results.append(AlterResult(entries))
    if changes and not validate_only:
        await store.alter_client_quotas(changes)
    return results


# --- Rates and throttles ----------------------------------------------------------------------


class _Sample:
    __slots__ = ("value", "event_count", "start_ms", "last_event_ms")

    def __init__(self, now_ms: int) -> None:
        self.reset(now_ms)

    def reset(self, now_ms: int) -> None:
        self.value = 0.0
        self.event_count = 0
        self.start_ms = now_ms
        self.last_event_ms = now_ms


class SampledRate:
    """Kafka's Rate over a WindowedSum (SampledStat): a rate a second over sampled windows.

    ``samples`` windows of ``window_ms`` each, plus one slot for the sample overlapping the
    oldest edge; a sample with no event for ``samples * window_ms`` is reset.
    """

    __slots__ = ("samples", "window_ms", "_samples", "_current")

    def __init__(self, samples: int = 11, window_ms: int = 1000) -> None:
        self.samples = samples
        self.window_ms = window_ms
        self._samples: list[_Sample] = []
        self._current = 0

    def record(self, value: float, now_ms: int) -> None:
        sample = self._current_sample(now_ms)
        if now_ms - sample.start_ms >= self.window_ms:
            self._current = (self._current + 1) % (self.samples + 1)
            if self._current >= len(self._samples):
                sample = _Sample(now_ms)
                self._samples.append(sample)
            else:
                sample = self._samples[self._current]
                sample.reset(now_ms)
        sample.value += value
        sample.event_count += 1
        sample.last_event_ms = now_ms

    def _current_sample(self, now_ms: int) -> _Sample:
        if not self._samples:
            self._samples.append(_Sample(now_ms))
        return self._samples[self._current]

    def _purge(self, now_ms: int) -> None:
        expire_ms = self.samples * self.window_ms
        for sample in self._samples:
            if now_ms - sample.last_event_ms >= expire_ms:
                sample.reset(now_ms)

    def window_size_ms(self, now_ms: int) -> int:
        """The time the rate is measured over (Kafka's Rate.windowSize)."""
        self._purge(now_ms)
        if not self._samples:
            self._samples.append(_Sample(now_ms))
        elapsed = now_ms - min(s.start_ms for s in self._samples)
        full_windows = elapsed // self.window_ms
        if full_windows < self.samples - 1:
            elapsed += (self.samples - 1 - full_windows) * self.window_ms
        return max(elapsed, 1)

    def measure(self, now_ms: int) -> float:
        """Units a second."""
        window_ms = self.window_size_ms(now_ms)
        return sum(s.value for s in self._samples) / (window_ms / 1000.0)

    @property
    def last_event_ms(self) -> int:
        return max((s.last_event_ms for s in self._samples), default=0)


def throttle_time_ms(observed: float, bound: float, window_ms: int) -> int:
    """Kafka's QuotaUtils.throttleTime: the delay that brings ``observed`` back to ``bound``."""
    return math.floor((observed - bound) / bound * window_ms + 0.5)  # Java's Math.round


_PRECEDENCE_WITH_CLIENT = ((True, True), (True, None), (None, True), (None, None))  # levels 1, 2, 4, 5


class ClientQuotaManager:
    """One quota type's budgets: resolves each (user, client id), records, and throttles.

    Nothing is recorded while no entity defines this type, nor for a client no quota applies
    to, so quotas cost nothing until used. Rates of clients idle for an hour are dropped
    (``expire``), as Kafka drops its inactive sensors.
    """

    INACTIVE_EXPIRY_MS = 3600 * 1000

    def __init__(self, quota_type: QuotaType, samples: int = 11, window_seconds: int = 1) -> None:
        self.quota_type = quota_type
        self.samples = samples
        self.window_ms = window_seconds * 1000
        self.max_throttle_ms = self.window_ms if quota_type is QuotaType.REQUEST else None
        self._quotas: dict[QuotaEntity, float] = {}
        self._resolved: dict[tuple[str, str], tuple[tuple[str, str], float] | None] = {}
        self._rates: dict[tuple[str, str], SampledRate] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._quotas)

    def update(self, quotas: Mapping[QuotaEntity, Mapping[str, float]]) -> None:
        """Take the store's quotas after a change; existing rates keep their history."""
        key = self.quota_type.value
        self._quotas = {entity: values[key] for entity, values in quotas.items() if key in values}
        self._resolved = {}

    def resolve(self, user: str, client_id: str) -> tuple[tuple[str, str], float] | None:
        """The budget a client draws on: (its (user, client id) sharing key, the bound), or None."""
        cache_key = (user, client_id)
        if cache_key in self._resolved:
            return self._resolved[cache_key]
        resolved = self._resolve(user, client_id)
        if len(self._resolved) >= 100_000:  # client ids come from clients: keep the cache bounded
            self._resolved.clear()
        self._resolved[cache_key] = resolved
        return resolved

    def _resolve(self, user: str, client_id: str) -> tuple[tuple[str, str], float] | None:
        quotas = self._quotas
        for user_part in (user, None):
            for client_part in (client_id, None):
                bound = quotas.get(QuotaEntity.of({USER: user_part, CLIENT_ID: client_part}))
                if bound is not None:
                    return (user, client_id), bound
            bound = quotas.get(QuotaEntity.of({USER: user_part}))
            if bound is not None:
                return (user, ""), bound
        for client_part in (client_id, None):
            bound = quotas.get(QuotaEntity.of({CLIENT_ID: client_part}))
            if bound is not None:
                return ("", client_id), bound
        return None

    def quota_limit(self, user: str, client_id: str) -> float | None:
        resolved = self.resolve(user, client_id) if self._quotas else None
        return None if resolved is None else resolved[1]

    def record_and_throttle_ms(self, user: str, client_id: str, value: float, now_ms: int) -> int:
        """Record ``value`` (bytes, or request-time percent) and return the throttle time, 0 if none."""
        if not self._quotas:
            return 0
        resolved = self.resolve(user, client_id)
        if resolved is None:
            return 0
        sharing_key, bound = resolved
        rate = self._rates.get(sharing_key)
        if rate is None:
            rate = self._rates[sharing_key] = SampledRate(self.samples, self.window_ms)
        rate.record(value, now_ms)
        observed = rate.measure(now_ms)
        if observed <= bound:
            return 0
        throttle_ms = throttle_time_ms(observed, bound, rate.window_size_ms(now_ms))
        return min(throttle_ms, self.max_throttle_ms) if self.max_throttle_ms is not None else throttle_ms

    def unrecord(self, user: str, client_id: str, value: float, now_ms: int) -> None:
        """Take back a recorded value (a throttled fetch answers empty, so its bytes did not go)."""
        resolved = self.resolve(user, client_id) if self._quotas else None
        if resolved is not None and resolved[0] in self._rates:
            self._rates[resolved[0]].record(-value, now_ms)

    def rate(self, user: str, client_id: str, now_ms: int) -> float | None:
        """The measured rate of the budget a client draws on (for metrics and tests)."""
        resolved = self.resolve(user, client_id) if self._quotas else None
        if resolved is None or resolved[0] not in self._rates:
            return None
        return self._rates[resolved[0]].measure(now_ms)

    def expire(self, now_ms: int) -> int:
        """Drop the rates with no event for an hour; returns how many went."""
        idle = [key for key, rate in self._rates.items() if now_ms - rate.last_event_ms >= self.INACTIVE_EXPIRY_MS]
        for key in idle:
            del self._rates[key]
        return len(idle)


NANOS_TO_PERCENT = 100.0 / 1e9  # Kafka's request quota: a percentage of one thread's time


class QuotaManagers:
    """The produce, fetch and request quotas of a broker, with Kafka's rules for each API.

    - Produce: the request's size counts against ``producer_byte_rate``; the request time
      against ``request_percentage`` except for acks=0.
    - Fetch: the response's size against ``consumer_byte_rate``, and the request time; when
      either throttles, the fetch is answered empty and its bytes are taken back.
    - Every other API (except those exempt: ApiVersions, SASL, broker-to-broker): request time.
    The throttle time to answer with is the larger of the two.
    """

    def __init__(self, samples: int = 11, window_seconds: int = 1) -> None:
        self.produce = ClientQuotaManager(QuotaType.PRODUCE, samples, window_seconds)
        self.fetch = ClientQuotaManager(QuotaType.FETCH, samples, window_seconds)
        self.request = ClientQuotaManager(QuotaType.REQUEST, samples, window_seconds)

    def update(self, quotas: Mapping[QuotaEntity, Mapping[str, float]]) -> None:
        for manager in (self.produce, self.fetch, self.request):
            manager.update(quotas)

    def expire(self, now_ms: int) -> None:
        for manager in (self.produce, self.fetch, self.request):
            manager.expire(now_ms)

    def request_time_throttle_ms(self, user: str, client_id: str, request_time_ns: int, now_ms: int) -> int:
        return self.request.record_and_throttle_ms(user, client_id, request_time_ns * NANOS_TO_PERCENT, now_ms)

    def produce_throttle_ms(self, user: str, client_id: str, request_bytes: int, request_time_ns: int, acks: int,
                            now_ms: int) -> int:
        bandwidth = self.produce.record_and_throttle_ms(user, client_id, request_bytes, now_ms)
        request = 0 if acks == 0 else self.request_time_throttle_ms(user, client_id, request_time_ns, now_ms)
        return max(bandwidth, request)

    def fetch_throttle_ms(self, user: str, client_id: str, response_bytes: int, request_time_ns: int,
                          now_ms: int) -> int:
        """The throttle of a fetch; when not 0 answer it empty (its bytes are already taken back)."""
        request = self.request_time_throttle_ms(user, client_id, request_time_ns, now_ms)
        bandwidth = self.fetch.record_and_throttle_ms(user, client_id, response_bytes, now_ms)
        throttle_ms = max(bandwidth, request)
        if throttle_ms > 0:
            self.fetch.unrecord(user, client_id, response_bytes, now_ms)
        return throttle_ms
