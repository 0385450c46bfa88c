"""Reading an HTTP API request: its JSON body and query parameters, each checked (INVALID_REQUEST
naming the parameter for a bad one) and bounded by the caller's limits."""

from __future__ import annotations

import json

from aiohttp import web

from tidelog.http.errors import bad_request

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "MAX_TIMEOUT_MS", "body_bool", "body_int", "int_param", "json_body"]

MAX_LIMIT = 1000  # records a read answers at the most
DEFAULT_LIMIT = 100
MAX_TIMEOUT_MS = 30_000  # the longest a read waits for records


async def json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


def int_param(request: web.Request, name: str, default: int | None, minimum: int | None = None,
              maximum: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise bad_request(f"{name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise bad_request(f"{name} must be at most {maximum}")
    return value


def body_int(body: dict, name: str, default: int | None, minimum: int | None = None, maximum: int | None = None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise bad_request(f"{name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise bad_request(f"{name} must be at most {maximum}")
    return value


def body_bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false")
    return value
