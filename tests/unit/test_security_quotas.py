"""Client quotas: Kafka's sampled-rate and throttle arithmetic, entity precedence, admin APIs.

Time is a number of milliseconds passed in; nothing sleeps.
"""

from __future__ import annotations

import asyncio

import pytest

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.quotas import (
    CLIENT_ID,
    CONSUMER_BYTE_RATE,
    MATCH_DEFAULT,
    MATCH_EXACT,
    MATCH_SPECIFIED,
    PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    USER,
    ClientQuotaManager,
    FilterComponent,
    InMemoryQuotaStore,
    QuotaAlteration,
    QuotaEntity,
    QuotaManagers,
    QuotaType,
    SampledRate,
    alter_client_quotas,
    describe_client_quotas,
    throttle_time_ms,
)


def entity(user=..., client_id=...):
    entries = {}
    if user is not ...:
        entries[USER] = user
    if client_id is not ...:
        entries[CLIENT_ID] = client_id
    return QuotaEntity.of(entries)


# --- the sampled rate ----------------------------------------------------------------------


def test_a_first_burst_is_measured_over_the_whole_window():
    rate = SampledRate(samples=11, window_ms=1000)
    rate.record(1000, now_ms=0)
    assert rate.window_size_ms(0) == 10_000  # counted as samples - 1 whole windows
    assert rate.measure(0) == pytest.approx(100.0)
    assert rate.window_size_ms(2500) == 10_500  # 2 full windows elapsed: 8 more are added


def test_a_steady_rate_measures_as_itself():
    rate = SampledRate(samples=11, window_ms=1000)
    for t in range(0, 30_000, 100):  # 100 bytes every 100 ms: 1000 B/s
        rate.record(100, t)
    assert rate.measure(29_900) == pytest.approx(1000, rel=0.02)
    assert len(rate._samples) == 12  # samples + the overlapping one


def test_idle_samples_expire():
    rate = SampledRate(samples=11, window_ms=1000)
    rate.record(5000, 0)
    assert rate.measure(10_999) > 0
    assert rate.measure(11_000) == 0  # no event for samples * window


def test_throttle_time_is_kafkas_formula():
    assert throttle_time_ms(2000, 1000, 10_000) == 10_000
    assert throttle_time_ms(1500, 1000, 11_000) == 5500
    assert throttle_time_ms(1000.5, 1000, 1000) == 1  # 0.5 rounds half up, as Java's Math.round
    manager = ClientQuotaManager(QuotaType.PRODUCE)
    manager.update({entity(client_id="app"): {PRODUCER_BYTE_RATE: 1000}})
    assert manager.record_and_throttle_ms("ANONYMOUS", "app", 20_000, now_ms=0) == 10_000
    assert manager.record_and_throttle_ms("ANONYMOUS", "other", 20_000, now_ms=0) == 0


def test_request_time_throttle_is_capped_at_one_window():
    managers = QuotaManagers()
    managers.update({entity(user="alice"): {REQUEST_PERCENTAGE: 10}})
    # 5 s of handler time at once: far above 10% of a thread
    assert managers.request_time_throttle_ms("alice", "c", 5_000_000_000, now_ms=0) == 1000


@pytest.mark.parametrize("bound", [50_000, 1_000_000])
def test_a_producer_that_honours_throttles_keeps_within_ten_percent_of_its_byte_rate(bound):
    """What a Kafka client does: after a throttled response it waits throttle_time_ms."""
    managers = QuotaManagers()
    managers.update({entity(user="alice"): {PRODUCER_BYTE_RATE: bound}})
    now_ms, sent, request_bytes = 0, 0, 16_384
    while now_ms < 120_000:
        throttle_ms = managers.produce_throttle_ms("alice", "producer-1", request_bytes, 0, acks=1, now_ms=now_ms)
        sent += request_bytes
        now_ms += max(throttle_ms, 2)  # a fast producer: a request every 2 ms unless throttled
    assert sent / (now_ms / 1000) == pytest.approx(bound, rel=0.10)


# --- who gets which quota ---------------------------------------------------------------------

