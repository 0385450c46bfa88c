"""Transactions (Kafka's exactly-once): the transaction coordinator and its records.

- ``state.py``: a transactional id's state (Empty .. PrepareEpochFence), Kafka's legal transitions,
  epochs and fencing.
- ``log_records.py``: the ``__transaction_state`` records (key v0, value v0/v1) and which partition
  (hence which coordinator) owns a transactional id.
- ``markers.py``: getting COMMIT/ABORT markers written by every partition leader, with retries.
- ``state_manager.py``: the ids of the ``__transaction_state`` partitions led here: loading on
  leadership, durable state changes, expiry of idle ids, describing and listing.
- ``coordinator.py``: InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, DescribeTransactions
  and ListTransactions over injected collaborators; markers; aborting timed-out transactions.
- ``config.py``: the coordinator's settings.

The partition side lives lower, where the log can use it: ``protocol/control_records.py`` (the
marker batches), ``storage/producer_txn.py`` (open transactions, the last stable offset) and
``storage/txn_index.py`` (the ``.txnindex`` of aborted transactions). docs/transactions.md tells
the whole model. Nothing here imports the server, handlers or the broker.
"""
