"""The table of APIs this broker serves: one entry per API key, registered by its handler module.

A handler is ``async def handle(ctx, request) -> response``. ``request`` is the kio dataclass
decoded from the body, or, for handlers registered with ``raw=True``, a writable memoryview of
the body (the hot paths decode it themselves). The response is a kio response dataclass, a list
of buffers holding an already encoded body, or None for no response (acks=0 produce).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tidelog.protocol.apis import KAFKA_4_0

if TYPE_CHECKING:
    from tidelog.server.broker import Broker
    from tidelog.protocol.wire import RequestHeader

Handler = Callable[["RequestContext", Any], Awaitable[Any]]


@dataclass(frozen=True)
class Api:
    key: int
    name: str
    min_version: int
    max_version: int
    handler: Handler
    raw: bool


@dataclass
class RequestContext:
    header: "RequestHeader"
    broker: "Broker"
    peer: str
    flexible: bool

    @property
    def api_version(self) -> int:
        return self.header.api_version


REGISTRY: dict[int, Api] = {}


def handles(api_key: int, *, raw: bool = False) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine for ``api_key`` with Kafka 4.0's version range."""
    name, min_version, max_version = KAFKA_4_0[api_key]

    def register(handler: Handler) -> Handler:
        REGISTRY[api_key] = Api(api_key, name, min_version, max_version, handler, raw)
        return handler

    return register


def load_all() -> dict[int, Api]:
    """Import every handler module so each registers itself; return the table."""
    import importlib
    import pkgutil

    import tidelog.handlers as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "registry":
            importlib.import_module(f"tidelog.handlers.{module.name}")
    return REGISTRY
