"""Who may do what: Kafka's StandardAuthorizer over the ACL bindings.

A request by a principal from a client host for an operation on a resource is decided so:

1. A super user (``super.users``: ``User:admin;User:broker``) may do anything.
2. The bindings that apply to the resource are those with a LITERAL pattern of its name, a
   LITERAL ``*``, or a PREFIXED pattern its name starts with. Of their entries, one applies
   when its principal is the principal or ``User:*``, its host is the client's address or
   ``*``, and its operation is the one asked, ALL, or, for ALLOW entries only, one that implies
   it: READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS.
3. An applying DENY denies (deny wins over allow); otherwise an applying ALLOW allows.
4. Otherwise: a resource with no bindings at all gets ``allow.everyone.if.no.acl.found``
   (default false); one with bindings for others is denied.

Produce and fetch ask for every topic of every request, so lookups are indexed: per resource
type a dict of literal names and a dict of prefixes probed only at the prefix lengths that
exist, and decisions are cached until the ACLs change. Denials are logged at INFO on
``tidelog.security.authorizer`` (Kafka's audit log), allowances at DEBUG.

``Access`` is one principal's view, the narrow collaborator a connection hands its handlers.
Not thread-safe; the event loop owns an authorizer.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Union

from tidelog.security.acl import (
    CLUSTER_NAME,
    SUPPORTED_OPERATIONS,
    WILDCARD,
    WILDCARD_PRINCIPAL,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)
from tidelog.security.principal import KafkaPrincipal

logger = logging.getLogger(__name__)

_IMPLIED_BY_ALLOW = {
    AclOperation.DESCRIBE: frozenset({AclOperation.DESCRIBE, AclOperation.READ, AclOperation.WRITE,
                                      AclOperation.DELETE, AclOperation.ALTER}),
    AclOperation.DESCRIBE_CONFIGS: frozenset({AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}),
}

# Why a decision was taken, for the audit log: the deciding binding, or one of these.
Rule = Union[AclBinding, str]
SUPER_USER, DEFAULT_ALLOW, DEFAULT_DENY = "SuperUser", "DefaultAllow", "DefaultDeny"


def normalise_host(host: str) -> str:
    """An address as ACL hosts compare it: compressed IPv6, IPv4-mapped IPv6 as IPv4."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


class _Entry:
    __slots__ = ("principal", "host", "operation", "allow", "binding")

    def __init__(self, binding: AclBinding) -> None:
        entry = binding.entry
        self.principal = entry.principal
        self.host = entry.host if entry.host == WILDCARD else normalise_host(entry.host)
        self.operation = entry.operation
        self.allow = entry.permission_type is AclPermissionType.ALLOW
        self.binding = binding

    def applies(self, principal: str, host: str, operation: AclOperation) -> bool:
        if self.principal != principal and self.principal != WILDCARD_PRINCIPAL:
            return False
        if self.host != WILDCARD and self.host != host:
            return False
        if self.operation is AclOperation.ALL or self.operation is operation:
            return True
        return self.allow and self.operation in _IMPLIED_BY_ALLOW.get(operation, ())


class _TypeIndex:
    """The bindings of one resource type: literal names and prefixes, each to its entries."""

    __slots__ = ("literal", "prefixed", "prefix_lengths")

    def __init__(self) -> None:
        self.literal: dict[str, list[_Entry]] = {}
        self.prefixed: dict[str, list[_Entry]] = {}
        self.prefix_lengths: list[int] = []

    def sections(self, name: str) -> Iterable[list[_Entry]]:
        entries = self.literal.get(name)
        if entries:
            yield entries
        if name != WILDCARD:
            entries = self.literal.get(WILDCARD)
            if entries:
                yield entries
        prefixed = self.prefixed
        for length in self.prefix_lengths:
            if length > len(name):
                break
            entries = prefixed.get(name[:length])
            if entries:
                yield entries


