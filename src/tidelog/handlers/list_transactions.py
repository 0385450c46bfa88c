"""ListTransactions (key 66).

Behaviour: the transactional ids this broker coordinates (each broker answers for the
``__transaction_state`` partitions it leads; the admin client asks every broker), filtered by
state names, producer ids and (v1) open for longer than ``duration_filter`` ms (-1: any).
Unknown state names are listed back in ``unknown_state_filters``.
Versions: 0-1. Errors: COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module

API_KEY = 66


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    duration = getattr(request, "duration_filter", -1)
    if isinstance(duration, datetime.timedelta):
        duration = int(duration.total_seconds() * 1000)
    listed = ctx.transactions.coordinator.list_transactions(request.state_filters, request.producer_id_filters,
                                                            duration)
    return build(module.ListTransactionsResponse, throttle_time=datetime.timedelta(0), error_code=listed.error,
                 unknown_state_filters=tuple(listed.unknown_state_filters),
                 transaction_states=tuple(build(module.TransactionState, transactional_id=tid, producer_id=pid,
                                                transaction_state=state)
                                          for tid, pid, state in listed.transactions))
