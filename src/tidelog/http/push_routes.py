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
alike without forwarding. Each broker delivers the share-partitions it leads, so a subscription's
``status`` is the sum of every live broker's: this broker asks the others (their list, once per
request, as the caller: FORWARDED_HEADER, answered with their own status only) and adds them up
(``combine_statuses``); ``brokers`` lists the brokers counted, ``unreachable`` those that did not answer. A subscription is shown by ``sub.to_json()``: its bearer token masked
(``"***"``), its secret never (the registry keeps it, ``to_record()``, for the delivery engine).

Errors: a bad field is 400 INVALID_REQUEST whose message starts with the field's name (and
``field`` names it); 404 SUBSCRIPTION_NOT_FOUND; 409 SUBSCRIPTION_ALREADY_EXISTS. Who may do what
(http/auth.py): the routes name the subscription's share group ``push.<name>``, and creating a
subscription, or changing its topics, needs READ on each of its topics, checked here.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import quote

import aiohttp
from aiohttp import web

from tidelog.http.auth import may
from tidelog.http.errors import PREFIX, error_response
from tidelog.http.group_routes import FORWARDED_HEADER
from tidelog.http.params import json_body
from tidelog.http.peer_http import PeerHttp
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.push.subscription import PushSubscription, SubscriptionError, SubscriptionExists, SubscriptionNotFound
from tidelog.security.acl import AclOperation, ResourceType

if TYPE_CHECKING:
    from tidelog.push.registry import PushSubscriptions

__all__ = ["PushRoutes", "combine_statuses"]

PEER_TIMEOUT_S = 5  # another broker's status: a console polls every few seconds
_SUMMED = ("concurrency", "in_flight", "delivered", "acknowledged", "retries", "rejected", "dead_lettered", "backlog")
_STATE_ORDER = ("failing", "active", "idle")  # of the brokers' states, the first found (paused is the subscription's)

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

    def __init__(self, push: Callable[[], "PushSubscriptions | None"], node_id: int,
                 peers: Callable[[], list[tuple[int, str | None]]], peer_http: PeerHttp) -> None:
        """``peers()``: (node id, HTTP address or None) of every other live broker."""
        self._push = push
        self.node_id = node_id
        self._peers = peers
        self.peer_http = peer_http

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

    async def _statuses(self, request: web.Request, names: list[str], one: bool = False) -> dict[str, dict]:
        """name -> the subscription's status over every live broker; this broker's own only when
        another broker asks (forwarded). ``one``: a single subscription's route (the others are asked
        for that one, under the same ACL)."""
        push = self._registry()
        own = {name: push.status(name) for name in names}
        if request.headers.get(FORWARDED_HEADER):
            return own
        peers = self._peers()
        answers = await asyncio.gather(*(self._peer_statuses(request, address, names[0] if one else None)
                                         for _node_id, address in peers))
        unreachable = sorted(node_id for (node_id, _), answer in zip(peers, answers) if answer is None)
        return {name: combine_statuses([status, *(a[name] for a in answers if a is not None and name in a)], unreachable)
                for name, status in own.items()}

    async def _peer_statuses(self, request: web.Request, address: str | None, name: str | None) -> dict[str, dict] | None:
        """Another broker's own statuses by name (of ``name`` only, if given); None when it does not answer."""
        if address is None:
            return None
        headers = {FORWARDED_HEADER: str(self.node_id)}
        if "Authorization" in request.headers:  # the other broker authenticates and authorises the caller again
            headers["Authorization"] = request.headers["Authorization"]
        path = f"{PREFIX}/push-subscriptions" + (f"/{quote(name, safe='')}" if name is not None else "")
        try:
            async with self.peer_http.request("push", "GET", address, path, PEER_TIMEOUT_S, headers=headers) as response:
                if response.status == 404 and name is not None:
                    return {}  # not there yet (the store's change on its way)
                if response.status != 200:
                    return None
                answer = await response.json()
                subs = [answer] if name is not None else answer["subscriptions"]
                return {s["name"]: s["status"] for s in subs}
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError) as e:
            logger.info("push subscriptions: the broker at %s did not give its statuses: %s", address, e or type(e).__name__)
            return None

    async def _details(self, request: web.Request, subs: list[PushSubscription], one: bool = False) -> list[dict[str, Any]]:
        statuses = await self._statuses(request, [sub.name for sub in subs], one)
        return [{**sub.to_json(), "status": statuses[sub.name]} for sub in subs]

    async def _detail(self, request: web.Request, sub: PushSubscription) -> dict[str, Any]:
        return (await self._details(request, [sub], one=True))[0]

    @_answers_errors
    async def list_subscriptions(self, request: web.Request) -> web.Response:
        subs = sorted(self._registry().list(), key=lambda s: s.name)
        return web.json_response({"subscriptions": await self._details(request, subs)})

    @_answers_errors
    async def create_subscription(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        sub = PushSubscription.parse(body)
        _check_topics(request, sub.topics)
        created, secret = await self._registry().create(sub)
        logger.info("push subscription %s created by %s: topics %s -> %s", created.name, _principal(request),
                    ",".join(created.topics), created.endpoint)
        return web.json_response({**await self._detail(request, created), "secret": secret}, status=201)

    @_answers_errors
    async def describe_subscription(self, request: web.Request) -> web.Response:
        return web.json_response(await self._detail(request, self._registry().get(request.match_info["name"])))

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
        return web.json_response(await self._detail(request, updated))

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
        return web.json_response(await self._detail(request, updated))


def combine_statuses(statuses: list[dict], unreachable: list[int]) -> dict:
    """A subscription's status over brokers (each counts the share-partitions it leads): counters,
    backlog, concurrency and POSTs in flight summed; the state paused, else failing / active / idle
    as the first of those any broker is in; the latest error; latencies the highest broker's (a
    percentile of percentiles is not one); ``brokers`` counted and ``unreachable``."""
    first = statuses[0]
    combined = {key: first[key] for key in first if key not in ("node_id", "partitions")}
    for key in _SUMMED:
        if key in first:
            combined[key] = sum(s.get(key) or 0 for s in statuses)
    states = {s["state"] for s in statuses}
    combined["state"] = "paused" if "paused" in states else next((s for s in _STATE_ORDER if s in states), first["state"])
    latest = max(statuses, key=lambda s: s.get("last_error_ms") or -1)
    combined["last_error"], combined["last_error_ms"] = latest.get("last_error"), latest.get("last_error_ms")
    failed: dict[str, int] = {}
    for s in statuses:
        for answer, count in (s.get("failed_by_status") or {}).items():
            failed[answer] = failed.get(answer, 0) + count
    combined["failed_by_status"] = failed
    for key in ("latency_p50_ms", "latency_p99_ms"):
        known = [s[key] for s in statuses if s.get(key) is not None]
        combined[key] = max(known) if known else None
    combined["partitions"] = [p for s in statuses for p in s.get("partitions", [])]
    combined["brokers"] = sorted(s["node_id"] for s in statuses if s.get("node_id") is not None)
    combined["unreachable"] = unreachable
    return combined


def _principal(request: web.Request) -> str:
    access = request.get("access")
    return str(access.principal) if access is not None else "?"


def _check_topics(request: web.Request, topics) -> None:
    """TOPIC_AUTHORIZATION_FAILED (403) unless the caller may READ every topic: a subscription reads
    its topics for whoever made it (Kafka's consumer needs READ on them too)."""
    for topic in topics:
        if not may(request, AclOperation.READ, ResourceType.TOPIC, topic):
            raise KafkaError(ErrorCode.topic_authorization_failed, f"no READ on topic {topic}")
