"""Raw Kafka requests on one connection (``KafkaConnection``; a share session lives on its
connection), and as an authenticated user (``SaslConnection``: SaslHandshake and SaslAuthenticate,
PLAIN, checked against the broker's SCRAM users, first): kio requests, for the APIs neither
Python client speaks (share groups) or to see one answer exactly."""

from __future__ import annotations

import io
import socket
import struct

from kio.serial import entity_reader, entity_writer

from tidelog.protocol.apis import load_request_schema, load_response_schema

SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36


class KafkaConnection:
    """One plaintext connection sending kio requests one at a time."""

    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=15)
        self.correlation = 0

    def __enter__(self) -> "KafkaConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, api_key: int, version: int, body):
        """Send ``body`` (a kio request of that version), the decoded response."""
        schema = load_request_schema(api_key, version)
        flexible = schema.__flexible__
        out = io.BytesIO()
        entity_writer(schema)(out, body)
        self.correlation += 1
        client_id = b"sec-test"
        header = struct.pack(">hhih", api_key, version, self.correlation, len(client_id)) + client_id
        frame = header + (b"\x00" if flexible else b"") + out.getvalue()
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        data = self._read(struct.unpack(">i", self._read(4))[0])
        assert struct.unpack_from(">i", data)[0] == self.correlation
        # ApiVersions answers with header v0 always; every other flexible API with v1 (tagged fields)
        start = 5 if flexible and api_key != 18 else 4
        response, _ = entity_reader(load_response_schema(api_key, version))(memoryview(data), start)
        return response

    def _read(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = self.sock.recv(left)
            assert chunk, "connection closed"
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()


class SaslConnection(KafkaConnection):
    def __init__(self, bootstrap: str, user: str, password: str) -> None:
        super().__init__(bootstrap)
        handshake = self.request(SASL_HANDSHAKE, 1, load_request_schema(SASL_HANDSHAKE, 1)(mechanism="PLAIN"))
        assert handshake.error_code == 0, handshake
        token = b"\0" + user.encode() + b"\0" + password.encode()
        answer = self.request(SASL_AUTHENTICATE, 2, load_request_schema(SASL_AUTHENTICATE, 2)(auth_bytes=token))
        assert answer.error_code == 0, answer
