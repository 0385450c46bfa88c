"""DescribeConfigs (key 32).

Behaviour: for each resource, its configs (all, or those named in ``configuration_keys``;
null or empty means all; unknown names are left out, as Kafka does).
- TOPIC (2): every topic config Tidelog knows, with the topic override (source
  DYNAMIC_TOPIC_CONFIG) or else the broker default it falls back to (STATIC_BROKER_CONFIG when
  set by file, environment or --set, else DEFAULT_CONFIG). Synonyms, when asked for, are the
  override, then the broker setting (``log.retention.ms`` for ``retention.ms``), then its
  built-in default (the topic config's own default where no broker setting supplies one, as
  for ``remote.storage.enable``). Topic configs are never read-only.
- BROKER (4): resource name "" gives the cluster-wide dynamic defaults (Tidelog has none: an
  empty list); this node's id gives every broker setting with its source. Broker settings
  are read-only here (AlterConfigs cannot change them). Any other name is INVALID_REQUEST
  ("Unexpected broker id, expected N or empty string, but received X"), as in Kafka.
- BROKER_LOGGER (8): for this node's id, the Python loggers (``root`` and ``tidelog.*``) and
  their levels; "" or another id is INVALID_REQUEST.
- GROUP (32): every group config (the share group settings, queues/): the group's override
  (source GROUP_CONFIG) or the broker setting it falls back to, or the config's own default.
  Any group id is accepted, known or not (the configs may be set before the group exists).
- Any other resource type (CLIENT_METRICS, ...): INVALID_REQUEST.
``include_documentation`` (v3+) fills ``documentation``; ``config_type`` (v3+) is KIP-569's
code. Nothing of ours is sensitive (no PASSWORD configs yet); a sensitive value would be null.
Versions: 1-4 (v0, with ``is_default``, was removed in Kafka 4.0).
Errors: UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION, INVALID_REQUEST (per resource).
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from tidelog.cluster.topics import validate_topic_name
from tidelog.config import (BROKER_CONFIGS, CONFIG_TYPE_CODES, GROUP_CONFIG_DEFAULTS, TOPIC_CONFIG_DEFAULTS, TOPIC_CONFIG_NAMES,
                            BrokerConfig, ConfigDef, group_config_def, render, topic_config_def)
from tidelog.handlers.authorization import check_config_resource
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 32

# ConfigResource.Type ids.
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_BROKER_LOGGER = 8
RESOURCE_GROUP = 32

# DescribeConfigsResponse ConfigSource ids.
DYNAMIC_TOPIC_CONFIG = 1
DYNAMIC_BROKER_CONFIG = 2
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5
DYNAMIC_BROKER_LOGGER_CONFIG = 6
GROUP_CONFIG = 8

_BROKER_SOURCES = {"file": STATIC_BROKER_CONFIG, "env": STATIC_BROKER_CONFIG, "flag": STATIC_BROKER_CONFIG,
                   "dynamic": DYNAMIC_BROKER_CONFIG}


@dataclass(frozen=True)
class Synonym:
    name: str
    value: str | None
    source: int


@dataclass(frozen=True)
class ConfigView:
    """One config as DescribeConfigs and CreateTopics (v5+) report it."""

    name: str
    value: str | None
    source: int
    read_only: bool
    is_sensitive: bool
    synonyms: tuple[Synonym, ...]
    config_type: int
    documentation: str


def _is_sensitive(definition: ConfigDef) -> bool:
    return definition.type == "PASSWORD"


def broker_synonyms(config: BrokerConfig, name: str) -> tuple[Synonym, ...]:
    """A broker setting's value at each level that has one, highest precedence first."""
    definition = BROKER_CONFIGS[name]
    hidden = _is_sensitive(definition)
    default = Synonym(name, None if hidden else render(definition.default), DEFAULT_CONFIG)
    source = config.sources.get(name)
    if source is None:
        return (default,)
    value = None if hidden else render(config[name])
    return (Synonym(name, value, _BROKER_SOURCES.get(source, STATIC_BROKER_CONFIG)), default)


def topic_config_views(config: BrokerConfig, overrides: dict[str, str]) -> list[ConfigView]:
    """Every topic config with its effective value for a topic with these overrides, by name."""
    views = []
    for name in TOPIC_CONFIG_NAMES:
        definition = topic_config_def(name)
        hidden = _is_sensitive(definition)
        broker_name = TOPIC_CONFIG_DEFAULTS.get(name)
        if broker_name is not None:
            synonyms = broker_synonyms(config, broker_name)
        else:  # no broker setting supplies it (remote.*, *.replication.throttled.replicas): its own default
            synonyms = (Synonym(name, None if hidden else render(definition.default), DEFAULT_CONFIG),)
        if name in overrides:
            synonyms = (Synonym(name, None if hidden else overrides[name], DYNAMIC_TOPIC_CONFIG),) + synonyms
        views.append(
            ConfigView(
                name=name,
                value=synonyms[0].value,
                source=synonyms[0].source,
                read_only=False,
                is_sensitive=hidden,
                synonyms=synonyms,
                config_type=CONFIG_TYPE_CODES[definition.type],
                documentation=definition.doc,
            )
        )
    return views


