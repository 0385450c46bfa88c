"""AlterConfigs (key 33), the legacy whole-set form (IncrementalAlterConfigs is the newer one).

Behaviour: for a TOPIC (2) resource, the given configs become the topic's whole override set:
a config not named is removed (back to its broker default), as Kafka's legacy semantics say.
Names and values are checked first (INVALID_CONFIG: unknown topic config, bad or null value);
then the overrides are persisted in the metadata store and applied to the topic's live
partition logs (segment size, retention, flush, ...), so a restart keeps them.
``validate_only`` checks and changes nothing. A topic named "" is INVALID_REQUEST ("Default
topic resources are not allowed."), an unknown topic UNKNOWN_TOPIC_OR_PARTITION, a resource
listed twice INVALID_REQUEST, a config named twice INVALID_REQUEST.
BROKER (4) resources: Tidelog has no dynamic broker configs yet, so a non-empty change is
INVALID_REQUEST ("Cannot update these configs dynamically: ..."), the answer Kafka gives for
read-only broker configs; an empty one succeeds. The name must be this node's id or "".
Other resource types: INVALID_REQUEST.
Versions: 0-2. Errors (per resource): INVALID_CONFIG, INVALID_REQUEST,
UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION.
"""

from __future__ import annotations

import collections
import datetime

from tidelog.cluster.topics import validate_topic_name
from tidelog.config import validate_group_configs, validate_topic_configs
from tidelog.handlers.describe_configs import RESOURCE_BROKER, RESOURCE_GROUP, RESOURCE_TOPIC, check_broker_name
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError

API_KEY = 33


def topic_for_alter(ctx, name: str):
    """The topic record an alter applies to, or the error Kafka gives."""
    if not name:
        raise KafkaError(ErrorCode.invalid_request, "Default topic resources are not allowed.")
    validate_topic_name(name)
    record = ctx.metadata.topics.get(name)
    if record is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, f"The topic '{name}' does not exist.")
    return record


def check_topic_configs(configs: dict[str, str | None]) -> dict[str, str]:
    null_configs = [name for name, value in configs.items() if value is None]
    if null_configs:
        raise KafkaError(ErrorCode.invalid_config, f"Null value not supported for topic configs: {','.join(null_configs)}")
    return validate_topic_configs(configs)


def reject_broker_change(ctx, name: str, config_names: list[str]) -> None:
    check_broker_name(ctx.node_id, name, allow_empty=True)
    if config_names:
        raise KafkaError(ErrorCode.invalid_request, f"Cannot update these configs dynamically: {sorted(config_names)}")


def duplicate_keys(names: list[str]) -> None:
    if len(set(names)) != len(names):
        raise KafkaError(ErrorCode.invalid_request, "Error due to duplicate config keys")


async def alter_resource(ctx, resource, validate_only: bool, new_topic_configs, new_group_configs=None) -> None:
    """Check and apply one resource's change; ``new_topic_configs(record, configs)`` gives the new
    overrides (``new_group_configs(current, configs)`` a group's; None: GROUP is not served)."""
    names = [config.name for config in resource.configs]
    duplicate_keys(names)
    if resource.resource_type == RESOURCE_TOPIC:
        record = topic_for_alter(ctx, resource.resource_name)
        configs = check_topic_configs(new_topic_configs(record, resource.configs))
        if not validate_only:
            await ctx.topics.set_topic_configs(record.name, configs)
    elif resource.resource_type == RESOURCE_BROKER:
        reject_broker_change(ctx, resource.resource_name, names)
    elif resource.resource_type == RESOURCE_GROUP and new_group_configs is not None:
        if not resource.resource_name:
            raise KafkaError(ErrorCode.invalid_group_id, "The group id is empty.")
        current = ctx.metadata.group_configs.get(resource.resource_name, {})
        configs = validate_group_configs(new_group_configs(current, resource.configs), ctx.config)
        if not validate_only and configs != current:
            await ctx.metadata.set_group_configs(resource.resource_name, configs)
    else:
        raise KafkaError(ErrorCode.invalid_request, f"Unsupported resource type: {resource.resource_type}")


async def alter_all(ctx: RequestContext, request, response_name: str, new_topic_configs, new_group_configs=None) -> object:
    """The response of AlterConfigs or IncrementalAlterConfigs: each resource altered on its own."""
    module = response_module(ctx.header.api_key, ctx.api_version)
    counts = collections.Counter((r.resource_type, r.resource_name) for r in request.resources)
    responses = []
    for resource in request.resources:
        error, message = ErrorCode.none, None
        try:
            if counts[(resource.resource_type, resource.resource_name)] > 1:
                raise KafkaError(ErrorCode.invalid_request, "Duplicate resource.")
            await alter_resource(ctx, resource, request.validate_only, new_topic_configs, new_group_configs)
        except KafkaError as e:
            error, message = e.error_code, e.message
        responses.append(
            build(
                module.AlterConfigsResourceResponse,
                error_code=error,
                error_message=message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
            )
        )
    return build(getattr(module, response_name), throttle_time=datetime.timedelta(0), responses=tuple(responses))


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    # Legacy semantics: the request's configs replace the topic's whole override set.
    return await alter_all(ctx, request, "AlterConfigsResponse",
                           lambda _record, configs: {config.name: config.value for config in configs})
