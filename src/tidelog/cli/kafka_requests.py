"""Kafka requests the CLI sends itself, for the APIs confluent-kafka's AdminClient does not have yet
(the share-group admin of KIP-932: ListGroups by type, ShareGroupDescribe, DescribeShareGroupOffsets,
AlterShareGroupOffsets, DeleteShareGroupOffsets).

A ``KafkaRequests`` holds blocking connections to brokers (plain TCP, or TLS with
``-X security.protocol=SSL`` and ``ssl.ca.location``), one request at a time each, encoded and
decoded by kio's schema-driven codec with the request header v2 / response header v1 of flexible
APIs (v1 / v0 otherwise). It finds a group's coordinator with FindCoordinator v6. A broker that does
not answer within the timeout is a CliError naming it. Not thread-safe.
"""

from __future__ import annotations

import io
import socket
import ssl
import struct
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.find_coordinator.v6.request import FindCoordinatorRequest
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i8, i16, i32

from tidelog import __version__
from tidelog.cli.errors import CliError

__all__ = ["KafkaRequests", "error_name"]

COORDINATOR_KEY_GROUP = 0
MAX_RESPONSE_BYTES = 100 * 1024 * 1024


def error_name(error_code) -> str:
    """A kio ErrorCode as Kafka's constant name (GROUP_ID_NOT_FOUND)."""
    return getattr(error_code, "name", str(error_code)).upper()


class KafkaRequests:
    """Blocking Kafka connections of one CLI command."""

    def __init__(self, bootstrap: str, timeout_s: float, settings: dict[str, str], client_id: str = "tidelog-cli") -> None:
        self.bootstrap = [_host_port(b) for b in bootstrap.split(",") if b.strip()]
        self.timeout_s = timeout_s
        self.client_id = client_id
        self.correlation_id = 0
        self._connections: dict[tuple[str, int], socket.socket] = {}
        self._versions: dict[tuple[str, int], dict[int, tuple[int, int]]] = {}  # ApiVersions of each broker
        self._tls = _tls_context(settings)

    def close(self) -> None:
        for sock in self._connections.values():
            sock.close()
        self._connections.clear()

    def __enter__(self) -> "KafkaRequests":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self, address: tuple[str, int]) -> socket.socket:
        sock = self._connections.get(address)
        if sock is None:
            try:
                sock = socket.create_connection(address, timeout=self.timeout_s)
                if self._tls is not None:
                    sock = self._tls.wrap_socket(sock, server_hostname=address[0])
            except OSError as e:
                raise CliError(f"cannot reach a broker at {address[0]}:{address[1]} within {self.timeout_s:g}s: "
                               f"{e.strerror or e}") from None
            self._connections[address] = sock
        return sock

    def any_broker(self) -> tuple[str, int]:
        """The first bootstrap broker that accepts a connection."""
        last: CliError | None = None
        for address in self.bootstrap:
            try:
                self._connect(address)
                return address
            except CliError as e:
                last = e
        raise last or CliError("no bootstrap server given")

    def request(self, address: tuple[str, int], request: Any) -> Any:
        """Send one request (a kio request entity) to a broker and return its response entity; a
        CliError when the broker does not serve its API version."""
        api_key, version = int(request.__api_key__), int(request.__version__)
        if api_key != 18:
            if address not in self._versions:
                answer = self._send(address, ApiVersionsRequest(client_software_name="tidelog-cli",
                                                                client_software_version=__version__))
                self._versions[address] = {int(a.api_key): (int(a.min_version), int(a.max_version)) for a in answer.api_keys}
            low, high = self._versions[address].get(api_key, (0, -1))
            if not low <= version <= high:
                name = type(request).__name__.removesuffix("Request")
                raise CliError(f"broker {address[0]}:{address[1]} does not serve {name} v{version}"
                               + (f" (it serves v{low}-{high})" if high >= 0 else " (share groups need Kafka 4.2's APIs)"))
        return self._send(address, request)

    def _send(self, address: tuple[str, int], request: Any) -> Any:
        api_key, version = int(request.__api_key__), int(request.__version__)
        flexible = bool(request.__flexible__)
        self.correlation_id += 1
        header_type = RequestHeaderV2 if flexible else RequestHeaderV1
        out = io.BytesIO()
        entity_writer(header_type)(out, header_type(request_api_key=i16(api_key), request_api_version=i16(version),
                                                    correlation_id=i32(self.correlation_id), client_id=self.client_id))
        entity_writer(load_request_schema(api_key, version))(out, request)
        frame = out.getvalue()
        sock = self._connect(address)
        try:
            sock.sendall(struct.pack(">i", len(frame)) + frame)
            (size,) = struct.unpack(">i", _read_exactly(sock, 4))
            if not 0 < size <= MAX_RESPONSE_BYTES:
                raise OSError(f"a response of {size} bytes")
            data = memoryview(_read_exactly(sock, size))
        except (OSError, TimeoutError) as e:
            self._connections.pop(address, None)
            sock.close()
            raise CliError(f"broker {address[0]}:{address[1]} did not answer {type(request).__name__} within "
                           f"{self.timeout_s:g}s: {e}") from None
        # ApiVersions answers with header v0 whatever its version (KIP-511); every other flexible API with v1.
        response_header = ResponseHeaderV1 if flexible and api_key != 18 else ResponseHeaderV0
        header, offset = entity_reader(response_header)(data, 0)
        if header.correlation_id != self.correlation_id:
            raise CliError(f"broker {address[0]}:{address[1]} answered request {header.correlation_id}, "
                           f"not {self.correlation_id}")
        response, _ = entity_reader(load_response_schema(api_key, version))(data, offset)
        return response

    def coordinator(self, group_id: str) -> tuple[str, int]:
        """The address of a group's coordinator (FindCoordinator v6)."""
        response = self.request(self.any_broker(), FindCoordinatorRequest(key_type=i8(COORDINATOR_KEY_GROUP),
                                                                          coordinator_keys=(group_id,)))
        found = response.coordinators[0]
        if error_name(found.error_code) != "NONE":
            raise CliError(f"group {group_id}: no coordinator: {found.error_message or error_name(found.error_code)}")
        return found.host, int(found.port)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise OSError("the connection closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit():
        raise CliError(f"--bootstrap-server: expected HOST:PORT, got {text.strip()!r}")
    return host.strip("[]"), int(port)


def _tls_context(settings: dict[str, str]) -> ssl.SSLContext | None:
    protocol = settings.get("security.protocol", "plaintext").lower()
    if protocol == "plaintext":
        return None
    if protocol != "ssl":
        raise CliError(f"--client-config security.protocol={settings['security.protocol']}: the share-group "
                       "commands speak PLAINTEXT or SSL only")
    context = ssl.create_default_context(cafile=settings.get("ssl.ca.location"))
    if settings.get("ssl.certificate.location"):
        context.load_cert_chain(settings["ssl.certificate.location"], settings.get("ssl.key.location"),
                                settings.get("ssl.key.password"))
    if settings.get("enable.ssl.certificate.verification", "true").lower() == "false":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
