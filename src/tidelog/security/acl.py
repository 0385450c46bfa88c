"""ACL bindings as Kafka defines them, and CreateAcls / DescribeAcls / DeleteAcls over a store.

A binding is a resource pattern (resource type, name, LITERAL or PREFIXED) and an access
control entry (principal, host, operation, ALLOW or DENY). Codes are Kafka's (ResourceType,
PatternType, AclOperation, AclPermissionType), so they go on the wire unchanged. A LITERAL
pattern named ``*`` matches every resource of its type; the principal ``User:*`` and the host
``*`` match any principal and host.

Filters (DescribeAcls, DeleteAcls) use ANY for "whatever", and the pattern type MATCH for
"every pattern that would apply to this resource name": the literal name, the ``*`` wildcard
and every PREFIXED pattern the name starts with (Kafka's ResourcePatternFilter).

``AclStore`` is the interface the metadata store implements (the bindings in memory, writes as
coroutines); ``InMemoryAclStore`` is its implementation for tests. The evaluation of bindings
(who may do what) is ``authorizer.py``. Not thread-safe; the event loop owns these objects.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.principal import KafkaPrincipal

CLUSTER_NAME = "kafka-cluster"  # the one name of the CLUSTER resource
WILDCARD = "*"  # a LITERAL resource name, or a host, that matches all
WILDCARD_PRINCIPAL = "User:*"


class _Coded(enum.IntEnum):
    @classmethod
    def parse(cls, text: str):
        """A member from its name in any common spelling: ``DescribeConfigs``, ``describe_configs``."""
        wanted = text.replace("_", "").replace("-", "").lower()
        for member in cls:
            if member.name.replace("_", "").lower() == wanted:
                return member
        raise ValueError(f"unknown {cls.__name__} {text!r}; one of {', '.join(m.pascal_name for m in cls if m > 1)}")

    @classmethod
    def from_code(cls, code: int):
        """Kafka's fromCode: an unknown code is UNKNOWN."""
        try:
            return cls(code)
        except ValueError:
            return cls(0)

    @property
    def pascal_name(self) -> str:
        """Kafka's display name (SecurityUtils): DESCRIBE_CONFIGS -> DescribeConfigs."""
        return "".join(part.capitalize() for part in self.name.split("_"))


class ResourceType(_Coded):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(_Coded):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(_Coded):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14
    TWO_PHASE_COMMIT = 15


class AclPermissionType(_Coded):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


# The operations each resource type has (Kafka's AclEntry.supportedOperations): what an
# ``authorized_operations`` bit field reports.
SUPPORTED_OPERATIONS: dict[ResourceType, frozenset[AclOperation]] = {
    ResourceType.TOPIC: frozenset({AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE,
                                   AclOperation.DELETE, AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS,
                                   AclOperation.ALTER_CONFIGS}),
    ResourceType.GROUP: frozenset({AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE,
                                   AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}),
    ResourceType.CLUSTER: frozenset({AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
                                     AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER,
                                     AclOperation.DESCRIBE}),
    ResourceType.TRANSACTIONAL_ID: frozenset({AclOperation.DESCRIBE, AclOperation.WRITE, AclOperation.TWO_PHASE_COMMIT}),
    ResourceType.DELEGATION_TOKEN: frozenset({AclOperation.DESCRIBE}),
    ResourceType.USER: frozenset({AclOperation.CREATE_TOKENS, AclOperation.DESCRIBE_TOKENS}),
}

# The error a denied resource of each type is answered with (Kafka's AclEntry.authorizationError).
AUTHORIZATION_ERRORS: dict[ResourceType, ErrorCode] = {
    ResourceType.TOPIC: ErrorCode.topic_authorization_failed,
    ResourceType.GROUP: ErrorCode.group_authorization_failed,
    ResourceType.CLUSTER: ErrorCode.cluster_authorization_failed,
    ResourceType.TRANSACTIONAL_ID: ErrorCode.transactional_id_authorization_failed,
    ResourceType.DELEGATION_TOKEN: ErrorCode.delegation_token_authorization_failed,
}


@dataclass(frozen=True, slots=True)
class ResourcePattern:
    resource_type: ResourceType
    name: str
    pattern_type: PatternType = PatternType.LITERAL

    def __str__(self) -> str:
        return f"{self.resource_type.pascal_name}:{self.pattern_type.name}:{self.name}"


@dataclass(frozen=True, slots=True)
class AccessControlEntry:
    principal: str  # "User:alice", as it goes on the wire
    host: str
    operation: AclOperation
    permission_type: AclPermissionType

    def __str__(self) -> str:
        return (f"{self.principal} has {self.permission_type.name} permission for operations: "
                f"{self.operation.name} from hosts: {self.host}")