LEVELS = [  # Kafka's precedence, most specific first, with the sharing key each gives
    (entity("alice", "app"), ("alice", "app")),
    (entity("alice", None), ("alice", "app")),
    (entity("alice"), ("alice", "")),
    (entity(None, "app"), ("alice", "app")),
    (entity(None, None), ("alice", "app")),
    (entity(None), ("alice", "")),
    (entity(client_id="app"), ("", "app")),
    (entity(client_id=None), ("", "app")),
]


def test_precedence_of_the_eight_levels():
    quotas = {e: {PRODUCER_BYTE_RATE: 1000 + level} for level, (e, _) in enumerate(LEVELS)}
    manager = ClientQuotaManager(QuotaType.PRODUCE)
    for level, (e, sharing_key) in enumerate(LEVELS):
        manager.update(quotas)
        assert manager.resolve("alice", "app") == (sharing_key, 1000 + level), e
        del quotas[e]
    manager.update(quotas)
    assert manager.resolve("alice", "app") is None and not manager.enabled


def test_a_user_quota_is_shared_by_the_users_client_ids_and_a_client_quota_by_its_users():
    manager = ClientQuotaManager(QuotaType.FETCH)
    manager.update({entity("alice"): {CONSUMER_BYTE_RATE: 1000}, entity(client_id="etl"): {CONSUMER_BYTE_RATE: 1000}})
    manager.record_and_throttle_ms("alice", "c1", 5000, 0)
    manager.record_and_throttle_ms("alice", "c2", 5000, 0)
    assert manager.rate("alice", "c3", 0) == pytest.approx(1000)  # 10,000 bytes over 10 s, one budget
    manager.record_and_throttle_ms("bob", "etl", 3000, 0)
    manager.record_and_throttle_ms("carol", "etl", 3000, 0)
    assert manager.rate("dave", "etl", 0) == pytest.approx(600)
    assert manager.quota_limit("erin", "other") is None


def test_each_quota_type_resolves_on_its_own():
    managers = QuotaManagers()
    managers.update({entity("alice"): {PRODUCER_BYTE_RATE: 100}, entity(client_id="c"): {CONSUMER_BYTE_RATE: 200}})
    assert managers.produce.quota_limit("alice", "c") == 100
    assert managers.fetch.quota_limit("alice", "c") == 200
    assert managers.request.quota_limit("alice", "c") is None
    assert managers.produce.resolve("alice", "c")[0] == ("alice", "")
    assert managers.fetch.resolve("alice", "c")[0] == ("", "c")


def test_no_quota_records_nothing():
    managers = QuotaManagers()
    assert managers.produce_throttle_ms("alice", "c", 10**9, 10**9, acks=1, now_ms=0) == 0
    assert not managers.produce._rates and not managers.request._rates


def test_acks_0_produce_is_exempt_from_the_request_quota():
    managers = QuotaManagers()
    managers.update({entity("alice"): {REQUEST_PERCENTAGE: 1}})
    assert managers.produce_throttle_ms("alice", "c", 100, 10**9, acks=0, now_ms=0) == 0
    assert managers.produce_throttle_ms("alice", "c", 100, 10**9, acks=1, now_ms=0) > 0


def test_a_throttled_fetch_takes_its_bytes_back():
    managers = QuotaManagers()
    managers.update({entity("alice"): {CONSUMER_BYTE_RATE: 1000}})
    assert managers.fetch_throttle_ms("alice", "c", 5000, 0, now_ms=0) == 0
    assert managers.fetch_throttle_ms("alice", "c", 50_000, 0, now_ms=0) > 0
    assert managers.fetch.rate("alice", "c", 0) == pytest.approx(500)  # only the first fetch's bytes count


def test_quota_changes_keep_the_rate_history_and_idle_rates_expire():
    manager = ClientQuotaManager(QuotaType.PRODUCE)
    manager.update({entity("alice"): {PRODUCER_BYTE_RATE: 10_000}})
    assert manager.record_and_throttle_ms("alice", "c", 20_000, 0) == 0
    manager.update({entity("alice"): {PRODUCER_BYTE_RATE: 1000}})
    assert manager.record_and_throttle_ms("alice", "c", 0, 0) == 10_000
    assert manager.expire(3_599_999) == 0 and manager.expire(3_600_000) == 1
    assert manager.rate("alice", "c", 3_600_000) is None


