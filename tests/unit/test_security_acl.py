"""ACL bindings, filters and CreateAcls/DescribeAcls/DeleteAcls, with Kafka's checks and messages."""

from __future__ import annotations

import asyncio

import pytest

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.acl import (
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    InMemoryAclStore,
    PatternType,
    ResourcePattern,
    ResourceType,
    check_creation_version,
    create_acls,
    delete_acls,
    filter_for_version,
    group_by_resource,
)

TOPIC, GROUP, CLUSTER = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
LITERAL, PREFIXED, MATCH, ANY = PatternType.LITERAL, PatternType.PREFIXED, PatternType.MATCH, PatternType.ANY
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
READ, WRITE = AclOperation.READ, AclOperation.WRITE


def acl(resource_type=TOPIC, name="orders", pattern_type=LITERAL, principal="User:alice", host="*", operation=READ,
        permission=ALLOW):
    return AclBinding(ResourcePattern(resource_type, name, pattern_type),
                      AccessControlEntry(principal, host, operation, permission))


LITERAL_ORDERS = acl()
PREFIXED_ORD = acl(name="ord", pattern_type=PREFIXED, operation=WRITE)
WILDCARD_TOPICS = acl(name="*", principal="User:bob")
GROUP_ORDERS = acl(resource_type=GROUP)
EVERYTHING = [LITERAL_ORDERS, PREFIXED_ORD, WILDCARD_TOPICS, GROUP_ORDERS]


def matching(acl_filter):
    return [b for b in EVERYTHING if acl_filter.matches(b)]


def test_codes_are_kafkas():
    assert [(m.name, m.value) for m in ResourceType] == [
        ("UNKNOWN", 0), ("ANY", 1), ("TOPIC", 2), ("GROUP", 3), ("CLUSTER", 4), ("TRANSACTIONAL_ID", 5),
        ("DELEGATION_TOKEN", 6), ("USER", 7)]
    assert [(m.name, m.value) for m in PatternType] == [("UNKNOWN", 0), ("ANY", 1), ("MATCH", 2), ("LITERAL", 3), ("PREFIXED", 4)]
    assert [m.value for m in AclOperation] == list(range(16))
    assert (AclOperation.DESCRIBE_CONFIGS, AclOperation.IDEMPOTENT_WRITE) == (10, 12)
    assert [(m.name, m.value) for m in AclPermissionType] == [("UNKNOWN", 0), ("ANY", 1), ("DENY", 2), ("ALLOW", 3)]
    assert AclOperation.from_code(99) is AclOperation.UNKNOWN


def test_names_parse_in_any_common_spelling():
    for text in ("DescribeConfigs", "describe_configs", "DESCRIBE-CONFIGS"):
        assert AclOperation.parse(text) is AclOperation.DESCRIBE_CONFIGS
    assert ResourceType.parse("transactional-id") is ResourceType.TRANSACTIONAL_ID
    assert AclOperation.DESCRIBE_CONFIGS.pascal_name == "DescribeConfigs"
    with pytest.raises(ValueError, match="unknown AclOperation 'Fly'; one of All, Read, Write"):
        AclOperation.parse("Fly")


def test_filters_match_as_kafkas_resource_pattern_filter():
    assert matching(AclBindingFilter()) == EVERYTHING
    assert matching(AclBindingFilter(TOPIC)) == [LITERAL_ORDERS, PREFIXED_ORD, WILDCARD_TOPICS]
    # LITERAL / PREFIXED / ANY with a name: that exact pattern name
    assert matching(AclBindingFilter(TOPIC, "orders", LITERAL)) == [LITERAL_ORDERS]
    assert matching(AclBindingFilter(TOPIC, "ord", PREFIXED)) == [PREFIXED_ORD]
    assert matching(AclBindingFilter(TOPIC, "orders", ANY)) == [LITERAL_ORDERS]
    assert matching(AclBindingFilter(TOPIC, "*", ANY)) == [WILDCARD_TOPICS]
    # MATCH: every pattern that applies to a resource of that name
    assert matching(AclBindingFilter(TOPIC, "orders", MATCH)) == [LITERAL_ORDERS, PREFIXED_ORD, WILDCARD_TOPICS]
    assert matching(AclBindingFilter(TOPIC, "or", MATCH)) == [WILDCARD_TOPICS]
    assert matching(AclBindingFilter(TOPIC, None, MATCH)) == [LITERAL_ORDERS, PREFIXED_ORD, WILDCARD_TOPICS]
    # the entry's fields
    assert matching(AclBindingFilter(principal="User:bob")) == [WILDCARD_TOPICS]
    assert matching(AclBindingFilter(operation=WRITE)) == [PREFIXED_ORD]
    assert matching(AclBindingFilter(permission_type=DENY)) == []
    assert matching(AclBindingFilter(host="10.0.0.1")) == []