@dataclass(frozen=True, slots=True)
class AclBinding:
    pattern: ResourcePattern
    entry: AccessControlEntry

    def __str__(self) -> str:
        return f"{self.pattern} {self.entry}"

    def to_json(self) -> dict:
        """The stored form: names, not codes, so a stored ACL reads on its own."""
        p, e = self.pattern, self.entry
        return {"resource_type": p.resource_type.name, "name": p.name, "pattern_type": p.pattern_type.name,
                "principal": e.principal, "host": e.host, "operation": e.operation.name,
                "permission_type": e.permission_type.name}

    @classmethod
    def from_json(cls, data: dict) -> "AclBinding":
        return cls(
            ResourcePattern(ResourceType[data["resource_type"]], data["name"], PatternType[data["pattern_type"]]),
            AccessControlEntry(data["principal"], data["host"], AclOperation[data["operation"]],
                               AclPermissionType[data["permission_type"]]),
        )


@dataclass(frozen=True)
class AclBindingFilter:
    """A DescribeAcls / DeleteAcls filter; None for a name, principal or host means any."""

    resource_type: ResourceType = ResourceType.ANY
    name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: AclOperation = AclOperation.ANY
    permission_type: AclPermissionType = AclPermissionType.ANY

    def matches(self, binding: AclBinding) -> bool:
        return self._matches_pattern(binding.pattern) and self._matches_entry(binding.entry)

    def _matches_pattern(self, pattern: ResourcePattern) -> bool:
        if self.resource_type is not ResourceType.ANY and self.resource_type is not pattern.resource_type:
            return False
        if self.pattern_type not in (PatternType.ANY, PatternType.MATCH, pattern.pattern_type):
            return False
        if self.name is None:
            return True
        if self.pattern_type in (PatternType.ANY, pattern.pattern_type):
            return self.name == pattern.name
        # MATCH: the patterns that would apply to a resource of this name
        if pattern.pattern_type is PatternType.LITERAL:
            return self.name == pattern.name or pattern.name == WILDCARD
        return self.name.startswith(pattern.name)

    def _matches_entry(self, entry: AccessControlEntry) -> bool:
        return ((self.principal is None or self.principal == entry.principal)
                and (self.host is None or self.host == entry.host)
                and self.operation in (AclOperation.ANY, entry.operation)
                and self.permission_type in (AclPermissionType.ANY, entry.permission_type))

    def find_indefinite_field(self) -> str | None:
        """Why this filter may match more than one binding (Kafka's findIndefiniteField), or None."""
        checks = [
            (self.resource_type is ResourceType.ANY, "Resource type is ANY."),
            (self.resource_type is ResourceType.UNKNOWN, "Resource type is UNKNOWN."),
            (self.name is None, "Resource name is NULL."),
            (self.pattern_type is PatternType.MATCH, "Resource pattern type is MATCH."),
            (self.pattern_type is PatternType.UNKNOWN, "Resource pattern type is UNKNOWN."),
            (self.principal is None, "Principal is NULL."),
            (self.host is None, "Host is NULL."),
            (self.operation is AclOperation.ANY, "Operation is ANY."),
            (self.operation is AclOperation.UNKNOWN, "Operation is UNKNOWN."),
            (self.permission_type is AclPermissionType.ANY, "Permission type is ANY."),
            (self.permission_type is AclPermissionType.UNKNOWN, "Permission type is UNKNOWN."),
        ]
        return next((message for indefinite, message in checks if indefinite), None)

    @property
    def has_unknown(self) -> bool:
        return 0 in (self.resource_type, self.pattern_type, self.operation, self.permission_type)  # UNKNOWN is 0


def filter_for_version(acl_filter: AclBindingFilter, api_version: int) -> AclBindingFilter:
    """DescribeAcls / DeleteAcls v0 know only LITERAL patterns: ANY means LITERAL there.

    Raises UNSUPPORTED_VERSION for another pattern type at v0, and INVALID_REQUEST for an
    UNKNOWN code (Kafka refuses to parse such a request).
    """
    if api_version == 0:
        if acl_filter.pattern_type is PatternType.ANY:
            acl_filter = AclBindingFilter(**{**acl_filter.__dict__, "pattern_type": PatternType.LITERAL})
        elif acl_filter.pattern_type is not PatternType.LITERAL:
            raise KafkaError(ErrorCode.unsupported_version,
                             f"Version 0 does not support pattern type {acl_filter.pattern_type.name} "
                             f"(only LITERAL and ANY are supported)")
    if acl_filter.has_unknown:
        raise KafkaError(ErrorCode.invalid_request, "Filter contains UNKNOWN elements")
    return acl_filter


