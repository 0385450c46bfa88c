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
the change is empty). GROUP (32) resources: a group's configs (the share.* and dead-letter
settings of share groups), SET or DELETE only, checked against the broker's group.share.min/max
bounds (INVALID_CONFIG with the reason), kept in the metadata store; the group need not exist.
Versions: 0-1. Errors (per resource): INVALID_CONFIG, INVALID_REQUEST,
UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION.
"""

from __future__ import annotations

from tidelog.config import group_config_def, render, topic_config_def
from tidelog.handlers.alter_configs import alter_all
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.errors import ErrorCode, KafkaError

API_KEY = 44

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
OPERATION_NAMES = {SET: "SET", DELETE: "DELETE", APPEND: "APPEND", SUBTRACT: "SUBTRACT"}


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def new_topic_configs(ctx, record, alterations) -> dict[str, str | None]:
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
            items = _items(current if current is not None else render(ctx.topics.topic_value(record.name, name)))
            changes = _items(value or "")
            if operation == APPEND:
                items += [item for item in changes if item not in items]
            else:
                items = [item for item in items if item not in changes]
            configs[name] = ",".join(items)
    return configs


def new_group_configs(current: dict[str, str], alterations) -> dict[str, str | None]:
    configs: dict[str, str | None] = dict(current)
    for alteration in alterations:
        name, operation = alteration.name, alteration.config_operation
        if operation not in OPERATION_NAMES:
            raise KafkaError(ErrorCode.invalid_request, f"Unknown operation type {operation}")
        definition = group_config_def(name)  # INVALID_CONFIG for an unknown name
        if operation == SET:
            configs[name] = alteration.value
        elif operation == DELETE:
            configs.pop(name, None)
        else:
            raise KafkaError(ErrorCode.invalid_config, f"Can't {OPERATION_NAMES[operation]} to key {name} because "
                                                       f"its type is not LIST." if definition.type != "LIST" else
                             f"{OPERATION_NAMES[operation]} is not supported for group configs.")
    return configs


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    return await alter_all(ctx, request, "IncrementalAlterConfigsResponse",
                           lambda record, alterations: new_topic_configs(ctx, record, alterations), new_group_configs)
