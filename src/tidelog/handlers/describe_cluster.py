"""DescribeCluster (key 60).

Behaviour: the cluster id, this broker as the only broker (never fenced) and as the controller
id (as a Kafka broker answers: clients cannot reach KRaft controllers, so a live broker id is
given). ``endpoint_type`` (v1+) must be 1 (brokers): 2 (controllers) is MISMATCHED_ENDPOINT_TYPE,
since this is a broker endpoint; another value is UNSUPPORTED_ENDPOINT_TYPE (INVALID_REQUEST at
v0). ``include_fenced_brokers`` (v2) changes nothing: there are none. With
``include_cluster_authorized_operations`` the cluster operations are all granted (no
authorizer), as Kafka reports them without one.
Versions: 0-2. Errors: MISMATCHED_ENDPOINT_TYPE, UNSUPPORTED_ENDPOINT_TYPE, INVALID_REQUEST.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.metadata import reachable_brokers
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 60
ENDPOINT_BROKERS = 1
ENDPOINT_CONTROLLERS = 2
AUTHORIZED_OPERATIONS_OMITTED = -(2**31)


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    endpoint_type = getattr(request, "endpoint_type", ENDPOINT_BROKERS)

    def response(error_code=ErrorCode.none, message=None, brokers=()):
        return build(
            module.DescribeClusterResponse,
            throttle_time=datetime.timedelta(0),
            error_code=error_code,
            error_message=message,
            endpoint_type=endpoint_type,
            cluster_id=ctx.metadata.cluster_id,
            controller_id=ctx.metadata.controller_id if error_code == ErrorCode.none else -1,
            brokers=brokers,
            # What the principal may do on the cluster (every operation without an authorizer).
            cluster_authorized_operations=ctx.access.cluster_authorized_operations()
            if request.include_cluster_authorized_operations
            else AUTHORIZED_OPERATIONS_OMITTED,
        )

    if endpoint_type not in (ENDPOINT_BROKERS, ENDPOINT_CONTROLLERS):
        error = ErrorCode.invalid_request if ctx.api_version == 0 else ErrorCode.unsupported_endpoint_type
        return response(error, f"Unsupported endpoint type {endpoint_type}")
    if endpoint_type == ENDPOINT_CONTROLLERS:
        return response(
            ErrorCode.mismatched_endpoint_type,
            "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER",
        )
    brokers = tuple(  # the live brokers, as registered in the metadata store (a single node: itself)
        build(module.DescribeClusterBroker, broker_id=node_id, host=host, port=port, rack=rack, is_fenced=False)
        for node_id, host, port, rack in reachable_brokers(ctx)
    )
    return response(brokers=brokers)
