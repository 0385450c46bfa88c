"""Which operation on which resource each Kafka API needs, as Kafka's KafkaApis checks it.

One ``ApiAuthorization`` per API key, its checks in the order Kafka makes them. A check's
``scope`` says what a denial does:

- ``REQUEST``: the whole request is answered with ``error`` (the request's own error response),
  before anything is done. ``field`` names the request attribute holding the resource name (a
  list means every name in it must pass); None means the cluster (``kafka-cluster``). A check
  whose field is null in the request does not apply (InitProducerId without a transactional id).
- ``EACH``: each named resource (topic, group, config resource...) is answered on its own with
  ``error``; the others go on. ``field`` says where the names are, for the reader.
- ``FILTER``: what the principal may not see is left out without an error (Metadata for all
  topics, ListGroups).

A check with a ``condition`` applies only then; the handler decides it. ``authorize_request``
applies every unconditional REQUEST check, so the connection can refuse a request before its
handler runs; EACH and FILTER checks are the handler's, through ``authorizer.Access``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from tidelog.protocol.errors import ErrorCode
from tidelog.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from tidelog.security.authorizer import Access

__all__ = ["API_AUTHORIZATION", "ApiAuthorization", "Check", "Scope", "authorize_request"]


class Scope(enum.Enum):
    REQUEST = "request"
    EACH = "each"
    FILTER = "filter"


@dataclass(frozen=True)
class Check:
    operation: AclOperation
    resource_type: ResourceType
    scope: Scope
    error: ErrorCode | None = None  # None for FILTER
    field: str | None = None
    condition: str = ""


@dataclass(frozen=True)
class ApiAuthorization:
    api_key: int
    name: str
    checks: tuple[Check, ...] = ()
    note: str = ""


_Op, _Res, _S, _E = AclOperation, ResourceType, Scope, ErrorCode
_TOPIC_DENIED, _GROUP_DENIED = _E.topic_authorization_failed, _E.group_authorization_failed
_CLUSTER_DENIED, _TXN_DENIED = _E.cluster_authorization_failed, _E.transactional_id_authorization_failed


def _cluster(operation: AclOperation, condition: str = "", error: ErrorCode = _CLUSTER_DENIED,
             scope: Scope = _S.REQUEST) -> Check:
    return Check(operation, _Res.CLUSTER, scope, error, None, condition)


def _group(operation: AclOperation, field: str = "group_id", scope: Scope = _S.REQUEST, condition: str = "") -> Check:
    return Check(operation, _Res.GROUP, scope, _GROUP_DENIED, field, condition)


def _topics(operation: AclOperation, field: str, condition: str = "") -> Check:
    return Check(operation, _Res.TOPIC, _S.EACH, _TOPIC_DENIED, field, condition)


def _txn(field: str = "transactional_id", scope: Scope = _S.REQUEST, condition: str = "") -> Check:
    return Check(_Op.WRITE, _Res.TRANSACTIONAL_ID, scope, _TXN_DENIED, field, condition)


_GROUP_MEMBER = (_group(_Op.READ),)  # JoinGroup, SyncGroup, Heartbeat, LeaveGroup

_TABLE = [
    ApiAuthorization(0, "Produce", (
        _txn(condition="the records are transactional (then a null transactional_id is refused too)"),
        _topics(_Op.WRITE, "topic_data[].name (topic_id from v13)"),
    )),
    ApiAuthorization(1, "Fetch", (
        _cluster(_Op.CLUSTER_ACTION, "a follower's fetch (replica id >= 0)", _TOPIC_DENIED, _S.EACH),
        _topics(_Op.READ, "topics[].topic (topic_id from v13)", "a consumer's fetch"),
    ), "A follower without CLUSTER_ACTION gets TOPIC_AUTHORIZATION_FAILED for every partition."),
    ApiAuthorization(2, "ListOffsets", (_topics(_Op.DESCRIBE, "topics[].name"),)),
    ApiAuthorization(3, "Metadata", (
        _topics(_Op.DESCRIBE, "topics[].name", "named topics"),
        Check(_Op.DESCRIBE, _Res.TOPIC, _S.FILTER, None, None, "all topics asked for (topics null)"),
        _cluster(_Op.CREATE, "a topic to auto-create; without it, CREATE on each such topic", _TOPIC_DENIED, _S.EACH),
        _topics(_Op.CREATE, "topics[].name", "a topic to auto-create and no CREATE on the cluster"),
    ), "A topic denied DESCRIBE is answered TOPIC_AUTHORIZATION_FAILED with a zero topic id, existing or not. "
       "cluster_authorized_operations (v8-10) is Access.cluster_authorized_operations(); "
       "topic_authorized_operations is Access.authorized_operations(TOPIC, name)."),
    ApiAuthorization(8, "OffsetCommit", (_group(_Op.READ), _topics(_Op.READ, "topics[].name"))),
    ApiAuthorization(9, "OffsetFetch", (
        _group(_Op.DESCRIBE, "group_id (v0-7), groups[].group_id (v8+)", _S.EACH),
        _topics(_Op.DESCRIBE, "topics[].name", "named topics"),
        Check(_Op.DESCRIBE, _Res.TOPIC, _S.FILTER, None, None, "all topics asked for (topics null)"),
    ), "v0-7 answer a denied group with the top-level error; v8+ per group."),
    ApiAuthorization(10, "FindCoordinator", (
        _group(_Op.DESCRIBE, "key / coordinator_keys[] (v4+)", _S.EACH, "key_type 0 (group)"),
        Check(_Op.DESCRIBE, _Res.TRANSACTIONAL_ID, _S.EACH, _TXN_DENIED, "key / coordinator_keys[] (v4+)",
              "key_type 1 (transaction)"),
    )),
    ApiAuthorization(11, "JoinGroup", _GROUP_MEMBER),
    ApiAuthorization(12, "Heartbeat", _GROUP_MEMBER),
    ApiAuthorization(13, "LeaveGroup", _GROUP_MEMBER),
    ApiAuthorization(14, "SyncGroup", _GROUP_MEMBER),
    ApiAuthorization(15, "DescribeGroups", (_group(_Op.DESCRIBE, "groups[]", _S.EACH),),
                     "authorized_operations (v3+) is Access.authorized_operations(GROUP, group)."),
    ApiAuthorization(16, "ListGroups", (
        Check(_Op.DESCRIBE, _Res.GROUP, _S.FILTER, None, None, "no DESCRIBE on the cluster"),
    ), "DESCRIBE on the cluster lists every group; otherwise the groups with DESCRIBE."),
    ApiAuthorization(17, "SaslHandshake", note="Authentication itself: no ACL."),
    ApiAuthorization(18, "ApiVersions", note="Always served, before authentication too."),
    ApiAuthorization(19, "CreateTopics", (
        _cluster(_Op.CREATE, "allows every topic; without it, CREATE on each topic", _TOPIC_DENIED, _S.EACH),
        _topics(_Op.CREATE, "topics[].name", "no CREATE on the cluster"),
        Check(_Op.DESCRIBE_CONFIGS, _Res.TOPIC, _S.EACH, _TOPIC_DENIED, "topics[].name",
              "v5+: denied, the topic's configs are left out and topic_config_error_code is set"),
    )),
    ApiAuthorization(20, "DeleteTopics", (
        _topics(_Op.DESCRIBE, "topics[].topic_id (v6+)", "a topic named by id: its name is not returned"),
        _topics(_Op.DELETE, "topic_names[] (v0-5), topics[].name (v6+)"),
    )),
    ApiAuthorization(21, "DeleteRecords", (_topics(_Op.DELETE, "topics[].name"),)),
    ApiAuthorization(22, "InitProducerId", (
        _txn(),
        _cluster(_Op.IDEMPOTENT_WRITE, "no transactional_id, and no WRITE on any topic (authorize_by_resource_type)"),
        Check(_Op.TWO_PHASE_COMMIT, _Res.TRANSACTIONAL_ID, _S.REQUEST, _TXN_DENIED, "transactional_id",
              "enable2_pc (v6)"),
    )),
    ApiAuthorization(23, "OffsetForLeaderEpoch", (
        _cluster(_Op.CLUSTER_ACTION, "allows every topic (followers)", _TOPIC_DENIED, _S.EACH),
        _topics(_Op.DESCRIBE, "topics[].topic", "no CLUSTER_ACTION on the cluster"),
    )),
    ApiAuthorization(24, "AddPartitionsToTxn", (
        _txn("v3_and_below_transactional_id (v0-3), transactions[].transactional_id (v4+)", _S.EACH),
        _topics(_Op.WRITE, "topics[].name", "the others are answered OPERATION_NOT_ATTEMPTED"),
        _cluster(_Op.CLUSTER_ACTION, "v4+ (broker to broker)"),
    )),
    ApiAuthorization(25, "AddOffsetsToTxn", (_txn(), _group(_Op.READ))),
    ApiAuthorization(26, "EndTxn", (_txn(),)),
    ApiAuthorization(27, "WriteTxnMarkers", (_cluster(_Op.CLUSTER_ACTION),), "ALTER on the cluster also allows it."),
    ApiAuthorization(28, "TxnOffsetCommit", (_txn(), _group(_Op.READ), _topics(_Op.READ, "topics[].name"))),
    ApiAuthorization(29, "DescribeAcls", (_cluster(_Op.DESCRIBE),), "Without an authorizer: SECURITY_DISABLED."),
    ApiAuthorization(30, "CreateAcls", (_cluster(_Op.ALTER),), "Without an authorizer: SECURITY_DISABLED."),
    ApiAuthorization(31, "DeleteAcls", (_cluster(_Op.ALTER),), "Without an authorizer: SECURITY_DISABLED."),
    ApiAuthorization(32, "DescribeConfigs", (
        _cluster(_Op.DESCRIBE_CONFIGS, "a BROKER or BROKER_LOGGER resource", scope=_S.EACH),
        Check(_Op.DESCRIBE_CONFIGS, _Res.TOPIC, _S.EACH, _TOPIC_DENIED, "resources[].resource_name", "a TOPIC resource"),
        _group(_Op.DESCRIBE_CONFIGS, "resources[].resource_name", _S.EACH, "a GROUP resource"),
    )),
    ApiAuthorization(33, "AlterConfigs", (
        _cluster(_Op.ALTER_CONFIGS, "a BROKER or BROKER_LOGGER resource", scope=_S.EACH),
        Check(_Op.ALTER_CONFIGS, _Res.TOPIC, _S.EACH, _TOPIC_DENIED, "resources[].resource_name", "a TOPIC resource"),
    )),
    ApiAuthorization(34, "AlterReplicaLogDirs", (_cluster(_Op.ALTER, scope=_S.EACH),),
                     "Denied, every partition is answered CLUSTER_AUTHORIZATION_FAILED."),
    ApiAuthorization(35, "DescribeLogDirs", (_cluster(_Op.DESCRIBE),),
                     "Denied: v3+ carry the error at the top; older versions get an empty answer."),
    ApiAuthorization(36, "SaslAuthenticate", note="Authentication itself: no ACL."),
    ApiAuthorization(37, "CreatePartitions", (_topics(_Op.ALTER, "topics[].name"),)),
    ApiAuthorization(42, "DeleteGroups", (_group(_Op.DELETE, "groups_names[]", _S.EACH),)),
    ApiAuthorization(43, "ElectLeaders", (_cluster(_Op.ALTER),), "Denied: the top-level error and every partition's."),
    ApiAuthorization(44, "IncrementalAlterConfigs", (
        _cluster(_Op.ALTER_CONFIGS, "a BROKER or BROKER_LOGGER resource", scope=_S.EACH),
        Check(_Op.ALTER_CONFIGS, _Res.TOPIC, _S.EACH, _TOPIC_DENIED, "resources[].resource_name", "a TOPIC resource"),
        _group(_Op.ALTER_CONFIGS, "resources[].resource_name", _S.EACH, "a GROUP resource"),
    )),
    ApiAuthorization(45, "AlterPartitionReassignments", (_cluster(_Op.ALTER),)),
    ApiAuthorization(46, "ListPartitionReassignments", (_cluster(_Op.DESCRIBE),)),
    ApiAuthorization(47, "OffsetDelete", (_group(_Op.DELETE), _topics(_Op.READ, "topics[].name"))),
    ApiAuthorization(48, "DescribeClientQuotas", (_cluster(_Op.DESCRIBE_CONFIGS),)),
    ApiAuthorization(49, "AlterClientQuotas", (_cluster(_Op.ALTER_CONFIGS),)),
    ApiAuthorization(50, "DescribeUserScramCredentials", (_cluster(_Op.DESCRIBE),)),
    ApiAuthorization(51, "AlterUserScramCredentials", (_cluster(_Op.ALTER),)),
    ApiAuthorization(60, "DescribeCluster", (),
                     "No check; cluster_authorized_operations is Access.cluster_authorized_operations()."),
    ApiAuthorization(61, "DescribeProducers", (_topics(_Op.READ, "topics[].name"),)),
    ApiAuthorization(65, "DescribeTransactions", (
        Check(_Op.DESCRIBE, _Res.TRANSACTIONAL_ID, _S.EACH, _TXN_DENIED, "transactional_ids[]"),
        Check(_Op.DESCRIBE, _Res.TOPIC, _S.FILTER, None, None, "the partitions of a described transaction"),
    )),
    ApiAuthorization(66, "ListTransactions", (Check(_Op.DESCRIBE, _Res.TRANSACTIONAL_ID, _S.FILTER),)),
    ApiAuthorization(68, "ConsumerGroupHeartbeat", (
        _group(_Op.READ),
        Check(_Op.DESCRIBE, _Res.TOPIC, _S.REQUEST, _TOPIC_DENIED, "subscribed_topic_names"),
    )),
    ApiAuthorization(69, "ConsumerGroupDescribe", (_group(_Op.DESCRIBE, "group_ids[]", _S.EACH),),
                     "authorized_operations is Access.authorized_operations(GROUP, group)."),
    ApiAuthorization(75, "DescribeTopicPartitions", (_topics(_Op.DESCRIBE, "topics[].name"),),
                     "As Metadata: a denied topic gets TOPIC_AUTHORIZATION_FAILED and a zero id."),
    ApiAuthorization(76, "ShareGroupHeartbeat", (
        _group(_Op.READ),
        Check(_Op.DESCRIBE, _Res.TOPIC, _S.REQUEST, _TOPIC_DENIED, "subscribed_topic_names"),
    )),
    ApiAuthorization(77, "ShareGroupDescribe", (_group(_Op.DESCRIBE, "group_ids[]", _S.EACH),)),
    ApiAuthorization(78, "ShareFetch", (_group(_Op.READ), _topics(_Op.READ, "topics[].topic_id"))),
    ApiAuthorization(79, "ShareAcknowledge", (_group(_Op.READ), _topics(_Op.READ, "topics[].topic_id"))),
    ApiAuthorization(90, "DescribeShareGroupOffsets", (
        _group(_Op.DESCRIBE, "groups[].group_id", _S.EACH),
        Check(_Op.DESCRIBE, _Res.TOPIC, _S.FILTER, None, None, "the topics of each group"),
    )),
    ApiAuthorization(91, "AlterShareGroupOffsets", (_group(_Op.READ), _topics(_Op.READ, "topics[].topic_name"))),
    ApiAuthorization(92, "DeleteShareGroupOffsets", (_group(_Op.DELETE), _topics(_Op.READ, "topics[].topic_name"))),
]

API_AUTHORIZATION: dict[int, ApiAuthorization] = {entry.api_key: entry for entry in _TABLE}


def request_checks(api_key: int) -> tuple[Check, ...]:
    """The checks ``authorize_request`` makes for an API: unconditional, REQUEST scope."""
    entry = API_AUTHORIZATION.get(api_key)
    if entry is None:
        return ()
    return tuple(c for c in entry.checks if c.scope is Scope.REQUEST and not c.condition)


def _names(value) -> Iterable[str]:
    return value if isinstance(value, (list, tuple)) else (value,)


def authorize_request(access: Access, api_key: int, request) -> ErrorCode | None:
    """The error to answer the whole request with, or None when its handler may run.

    ``request`` is the decoded request (kio dataclass). Every name in a list field must pass.
    """
    if access.authorizer is None:
        return None
    for check in request_checks(api_key):
        if check.field is None:
            names: Iterable[str] = (CLUSTER_NAME,)
        else:
            value = getattr(request, check.field)
            if value is None:
                continue
            names = _names(value)
        for name in names:
            if not access.authorize(check.operation, check.resource_type, name):
                return check.error
    return None
