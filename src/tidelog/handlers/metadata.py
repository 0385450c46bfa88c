"""Metadata (key 3).

Behaviour: returns this broker as the only broker and controller, and for each requested topic
(all topics when the list is null, or empty in v0) its id and partitions, each led by this
broker with leader epoch 0. An unknown topic is created when the request allows it (always
before v4) and ``auto.create.topics.enable`` is on; otherwise UNKNOWN_TOPIC_OR_PARTITION. A topic
another broker has created but this broker's metadata does not show yet is LEADER_NOT_AVAILABLE
when the request allows auto-creation (Kafka's answer while a topic is being created),
UNKNOWN_TOPIC_OR_PARTITION otherwise (as a Kafka broker whose metadata lags answers).
Topics requested by id (v12+) that do not exist get UNKNOWN_TOPIC_ID. v10 and v11 carry a topic
id field but Kafka serves ids only from v12: a v10/v11 topic with a null name or a non-zero id
makes the whole request INVALID_REQUEST (every topic answered with it, a null name as "", as
Kafka's error response does).
Authorization: all topics lists only those the principal may DESCRIBE; a named topic without
DESCRIBE is TOPIC_AUTHORIZATION_FAILED (with a zero id, existing or not), as is a topic to
auto-create without CREATE on the cluster or the topic. The authorized operations (v8+) are
reported when asked for. Brokers are given at their advertised address for the listener the
request came in on.
Versions: 0-13. Errors: UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID, INVALID_TOPIC_EXCEPTION,
INVALID_REQUEST, TOPIC_AUTHORIZATION_FAILED, LEADER_NOT_AVAILABLE.
"""

from __future__ import annotations

import datetime
import logging
import uuid

from tidelog.cluster.metadata import TopicRecord
from tidelog.handlers import metadata_cache
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.topics import INTERNAL_TOPICS
from tidelog.security.acl import AclOperation, ResourceType

logger = logging.getLogger(__name__)

API_KEY = 3
TOPIC_IDS_FROM = 12
AUTHORIZED_OPERATIONS_OMITTED = -(2**31)
ZERO_UUID = uuid.UUID(int=0)


def _partition(module, ctx, record: TopicRecord, index: int):
    """A partition as the metadata store has it."""
    state = ctx.metadata.partitions.get((record.name, index))
    if state is None:
        return build(module.MetadataResponsePartition, error_code=ErrorCode.leader_not_available, partition_index=index,
                     leader_id=-1, leader_epoch=-1, replica_nodes=(), isr_nodes=(), offline_replicas=())
    live = ctx.metadata.brokers
    return build(
        module.MetadataResponsePartition,
        error_code=ErrorCode.none if state.leader in live else ErrorCode.leader_not_available,
        partition_index=index,
        leader_id=state.leader if state.leader in live else -1,
        leader_epoch=state.leader_epoch,
        replica_nodes=state.replicas,
        isr_nodes=state.isr,
        offline_replicas=tuple(r for r in state.replicas if r not in live),
    )


def describe_topic(module, ctx: RequestContext, record: TopicRecord, include_operations: bool = False):
    return build(
        module.MetadataResponseTopic,
        error_code=ErrorCode.none,
        name=record.name,
        topic_id=record.topic_id,
        is_internal=record.name in INTERNAL_TOPICS,
        partitions=tuple(_partition(module, ctx, record, i) for i in range(record.partitions)),
        topic_authorized_operations=ctx.access.authorized_operations(ResourceType.TOPIC, record.name)
        if include_operations else AUTHORIZED_OPERATIONS_OMITTED,
    )