class Authorizer:
    """StandardAuthorizer's decisions over the ACL bindings it is given (``load``/``add``/``remove``)."""

    def __init__(self, super_users: Iterable[str] = (), allow_everyone_if_no_acl_found: bool = False,
                 cache_size: int = 65536) -> None:
        self.super_users = frozenset(super_users)
        self.allow_everyone_if_no_acl_found = allow_everyone_if_no_acl_found
        self.cache_size = cache_size
        self._bindings: dict[AclBinding, None] = {}
        self._index: dict[ResourceType, _TypeIndex] = {}
        self._cache: dict[tuple, tuple[bool, Rule]] = {}

    # --- the bindings ---

    def load(self, bindings: Iterable[AclBinding]) -> None:
        """Replace every binding (the metadata store's ACLs after a change)."""
        self._bindings = dict.fromkeys(bindings)
        self._rebuild()

    def add(self, bindings: Iterable[AclBinding]) -> None:
        self._bindings.update(dict.fromkeys(bindings))
        self._rebuild()

    def remove(self, bindings: Iterable[AclBinding]) -> None:
        for binding in bindings:
            self._bindings.pop(binding, None)
        self._rebuild()

    def _rebuild(self) -> None:
        index: dict[ResourceType, _TypeIndex] = {}
        for binding in self._bindings:
            pattern = binding.pattern
            section = index.setdefault(pattern.resource_type, _TypeIndex())
            names = section.prefixed if pattern.pattern_type is PatternType.PREFIXED else section.literal
            names.setdefault(pattern.name, []).append(_Entry(binding))
        for section in index.values():
            section.prefix_lengths = sorted({len(prefix) for prefix in section.prefixed})
        self._index = index
        self._cache = {}

    @property
    def acl_count(self) -> int:
        return len(self._bindings)

    def acls(self, acl_filter: AclBindingFilter = AclBindingFilter()) -> list[AclBinding]:
        """The bindings a DescribeAcls filter matches."""
        return [b for b in self._bindings if acl_filter.matches(b)]

    # --- decisions ---

    def authorize(self, principal: KafkaPrincipal, host: str, operation: AclOperation, resource_type: ResourceType,
                  name: str = CLUSTER_NAME, *, log_if_denied: bool = True) -> bool:
        return self._decide(str(principal), normalise_host(host), operation, resource_type, name, log_if_denied)

    def _decide(self, principal: str, host: str, operation: AclOperation, resource_type: ResourceType, name: str,
                log_if_denied: bool = True) -> bool:
        key = (principal, host, operation, resource_type, name)
        decision = self._cache.get(key)
        if decision is None:
            decision = self._evaluate(principal, host, operation, resource_type, name)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[key] = decision
        allowed, rule = decision
        if not allowed:
            if log_if_denied:
                self._audit(logging.INFO, principal, host, operation, resource_type, name, allowed, rule)
        elif logger.isEnabledFor(logging.DEBUG):
            self._audit(logging.DEBUG, principal, host, operation, resource_type, name, allowed, rule)
        return allowed

    def _evaluate(self, principal: str, host: str, operation: AclOperation, resource_type: ResourceType,
                  name: str) -> tuple[bool, Rule]:
        if principal in self.super_users:
            return True, SUPER_USER
        section = self._index.get(resource_type)
        has_resource_acls = False
        allowed_by: AclBinding | None = None
        if section is not None:
            for entries in section.sections(name):
                has_resource_acls = True
                for entry in entries:
                    if entry.applies(principal, host, operation):
                        if not entry.allow:
                            return False, entry.binding
                        allowed_by = entry.binding
        if allowed_by is not None:
            return True, allowed_by
        if not has_resource_acls and self.allow_everyone_if_no_acl_found:
            return True, DEFAULT_ALLOW
        return False, DEFAULT_DENY

    def _audit(self, level: int, principal: str, host: str, operation: AclOperation, resource_type: ResourceType,
               name: str, allowed: bool, rule: Rule) -> None:
        logger.log(level, "Principal = %s is %s operation = %s from host = %s on resource = %s:LITERAL:%s based on %s",
                   principal, "Allowed" if allowed else "Denied", operation.name, host, resource_type.pascal_name,
                   name, f"MatchingAcl({rule})" if isinstance(rule, AclBinding) else rule)

    def authorize_by_resource_type(self, principal: KafkaPrincipal, host: str, operation: AclOperation,
                                   resource_type: ResourceType) -> bool:
        """Whether the principal may do ``operation`` on at least one resource of the type.

        Kafka's Authorizer.authorizeByResourceType (InitProducerId without a transactional id
        accepts WRITE on any topic): an ALLOW pattern counts unless a DENY for the same
        literal name, or a DENY prefix of it, cancels it; a DENY on LITERAL ``*`` denies all.
        """
        principal_text, host = str(principal), normalise_host(host)
        # A resource name nobody uses: super users and the no-ACL default decide here.
        if self._decide(principal_text, host, operation, resource_type, "hardcode", log_if_denied=False):
            return True
        section = self._index.get(resource_type)
        if section is None:
            return False
        patterns = {(PatternType.LITERAL, False): set(), (PatternType.LITERAL, True): set(),
                    (PatternType.PREFIXED, False): set(), (PatternType.PREFIXED, True): set()}
        for pattern_type, names in ((PatternType.LITERAL, section.literal), (PatternType.PREFIXED, section.prefixed)):
            for name, entries in names.items():
                for entry in entries:
                    if entry.principal not in (principal_text, WILDCARD_PRINCIPAL):
                        continue
                    if entry.host not in (WILDCARD, host):
                        continue
                    if entry.operation not in (operation, AclOperation.ALL):
                        continue
                    if not entry.allow and pattern_type is PatternType.LITERAL and name == WILDCARD:
                        return False
                    patterns[pattern_type, entry.allow].add(name)
        if WILDCARD in patterns[PatternType.LITERAL, True]:
            return True
        denied_literal, denied_prefixes = patterns[PatternType.LITERAL, False], patterns[PatternType.PREFIXED, False]
        for pattern_type in (PatternType.LITERAL, PatternType.PREFIXED):
            for name in patterns[pattern_type, True]:
                if pattern_type is PatternType.LITERAL and name in denied_literal:
                    continue
                if not any(name[:length] in denied_prefixes for length in range(1, len(name) + 1)):
                    return True
        return False

    def authorized_operations(self, principal: KafkaPrincipal, host: str, resource_type: ResourceType,
                              name: str) -> int:
        """The bit field of the operations allowed on a resource (bit n = operation code n)."""
        principal_text, host = str(principal), normalise_host(host)
        field = 0
        for operation in SUPPORTED_OPERATIONS[resource_type]:
            if self._decide(principal_text, host, operation, resource_type, name, log_if_denied=False):
                field |= 1 << operation
        return field


