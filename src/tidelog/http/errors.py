"""The HTTP API's errors: ``{"error_code": NAME, "message": ...}`` with an HTTP status.

Kafka errors keep their Kafka name (upper case) and get the status of ``_STATUS`` (400 for the
rest); aiohttp's own (unknown path, method, a body too large) are NOT_FOUND /
METHOD_NOT_ALLOWED / REQUEST_TOO_LARGE; anything else is 500 INTERNAL_ERROR, logged with its
traceback. ``json_errors`` is the middleware that answers every error under ``/api`` this way.
"""

from __future__ import annotations

import logging

from aiohttp import web

from tidelog.protocol.errors import ErrorCode, InvalidBatch, KafkaError

__all__ = ["HTTP_ERROR_NAMES", "INTERNAL_ERROR", "PREFIX", "bad_request", "error_response", "json_errors",
           "kafka_error_response"]

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"

_STATUS = {
    ErrorCode.unknown_topic_or_partition: 404,
    ErrorCode.group_id_not_found: 404,
    ErrorCode.topic_already_exists: 409,
    ErrorCode.non_empty_group: 409,
    ErrorCode.rebalance_in_progress: 409,
    ErrorCode.unknown_member_id: 409,
    ErrorCode.illegal_generation: 409,
    ErrorCode.fenced_member_epoch: 409,
    ErrorCode.stale_member_epoch: 409,
    ErrorCode.message_too_large: 413,
    ErrorCode.record_list_too_large: 413,
    ErrorCode.offset_out_of_range: 416,
    ErrorCode.kafka_storage_error: 503,
    ErrorCode.not_enough_replicas: 503,
    ErrorCode.not_enough_replicas_after_append: 503,
    ErrorCode.request_timed_out: 503,
    ErrorCode.leader_not_available: 503,
    ErrorCode.not_leader_or_follower: 503,
    ErrorCode.broker_not_available: 503,
    ErrorCode.network_exception: 503,
    ErrorCode.coordinator_not_available: 503,
    ErrorCode.not_coordinator: 503,
    ErrorCode.coordinator_load_in_progress: 503,
    ErrorCode.unknown_server_error: 500,
    ErrorCode.topic_authorization_failed: 403,
    ErrorCode.group_authorization_failed: 403,
    ErrorCode.cluster_authorization_failed: 403,
    ErrorCode.transactional_id_authorization_failed: 403,
}
_CLIENT_ERRORS = 400
# Errors that are not Kafka's: aiohttp's own (unknown path, method, a body too large) and ours.
HTTP_ERROR_NAMES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE"}
INTERNAL_ERROR = "INTERNAL_ERROR"


def error_response(status: int, error_code: str, message: str) -> web.Response:
    return web.json_response({"error_code": error_code, "message": message}, status=status)


def kafka_error_response(error: KafkaError | InvalidBatch) -> web.Response:
    code = error.error_code
    return error_response(_STATUS.get(code, _CLIENT_ERRORS), code.name.upper(), str(error) or code.name)


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every error under /api as JSON {error_code, message} with its HTTP status."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except (KafkaError, InvalidBatch) as e:
        return kafka_error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = HTTP_ERROR_NAMES.get(e.status, "INVALID_REQUEST")
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        return error_response(e.status, code, message)
    except Exception:  # noqa: BLE001 - answered as 500, logged with its traceback
        logger.exception("HTTP API %s %s failed", request.method, request.path)
        return error_response(500, INTERNAL_ERROR, "internal error, see the broker log")


def bad_request(message: str) -> KafkaError:
    return KafkaError(ErrorCode.invalid_request, message)