def topic_error(module, error_code: ErrorCode, name: str | None, topic_id: uuid.UUID | None = None):
    return build(
        module.MetadataResponseTopic,
        error_code=error_code,
        name=name,
        topic_id=topic_id or ZERO_UUID,
        is_internal=False,
        partitions=(),
        topic_authorized_operations=AUTHORIZED_OPERATIONS_OMITTED,
    )


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    version = ctx.api_version
    module = response_module(API_KEY, version)
    allow_auto_create = getattr(request, "allow_auto_topic_creation", True)
    requested = request.topics
    operations = getattr(request, "include_topic_authorized_operations", False)
    cluster_operations = getattr(request, "include_cluster_authorized_operations", False)
    access = ctx.access
    invalid = _topic_id_misuse(requested, version)
    if invalid is not None:
        logger.warning("Metadata v%d from %s is INVALID_REQUEST: %s", version, ctx.peer, invalid)
        topics = [topic_error(module, ErrorCode.invalid_request, wanted.name or "", wanted.topic_id) for wanted in requested]
    elif requested is None or (version == 0 and not requested):
        if access.authorizer is None and not operations:
            return _all_topics(module, ctx, version, cluster_operations)
        records = ctx.metadata.topics
        visible = access.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, records, log_if_denied=False)
        topics = [describe_topic(module, ctx, record, operations) for name, record in records.items() if name in visible]
    else:
        topics = []
        for wanted in requested:
            name = getattr(wanted, "name", None)
            topic_id = getattr(wanted, "topic_id", None)
            if name is None and topic_id is not None and topic_id != ZERO_UUID:
                record = ctx.topics.topic_by_id(topic_id)
                if record is not None and not access.authorize(AclOperation.DESCRIBE, ResourceType.TOPIC, record.name):
                    record = None
                topics.append(describe_topic(module, ctx, record, operations) if record
                              else topic_error(module, ErrorCode.unknown_topic_id, None, topic_id))
                continue
            if not access.authorize(AclOperation.DESCRIBE, ResourceType.TOPIC, name):
                topics.append(topic_error(module, ErrorCode.topic_authorization_failed, name))
                continue
            record = ctx.metadata.topics.get(name)
            if record is None and allow_auto_create and not (
                    access.authorize(AclOperation.CREATE, ResourceType.CLUSTER, log_if_denied=False)
                    or access.authorize(AclOperation.CREATE, ResourceType.TOPIC, name)):
                topics.append(topic_error(module, ErrorCode.topic_authorization_failed, name))
                continue
            if record is None and allow_auto_create:
                try:
                    record = await ctx.topics.auto_create_topic(name)
                except KafkaError as e:
                    topics.append(topic_error(module, _auto_create_error(e, name, ctx), name))
                    continue
            if record is None:
                topics.append(topic_error(module, ErrorCode.unknown_topic_or_partition, name))
            else:
                topics.append(describe_topic(module, ctx, record, operations))
    return _response(module, ctx, topics, cluster_operations)


def _auto_create_error(e: KafkaError, name: str, ctx: RequestContext) -> ErrorCode:
    """The topic error for an auto-creation that failed. TOPIC_ALREADY_EXISTS means another
    broker created it and this one's metadata (etcd watch) has not shown it yet: the topic is
    there but its partitions are not known here, which Kafka answers LEADER_NOT_AVAILABLE (as it
    does for every topic it auto-creates); clients retry that, as they do after a leader move.
    Kafka never puts TOPIC_ALREADY_EXISTS in a Metadata response."""
    if e.error_code == ErrorCode.topic_already_exists:
        logger.debug("Metadata from %s: topic %s exists but this broker has not seen it yet: LEADER_NOT_AVAILABLE",
                     ctx.peer, name)
        return ErrorCode.leader_not_available
    return e.error_code


def _all_topics(module, ctx: RequestContext, version: int, cluster_operations: bool = False):
    """Every topic, from the cached encoded entries (metadata_cache.py): thousands of
    partitions are not built and encoded again for each request."""
    metadata = ctx.metadata
    cache = metadata_cache.cache_for(metadata)
    states, live = metadata.partitions, tuple(sorted(metadata.brokers))
    entries = []
    for record in list(metadata.topics.values()):
        stamp = (record, record.partitions, live, *(states.get((record.name, i)) for i in range(record.partitions)))
        entries.append(cache.entry(version, record.name, stamp, lambda: describe_topic(module, ctx, record),
                                   module.MetadataResponseTopic))
    cache.prune(metadata.topics)
    parts = metadata_cache.splice(_response(module, ctx, [], cluster_operations), entries)
    if parts is None:
        return _response(module, ctx, [describe_topic(module, ctx, record) for record in metadata.topics.values()],
                         cluster_operations)
    return parts


def _topic_id_misuse(requested, version: int) -> str | None:
    """Why a v10/v11 request names topics in a way only v12+ may (Kafka's check), or None."""
    if requested is None or version < 10 or version >= TOPIC_IDS_FROM:
        return None
    for wanted in requested:
        if wanted.name is None:
            return f"Topic name can not be null for version {version}"
        if wanted.topic_id is not None and wanted.topic_id != ZERO_UUID:
            return f"Topic IDs are not supported in requests for version {version}"
    return None


def reachable_brokers(ctx: RequestContext) -> list[tuple[int, str, int, str | None]]:
    """The live brokers as ``(node id, host, port, rack)`` at their advertised address for the
    listener the request came in on; a broker without that listener is left out, as Kafka does."""
    result = []
    for b in sorted(ctx.metadata.brokers.values(), key=lambda b: b.node_id):
        address = b.endpoint(ctx.listener)
        if address is not None:
            result.append((b.node_id, address[0], address[1], b.rack))
    return result


def _response(module, ctx, topics: list, cluster_operations: bool = False):
    brokers = tuple(build(module.MetadataResponseBroker, node_id=node_id, host=host, port=port, rack=rack)
                    for node_id, host, port, rack in reachable_brokers(ctx))
    controller_id = ctx.metadata.controller_id
    return build(
        module.MetadataResponse,
        throttle_time=datetime.timedelta(0),
        brokers=brokers,
        cluster_id=ctx.metadata.cluster_id,
        controller_id=controller_id,
        topics=tuple(topics),
        cluster_authorized_operations=ctx.access.cluster_authorized_operations()
        if cluster_operations else AUTHORIZED_OPERATIONS_OMITTED,
        error_code=ErrorCode.none,
    )