def all_operations(resource_type: ResourceType) -> int:
    """The bit field of every operation a resource type has: what Kafka reports without an authorizer."""
    field = 0
    for operation in SUPPORTED_OPERATIONS[resource_type]:
        field |= 1 << operation
    return field


class Access:
    """What one principal, connected from one host, may do: the collaborator handlers get.

    With no authorizer (``authorizer.class.name`` empty) everything is allowed and bit fields
    list every supported operation, as Kafka does without one.
    """

    __slots__ = ("authorizer", "principal", "host", "_principal_text")

    def __init__(self, authorizer: Authorizer | None, principal: KafkaPrincipal, host: str) -> None:
        self.authorizer = authorizer
        self.principal = principal
        self.host = normalise_host(host)
        self._principal_text = str(principal)

    @property
    def enabled(self) -> bool:
        return self.authorizer is not None

    def authorize(self, operation: AclOperation, resource_type: ResourceType, name: str = CLUSTER_NAME, *,
                  log_if_denied: bool = True) -> bool:
        if self.authorizer is None:
            return True
        return self.authorizer._decide(self._principal_text, self.host, operation, resource_type, name, log_if_denied)

    def authorized(self, operation: AclOperation, resource_type: ResourceType, names: Iterable[str], *,
                   log_if_denied: bool = True) -> set[str]:
        """The names the principal may use, each asked once (Kafka's filterByAuthorized)."""
        names = set(names)
        if self.authorizer is None:
            return names
        decide, principal, host = self.authorizer._decide, self._principal_text, self.host
        return {name for name in names if decide(principal, host, operation, resource_type, name, log_if_denied)}

    def authorize_by_resource_type(self, operation: AclOperation, resource_type: ResourceType) -> bool:
        if self.authorizer is None:
            return True
        return self.authorizer.authorize_by_resource_type(self.principal, self.host, operation, resource_type)

    def authorized_operations(self, resource_type: ResourceType, name: str) -> int:
        if self.authorizer is None:
            return all_operations(resource_type)
        return self.authorizer.authorized_operations(self.principal, self.host, resource_type, name)

    def cluster_authorized_operations(self) -> int:
        """Metadata's and DescribeCluster's field: 0 without DESCRIBE on the cluster, as in Kafka."""
        if not self.authorize(AclOperation.DESCRIBE, ResourceType.CLUSTER, log_if_denied=False):
            return 0
        return self.authorized_operations(ResourceType.CLUSTER, CLUSTER_NAME)
