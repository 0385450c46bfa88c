"""How handlers authorise (docs/security.md, security/api_authorization.py).

Two places, as Kafka's KafkaApis has them:

- Central: the connection calls ``refuse_request`` before a handler runs. It applies the
  unconditional whole-request checks of the API's ``ApiAuthorization`` entry (JoinGroup needs
  READ on the group, CreateAcls ALTER on the cluster...) and, when one fails, answers the request
  with ``denied_response``: the API's response with the error in every ``error_code``, mirroring
  the request's topics and partitions where the response has them (OffsetCommit). A new handler
  whose API has such checks in the table needs nothing more.
- Per resource, in the handler, through ``ctx.access`` (security/authorizer.Access):
  ``ctx.access.authorize(AclOperation.WRITE, ResourceType.TOPIC, name)`` for one resource,
  ``ctx.access.authorized(op, type, names)`` for the allowed subset, and
  ``ctx.access.authorized_operations(type, name)`` for the bit fields. Without an authorizer
  every call allows, so a handler's code is the same either way.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import typing
import uuid
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

from tidelog.protocol.apis import response_type
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from tidelog.security.api_authorization import authorize_request
from tidelog.security.authorizer import Access


def refuse_request(access: Access, api_key: int, api_version: int, request: Any) -> Any | None:
    """The response that denies ``request`` as a whole, or None when its handler may run."""
    if access.authorizer is None:
        return None
    error = authorize_request(access, api_key, request)
    if error is None:
        return None
    return denied_response(api_key, api_version, request, error)


def _users(request: Any) -> list[SimpleNamespace]:
    items = (*getattr(request, "deletions", ()), *getattr(request, "upsertions", ()))
    names = dict.fromkeys(item.name for item in items)
    return [SimpleNamespace(user=name) for name in names]


# Response lists whose items answer a request list of another name, one for one (clients
# expect as many results as they asked for: librdkafka asserts it).
_ANSWERS: dict[tuple[int, str], Callable[[Any], Any]] = {
    (30, "results"): lambda request: getattr(request, "creations", ()),
    (31, "filter_results"): lambda request: getattr(request, "filters", ()),
    (51, "results"): _users,
}


def denied_response(api_key: int, api_version: int, request: Any, error: ErrorCode) -> Any:
    cls = response_type(api_key, api_version)
    answers = {name: tuple(answer(request)) for (key, name), answer in _ANSWERS.items() if key == api_key}
    return _build(cls, SimpleNamespace(**{**getattr(request, "__dict__", {}), **answers}) if answers else request, error)


def _build(cls: type, mirror: Any, error: ErrorCode) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        values[f.name] = _value(f.name, hints[f.name], getattr(mirror, f.name, None), error)
    return cls(**values)


def _value(name: str, hint: Any, mirrored: Any, error: ErrorCode) -> Any:
    if name == "error_code":
        return error
    if mirrored is not None and not isinstance(mirrored, tuple):
        return mirrored  # names and indexes the request gave (topic name, partition index)
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if dataclasses.is_dataclass(item) and isinstance(mirrored, tuple):
            return tuple(_build(item, m, error) for m in mirrored)
        return ()
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        return None
    if isinstance(hint, type):
        if issubclass(hint, datetime.timedelta):
            return hint(datetime.timedelta(0))
        if issubclass(hint, enum.Enum):
            return next(iter(hint))
        if issubclass(hint, bool):
            return False
        if issubclass(hint, int):
            return hint(-1) if name.endswith("_id") or name.endswith("_epoch") else hint(0)
        if issubclass(hint, str):
            return hint("")
        if issubclass(hint, bytes):
            return b""
        if issubclass(hint, uuid.UUID):
            return uuid.UUID(int=0)
        if dataclasses.is_dataclass(hint):
            return _build(hint, mirrored, error)
    return None


# Config resource types (DescribeConfigs, AlterConfigs, IncrementalAlterConfigs) and the ACL
# resource deciding each: a topic itself, brokers and their loggers the cluster, a group itself.
_CONFIG_RESOURCES = {2: (ResourceType.TOPIC, ErrorCode.topic_authorization_failed),
                     4: (ResourceType.CLUSTER, ErrorCode.cluster_authorization_failed),
                     8: (ResourceType.CLUSTER, ErrorCode.cluster_authorization_failed),
                     32: (ResourceType.GROUP, ErrorCode.group_authorization_failed)}


def check_config_resource(access: Access, operation: AclOperation, resource_type: int, name: str) -> None:
    """Raise the KafkaError Kafka answers a config resource with when ``operation``
    (DESCRIBE_CONFIGS, ALTER_CONFIGS) is not allowed on it."""
    acl_resource = _CONFIG_RESOURCES.get(resource_type)
    if acl_resource is None:
        return
    acl_type, error = acl_resource
    if not access.authorize(operation, acl_type, name if acl_type is not ResourceType.CLUSTER else CLUSTER_NAME):
        raise KafkaError(error, None)


def unreadable_topic_ids(access: Access, topic_by_id: Callable[[uuid.UUID], Any],
                         topic_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """The ids of known topics the principal may not READ (ShareFetch, ShareAcknowledge: their
    partitions are answered TOPIC_AUTHORIZATION_FAILED). An unknown id is not among them: the
    handler answers it UNKNOWN_TOPIC_ID, as Kafka does."""
    if access.authorizer is None:
        return set()
    names = {topic_id: record.name for topic_id in set(topic_ids) if (record := topic_by_id(topic_id)) is not None}
    readable = access.authorized(AclOperation.READ, ResourceType.TOPIC, names.values())
    return {topic_id for topic_id, name in names.items() if name not in readable}
