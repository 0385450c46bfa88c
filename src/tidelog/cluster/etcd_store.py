"""The cluster metadata store on etcd v3, through etcd's JSON gateway over aiohttp.

Why the gateway and not a client package: etcd serves its v3 API as JSON over HTTP on the
client port (``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/lease/grant``, ``/v3/lease/keepalive``,
``/v3/watch`` as a stream of JSON lines), stable since etcd 3.4 (Debian 12 ships 3.4). aiohttp
is already a dependency of ours, so this costs no new package and no generated gRPC stubs.
The ``aetcd`` package would bring grpcio and protobuf (large native wheels whose versions
must match its generated code) and has had few releases; the handful of calls we need is
less code than adapting to it. Failover and timeouts we do ourselves: every call goes to the
current endpoint and moves on to the next one after a connection error or ``timeout_s``.

Keys, under ``prefix`` (default ``/tidelog``):
  cluster_id                  the cluster id, created once (create-if-absent)
  brokers/<id>                BrokerInfo JSON, bound to the broker's lease; its mod revision is
                              the broker epoch, which a partition state naming the broker
                              leader or in sync is written under (compare-and-swap)
  shutdown/<id>               present while broker <id> is in controlled shutdown (same lease)
  offline/<id>                present while broker <id>'s log directory is offline (same lease)
  unfenced/<id>               {"epoch": broker epoch}: the controller has fenced that registration
                              of broker <id> out of what it led and was in sync for, so it may
                              join ISRs again (written by the controller, its epoch compared;
                              deleted by it once broker <id> is no longer registered)
  controller                  {"node_id": id}, created if absent, bound to the lease of the
                              broker that created it; its create revision is the controller
                              epoch, which fences the writes of a controller that lost it
  topics/<name>               TopicRecord JSON
  partitions/<topic>/<index>  PartitionState JSON; its mod revision is the state's ``version``
  producer_ids                the next free producer id, advanced by compare-and-swap
  group_configs/<group id>    a group's config overrides (the GROUP config resource), JSON
  security/<kind>/<key>       a security record (SCRAM credential, ACL, client quota) as JSON

The store keeps a cache of every key (read at start, then kept by one watch that resumes from
the last revision seen, on another endpoint if need be; a compacted revision reloads
everything). A broker whose lease is lost (it was paused, or etcd was unreachable past the
TTL) grants a new lease and registers again. Not thread-safe; the event loop owns it.

Security (``EtcdSecurity``, from the ``etcd.*`` settings): TLS to etcd's https client URLs,
checked against ``etcd.ssl.ca.location`` and showing ``etcd.ssl.certificate.location`` when etcd
asks for client certificates; and etcd's own users: with ``etcd.username`` the client gets a token
from ``/v3/auth/authenticate`` and sends it on every call, getting a new one when etcd refuses it
(an expired simple token, etcd restarted).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import ssl
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Iterable

import aiohttp

from tidelog.cluster.metadata import BrokerInfo, ClusterIdMismatch, Listener, PartitionState, TopicExists, TopicRecord, _new_cluster_id
from tidelog.protocol.errors import ErrorCode, KafkaError

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "/tidelog"
MAX_TXN_OPS = 100  # etcd's --max-txn-ops defaults to 128


class EtcdUnavailable(KafkaError):
    """No endpoint answered (etcd down, or without quorum). A KafkaError: a request that needed
    a metadata write answers REQUEST_TIMED_OUT, which clients retry, as Kafka does when its
    controller quorum does not answer in time."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.request_timed_out, message)


class WatchCompacted(Exception):
    """The watch's start revision was compacted away: reload everything."""