def check_new_binding(binding: AclBinding) -> None:
    """Refuse what CreateAcls must not store (KafkaApis and AclControlManager's checks)."""
    pattern, entry = binding.pattern, binding.entry

    def invalid(message: str) -> KafkaError:
        return KafkaError(ErrorCode.invalid_request, message)

    if pattern.resource_type in (ResourceType.UNKNOWN, ResourceType.ANY):
        raise invalid(f"Invalid resourceType {pattern.resource_type.name}")
    if pattern.resource_type is ResourceType.CLUSTER and pattern.name != CLUSTER_NAME:
        raise invalid(f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}")
    if not pattern.name:
        raise invalid("Invalid empty resource name")
    if pattern.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
        raise invalid(f"Invalid patternType {pattern.pattern_type.name}")
    if entry.operation in (AclOperation.UNKNOWN, AclOperation.ANY):
        raise invalid(f"Invalid operation {entry.operation.name}")
    if entry.permission_type not in (AclPermissionType.ALLOW, AclPermissionType.DENY):
        raise invalid(f"Invalid permissionType {entry.permission_type.name}")
    try:
        KafkaPrincipal.parse(entry.principal)
    except ValueError as e:
        raise invalid(str(e)) from None
    if not entry.host:
        raise invalid("Invalid empty host")


class AclStore(Protocol):
    """ACL bindings, implemented by the metadata store (embedded file, etcd).

    ``acl_bindings`` is read from memory; each write is one change of several bindings (all or
    nothing) and notifies the store's listeners, so every broker's authorizer reloads.
    """

    def acl_bindings(self) -> Collection[AclBinding]: ...

    async def create_acls(self, bindings: Sequence[AclBinding]) -> None: ...

    async def delete_acls(self, bindings: Collection[AclBinding]) -> None: ...


class InMemoryAclStore:
    def __init__(self, bindings: Iterable[AclBinding] = ()) -> None:
        self.bindings: dict[AclBinding, None] = dict.fromkeys(bindings)  # insertion-ordered set

    def acl_bindings(self) -> Collection[AclBinding]:
        return self.bindings.keys()

    async def create_acls(self, bindings: Sequence[AclBinding]) -> None:
        self.bindings.update(dict.fromkeys(bindings))

    async def delete_acls(self, bindings: Collection[AclBinding]) -> None:
        for binding in bindings:
            self.bindings.pop(binding, None)


@dataclass(frozen=True)
class AclResult:
    """One creation's result, or one filter's result with the bindings it deleted."""

    error_code: ErrorCode = ErrorCode.none
    error_message: str | None = None
    bindings: tuple[AclBinding, ...] = ()


def check_creation_version(bindings: Iterable[AclBinding], api_version: int) -> None:
    """CreateAcls v0 knows only LITERAL patterns (Kafka refuses the request otherwise)."""
    if api_version == 0 and any(b.pattern.pattern_type is not PatternType.LITERAL for b in bindings):
        raise KafkaError(ErrorCode.unsupported_version, "Version 0 only supports literal resource pattern types")


async def create_acls(store: AclStore, bindings: Sequence[AclBinding]) -> list[AclResult]:
    """CreateAcls: each binding checked on its own; the valid new ones stored in one write."""
    results = []
    existing = set(store.acl_bindings())
    new: dict[AclBinding, None] = {}
    for binding in bindings:
        try:
            check_new_binding(binding)
        except KafkaError as e:
            results.append(AclResult(e.error_code, e.message))
            continue
        if binding not in existing:
            new[binding] = None
        results.append(AclResult())
    if new:
        await store.create_acls(list(new))
    return results


async def delete_acls(store: AclStore, filters: Sequence[AclBindingFilter]) -> list[AclResult]:
    """DeleteAcls: each filter's matching bindings, all deleted in one write.

    A binding matched by two filters is reported under both, as Kafka does.
    """
    results = []
    doomed: dict[AclBinding, None] = {}
    bindings = list(store.acl_bindings())
    for acl_filter in filters:
        if acl_filter.has_unknown:
            results.append(AclResult(ErrorCode.invalid_request, "Filter contains UNKNOWN elements"))
            continue
        matched = tuple(b for b in bindings if acl_filter.matches(b))
        doomed.update(dict.fromkeys(matched))
        results.append(AclResult(bindings=matched))
    if doomed:
        await store.delete_acls(list(doomed))
    return results


def group_by_resource(bindings: Iterable[AclBinding]) -> dict[ResourcePattern, list[AccessControlEntry]]:
    """DescribeAcls answers per resource pattern, each with its entries."""
    grouped: dict[ResourcePattern, list[AccessControlEntry]] = {}
    for binding in bindings:
        grouped.setdefault(binding.pattern, []).append(binding.entry)
    return grouped
