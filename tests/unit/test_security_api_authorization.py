"""The per-API authorization table: complete, true to the request schemas, and applied as data."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from kio.index import load_request_schema

from tidelog.protocol.apis import KAFKA_4_0
from tidelog.protocol.errors import ErrorCode
from tidelog.security.acl import (
    AccessControlEntry,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from tidelog.security.api_authorization import API_AUTHORIZATION, Scope, authorize_request, request_checks
from tidelog.security.authorizer import Access, Authorizer
from tidelog.security.principal import KafkaPrincipal

SECURITY_APIS = {29: "DescribeAcls", 30: "CreateAcls", 31: "DeleteAcls", 48: "DescribeClientQuotas",
                 49: "AlterClientQuotas", 50: "DescribeUserScramCredentials", 51: "AlterUserScramCredentials"}


def test_every_served_api_and_every_security_api_has_an_entry():
    for api_key, (name, _, _) in {**KAFKA_4_0, **{k: (v, 0, 0) for k, v in SECURITY_APIS.items()}}.items():
        assert api_key in API_AUTHORIZATION, f"{name} ({api_key}) has no authorization entry"
        assert API_AUTHORIZATION[api_key].name == name


def test_every_denial_has_an_error_code_and_filters_have_none():
    for entry in API_AUTHORIZATION.values():
        for check in entry.checks:
            assert (check.error is None) == (check.scope is Scope.FILTER), (entry.name, check)


def _request_versions(api_key):
    for version in range(0, 25):
        try:
            yield version, load_request_schema(api_key, version)
        except Exception:
            continue


@pytest.mark.parametrize("api_key", sorted(API_AUTHORIZATION))
def test_request_scope_fields_exist_in_every_version(api_key):
    """authorize_request reads these attributes: a typo or a renamed field would fail here."""
    low = KAFKA_4_0.get(api_key, ("", 0, 0))[1]
    for check in request_checks(api_key):
        if check.field is None:
            continue
        for version, schema in _request_versions(api_key):
            if version >= low:
                assert check.field in {f.name for f in dataclasses.fields(schema)}, (api_key, version, check.field)


def test_cluster_admin_apis_need_their_cluster_operation():
    expected = {29: AclOperation.DESCRIBE, 30: AclOperation.ALTER, 31: AclOperation.ALTER, 45: AclOperation.ALTER,
                46: AclOperation.DESCRIBE, 48: AclOperation.DESCRIBE_CONFIGS, 49: AclOperation.ALTER_CONFIGS,
                50: AclOperation.DESCRIBE, 51: AclOperation.ALTER, 43: AclOperation.ALTER, 35: AclOperation.DESCRIBE}
    for api_key, operation in expected.items():
        [check] = request_checks(api_key)
        assert (check.operation, check.resource_type, check.error) == (
            operation, ResourceType.CLUSTER, ErrorCode.cluster_authorization_failed)


def allow(resource_type, name, operation, pattern=PatternType.LITERAL, principal="User:alice"):
    return AclBinding(ResourcePattern(resource_type, name, pattern),
                      AccessControlEntry(principal, "*", operation, AclPermissionType.ALLOW))


@pytest.fixture
def alice():
    authorizer = Authorizer()
    authorizer.load([
        allow(ResourceType.GROUP, "app-", AclOperation.READ, PatternType.PREFIXED),
        allow(ResourceType.TOPIC, "orders", AclOperation.DESCRIBE),
        allow(ResourceType.TRANSACTIONAL_ID, "tx", AclOperation.WRITE),
        allow(ResourceType.CLUSTER, "kafka-cluster", AclOperation.DESCRIBE),
    ])
    return Access(authorizer, KafkaPrincipal.user("alice"), "127.0.0.1")


@pytest.mark.parametrize("api_key, fields, error", [
    (11, dict(group_id="app-billing"), None),  # JoinGroup
    (11, dict(group_id="other"), ErrorCode.group_authorization_failed),
    (14, dict(group_id="other"), ErrorCode.group_authorization_failed),  # SyncGroup
    (8, dict(group_id="app-1"), None),  # OffsetCommit: the group here, topics in the handler
    (47, dict(group_id="app-1"), ErrorCode.group_authorization_failed),  # OffsetDelete needs DELETE
    (22, dict(transactional_id=None), None),  # InitProducerId, idempotent: the handler's conditional check
    (22, dict(transactional_id="tx"), None),
    (22, dict(transactional_id="other"), ErrorCode.transactional_id_authorization_failed),
    (25, dict(transactional_id="tx", group_id="nope"), ErrorCode.group_authorization_failed),  # AddOffsetsToTxn
    (68, dict(group_id="app-1", subscribed_topic_names=["orders"]), None),
    (68, dict(group_id="app-1", subscribed_topic_names=None), None),
    (68, dict(group_id="app-1", subscribed_topic_names=["orders", "secret"]), ErrorCode.topic_authorization_failed),
    (68, dict(group_id="nope", subscribed_topic_names=["secret"]), ErrorCode.group_authorization_failed),
    (29, {}, None),  # DescribeAcls
    (30, {}, ErrorCode.cluster_authorization_failed),  # CreateAcls
    (51, {}, ErrorCode.cluster_authorization_failed),  # AlterUserScramCredentials
    (0, dict(transactional_id="other"), None),  # Produce: the transactional check is conditional
    (3, {}, None),  # Metadata: per topic, in the handler
    (18, {}, None),
])
def test_authorize_request(alice, api_key, fields, error):
    assert authorize_request(alice, api_key, SimpleNamespace(**fields)) == error


def test_nothing_is_refused_without_an_authorizer():
    access = Access(None, KafkaPrincipal.user("alice"), "127.0.0.1")
    assert authorize_request(access, 30, SimpleNamespace()) is None
    assert authorize_request(access, 11, SimpleNamespace(group_id="any")) is None
