"""The authorizer's decisions, case by case as Kafka's StandardAuthorizer decides them.

The tables are written from the rules (deny wins, super users, the no-ACL default, implied
operations, hosts, wildcards, prefixes), and a randomised test checks the indexed lookups
against a plain scan of every binding.
"""

from __future__ import annotations

import logging
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.security.acl import (
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from tidelog.security.authorizer import Access, Authorizer, all_operations, normalise_host
from tidelog.security.principal import KafkaPrincipal

TOPIC, GROUP, CLUSTER, TXN = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER, ResourceType.TRANSACTIONAL_ID
LITERAL, PREFIXED = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
Op = AclOperation
ALICE, BOB, ADMIN = KafkaPrincipal.user("alice"), KafkaPrincipal.user("bob"), KafkaPrincipal.user("admin")
HOST = "10.0.0.5"


def acl(name="orders", operation=Op.READ, permission=ALLOW, principal="User:alice", host="*", pattern=LITERAL,
        resource_type=TOPIC):
    return AclBinding(ResourcePattern(resource_type, name, pattern), AccessControlEntry(principal, host, operation, permission))


def authorizer(*bindings, allow_if_no_acl=False, super_users=("User:admin",)):
    auth = Authorizer(super_users=super_users, allow_everyone_if_no_acl_found=allow_if_no_acl)
    auth.load(bindings)
    return auth


# (bindings, principal, host, operation, resource type, name, allowed)
CASES = [
    # no ACLs: the default decides
    ((), ALICE, HOST, Op.READ, TOPIC, "orders", False),
    # a matching ALLOW
    ((acl(),), ALICE, HOST, Op.READ, TOPIC, "orders", True),
    ((acl(),), BOB, HOST, Op.READ, TOPIC, "orders", False),
    ((acl(),), ALICE, HOST, Op.WRITE, TOPIC, "orders", False),
    ((acl(),), ALICE, HOST, Op.READ, TOPIC, "orders2", False),
    ((acl(),), ALICE, HOST, Op.READ, GROUP, "orders", False),
    # deny wins, wherever it comes from
    ((acl(), acl(permission=DENY)), ALICE, HOST, Op.READ, TOPIC, "orders", False),
    ((acl(), acl("ord", permission=DENY, pattern=PREFIXED)), ALICE, HOST, Op.READ, TOPIC, "orders", False),
    ((acl(), acl("*", permission=DENY)), ALICE, HOST, Op.READ, TOPIC, "orders", False),
    ((acl(), acl(permission=DENY, principal="User:*")), ALICE, HOST, Op.READ, TOPIC, "orders", False),
    ((acl(), acl(permission=DENY, host=HOST)), ALICE, HOST, Op.READ, TOPIC, "orders", False),
    ((acl(), acl(permission=DENY, operation=Op.ALL)), ALICE, HOST, Op.READ, TOPIC, "orders", False),
    ((acl(), acl(permission=DENY, host="10.0.0.6")), ALICE, HOST, Op.READ, TOPIC, "orders", True),
    ((acl(), acl(permission=DENY, principal="User:bob")), ALICE, HOST, Op.READ, TOPIC, "orders", True),
    ((acl(), acl(permission=DENY, operation=Op.WRITE)), ALICE, HOST, Op.READ, TOPIC, "orders", True),
    # super users may do anything, deny or not
    ((acl(permission=DENY, principal="User:admin", operation=Op.ALL),), ADMIN, HOST, Op.READ, TOPIC, "orders", True),
    ((), ADMIN, HOST, Op.ALTER, CLUSTER, "kafka-cluster", True),
    # implied operations: only ALLOW entries imply
    ((acl(operation=Op.READ),), ALICE, HOST, Op.DESCRIBE, TOPIC, "orders", True),
    ((acl(operation=Op.WRITE),), ALICE, HOST, Op.DESCRIBE, TOPIC, "orders", True),
    ((acl(operation=Op.DELETE),), ALICE, HOST, Op.DESCRIBE, TOPIC, "orders", True),
    ((acl(operation=Op.ALTER),), ALICE, HOST, Op.DESCRIBE, TOPIC, "orders", True),
    ((acl(operation=Op.CREATE),), ALICE, HOST, Op.DESCRIBE, TOPIC, "orders", False),
    ((acl(operation=Op.ALTER_CONFIGS),), ALICE, HOST, Op.DESCRIBE_CONFIGS, TOPIC, "orders", True),
    ((acl(operation=Op.ALTER_CONFIGS),), ALICE, HOST, Op.DESCRIBE, TOPIC, "orders", False),
    ((acl(operation=Op.WRITE),), ALICE, HOST, Op.READ, TOPIC, "orders", False),
    ((acl(operation=Op.DESCRIBE),), ALICE, HOST, Op.READ, TOPIC, "orders", False),
    ((acl(operation=Op.READ), acl(operation=Op.READ, permission=DENY)), ALICE, HOST, Op.DESCRIBE, TOPIC, "orders", True),
    ((acl(operation=Op.ALL),), ALICE, HOST, Op.DELETE, TOPIC, "orders", True),
    ((acl(operation=Op.ALL), acl(operation=Op.DESCRIBE, permission=DENY)), ALICE, HOST, Op.DESCRIBE, TOPIC, "orders", False),
    # hosts
    ((acl(host=HOST),), ALICE, HOST, Op.READ, TOPIC, "orders", True),
    ((acl(host="10.0.0.6"),), ALICE, HOST, Op.READ, TOPIC, "orders", False),
    ((acl(host="::1"),), ALICE, "0:0:0:0:0:0:0:1", Op.READ, TOPIC, "orders", True),
    ((acl(host="0:0:0:0:0:0:0:1"),), ALICE, "::1", Op.READ, TOPIC, "orders", True),
    ((acl(host="127.0.0.1"),), ALICE, "::ffff:127.0.0.1", Op.READ, TOPIC, "orders", True),
    # the wildcard principal and the wildcard resource
    ((acl(principal="User:*"),), BOB, HOST, Op.READ, TOPIC, "orders", True),
    ((acl("*"),), ALICE, HOST, Op.READ, TOPIC, "anything", True),
    ((acl("*"),), ALICE, HOST, Op.READ, GROUP, "anything", False),
    ((acl("*", pattern=PREFIXED),), ALICE, HOST, Op.READ, TOPIC, "anything", False),  # "*" is only literal's wildcard
    ((acl("*", pattern=PREFIXED),), ALICE, HOST, Op.READ, TOPIC, "*x", True),
    # prefixes
    ((acl("ord", pattern=PREFIXED),), ALICE, HOST, Op.READ, TOPIC, "orders", True),
    ((acl("ord", pattern=PREFIXED),), ALICE, HOST, Op.READ, TOPIC, "ord", True),
    ((acl("ord", pattern=PREFIXED),), ALICE, HOST, Op.READ, TOPIC, "or", False),
    ((acl("ord", pattern=PREFIXED),), ALICE, HOST, Op.READ, TOPIC, "xorders", False),
    ((acl("ord"),), ALICE, HOST, Op.READ, TOPIC, "orders", False),  # literal is exact
    ((acl("orders-eu", pattern=PREFIXED), acl("o", pattern=PREFIXED, operation=Op.WRITE)), ALICE, HOST, Op.WRITE, TOPIC,
     "orders", True),
    ((acl("o", pattern=PREFIXED), acl("orders-", pattern=PREFIXED, permission=DENY)), ALICE, HOST, Op.READ, TOPIC,
     "orders-eu", False),
    ((acl("o", pattern=PREFIXED), acl("orders-", pattern=PREFIXED, permission=DENY)), ALICE, HOST, Op.READ, TOPIC,
     "orders", True),
    # other resource types
    ((acl("kafka-cluster", Op.CREATE, resource_type=CLUSTER),), ALICE, HOST, Op.CREATE, CLUSTER, "kafka-cluster", True),
    ((acl("app-", Op.READ, pattern=PREFIXED, resource_type=GROUP),), ALICE, HOST, Op.READ, GROUP, "app-billing", True),
    ((acl("tx-1", Op.WRITE, resource_type=TXN),), ALICE, HOST, Op.DESCRIBE, TXN, "tx-1", True),
]


@pytest.mark.parametrize("bindings, principal, host, operation, resource_type, name, allowed", CASES)
def test_decisions(bindings, principal, host, operation, resource_type, name, allowed):
    assert authorizer(*bindings).authorize(principal, host, operation, resource_type, name) is allowed


# allow.everyone.if.no.acl.found: a resource without any binding is open; one with bindings for others is not.
@pytest.mark.parametrize("bindings, name, allowed", [
    ((), "orders", True),
    ((acl(principal="User:bob"),), "orders", False),
    ((acl(principal="User:bob", operation=Op.WRITE),), "orders", False),
    ((acl("ord", principal="User:bob", pattern=PREFIXED),), "orders", False),
    ((acl("*", principal="User:bob"),), "orders", False),
    ((acl("payments", principal="User:bob"),), "orders", True),
    ((acl(principal="User:bob", resource_type=GROUP),), "orders", True),
])
def test_allow_everyone_if_no_acl_found(bindings, name, allowed):
    assert authorizer(*bindings, allow_if_no_acl=True).authorize(ALICE, HOST, Op.READ, TOPIC, name) is allowed


# Kafka's authorizeByResourceType: may the principal do this on some resource of the type?
@pytest.mark.parametrize("bindings, principal, allowed", [
    ((), ALICE, False),
    ((), ADMIN, True),
    ((acl("t1", Op.WRITE),), ALICE, True),
    ((acl("t1", Op.WRITE),), BOB, False),
    ((acl("t1", Op.WRITE, principal="User:*"),), BOB, True),
    ((acl("t1", Op.ALL),), ALICE, True),
    ((acl("t1", Op.READ),), ALICE, False),
    ((acl("t1", Op.WRITE, host="10.9.9.9"),), ALICE, False),
    ((acl("t1", Op.WRITE), acl("t1", Op.WRITE, DENY)), ALICE, False),
    ((acl("t1", Op.WRITE), acl("t1", Op.WRITE, DENY), acl("t2", Op.WRITE)), ALICE, True),
    ((acl("t", Op.WRITE, pattern=PREFIXED), acl("t", Op.WRITE, DENY, pattern=PREFIXED)), ALICE, False),
    ((acl("t1", Op.WRITE), acl("t", Op.WRITE, DENY, pattern=PREFIXED)), ALICE, False),
    ((acl("t1", Op.WRITE, pattern=PREFIXED), acl("t", Op.WRITE, DENY, pattern=PREFIXED)), ALICE, False),
    ((acl("t", Op.WRITE, pattern=PREFIXED), acl("t1", Op.WRITE, DENY, pattern=PREFIXED)), ALICE, True),
    ((acl("t1", Op.WRITE, pattern=PREFIXED), acl("t1", Op.WRITE, DENY)), ALICE, True),  # a literal deny leaves the prefix
    ((acl("*", Op.WRITE),), ALICE, True),
    ((acl("t1", Op.WRITE), acl("*", Op.WRITE, DENY)), ALICE, False),
    ((acl("t1", Op.WRITE, resource_type=GROUP),), ALICE, False),
])
def test_authorize_by_resource_type(bindings, principal, allowed):
    assert authorizer(*bindings).authorize_by_resource_type(principal, HOST, Op.WRITE, TOPIC) is allowed


def test_authorize_by_resource_type_follows_the_no_acl_default():
    assert authorizer(allow_if_no_acl=True).authorize_by_resource_type(ALICE, HOST, Op.WRITE, TOPIC)


def bits(*operations):
    return sum(1 << op for op in operations)


def test_authorized_operations_bit_fields():
    auth = authorizer(acl(operation=Op.READ), acl(operation=Op.ALTER_CONFIGS),
                      acl("kafka-cluster", Op.DESCRIBE, resource_type=CLUSTER))
    assert auth.authorized_operations(ALICE, HOST, TOPIC, "orders") == bits(Op.READ, Op.DESCRIBE, Op.ALTER_CONFIGS,
                                                                           Op.DESCRIBE_CONFIGS)
    assert auth.authorized_operations(BOB, HOST, TOPIC, "orders") == 0
    assert auth.authorized_operations(ADMIN, HOST, TOPIC, "orders") == all_operations(TOPIC)
    assert all_operations(TOPIC) == bits(Op.READ, Op.WRITE, Op.CREATE, Op.DESCRIBE, Op.DELETE, Op.ALTER,
                                         Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS)
    assert all_operations(CLUSTER) == bits(5, 7, 8, 9, 10, 11, 12)  # as describe_cluster.py reports it today
    access = Access(auth, ALICE, HOST)
    assert access.cluster_authorized_operations() == bits(Op.DESCRIBE)
    assert Access(auth, BOB, HOST).cluster_authorized_operations() == 0


def test_access_without_an_authorizer_allows_everything():
    access = Access(None, ALICE, HOST)
    assert not access.enabled
    assert access.authorize(Op.ALTER, CLUSTER) and access.authorize_by_resource_type(Op.WRITE, TOPIC)
    assert access.authorized(Op.WRITE, TOPIC, ["a", "b", "a"]) == {"a", "b"}
    assert access.authorized_operations(GROUP, "g") == all_operations(GROUP)
    assert access.cluster_authorized_operations() == all_operations(CLUSTER)


def test_access_filters_names_as_filter_by_authorized():
    access = Access(authorizer(acl("ord", Op.WRITE, pattern=PREFIXED)), ALICE, HOST)
    assert access.authorized(Op.WRITE, TOPIC, ["orders", "payments", "orders", "ord"]) == {"orders", "ord"}
    assert access.authorize(Op.DESCRIBE, TOPIC, "orders") and not access.authorize(Op.READ, TOPIC, "orders")


def test_decisions_follow_acl_changes():
    auth = authorizer()
    assert not auth.authorize(ALICE, HOST, Op.READ, TOPIC, "orders")
    auth.add([acl()])
    assert auth.authorize(ALICE, HOST, Op.READ, TOPIC, "orders")
    auth.add([acl("o", permission=DENY, pattern=PREFIXED)])
    assert not auth.authorize(ALICE, HOST, Op.READ, TOPIC, "orders")
    auth.remove([acl("o", permission=DENY, pattern=PREFIXED)])
    assert auth.authorize(ALICE, HOST, Op.READ, TOPIC, "orders")
    auth.load([])
    assert not auth.authorize(ALICE, HOST, Op.READ, TOPIC, "orders") and auth.acl_count == 0


def test_acls_lists_what_a_filter_matches():
    auth = authorizer(acl(), acl("ord", pattern=PREFIXED), acl("g", resource_type=GROUP))
    assert auth.acls(AclBindingFilter(TOPIC, "orders", PatternType.MATCH)) == [acl(), acl("ord", pattern=PREFIXED)]
    assert len(auth.acls()) == 3


def test_denials_are_audited_at_info(caplog):
    auth = authorizer(acl(permission=DENY))
    with caplog.at_level(logging.INFO, logger="tidelog.security.authorizer"):
        auth.authorize(ALICE, HOST, Op.READ, TOPIC, "orders")
        auth.authorize(BOB, HOST, Op.READ, TOPIC, "quiet", log_if_denied=False)
        auth.authorize(ADMIN, HOST, Op.READ, TOPIC, "orders")
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert caplog.records[0].getMessage().startswith(
        "Principal = User:alice is Denied operation = READ from host = 10.0.0.5 on resource = Topic:LITERAL:orders "
        "based on MatchingAcl(Topic:LITERAL:orders User:alice has DENY permission")


def test_normalise_host():
    assert normalise_host("0:0:0:0:0:0:0:1") == "::1"
    assert normalise_host("::ffff:10.1.2.3") == "10.1.2.3"
    assert normalise_host("broker.example") == "broker.example"


# --- the index against a plain scan --------------------------------------------------------

_NAMES = ["a", "ab", "abc", "b", "ba", "*"]
_PRINCIPALS = ["User:alice", "User:bob", "User:*"]
_OPERATIONS = [Op.READ, Op.WRITE, Op.DESCRIBE, Op.ALL, Op.ALTER_CONFIGS, Op.DESCRIBE_CONFIGS, Op.ALTER]


def reference_decision(bindings, super_users, allow_if_no_acl, principal, host, operation, resource_type, name):
    """The rules of the module docstring, applied by scanning every binding."""
    if principal in super_users:
        return True
    applying = [b for b in bindings if AclBindingFilter(resource_type, name, PatternType.MATCH).matches(b)]

    def applies(entry):
        if entry.principal not in (principal, "User:*") or entry.host not in ("*", host):
            return False
        if entry.operation in (Op.ALL, operation):
            return True
        implied = {Op.DESCRIBE: {Op.READ, Op.WRITE, Op.DELETE, Op.ALTER}, Op.DESCRIBE_CONFIGS: {Op.ALTER_CONFIGS}}
        return entry.permission_type is ALLOW and entry.operation in implied.get(operation, ())

    entries = [b.entry for b in applying if applies(b.entry)]
    if any(e.permission_type is DENY for e in entries):
        return False
    if entries:
        return True
    return allow_if_no_acl and not applying


binding_strategy = st.builds(
    acl, name=st.sampled_from(_NAMES), operation=st.sampled_from(_OPERATIONS), permission=st.sampled_from([ALLOW, DENY]),
    principal=st.sampled_from(_PRINCIPALS), host=st.sampled_from(["*", "10.0.0.1", "10.0.0.2"]),
    pattern=st.sampled_from([LITERAL, PREFIXED]), resource_type=st.sampled_from([TOPIC, GROUP]))


@settings(max_examples=300, deadline=None)
@given(bindings=st.lists(binding_strategy, max_size=12), allow_if_no_acl=st.booleans(),
       principal=st.sampled_from(["User:alice", "User:bob", "User:carol"]), host=st.sampled_from(["10.0.0.1", "10.0.0.2"]),
       operation=st.sampled_from(_OPERATIONS[:3] + _OPERATIONS[4:]), resource_type=st.sampled_from([TOPIC, GROUP]),
       name=st.sampled_from(_NAMES + ["abcd", "c"]))
def test_index_agrees_with_a_plain_scan(bindings, allow_if_no_acl, principal, host, operation, resource_type, name):
    auth = authorizer(*bindings, allow_if_no_acl=allow_if_no_acl, super_users=("User:carol",) if len(bindings) % 2 else ())
    expected = reference_decision(bindings, auth.super_users, allow_if_no_acl, principal, host, operation, resource_type, name)
    assert auth.authorize(KafkaPrincipal.parse(principal), host, operation, resource_type, name) is expected


def test_produce_sized_checks_are_fast():
    """100 topics against 2,000 ACLs, as a produce request to a busy shared cluster asks."""
    bindings = [acl(f"team{i}-", Op.WRITE, pattern=PREFIXED, principal=f"User:svc{i}") for i in range(1000)]
    bindings += [acl(f"topic-{i}", Op.READ, principal=f"User:svc{i}") for i in range(1000)]
    access = Access(authorizer(*bindings), KafkaPrincipal.user("svc7"), HOST)
    topics = [f"team7-events-{i}" for i in range(100)]
    assert access.authorized(Op.WRITE, TOPIC, topics) == set(topics)  # fills the cache
    started = time.thread_time()  # CPU time: the wall clock counts the preemptions of a loaded machine
    for _ in range(100):
        access.authorized(Op.WRITE, TOPIC, topics)
    per_request_us = (time.thread_time() - started) / 100 * 1e6
    assert per_request_us < 2000, f"{per_request_us:.0f} us per 100-topic check"
