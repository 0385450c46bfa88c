"""Queue mode: share groups (KIP-932, as Apache Kafka 4.2 serves them) and what grows on them.

- ``share_partition.py``: one share-partition's in-flight records and their states (the state machine),
  over ``in_flight.py`` (runs of records sharing a state, pending transitions), ``log_batches.py`` (the
  batches of a log read, acquisitions cut at their boundaries) and ``selection.py`` (which Available
  records an acquisition takes: the selection policy).
- ``state_records.py``: the ``__share_group_state`` record formats (ShareSnapshot / ShareUpdate).
- ``state_store.py``: turns a share-partition's changes into those records, writes them, replays them.
- ``share_group.py``: share group membership and the server-side SimpleAssignor (ShareGroupHeartbeat).
- ``share_session.py``: the ShareFetch session cache (epochs, limits).
- ``manager.py``: the share-partitions of this broker: loading, ShareFetch acquisition, acknowledgements,
  lock timers, dead-letter hook, durability. Handlers call it through narrow collaborators.

Nothing here imports the server, handlers or the broker: collaborators (reading a partition's log,
its offsets, appending to the state topic, a clock) are passed in.
"""
