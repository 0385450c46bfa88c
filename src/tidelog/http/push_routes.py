"""The HTTP API's push subscriptions (issue 15, docs/push.md): the broker POSTs a topic's records to
an endpoint, as a share group (``push.<name>``) whose consumer is the broker itself.

- ``GET /push-subscriptions``: every subscription with its status (state, last error, counters,
  backlog, latency).
- ``POST /push-subscriptions``: create one from ``{name, topics, endpoint, ...}``; 201 with the
  subscription and its HMAC ``secret``, the only answer that ever shows it.
- ``GET|PATCH|DELETE /push-subscriptions/{name}``: describe, change (the fields given, the others
  kept), delete.
- ``POST /push-subscriptions/{name}/pause|resume``: stop or start delivering (records wait in the
  share group meanwhile).

The subscriptions live in the metadata store (the registry, ``tidelog.push.registry``, writes
there from any broker of a cluster and every broker reads them from it), so every broker answers
alike without forwarding. A subscription is shown by ``sub.to_json()``: its bearer token masked
(``"***"``), its secret never (the registry keeps it, ``to_record()``, for the delivery engine).

Errors: a bad field is 400 INVALID_REQUEST whose message starts with the field's name (and
``field`` names it); 404 SUBSCRIPTION_NOT_FOUND; 409 SUBSCRIPTION_ALREADY_EXISTS. Who may do what
(http/auth.py): the routes name the subscription's share group ``push.<name>``, and creating a
subscription, or changing its topics, needs READ on each of its topics, checked here.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from tidelog.http.auth import may
from tidelog.http.errors import error_response
from tidelog.http.params import json_body
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.push.subscription import PushSubscription, SubscriptionError, SubscriptionExists, SubscriptionNotFound
from tidelog.security.acl import AclOperation, ResourceType

if TYPE_CHECKING:
    from tidelog.push.registry import PushSubscriptions

__all__ = ["PushRoutes"]

logger = logging.getLogger(__name__)

def _answers_errors(handler: Callable) -> Callable:
    """The registry's errors as the API's: 400 naming the field, 404, 409."""

    @functools.wraps(handler)
    async def wrapper(self: "PushRoutes", request: web.Request, *args) -> web.Response:
        try:
            return await handler(self, request, *args)
        except SubscriptionError as e:
            return web.json_response({"error_code": "INVALID_REQUEST", "message": f"{e.field}: {e.message}",
                                      "field": e.field}, status=400)
        except SubscriptionNotFound as e:
            return error_response(404, "SUBSCRIPTION_NOT_FOUND", str(e) or f"no push subscription {request.match_info.get('name')}")
        except SubscriptionExists as e:
            return error_response(409, "SUBSCRIPTION_ALREADY_EXISTS", str(e) or "a push subscription of that name exists")

    return wrapper


class PushRoutes:
    """The push-subscription routes over the broker's registry; ``push()`` gives it (None while the
    broker starts: 503 BROKER_NOT_AVAILABLE)."""

    def __init__(self, push: Callable[[], "PushSubscriptions | None"]) -> None:
        self._push = push

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        base = prefix + "/push-subscriptions"
        router.add_get(base, self.list_subscriptions)
        router.add_post(base, self.create_subscription)
        router.add_get(base + "/{name}", self.describe_subscription)
        router.add_patch(base + "/{name}", self.update_subscription)
        router.add_delete(base + "/{name}", self.delete_subscription)
        router.add_post(base + "/{name}/pause", self.pause)
        router.add_post(base + "/{name}/resume", self.resume)

    def _registry(self) -> "PushSubscriptions":
        push = self._push()
        if push is None:
            raise KafkaError(ErrorCode.broker_not_available, "push subscriptions are not loaded yet")
        return push

    def _detail(self, sub: PushSubscription) -> dict[str, Any]:
        return {**sub.to_json(), "status": self._registry().status(sub.name)}

    @_answers_errors
    async def list_subscriptions(self, _request: web.Request) -> web.Response:
        push = self._registry()
        return web.json_response({"subscriptions": [self._detail(sub) for sub in sorted(push.list(), key=lambda s: s.name)]})

    @_answers_errors
    async def create_subscription(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        sub = PushSubscription.parse(body)
        _check_topics(request, sub.topics)
        created, secret = await self._registry().create(sub)
        logger.info("push subscription %s created by %s: topics %s -> %s", created.name, _principal(request),
                    ",".join(created.topics), created.endpoint)
        return web.json_response({**self._detail(created), "secret": secret}, status=201)

    @_answers_errors
    async def describe_subscription(self, request: web.Request) -> web.Response:
        return web.json_response(self._detail(self._registry().get(request.match_info["name"])))

    @_answers_errors
    async def update_subscription(self, request: web.Request) -> web.Response:
        push = self._registry()
        name = request.match_info["name"]
        changes = await json_body(request)
        current = push.get(name)
        topics = changes.get("topics")
        if isinstance(topics, list):  # a malformed list is the registry's to refuse, naming the field
            _check_topics(request, [t for t in topics if isinstance(t, str) and t not in current.topics])
        updated = await push.update(name, changes)
        logger.info("push subscription %s changed by %s: %s", name, _principal(request), ", ".join(sorted(changes)))
        return web.json_response(self._detail(updated if updated is not None else push.get(name)))

    @_answers_errors
    async def delete_subscription(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self._registry().delete(name)
        logger.info("push subscription %s deleted by %s", name, _principal(request))
        return web.json_response({"deleted": name})

    async def pause(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, True)

    async def resume(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, False)

    @_answers_errors
    async def _set_paused(self, request: web.Request, paused: bool) -> web.Response:
        push = self._registry()
        name = request.match_info["name"]
        updated = await push.set_paused(name, paused)
        logger.info("push subscription %s %s by %s", name, "paused" if paused else "resumed", _principal(request))
        return web.json_response(self._detail(updated if updated is not None else push.get(name)))


def _principal(request: web.Request) -> str:
    access = request.get("access")
    return str(access.principal) if access is not None else "?"


def _check_topics(request: web.Request, topics) -> None:
    """TOPIC_AUTHORIZATION_FAILED (403) unless the caller may READ every topic: a subscription reads
    its topics for whoever made it (Kafka's consumer needs READ on them too)."""
    for topic in topics:
        if not may(request, AclOperation.READ, ResourceType.TOPIC, topic):
            raise KafkaError(ErrorCode.topic_authorization_failed, f"no READ on topic {topic}")
