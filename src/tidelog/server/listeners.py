"""A broker's Kafka listeners: one server socket per ``listeners`` entry, TLS on the SSL and
SASL_SSL ones.

``KafkaListeners`` binds every listener without serving (a port in use stops the start before
any client is answered), then serves them all; a listener bound to port 0 is advertised with
the port it got. Each accepted connection is made by the connection factory with the
``Endpoint`` it came in on, which decides what it asks of the client (TLS, SASL) and which
advertised addresses Metadata answers with.

TLS (``ServerTls``): one ``ssl.SSLContext`` from the ``ssl.*`` settings (PEM files, Python's
``ssl``). The keystore and truststore files are checked (one ``stat`` each) whenever a TLS
connection is accepted; when either changed they are loaded again into the same context, so
new connections get the new certificate while open ones keep theirs (Kafka reloads on
AlterConfigs; here replacing the files is enough). A file that cannot be loaded is logged at
WARNING and the previous certificate stays in use. CA certificates added to the truststore
are trusted at once; one removed stays trusted until a restart (OpenSSL can only add).
Not thread-safe; the event loop owns these objects.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from tidelog.cluster.broker_channel import ChannelSecurity
from tidelog.config import BrokerConfig, ConfigError
from tidelog.security.principal import Endpoint, ListenerConfig
from tidelog.security.settings import SecuritySettings, TlsSettings

logger = logging.getLogger(__name__)

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class ServerTls:
    """The TLS side of the SSL and SASL_SSL listeners; ``context`` is given to their sockets."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.reloads = 0
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        versions = sorted(_VERSIONS[p] for p in settings.protocols)
        self.context.minimum_version, self.context.maximum_version = versions[0], versions[-1]
        if settings.cipher_suites:
            try:
                self.context.set_ciphers(settings.cipher_suites)
            except ssl.SSLError as e:
                raise ConfigError(f"ssl.cipher.suites: {e.reason or e}") from None
        self.context.verify_mode = _VERIFY[settings.client_auth]
        self._signature = self._files_signature()
        self._load()

    def _files(self) -> list[tuple[str, Path]]:
        files = [("ssl.keystore.location", self.settings.keystore)]
        if self.settings.truststore is not None:
            files.append(("ssl.truststore.location", self.settings.truststore))
        return files

    def _files_signature(self) -> tuple:
        signature = []
        for setting, path in self._files():
            try:
                info = os.stat(path)
            except OSError as e:
                raise ConfigError(f"{setting}: cannot read {path}: {e.strerror}") from None
            signature.append((info.st_ino, info.st_mtime_ns, info.st_size))
        return tuple(signature)

    def _load(self) -> None:
        setting, path = "ssl.keystore.location", self.settings.keystore
        try:
            self.context.load_cert_chain(path, password=self.settings.key_password)
            if self.settings.truststore is not None:
                setting, path = "ssl.truststore.location", self.settings.truststore
                self.context.load_verify_locations(cafile=path)
        except (ssl.SSLError, OSError, ValueError) as e:
            why = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
            hint = " (or ssl.key.password is wrong)" if setting == "ssl.keystore.location" else ""
            raise ConfigError(f"{setting}: cannot load {path}: {why}{hint}") from None

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed since they were loaded; True if it did."""
        try:
            signature = self._files_signature()
        except ConfigError as e:
            logger.warning("TLS files not reloaded, the previous certificate stays in use: %s", e)
            return False
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            self._load()
        except ConfigError as e:
            logger.warning("TLS files not reloaded, the previous certificate stays in use: %s", e)
            return False
        self.reloads += 1
        logger.info("TLS certificate reloaded from %s", self.settings.keystore)
        return True


def inter_broker_security(settings: SecuritySettings, config: BrokerConfig) -> ChannelSecurity | None:
    """How this broker connects to the others' inter-broker listener: TLS checked against
    ``ssl.truststore.location`` (the system's CAs without one) showing this broker's certificate,
    and SASL as ``inter.broker.sasl.username``; None for a PLAINTEXT inter-broker listener."""
    protocol = settings.listeners.inter_broker.security_protocol
    if not protocol.uses_tls and not protocol.uses_sasl:
        return None
    context = None
    if protocol.uses_tls:
        tls = settings.tls
        try:
            context = ssl.create_default_context(cafile=str(tls.truststore) if tls.truststore else None)
            context.load_cert_chain(tls.keystore, password=tls.key_password)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"ssl.truststore.location: cannot make the inter-broker TLS client: {e}") from None
    if not protocol.uses_sasl:
        return ChannelSecurity(context)
    username, password = config["inter.broker.sasl.username"], config["inter.broker.sasl.password"]
    if not username or not password:
        raise ConfigError(f"inter.broker.sasl.username: the inter-broker listener "
                          f"{settings.listeners.inter_broker_listener_name} uses {protocol.name}: set it and "
                          f"inter.broker.sasl.password")
    return ChannelSecurity(context, config["sasl.mechanism.inter.broker.protocol"], username, password)


ConnectionFactory = Callable[[Endpoint], asyncio.BaseProtocol]


class KafkaListeners:
    """Every Kafka listener of a broker: bound by ``bind``, served by ``start_serving``."""

    def __init__(self, config: ListenerConfig, tls: ServerTls | None, connection: ConnectionFactory) -> None:
        self.config = config
        self.tls = tls
        self._connection = connection
        self.servers: dict[str, asyncio.base_events.Server] = {}
        self.bound: dict[str, Endpoint] = {}  # each listener with the port it got

    async def bind(self) -> None:
        """Bind every listener; OSError names the listener it failed on (``error.listener``)."""
        loop = asyncio.get_running_loop()
        for endpoint in self.config.listeners:
            context = self.tls.context if endpoint.security_protocol.uses_tls else None
            try:
                server = await loop.create_server(
                    lambda endpoint=endpoint: self._accept(endpoint), endpoint.host, endpoint.port, ssl=context,
                    reuse_address=True, backlog=1024, start_serving=False)
            except OSError as e:
                e.listener = endpoint  # type: ignore[attr-defined]
                raise
            self.servers[endpoint.listener_name] = server
            port = server.sockets[0].getsockname()[1] if server.sockets else endpoint.port
            self.bound[endpoint.listener_name] = Endpoint(endpoint.listener_name, endpoint.security_protocol,
                                                          endpoint.host, port)

    def _accept(self, endpoint: Endpoint) -> asyncio.BaseProtocol:
        if self.tls is not None and endpoint.security_protocol.uses_tls:
            self.tls.reload_if_changed()
        return self._connection(self.bound.get(endpoint.listener_name, endpoint))

    def advertised(self) -> tuple[Endpoint, ...]:
        """The advertised endpoints, port 0 replaced by the port the listener got."""
        result = []
        for e in self.config.advertised:
            if e.port == 0 and e.listener_name in self.bound:
                e = Endpoint(e.listener_name, e.security_protocol, e.host, self.bound[e.listener_name].port)
            result.append(e)
        return tuple(result)

    async def start_serving(self) -> None:
        for server in self.servers.values():
            await server.start_serving()

    def is_serving(self) -> bool:
        return bool(self.servers) and all(server.is_serving() for server in self.servers.values())

    def close(self) -> None:
        for server in self.servers.values():
            server.close()

    async def wait_closed(self) -> None:
        for server in self.servers.values():
            await server.wait_closed()
