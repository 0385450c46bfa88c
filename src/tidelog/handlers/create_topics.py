"""CreateTopics (key 19).

Behaviour: creates each topic, checked in Kafka's order: a name given twice in one request is
INVALID_REQUEST ("Duplicate topic name.") for that name; then the name (INVALID_TOPIC_EXCEPTION),
existence (TOPIC_ALREADY_EXISTS), the configs (INVALID_CONFIG: unknown name, bad or null value),
the replication factor (INVALID_REPLICATION_FACTOR: 0, < -1, or more than the one live broker)
and the partition count (INVALID_PARTITIONS: 0, < -1, or above 10000). -1 for either means the
broker default (``num.partitions``, ``default.replication.factor``). Last, more partitions than
the broker can hold (``max.ctx.partitions``, derived from the open files limit and memory)
is POLICY_VIOLATION, as Kafka 4 refuses a request over its own partition limit. Running out of
descriptors or disk while creating removes what was made: KAFKA_STORAGE_ERROR.
A manual assignment (``assignments``) needs num_partitions and replication_factor at -1
(else INVALID_REQUEST), partitions 0..n-1 each exactly once (else INVALID_REPLICA_ASSIGNMENT),
and only this broker as replica, once (else INVALID_REPLICA_ASSIGNMENT: we cannot place a
replica on a broker that is not registered); it then creates one partition per assignment.
``validate_only`` runs every check and creates nothing (the topic id is then the zero UUID).
v5+ results carry the partition count, replication factor and every topic config with its
value and source (as DescribeConfigs would report it); v7 the topic id.
Versions: 2-7. Errors (per topic): INVALID_REQUEST, INVALID_TOPIC_EXCEPTION,
TOPIC_ALREADY_EXISTS, INVALID_CONFIG, INVALID_REPLICATION_FACTOR, INVALID_PARTITIONS,
INVALID_REPLICA_ASSIGNMENT, POLICY_VIOLATION, KAFKA_STORAGE_ERROR.
"""

from __future__ import annotations

import collections
import datetime
import uuid

from tidelog.handlers.describe_configs import topic_config_views
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 19
ZERO_UUID = uuid.UUID(int=0)


def manual_partition_count(ctx: RequestContext, topic) -> int:
    """Validate a manual assignment the way Kafka does; return its partition count."""
    if topic.replication_factor != -1:
        raise KafkaError(ErrorCode.invalid_request, "A manual partition assignment was specified, but replication factor was not set to -1.")
    if topic.num_partitions != -1:
        raise KafkaError(ErrorCode.invalid_request, "A manual partition assignment was specified, but numPartitions was not set to -1.")
    seen: set[int] = set()
    replication_factor = None
    for assignment in topic.assignments:
        index = assignment.partition_index
        if index in seen:
            raise KafkaError(ErrorCode.invalid_replica_assignment, f"Found multiple manual partition assignments for partition {index}")
        seen.add(index)
        broker_ids = list(assignment.broker_ids)
        if not broker_ids:
            raise KafkaError(ErrorCode.invalid_replica_assignment, "The manual partition assignment includes an empty replica list.")
        if len(set(broker_ids)) != len(broker_ids):
            duplicate = next(b for b in broker_ids if broker_ids.count(b) > 1)
            raise KafkaError(ErrorCode.invalid_replica_assignment, f"The manual partition assignment includes the broker {duplicate} more than once.")
        for broker_id in broker_ids:
            if broker_id != ctx.node_id:
                raise KafkaError(
                    ErrorCode.invalid_replica_assignment,
                    f"The manual partition assignment includes broker {broker_id}, but no such broker is registered.",
                )
        if replication_factor is not None and len(broker_ids) != replication_factor:
            raise KafkaError(
                ErrorCode.invalid_replica_assignment,
                f"The manual partition assignment includes a partition with {len(broker_ids)} replica(s), but this is not "
                f"consistent with previous partitions, which have {replication_factor} replica(s).",
            )
        replication_factor = len(broker_ids)
    if seen != set(range(len(seen))):
        raise KafkaError(
            ErrorCode.invalid_replica_assignment,
            f"Partitions should be sequentially numbered from 0, got {sorted(seen)}.",
        )
    return len(seen)


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    counts = collections.Counter(topic.name for topic in request.topics)
    results = []
    reported: set[str] = set()
    # CREATE on the cluster allows every topic; without it, CREATE on each topic is needed.
    may_create_any = ctx.access.authorize(AclOperation.CREATE, ResourceType.CLUSTER, log_if_denied=False)

    def error_result(name: str, error: KafkaError):
        return build(
            module.CreatableTopicResult,
            name=name,
            topic_id=ZERO_UUID,
            error_code=error.error_code,
            error_message=error.message,
            num_partitions=-1,
            replication_factor=-1,
            configs=(),
        )

    for topic in request.topics:
        if counts[topic.name] > 1:
            # Kafka answers a duplicated name once.
            if topic.name not in reported:
                reported.add(topic.name)
                results.append(error_result(topic.name, KafkaError(ErrorCode.invalid_request, "Duplicate topic name.")))
            continue
        if not (may_create_any or ctx.access.authorize(AclOperation.CREATE, ResourceType.TOPIC, topic.name)):
            results.append(error_result(topic.name, KafkaError(ErrorCode.topic_authorization_failed, "Authorization failed.")))
            continue
        try:
            configs = {config.name: config.value for config in topic.configs}
            if topic.assignments:
                # Name, existence and configs are checked first; 1 x 1 passes the count checks.
                configs = ctx.topics.check_new_topic(topic.name, 1, 1, configs)
                partitions = manual_partition_count(ctx, topic)
                replication_factor = 1
                ctx.topics.check_partition_capacity(partitions)
            else:
                configs = ctx.topics.check_new_topic(topic.name, topic.num_partitions, topic.replication_factor, configs)
                partitions, replication_factor = ctx.topics.resolve_topic_defaults(topic.num_partitions, topic.replication_factor)
            if request.validate_only:
                topic_id = ZERO_UUID
            else:
                topic_id = (await ctx.topics.create_topic(topic.name, partitions, replication_factor, configs)).topic_id
        except KafkaError as e:
            results.append(error_result(topic.name, e))
            continue
        views = topic_config_views(ctx.config, configs) if ctx.api_version >= 5 else []
        results.append(
            build(
                module.CreatableTopicResult,
                name=topic.name,
                topic_id=topic_id,
                error_code=ErrorCode.none,
                error_message=None,
                num_partitions=partitions,
                replication_factor=replication_factor,
                configs=tuple(
                    build(
                        module.CreatableTopicConfigs,
                        name=view.name,
                        value=view.value,
                        read_only=view.read_only,
                        config_source=view.source,
                        is_sensitive=view.is_sensitive,
                    )
                    for view in views
                ),
            )
        )
    return build(module.CreateTopicsResponse, throttle_time=datetime.timedelta(0), topics=tuple(results))