def parse_cluster_url(url: str) -> tuple[list[str], str]:
    """``etcd://h1:p1,h2:p2[/prefix]`` -> (["http://h1:p1", ...], "/prefix")."""
    if not url.startswith("etcd://"):
        raise ValueError(f"expected etcd://host:port[,host:port...][/prefix], got {url!r}")
    rest = url[len("etcd://"):]
    hosts, slash, prefix = rest.partition("/")
    endpoints = [f"http://{h.strip()}" for h in hosts.split(",") if h.strip()]
    if not endpoints:
        raise ValueError(f"no etcd endpoint in {url!r}")
    return endpoints, ("/" + prefix.strip("/")) if slash and prefix.strip("/") else DEFAULT_PREFIX


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def _prefix_end(key: str) -> str:
    """The range_end covering every key that starts with ``key``."""
    raw = bytearray(key.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


def _connect_error(error: Exception) -> str:
    """``connection refused`` rather than aiohttp's ``Cannot connect to host ... [Connect call failed ...]``."""
    os_error = getattr(error, "os_error", None)
    if isinstance(os_error, OSError) and os_error.errno and os_error.errno > 0:
        return os.strerror(os_error.errno).lower()
    return str(error) or type(error).__name__


@dataclass(frozen=True)
class EtcdSecurity:
    """How the brokers reach etcd: TLS files (PEM) and etcd user; empty strings for none."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password: str = ""
    # setting -> where its value came from ("from /etc/tidelog/broker.toml"), for error lines
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_config(cls, config) -> "EtcdSecurity":
        files = ("etcd.ssl.ca.location", "etcd.ssl.certificate.location", "etcd.ssl.key.location")
        return cls(*(config[name] for name in files), config["etcd.username"], config["etcd.password"],
                   origins={name: config.origins[name] for name in files if name in getattr(config, "origins", {})})

    def _named(self, setting: str) -> str:
        origin = self.origins.get(setting)
        return f"{setting} ({origin})" if origin else setting

    @property
    def tls(self) -> bool:
        return bool(self.ca_file or self.cert_file)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context, or None for plain http. Raises ValueError naming the setting."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"{self._named('etcd.ssl.ca.location')}: cannot load {self.ca_file}: {e}") from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file or None)
            except (OSError, ssl.SSLError) as e:
                raise ValueError(f"{self._named('etcd.ssl.certificate.location')}: cannot load {self.cert_file}"
                                 f"{' with ' + self.key_file if self.key_file else ''}: {e}") from None
        elif self.key_file:
            raise ValueError(f"{self._named('etcd.ssl.key.location')}: set without etcd.ssl.certificate.location")
        return context


class EtcdClient:
    """The few etcd v3 calls the store needs, over the JSON gateway, with endpoint failover."""

    def __init__(self, endpoints: list[str], timeout_s: float = 5.0, security: EtcdSecurity = EtcdSecurity()) -> None:
        self.security = security
        self._ssl = security.ssl_context()
        scheme = "https://" if self._ssl is not None else "http://"
        self.endpoints = [scheme + e.split("://", 1)[-1] for e in endpoints]
        self.timeout_s = timeout_s
        self._current = 0
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None  # etcd auth token, with etcd.username

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _headers(self, endpoint: str, timeout_s: float) -> dict[str, str]:
        """The Authorization header of etcd's auth (a token got once, again after a refusal)."""
        if not self.security.username:
            return {}
        if self._token is None:
            async with self.session.post(f"{endpoint}/v3/auth/authenticate", json={
                    "name": self.security.username, "password": self.security.password},
                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                text = await response.text()
                try:
                    data = json.loads(text)
                except ValueError:
                    data = {"message": f"{response.status} {text[:200]!r}"}
                if response.status != 200 or "token" not in data:
                    # the message names the user, never the password
                    raise EtcdUnavailable(f"authentication as etcd user {self.security.username!r} failed: "
                                          f"{data.get('message') or data.get('error') or response.status}")
                self._token = data["token"]
        return {"Authorization": self._token}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, path: str, body: dict, timeout_s: float | None = None) -> dict:
        """POST ``body`` to ``/v3/<path>`` on the current endpoint, then on each other one."""
        failures: list[str] = []
        for attempt in range(len(self.endpoints)):
            endpoint = self.endpoints[(self._current + attempt) % len(self.endpoints)]
            try:
                headers = await self._headers(endpoint, timeout_s or self.timeout_s)
                async with self.session.post(
                    f"{endpoint}/v3/{path}", json=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout_s or self.timeout_s),
                ) as response:
                    data = await response.json(content_type=None)
                    if response.status != 200:
                        if response.status == 401 and headers:
                            self._token = None  # expired or unknown to this member: a new one next try
                        reason = data.get("message") or data.get("error") if isinstance(data, dict) else None
                        raise EtcdUnavailable(f"{path} answered {response.status}: {reason or data}")
                    self._current = (self._current + attempt) % len(self.endpoints)
                    if failures:
                        logger.warning("etcd failed for %s (%s); %s answered", path, "; ".join(failures), endpoint)
                    return data
            except (aiohttp.ClientError, asyncio.TimeoutError, EtcdUnavailable) as e:
                failures.append(f"{endpoint}: {_connect_error(e)}")
        # The caller logs or raises this; every endpoint's reason is in it.
        raise EtcdUnavailable(f"no etcd endpoint answered {path}: {'; '.join(failures)}")

    async def range(self, key: str, prefix: bool = False) -> tuple[list[dict], int]:
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _prefix_end(key)
        data = await self.call("kv/range", body)
        return data.get("kvs", []), int(data["header"]["revision"])

    async def txn(self, compare: list[dict], success: list[dict], failure: list[dict] | None = None) -> tuple[bool, dict]:
        data = await self.call("kv/txn", {"compare": compare, "success": success, "failure": failure or []})
        return bool(data.get("succeeded", False)), data

    async def lease_grant(self, ttl_s: int) -> tuple[str, int]:
        data = await self.call("lease/grant", {"TTL": str(ttl_s)})
        return data["ID"], int(data["TTL"])

    async def lease_keepalive(self, lease_id: str) -> int:
        """Renew; the remaining TTL, 0 when the lease has expired."""
        data = await self.call("lease/keepalive", {"ID": lease_id})
        return int(data.get("result", {}).get("TTL", 0))

    async def lease_revoke(self, lease_id: str) -> None:
        await self.call("lease/revoke", {"ID": lease_id})

    async def watch(self, key: str, start_revision: int) -> AsyncIterator[list[dict]]:
        """Event lists for keys under ``key`` from ``start_revision``, forever; reconnects and
        resumes after the last revision delivered. Raises WatchCompacted."""
        next_revision = start_revision
        while True:
            endpoint = self.endpoints[self._current]
            request = {"create_request": {"key": _b64(key), "range_end": _prefix_end(key),
                                          "start_revision": str(next_revision)}}
            try:
                headers = await self._headers(endpoint, self.timeout_s)
                async with self.session.post(f"{endpoint}/v3/watch", json=request, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s)) as response:
                    if response.status != 200:
                        if response.status == 401 and headers:
                            self._token = None
                        raise EtcdUnavailable(f"watch answered {response.status}")
                    async for line in response.content:
                        if not line.strip():
                            continue
                        result = json.loads(line).get("result", {})
                        if int(result.get("compact_revision", 0) or 0) > 0:
                            raise WatchCompacted(f"revision {next_revision} was compacted")
                        events = result.get("events", [])
                        if events:
                            next_revision = int(events[-1]["kv"]["mod_revision"]) + 1
                            yield events
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, EtcdUnavailable) as e:
                logger.warning("etcd watch on %s broke (%s); resuming from revision %d", endpoint, e, next_revision)
            self._current = (self._current + 1) % len(self.endpoints)
            await asyncio.sleep(0.1 + random.random() * 0.2)


