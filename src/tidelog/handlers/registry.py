"""The table of APIs this broker serves: one entry per API key, registered by its handler module.

A handler is ``async def handle(ctx, request) -> response``. ``request`` is the kio dataclass
decoded from the body, or, for handlers registered with ``raw=True``, a writable memoryview of
the body (the hot paths decode it themselves). The response is a kio response dataclass, a list
of buffers holding an already encoded body, or None for no response (acks=0 produce).
``ctx`` (RequestContext) carries the request's header and peer and the parts of the broker a
handler may use, each typed: the replicas (partitions), the topics, the metadata store, the
group coordinator, the metrics, the configuration, the logs. Never the broker itself.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tidelog.protocol.apis import ADVERTISED
from tidelog.security.authorizer import Access
from tidelog.security.principal import ANONYMOUS

if TYPE_CHECKING:
    import asyncio

    from tidelog.cluster.fetch_sessions import FetchSessionCache
    from tidelog.cluster.metadata import MetadataStore
    from tidelog.cluster.replica_manager import ReplicaManager
    from tidelog.cluster.topics import TopicAdmin
    from tidelog.config import BrokerConfig
    from tidelog.groups.coordinator import GroupCoordinator
    from tidelog.metrics import BrokerMetrics
    from tidelog.protocol.errors import ErrorCode
    from tidelog.protocol.wire import RequestHeader
    from tidelog.queues.share_groups import ShareGroups
    from tidelog.security.records import SecurityRecords
    from tidelog.storage.manager import LogManager
    from tidelog.txn.service import TransactionService

Handler = Callable[["RequestContext", Any], Awaitable[Any]]


@dataclass(frozen=True)
class Api:
    key: int
    name: str
    min_version: int
    max_version: int
    handler: Handler
    raw: bool


@dataclass(slots=True)
class RequestContext:
    """One request's header and peer, and the broker's parts a handler may use (None only
    where a handler needs none of them, as ApiVersions in the codec tests)."""

    header: "RequestHeader"
    peer: str
    flexible: bool
    node_id: int = -1
    config: "BrokerConfig" = None
    metadata: "MetadataStore" = None
    replicas: "ReplicaManager" = None
    topics: "TopicAdmin" = None
    groups: "GroupCoordinator" = None
    metrics: "BrokerMetrics" = None
    logs: "LogManager" = None
    # Why this broker cannot serve a group request now (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS), or None.
    group_coordinator_error: Callable[[], "ErrorCode | None"] = None
    new_producer_id: Callable[[], Awaitable[int]] = None  # an id never handed out before in the cluster
    shares: "ShareGroups" = None  # share groups (KIP-932): membership, sessions, share-partitions
    transactions: "TransactionService" = None  # the transaction coordinator and marker writes
    # The listener the request came in on (Metadata answers with its advertised addresses).
    listener: str = ""
    # Who asks, from where, and what they may do (docs/security.md): ``access.principal``,
    # ``access.authorize(operation, resource_type, name)``.
    access: Access = Access(None, ANONYMOUS, "")  # the broker gives each connection's; this one allows all
    security_records: "SecurityRecords" = None  # SCRAM credentials, ACLs, client quotas
    fetch_sessions: "FetchSessionCache" = None  # incremental fetch sessions (KIP-227)
    # A raw handler done with its request's bytes calls it: the frame's buffer goes back to the
    # connection's pool before the handler has finished (a Produce, once appended, while it waits
    # for acknowledgements); its bytes count against queued.max.request.bytes until then.
    release_frame: Callable[[], None] | None = None
    # Cluster mode (replica.backlog.max.bytes): an acks=all Produce whose appends left a partition
    # too far above its high watermark calls ``hold_reading`` with a future; the connection reads
    # nothing more until it is done, and a Produce waits for ``held_by()`` (None: its turn, and
    # nothing holds the connection) before it appends, so the connection's appends keep arrival order.
    hold_reading: Callable[[asyncio.Future], None] | None = None
    held_by: Callable[[], asyncio.Future | None] | None = None
    # A Produce that must wait before it appends (a transactional batch's KIP-890 check) lines
    # up here, and so does every later Produce of the connection while one is in line: the
    # connection's appends keep arrival order (server/connection.py's ProduceOrder).
    append_order: Any = None

    @property
    def api_version(self) -> int:
        return self.header.api_version


REGISTRY: dict[int, Api] = {}


def handles(api_key: int, *, raw: bool = False) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine for ``api_key`` with the version range Kafka advertises
    (4.0's; 4.2's for the share-group APIs)."""
    name, min_version, max_version = ADVERTISED[api_key]

    def register(handler: Handler) -> Handler:
        REGISTRY[api_key] = Api(api_key, name, min_version, max_version, handler, raw)
        return handler

    return register


def load_all() -> dict[int, Api]:
    """Import every handler module so each registers itself; return the table."""
    package = importlib.import_module("tidelog.handlers")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "registry":
            importlib.import_module(f"tidelog.handlers.{module.name}")
    return REGISTRY