def group_config_views(config: BrokerConfig, overrides: dict[str, str]) -> list[ConfigView]:
    """Every group config with its effective value for a group with these overrides."""
    views = []
    for name, broker_name in GROUP_CONFIG_DEFAULTS.items():
        definition = group_config_def(name)
        if broker_name is not None:
            synonyms = broker_synonyms(config, broker_name)
        else:
            synonyms = (Synonym(name, render(definition.default), DEFAULT_CONFIG),)
        if name in overrides:
            synonyms = (Synonym(name, overrides[name], GROUP_CONFIG),) + synonyms
        views.append(ConfigView(name=name, value=synonyms[0].value, source=synonyms[0].source, read_only=False,
                                is_sensitive=False, synonyms=synonyms, config_type=CONFIG_TYPE_CODES[definition.type],
                                documentation=definition.doc))
    return views


def broker_config_views(config: BrokerConfig) -> list[ConfigView]:
    views = []
    for name, definition in BROKER_CONFIGS.items():
        synonyms = broker_synonyms(config, name)
        views.append(
            ConfigView(
                name=name,
                value=synonyms[0].value,
                source=synonyms[0].source,
                read_only=True,
                is_sensitive=_is_sensitive(definition),
                synonyms=synonyms,
                config_type=CONFIG_TYPE_CODES[definition.type],
                documentation=definition.doc,
            )
        )
    return views


def logger_views() -> list[ConfigView]:
    names = ["root"] + sorted(
        name for name in logging.Logger.manager.loggerDict if name == "tidelog" or name.startswith("tidelog.")
    )
    views = []
    for name in names:
        logger = logging.getLogger() if name == "root" else logging.getLogger(name)
        level = logging.getLevelName(logger.getEffectiveLevel())
        views.append(ConfigView(name, level, DYNAMIC_BROKER_LOGGER_CONFIG, False, False, (), CONFIG_TYPE_CODES["STRING"], ""))
    return views


def check_broker_name(node_id: int, name: str | None, allow_empty: bool) -> None:
    """Kafka's rule for BROKER / BROKER_LOGGER resource names: this node's id (or "" if allowed)."""
    if not name:
        if allow_empty:
            return
        raise KafkaError(ErrorCode.invalid_request, "Broker id must not be empty")
    try:
        broker_id = int(name)
    except ValueError:
        raise KafkaError(ErrorCode.invalid_request, f"Broker id must be an integer, but it is: {name}") from None
    if broker_id != node_id:
        expected = f"{node_id} or empty string" if allow_empty else str(node_id)
        raise KafkaError(ErrorCode.invalid_request, f"Unexpected broker id, expected {expected}, but received {name}")


def resource_views(ctx, resource_type: int, resource_name: str) -> list[ConfigView]:
    if resource_type == RESOURCE_TOPIC:
        validate_topic_name(resource_name)
        record = ctx.metadata.topics.get(resource_name)
        if record is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, "This server does not host this topic-partition.")
        return topic_config_views(ctx.config, record.configs)
    if resource_type == RESOURCE_BROKER:
        check_broker_name(ctx.node_id, resource_name, allow_empty=True)
        return broker_config_views(ctx.config) if resource_name else []
    if resource_type == RESOURCE_BROKER_LOGGER:
        check_broker_name(ctx.node_id, resource_name, allow_empty=False)
        return logger_views()
    if resource_type == RESOURCE_GROUP:
        if not resource_name:
            raise KafkaError(ErrorCode.invalid_group_id, "The group id is empty.")
        return group_config_views(ctx.config, ctx.metadata.group_configs.get(resource_name, {}))
    raise KafkaError(ErrorCode.invalid_request, f"Unsupported resource type: {resource_type}")


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    include_synonyms = getattr(request, "include_synonyms", False)
    include_documentation = getattr(request, "include_documentation", False)
    results = []
    for resource in request.resources:
        try:
            check_config_resource(ctx.access, AclOperation.DESCRIBE_CONFIGS, resource.resource_type,
                                  resource.resource_name)
            views = resource_views(ctx, resource.resource_type, resource.resource_name)
        except KafkaError as e:
            results.append(
                build(
                    module.DescribeConfigsResult,
                    error_code=e.error_code,
                    error_message=e.message,
                    resource_type=resource.resource_type,
                    resource_name=resource.resource_name,
                    configs=(),
                )
            )
            continue
        wanted = resource.configuration_keys
        if wanted:
            views = [view for view in views if view.name in set(wanted)]
        configs = tuple(
            build(
                module.DescribeConfigsResourceResult,
                name=view.name,
                value=view.value,
                read_only=view.read_only,
                config_source=view.source,
                is_sensitive=view.is_sensitive,
                synonyms=tuple(
                    build(module.DescribeConfigsSynonym, name=s.name, value=s.value, source=s.source) for s in view.synonyms
                )
                if include_synonyms
                else (),
                config_type=view.config_type,
                documentation=view.documentation if include_documentation else None,
            )
            for view in views
        )
        results.append(
            build(
                module.DescribeConfigsResult,
                error_code=ErrorCode.none,
                error_message=None,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
                configs=configs,
            )
        )
    return build(module.DescribeConfigsResponse, throttle_time=datetime.timedelta(0), results=tuple(results))