def _put(key: str, value: dict | str, lease: str | None = None) -> dict:
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(value if isinstance(value, str) else json.dumps(value))}
    if lease:
        request["lease"] = lease
    return {"request_put": request}


def _compare(key: str, target: str, value: int, result: str = "EQUAL") -> dict:
    field = {"CREATE": "create_revision", "MOD": "mod_revision", "VERSION": "version"}[target]
    return {"key": _b64(key), "target": target, "result": result, field: str(value)}


class EtcdMetadataStore:
    """MetadataStore on etcd; see the module docstring for the keys and the cache."""

    def __init__(self, endpoints: list[str], prefix: str = DEFAULT_PREFIX, lease_ttl_s: int = 6,
                 timeout_s: float = 5.0, security: EtcdSecurity = EtcdSecurity()) -> None:
        self.client = EtcdClient(endpoints, timeout_s, security)
        self.prefix = prefix.rstrip("/") + "/"
        self.lease_ttl_s = lease_ttl_s
        self.cluster_id = ""
        self.topics: dict[str, TopicRecord] = {}
        self.group_configs: dict[str, dict[str, str]] = {}
        self.partitions: dict[tuple[str, int], PartitionState] = {}
        self.brokers: dict[int, BrokerInfo] = {}
        self.broker_epoch = 0
        self.shutting_down: set[int] = set()
        self.offline: set[int] = set()
        self.unfenced: dict[int, int] = {}  # broker id -> the registration (epoch) the controller unfenced
        self.controller_id = -1
        self.controller_epoch = 0
        self.revision = 0
        self.security: dict[str, dict[str, dict]] = {}
        self._listeners: list[Listener] = []
        self._lease: str | None = None
        self._me: BrokerInfo | None = None
        self._tasks: list[asyncio.Task] = []
        self._advanced = asyncio.Event()  # set each time the watch (or a reload) moves ``revision``

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self, cluster_id: str = "") -> None:
        key = self.prefix + "cluster_id"
        wanted = cluster_id or _new_cluster_id()
        _, data = await self.client.txn([_compare(key, "CREATE", 0)], [_put(key, wanted)],
                                        [{"request_range": {"key": _b64(key)}}])
        kvs = data.get("responses", [{}])[0].get("response_range", {}).get("kvs", [])
        self.cluster_id = _unb64(kvs[0]["value"]).decode() if kvs else wanted
        if cluster_id and cluster_id != self.cluster_id:
            raise ClusterIdMismatch(f"etcd holds cluster {self.cluster_id}, not {cluster_id}")
        await self._reload()
        self._tasks.append(asyncio.create_task(self._watch_forever(), name="etcd-watch"))
        logger.info("etcd metadata loaded: cluster %s, %d topics, %d brokers, revision %d",
                    self.cluster_id, len(self.topics), len(self.brokers), self.revision)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)  # bounded: see ReplicaManager.stop
        self._tasks = []
        if self._lease is not None:
            try:
                await self.client.lease_revoke(self._lease)  # our broker and controller keys go now
            except EtcdUnavailable as e:
                logger.warning("could not revoke lease: %s", e)
        await self.client.close()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _notify(self, kind: str, key: object) -> None:
        for listener in self._listeners:
            try:
                listener(kind, key)
            except Exception:
                logger.exception("metadata listener failed on %s %s", kind, key)

    # ---- the cache -------------------------------------------------------------------------
    async def _reload(self) -> None:
        kvs, revision = await self.client.range(self.prefix, prefix=True)
        self.topics, self.partitions, self.brokers = {}, {}, {}
        self.group_configs = {}
        self.security = {}
        self.shutting_down = set()
        self.offline = set()
        self.unfenced = {}
        self.controller_id, self.controller_epoch = -1, 0
        for kv in kvs:
            self._apply(kv, deleted=False)
        self.revision = revision

    async def _watch_forever(self) -> None:
        while True:
            try:
                async for events in self.client.watch(self.prefix, self.revision + 1):
                    for event in events:
                        change = self._apply(event["kv"], event.get("type") == "DELETE")
                        self.revision = max(self.revision, int(event["kv"].get("mod_revision", 0)))
                        if change is not None:
                            self._notify(*change)
                    self._advanced.set()
            except WatchCompacted as e:
                logger.warning("etcd watch: %s; reloading", e)
                await self._reload()
                self._advanced.set()
                self._notify("controller", None)
                for name in list(self.topics):
                    self._notify("topic", name)
                for kind in list(self.security):
                    self._notify("security", kind)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("etcd watch failed; retrying")
                await asyncio.sleep(0.5)

    def _apply(self, kv: dict, deleted: bool) -> tuple[str, object] | None:
        """Apply one key's new value (or deletion) to the cache; return (kind, key) changed."""
        key = _unb64(kv["key"]).decode()[len(self.prefix):]
        kind, _, rest = key.partition("/")
        if kind not in ("brokers", "controller", "topics", "partitions", "shutdown", "offline", "unfenced",
                        "group_configs", "security"):
            return None
        value = None if deleted else json.loads(_unb64(kv.get("value", "")) or b"null")
        mod_revision = int(kv.get("mod_revision", 0))
        if kind == "brokers":
            node_id = int(rest)
            if value is None:
                self.brokers.pop(node_id, None)
            else:
                self.brokers[node_id] = BrokerInfo.from_json(value, mod_revision)
            return "broker", node_id
        if kind == "group_configs":
            if value is None:
                self.group_configs.pop(rest, None)
            else:
                self.group_configs[rest] = dict(value)
            return None
        if kind == "security":
            record_kind, _, record_key = rest.partition("/")
            if value is None:
                self.security.get(record_kind, {}).pop(record_key, None)
            else:
                self.security.setdefault(record_kind, {})[record_key] = value
            return "security", record_kind
        if kind == "shutdown":
            (self.shutting_down.discard if value is None else self.shutting_down.add)(int(rest))
            return "broker", int(rest)
        if kind == "offline":
            (self.offline.discard if value is None else self.offline.add)(int(rest))
            return "broker", int(rest)
        if kind == "unfenced":
            if value is None:
                self.unfenced.pop(int(rest), None)
            else:
                self.unfenced[int(rest)] = int(value["epoch"])
            return "unfenced", int(rest)
        if kind == "controller":
            if value is None:
                self.controller_id, self.controller_epoch = -1, 0
            else:
                self.controller_id, self.controller_epoch = int(value["node_id"]), int(kv["create_revision"])
            return "controller", None
        if kind == "topics":
            if value is None:
                self.topics.pop(rest, None)
            else:
                self.topics[rest] = TopicRecord.from_json(value)
            return "topic", rest
        if kind == "partitions":
            topic, _, index = rest.rpartition("/")
            partition_key = (topic, int(index))
            if value is None:
                self.partitions.pop(partition_key, None)
            else:
                current = self.partitions.get(partition_key)
                if current is not None and current.version >= mod_revision:
                    return "partition", partition_key  # our own write, already applied
                self.partitions[partition_key] = PartitionState.from_json(value, mod_revision)
            return "partition", partition_key
        return None

    async def catch_up(self, timeout_s: float) -> int:
        """Wait until the cache holds every change etcd has under the prefix now: the watch has
        applied the key last modified (etcd sorts by mod revision and gives that one key). A
        broker that registered and stood for controller knows itself and who the controller is,
        but the brokers that registered since it loaded the metadata reach it through the watch;
        until then its Metadata answer would name a controller missing from its broker list.
        Returns the revision waited for; raises EtcdUnavailable after ``timeout_s``."""
        data = await self.client.call("kv/range", {"key": _b64(self.prefix), "range_end": _prefix_end(self.prefix),
                                                   "limit": 1, "sort_order": "DESCEND", "sort_target": "MOD",
                                                   "keys_only": True})
        kvs = data.get("kvs", [])
        target = int(kvs[0]["mod_revision"]) if kvs else 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.revision < target:
            self._advanced.clear()
            try:
                await asyncio.wait_for(self._advanced.wait(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                raise EtcdUnavailable(f"the etcd watch did not bring the metadata to revision {target} within "
                                      f"{timeout_s:.0f} s (at {self.revision})") from None
        return target

    # ---- brokers and the controller --------------------------------------------------------
    async def register_broker(self, broker: BrokerInfo) -> None:
        """Put ``brokers/<id>`` under a new lease and keep the lease alive."""
        self._me = broker
        await self._register()
        self._tasks.append(asyncio.create_task(self._keep_alive(), name="etcd-lease"))

    async def _register(self) -> None:
        self._lease, ttl = await self.client.lease_grant(self.lease_ttl_s)
        _, data = await self.client.txn([], [_put(self.prefix + f"brokers/{self._me.node_id}", self._me.to_json(), self._lease)])
        self.broker_epoch = int(data["header"]["revision"])
        self.brokers[self._me.node_id] = replace(self._me, epoch=self.broker_epoch)
        logger.info("registered broker %d in etcd under lease %s (ttl %ds), broker epoch %d", self._me.node_id, self._lease,
                    ttl, self.broker_epoch)

    async def _keep_alive(self) -> None:
        interval_s = max(self.lease_ttl_s / 3, 0.2)
        while True:
            await asyncio.sleep(interval_s)
            try:
                if await self.client.lease_keepalive(self._lease) <= 0:
                    logger.warning("lease %s of broker %d expired; registering again", self._lease, self._me.node_id)
                    await self._register()
            except EtcdUnavailable as e:
                logger.warning("lease keepalive failed: %s", e)

    async def announce_offline(self, node_id: int) -> None:
        """Put ``offline/<id>`` under our lease: our replicas are offline to the controller."""
        await self.client.txn([], [_put(self.prefix + f"offline/{node_id}", {"node_id": node_id}, self._lease)])
        self.offline.add(node_id)

    async def announce_shutdown(self, node_id: int) -> None:
        """Put ``shutdown/<id>`` under our lease: the controller moves our leaderships away."""
        await self.client.txn([], [_put(self.prefix + f"shutdown/{node_id}", {"node_id": node_id}, self._lease)])
        self.shutting_down.add(node_id)

    async def mark_unfenced(self, epochs: dict[int, int], controller_epoch: int, gone: Iterable[int] = ()) -> bool:
        """Put ``unfenced/<id>`` for each broker's registration (epoch) the controller has fenced
        and let back, and delete it for each broker in ``gone`` (no longer registered); False if
        this controller was deposed meanwhile."""
        compare = [_compare(self.prefix + "controller", "CREATE", controller_epoch)]
        gone = list(gone)
        succeeded, _ = await self.client.txn(
            compare, [_put(self.prefix + f"unfenced/{node_id}", {"epoch": epoch}) for node_id, epoch in epochs.items()]
            + [{"request_delete_range": {"key": _b64(self.prefix + f"unfenced/{node_id}")}} for node_id in gone])
        if succeeded:
            self.unfenced.update(epochs)
            for node_id in gone:
                self.unfenced.pop(node_id, None)
        return succeeded

    async def elect_controller(self, node_id: int) -> bool:
        """Create ``controller`` bound to our lease if absent; True when we hold it now."""
        key = self.prefix + "controller"
        succeeded, data = await self.client.txn(
            [_compare(key, "CREATE", 0)], [_put(key, {"node_id": node_id}, self._lease)],
            [{"request_range": {"key": _b64(key)}}],
        )
        if succeeded:
            self.controller_id, self.controller_epoch = node_id, int(data["header"]["revision"])
        else:
            kvs = data["responses"][0]["response_range"].get("kvs", [])
            if kvs:
                self._apply(kvs[0], deleted=False)
        return self.controller_id == node_id

    # ---- topics ----------------------------------------------------------------------------
    async def create_topic(self, record: TopicRecord, assignment: list[PartitionState] | None = None) -> None:
        if assignment is None:
            raise ValueError("a cluster topic needs a replica assignment")
        topic_key = self.prefix + f"topics/{record.name}"
        puts = [_put(self.prefix + f"partitions/{record.name}/{i}", state.to_json()) for i, state in enumerate(assignment)]
        puts.append(_put(topic_key, record.to_json()))
        revision = 0
        for start in range(0, len(puts), MAX_TXN_OPS):
            succeeded, data = await self.client.txn([_compare(topic_key, "CREATE", 0)], puts[start:start + MAX_TXN_OPS])
            if not succeeded:
                raise TopicExists(record.name)
            revision = int(data["header"]["revision"])
        self._cache_topic(record, assignment, 0, revision)

    def _cache_topic(self, record: TopicRecord, states: list[PartitionState], first: int, revision: int) -> None:
        self.topics[record.name] = record
        for i, state in enumerate(states):
            key = (record.name, first + i)
            if key not in self.partitions or self.partitions[key].version < revision:
                self.partitions[key] = replace(state, version=revision)

    async def delete_topic(self, name: str) -> None:
        await self.client.txn([], [
            {"request_delete_range": {"key": _b64(self.prefix + f"partitions/{name}/"),
                                      "range_end": _prefix_end(self.prefix + f"partitions/{name}/")}},
            {"request_delete_range": {"key": _b64(self.prefix + f"topics/{name}")}},
        ])
        record = self.topics.pop(name, None)
        for index in range(record.partitions if record else 0):
            self.partitions.pop((name, index), None)

    async def set_partitions(self, name: str, partitions: int, new_states: list[PartitionState] | None = None) -> None:
        record = self.topics[name]
        updated = replace(record, partitions=partitions)
        puts = [_put(self.prefix + f"partitions/{name}/{record.partitions + i}", s.to_json()) for i, s in enumerate(new_states or [])]
        puts.append(_put(self.prefix + f"topics/{name}", updated.to_json()))
        _, data = await self.client.txn([], puts)
        self._cache_topic(updated, new_states or [], record.partitions, int(data["header"]["revision"]))

    async def set_configs(self, name: str, configs: dict[str, str]) -> None:
        updated = replace(self.topics[name], configs=dict(configs))
        await self.client.txn([], [_put(self.prefix + f"topics/{name}", updated.to_json())])
        self.topics[name] = updated

    async def set_group_configs(self, group_id: str, configs: dict[str, str]) -> None:
        key = self.prefix + f"group_configs/{group_id}"
        operation = _put(key, dict(configs)) if configs else {"request_delete_range": {"key": _b64(key)}}
        await self.client.txn([], [operation])
        if configs:
            self.group_configs[group_id] = dict(configs)
        else:
            self.group_configs.pop(group_id, None)

    async def compare_and_set_partition(self, topic: str, partition: int, state: PartitionState,
                                        controller_epoch: int | None = None) -> PartitionState | None:
        key = self.prefix + f"partitions/{topic}/{partition}"
        compare = [_compare(key, "MOD", state.version)]
        if controller_epoch is not None:
            compare.append(_compare(self.prefix + "controller", "CREATE", controller_epoch))
        # The brokers the state names leader or in sync must still be registered as the writer
        # saw them: a broker that restarted meanwhile is fenced by the controller first.
        for node_id in {state.leader, *state.isr}:
            info = self.brokers.get(node_id)
            if info is not None and info.epoch:
                compare.append(_compare(self.prefix + f"brokers/{node_id}", "MOD", info.epoch))
        succeeded, data = await self.client.txn(compare, [_put(key, state.to_json())])
        if not succeeded:
            return None
        stored = replace(state, version=int(data["header"]["revision"]))
        current = self.partitions.get((topic, partition))
        if current is None or current.version < stored.version:
            self.partitions[(topic, partition)] = stored
        return stored

    async def alter_security(self, kind: str, puts: dict[str, dict], deletes: list[str]) -> None:
        """Write the records in one transaction (in several past etcd's operation limit); the cache
        learns them from the watch, or at once here."""
        ops = [{"request_delete_range": {"key": _b64(self.prefix + f"security/{kind}/{key}")}} for key in deletes]
        ops += [_put(self.prefix + f"security/{kind}/{key}", value) for key, value in puts.items()]
        for start in range(0, len(ops), MAX_TXN_OPS):
            await self.client.txn([], ops[start:start + MAX_TXN_OPS])
        records = self.security.setdefault(kind, {})
        for key in deletes:
            records.pop(key, None)
        records.update(puts)
        self._notify("security", kind)

    async def allocate_producer_ids(self, count: int) -> int:
        key = self.prefix + "producer_ids"
        while True:
            kvs, _ = await self.client.range(key)
            first = int(_unb64(kvs[0]["value"])) if kvs else 0
            mod_revision = int(kvs[0]["mod_revision"]) if kvs else 0
            succeeded, _ = await self.client.txn([_compare(key, "MOD", mod_revision)], [_put(key, str(first + count))])
            if succeeded:
                return first