# --- DescribeClientQuotas / AlterClientQuotas ---------------------------------------------------


@pytest.fixture
def store():
    store = InMemoryQuotaStore()
    store.quotas = {
        entity("alice"): {PRODUCER_BYTE_RATE: 1000.0},
        entity("alice", "app"): {CONSUMER_BYTE_RATE: 2000.0},
        entity(None): {REQUEST_PERCENTAGE: 50.0},
        entity(client_id="app"): {PRODUCER_BYTE_RATE: 3000.0},
        entity(client_id=None): {PRODUCER_BYTE_RATE: 4000.0},
    }
    return store


def described(store, components, strict=False):
    return [e.as_dict() for e, _ in describe_client_quotas(store, components, strict)]


def test_describe_filters(store):
    assert described(store, [FilterComponent(USER, MATCH_EXACT, "alice")]) == [{USER: "alice"}, {USER: "alice", CLIENT_ID: "app"}]
    assert described(store, [FilterComponent(USER, MATCH_EXACT, "alice")], strict=True) == [{USER: "alice"}]
    assert described(store, [FilterComponent(USER, MATCH_DEFAULT)]) == [{USER: None}]
    assert described(store, [FilterComponent(CLIENT_ID, MATCH_SPECIFIED)]) == [
        {USER: "alice", CLIENT_ID: "app"}, {CLIENT_ID: "app"}, {CLIENT_ID: None}]
    assert described(store, [FilterComponent(CLIENT_ID, MATCH_SPECIFIED)], strict=True) == [{CLIENT_ID: "app"}, {CLIENT_ID: None}]
    assert len(described(store, [])) == 5 and described(store, [], strict=True) == []
    assert described(store, [FilterComponent("ip", MATCH_SPECIFIED)]) == []
    [(_, values)] = describe_client_quotas(store, [FilterComponent(USER, MATCH_DEFAULT)])
    assert values == {REQUEST_PERCENTAGE: 50.0}


@pytest.mark.parametrize("components, error, message", [
    ([FilterComponent("", MATCH_SPECIFIED)], ErrorCode.invalid_request, "Invalid empty entity type."),
    ([FilterComponent(USER, MATCH_SPECIFIED), FilterComponent(USER, MATCH_DEFAULT)], ErrorCode.invalid_request,
     "Entity type user cannot appear more than once in the filter."),
    ([FilterComponent("group", MATCH_SPECIFIED)], ErrorCode.unsupported_version, "Unsupported entity type group"),
    ([FilterComponent(USER, MATCH_EXACT, None)], ErrorCode.invalid_request,
     "Request specified MATCH_TYPE_EXACT, but set match string to null."),
    ([FilterComponent(USER, MATCH_DEFAULT, "x")], ErrorCode.invalid_request,
     "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."),
    ([FilterComponent(USER, MATCH_SPECIFIED, "x")], ErrorCode.invalid_request,
     "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."),
    ([FilterComponent(USER, 7)], ErrorCode.invalid_request, "Unknown match type 7"),
    ([FilterComponent("ip", MATCH_SPECIFIED), FilterComponent(USER, MATCH_SPECIFIED)], ErrorCode.invalid_request,
     "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component."),
])
def test_describe_filter_errors(store, components, error, message):
    with pytest.raises(KafkaError) as raised:
        describe_client_quotas(store, components)
    assert (raised.value.error_code, raised.value.message) == (error, message)


def alteration(entries, *ops):
    return QuotaAlteration(tuple(entries), tuple(ops))


