"""IncrementalAlterConfigs (key 44).

Behaviour: changes a TOPIC's (2) overrides key by key: SET (0) a value, DELETE (1) the
override (back to the broker default; deleting an absent override is fine), APPEND (2) /
SUBTRACT (3) items of a LIST config (``cleanup.policy``), starting from the effective value
when the topic has no override (Kafka starts from the config's built-in default; the two agree
unless the broker default was changed). APPEND adds only items not present; SUBTRACT removes
every copy. APPEND/SUBTRACT on a non-list config is INVALID_CONFIG ("Can't APPEND to key X
because its type is not LIST."). The result is checked like AlterConfigs (INVALID_CONFIG for
unknown names, bad or null values), persisted, and applied to the live partition logs.
``validate_only`` checks and changes nothing. An unknown operation, a key named twice or a
resource listed twice is INVALID_REQUEST; an unknown topic UNKNOWN_TOPIC_OR_PARTITION.
BROKER (4) resources: as AlterConfigs (no dynamic broker configs yet: INVALID_REQUEST unless
the change is empty).
Versions: 0-1. Errors (per resource): INVALID_CONFIG, INVALID_REQUEST,
UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION.
"""

from __future__ import annotations

import collections
import datetime

from tidelog.config import render, topic_config_def
from tidelog.handlers.alter_configs import check_topic_configs, duplicate_keys, reject_broker_change, topic_for_alter
from tidelog.handlers.describe_configs import RESOURCE_BROKER, RESOURCE_TOPIC
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError

API_KEY = 44

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
OPERATION_NAMES = {SET: "SET", DELETE: "DELETE", APPEND: "APPEND", SUBTRACT: "SUBTRACT"}


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def new_topic_configs(broker, record, alterations) -> dict[str, str | None]:
    configs: dict[str, str | None] = dict(record.configs)
    for alteration in alterations:
        name, operation, value = alteration.name, alteration.config_operation, alteration.value
        if operation not in OPERATION_NAMES:
            raise KafkaError(ErrorCode.invalid_request, f"Unknown operation type {operation}")
        definition = topic_config_def(name)  # INVALID_CONFIG for an unknown name
        if operation == SET:
            configs[name] = value
        elif operation == DELETE:
            configs.pop(name, None)
        else:
            if definition.type != "LIST":
                raise KafkaError(
                    ErrorCode.invalid_config, f"Can't {OPERATION_NAMES[operation]} to key {name} because its type is not LIST."
                )
            current = configs.get(name)
            items = _items(current if current is not None else render(broker.topic_value(record.name, name)))
            changes = _items(value or "")
            if operation == APPEND:
                items += [item for item in changes if item not in items]
            else:
                items = [item for item in items if item not in changes]
            configs[name] = ",".join(items)
    return configs


async def alter_resource(broker, resource, validate_only: bool) -> None:
    names = [config.name for config in resource.configs]
    duplicate_keys(names)
    if resource.resource_type == RESOURCE_TOPIC:
        record = topic_for_alter(broker, resource.resource_name)
        configs = check_topic_configs(new_topic_configs(broker, record, resource.configs))
        if not validate_only:
            await broker.set_topic_configs(record.name, configs)
    elif resource.resource_type == RESOURCE_BROKER:
        reject_broker_change(broker, resource.resource_name, names)
    else:
        raise KafkaError(ErrorCode.invalid_request, f"Unsupported resource type: {resource.resource_type}")


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    counts = collections.Counter((r.resource_type, r.resource_name) for r in request.resources)
    responses = []
    for resource in request.resources:
        error, message = ErrorCode.none, None
        try:
            if counts[(resource.resource_type, resource.resource_name)] > 1:
                raise KafkaError(ErrorCode.invalid_request, "Duplicate resource.")
            await alter_resource(ctx.broker, resource, request.validate_only)
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
    return build(module.IncrementalAlterConfigsResponse, throttle_time=datetime.timedelta(0), responses=tuple(responses))