def test_indefinite_fields():
    assert AclBindingFilter().find_indefinite_field() == "Resource type is ANY."
    assert AclBindingFilter(TOPIC, "x", MATCH).find_indefinite_field() == "Resource pattern type is MATCH."
    definite = AclBindingFilter(TOPIC, "x", LITERAL, "User:a", "*", READ, ALLOW)
    assert definite.find_indefinite_field() is None


def test_version_0_filters_know_only_literal_patterns():
    assert filter_for_version(AclBindingFilter(TOPIC, "x", ANY), 0).pattern_type is LITERAL
    assert filter_for_version(AclBindingFilter(TOPIC, "x", ANY), 1).pattern_type is ANY
    with pytest.raises(KafkaError) as raised:
        filter_for_version(AclBindingFilter(TOPIC, "x", PREFIXED), 0)
    assert raised.value.error_code == ErrorCode.unsupported_version
    with pytest.raises(KafkaError) as raised:
        filter_for_version(AclBindingFilter(operation=AclOperation.UNKNOWN), 2)
    assert raised.value.error_code == ErrorCode.invalid_request
    with pytest.raises(KafkaError, match="Version 0 only supports literal resource pattern types"):
        check_creation_version([PREFIXED_ORD], 0)
    check_creation_version([PREFIXED_ORD], 1)


@pytest.mark.parametrize("binding, message", [
    (acl(resource_type=ResourceType.ANY), "Invalid resourceType ANY"),
    (acl(resource_type=ResourceType.UNKNOWN), "Invalid resourceType UNKNOWN"),
    (acl(resource_type=CLUSTER, name="my-cluster"), "The only valid name for the CLUSTER resource is kafka-cluster"),
    (acl(name=""), "Invalid empty resource name"),
    (acl(pattern_type=MATCH), "Invalid patternType MATCH"),
    (acl(pattern_type=ANY), "Invalid patternType ANY"),
    (acl(operation=AclOperation.ANY), "Invalid operation ANY"),
    (acl(permission=AclPermissionType.ANY), "Invalid permissionType ANY"),
    (acl(principal="alice"), "expected a string in format principalType:principalName but got alice"),
    (acl(host=""), "Invalid empty host"),
])
def test_create_acls_refuses_what_kafka_refuses(binding, message):
    store = InMemoryAclStore()
    [result] = asyncio.run(create_acls(store, [binding]))
    assert (result.error_code, result.error_message) == (ErrorCode.invalid_request, message)
    assert not store.bindings


def test_create_acls_stores_each_valid_binding_once():
    store = InMemoryAclStore([LITERAL_ORDERS])
    cluster = acl(resource_type=CLUSTER, name="kafka-cluster", operation=AclOperation.ALTER)
    results = asyncio.run(create_acls(store, [LITERAL_ORDERS, PREFIXED_ORD, acl(name=""), PREFIXED_ORD, cluster]))
    assert [r.error_code for r in results] == [ErrorCode.none, ErrorCode.none, ErrorCode.invalid_request,
                                               ErrorCode.none, ErrorCode.none]
    assert list(store.bindings) == [LITERAL_ORDERS, PREFIXED_ORD, cluster]


def test_delete_acls_reports_each_filters_matches_and_deletes_them_all():
    store = InMemoryAclStore(EVERYTHING)
    results = asyncio.run(delete_acls(store, [
        AclBindingFilter(TOPIC, "orders", MATCH, principal="User:alice"),
        AclBindingFilter(TOPIC, "ord", PREFIXED),
        AclBindingFilter(CLUSTER),
        AclBindingFilter(pattern_type=PatternType.UNKNOWN),
    ]))
    assert [r.bindings for r in results[:3]] == [(LITERAL_ORDERS, PREFIXED_ORD), (PREFIXED_ORD,), ()]
    assert (results[3].error_code, results[3].error_message) == (ErrorCode.invalid_request, "Filter contains UNKNOWN elements")
    assert list(store.bindings) == [WILDCARD_TOPICS, GROUP_ORDERS]


def test_bindings_round_trip_through_their_stored_form():
    for binding in EVERYTHING:
        assert AclBinding.from_json(binding.to_json()) == binding
    assert LITERAL_ORDERS.to_json() == {"resource_type": "TOPIC", "name": "orders", "pattern_type": "LITERAL",
                                        "principal": "User:alice", "host": "*", "operation": "READ",
                                        "permission_type": "ALLOW"}


def test_describe_groups_by_resource_pattern():
    second = acl(principal="User:carol")
    grouped = group_by_resource([LITERAL_ORDERS, PREFIXED_ORD, second])
    assert grouped == {LITERAL_ORDERS.pattern: [LITERAL_ORDERS.entry, second.entry], PREFIXED_ORD.pattern: [PREFIXED_ORD.entry]}
    assert str(PREFIXED_ORD.pattern) == "Topic:PREFIXED:ord"