def test_alter_sets_changes_and_removes_in_one_write(store):
    results = asyncio.run(alter_client_quotas(store, [
        alteration([(USER, "alice")], (PRODUCER_BYTE_RATE, 1500.0), (CONSUMER_BYTE_RATE, 99.0)),
        alteration([(CLIENT_ID, "app")], (PRODUCER_BYTE_RATE, None)),
        alteration([(USER, "bob"), (CLIENT_ID, None)], (REQUEST_PERCENTAGE, 12.5)),
    ]))
    assert [r.error_code for r in results] == [ErrorCode.none] * 3
    assert store.quotas[entity("alice")] == {PRODUCER_BYTE_RATE: 1500.0, CONSUMER_BYTE_RATE: 99.0}
    assert entity(client_id="app") not in store.quotas
    assert store.quotas[entity("bob", None)] == {REQUEST_PERCENTAGE: 12.5}


def test_alter_validate_only_changes_nothing(store):
    before = {e: dict(v) for e, v in store.quotas.items()}
    results = asyncio.run(alter_client_quotas(store, [alteration([(USER, "zed")], (PRODUCER_BYTE_RATE, 10.0))],
                                              validate_only=True))
    assert results[0].error_code == ErrorCode.none and store.quotas == before


@pytest.mark.parametrize("entries, ops, message", [
    ([], [(PRODUCER_BYTE_RATE, 1.0)], "Invalid empty client quota entity"),
    ([(USER, "a"), (USER, "b")], [(PRODUCER_BYTE_RATE, 1.0)], "Invalid client quota entity, duplicate entity entry user"),
    ([("group", "g")], [(PRODUCER_BYTE_RATE, 1.0)], "Unhandled client quota entity type: group"),
    ([(USER, "")], [(PRODUCER_BYTE_RATE, 1.0)], "Empty user not supported"),
    ([("ip", "10.0.0.1"), (USER, "a")], [], "Invalid quota entity combination, IP entity should not be combined with User or ClientId"),
    ([("ip", "10.0.0.1")], [("connection_creation_rate", 5.0)], "IP quotas (connection_creation_rate) are not supported"),
    ([(USER, "a")], [("consumer_rate", 1.0)], "Invalid configuration key consumer_rate"),
    ([(USER, "a")], [(PRODUCER_BYTE_RATE, 0.0)], "Quota producer_byte_rate must be greater than 0"),
    ([(USER, "a")], [(PRODUCER_BYTE_RATE, 10.5)], "producer_byte_rate cannot be a fractional value."),
    ([(USER, "a")], [(PRODUCER_BYTE_RATE, 1e19)], "Proposed value for producer_byte_rate is too large for a LONG."),
    ([(USER, "a")], [(PRODUCER_BYTE_RATE, 1.0), (PRODUCER_BYTE_RATE, None)],
     "Duplicate quota key producer_byte_rate not updating quota for this entity ClientQuotaEntity(entries={user=a})"),
])
def test_alter_errors_as_kafka(entries, ops, message):
    store = InMemoryQuotaStore()
    [result] = asyncio.run(alter_client_quotas(store, [alteration(entries, *ops)]))
    assert (result.error_code, result.error_message) == (ErrorCode.invalid_request, message)
    assert store.quotas == {}


def test_alter_refuses_an_entity_named_twice_and_applies_the_rest():
    store = InMemoryQuotaStore()
    results = asyncio.run(alter_client_quotas(store, [
        alteration([(USER, "a"), (CLIENT_ID, "c")], (PRODUCER_BYTE_RATE, 1.0)),
        alteration([(CLIENT_ID, "c"), (USER, "a")], (PRODUCER_BYTE_RATE, 2.0)),
        alteration([(USER, "b")], (REQUEST_PERCENTAGE, 0.5)),
    ]))
    assert [r.error_message for r in results] == [
        "Ignoring duplicate entity ClientQuotaEntity(entries={client-id=c, user=a})",
        "Ignoring duplicate entity ClientQuotaEntity(entries={client-id=c, user=a})", None]
    assert store.quotas == {entity("b"): {REQUEST_PERCENTAGE: 0.5}}


def test_entities_round_trip_through_their_stored_form():
    for e, _ in LEVELS:
        assert QuotaEntity.from_json(e.to_json()) == e
    assert str(entity("alice", None)) == "ClientQuotaEntity(entries={client-id=null, user=alice})"
