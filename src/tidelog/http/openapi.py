"""The OpenAPI 3.1 document of the HTTP API (served at ``/api/v1/openapi.json``).

Kept as data next to the route handlers (api.py and the *_routes.py modules); tests/integration/test_http_api.py checks every
response against it and runs schemathesis over every operation.
"""

from __future__ import annotations

from tidelog import __version__


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict, required: list[str] | None = None, **extra) -> dict:
    schema = {"type": "object", "properties": properties, **extra}
    if required is None:
        required = list(properties)
    if required:
        schema["required"] = required
    return schema


INT = {"type": "integer"}
NULLABLE_INT = {"type": ["integer", "null"]}
STR = {"type": "string"}
NULLABLE_STR = {"type": ["string", "null"]}
BOOL = {"type": "boolean"}
NUMBER = {"type": "number"}
ENCODING = {"type": "string", "enum": ["text", "base64"]}
SCALAR = {"type": ["string", "number", "boolean"]}

SCHEMAS = {
    "Error": _obj({
        "error_code": {**STR, "description": "Kafka's error name in upper case (UNKNOWN_TOPIC_OR_PARTITION, "
                       "TOPIC_ALREADY_EXISTS, INVALID_REQUEST, ...), SUBSCRIPTION_NOT_FOUND / SUBSCRIPTION_ALREADY_EXISTS, or NOT_FOUND / METHOD_NOT_ALLOWED / REQUEST_TOO_LARGE / "
                       "INTERNAL_ERROR."},
        "message": STR,
        "field": {**STR, "description": "The request field an INVALID_REQUEST is about, where one is (push subscriptions)."},
    }, required=["error_code", "message"]),
    "Cluster": _obj({
        "cluster_id": STR,
        "controller_id": {**NULLABLE_INT, "description": "The active controller; null while there is none."},
        "node_id": {**INT, "description": "The broker that answered."},
        "version": STR,
        "brokers": {"type": "array", "description": "Every live broker, as Metadata and DescribeCluster list them.",
                    "items": _obj({"node_id": INT, "host": STR, "port": INT, "rack": NULLABLE_STR, "controller": BOOL,
                                   "http_port": {**NULLABLE_INT, "description": "Known for the broker that answered."},
                                   "console": {**NULLABLE_STR, "description": "The broker's console URL; null without HTTP."},
                                   "event_loop": {"oneOf": [{"type": "null"}, _ref("EventLoop")],
                                                  "description": "The broker's event-loop lag (its GET /broker); null "
                                                  "when it did not answer within 1 s or serves no HTTP."},
                                   "event_loop_error": {**NULLABLE_STR, "description": "Why event_loop is null."},
                                   "internal_write_timeouts": {"oneOf": [{"type": "null"}, _ref("WriteTimeouts")],
                                                               "description": "The broker's (its GET /broker); null "
                                                               "when event_loop is."}})},
        "started_at_ms": INT, "uptime_ms": INT, "ready": BOOL, "topics": INT, "partitions": INT,
        "under_replicated_partitions": {**INT, "description": "Partitions whose ISR is smaller than their replicas."},
        "offline_partitions": {**INT, "description": "Partitions without a live leader."},
        "groups": {**NULLABLE_INT, "description": "Consumer groups, as the group coordinator knows them; null if it cannot be asked."},
        "connections": INT,
        "totals": _obj({"produced_bytes": NUMBER, "produced_records": NUMBER, "fetched_bytes": NUMBER,
                        "fetched_records": NUMBER, "requests": NUMBER},
                       description="Counters of the broker that answered, since its start; poll twice for rates."),
        "now_ms": INT,
    }),
    "EventLoop": _obj({
        "window_s": {**NUMBER, "description": "The window the percentiles, max_ms and stalls are of (60 s)."},
        "samples": {**INT, "description": "Wake-ups of the monitor's task in the window (2 a second)."},
        "p50_ms": {"type": ["number", "null"], "description": "How late the task woke: median; null before the first."},
        "p99_ms": {"type": ["number", "null"], "description": "99th percentile (nearest rank)."},
        "max_ms": {"type": ["number", "null"], "description": "The largest lag in the window."},
        "stalls": {**INT, "description": "Lags of stall_threshold_ms or more in the window (each logged as a WARNING)."},
        "max_since_start_ms": NUMBER, "stalls_since_start": INT,
        "stall_threshold_ms": NUMBER, "interval_ms": {**NUMBER, "description": "How often the task wakes."},
    }, description="How late the broker's event loop runs what is due (tidelog_event_loop_lag_seconds)."),
    "WriteTimeouts": {"type": "object", "additionalProperties": INT,
                      "description": "Internal writes answered REQUEST_TIMED_OUT since the broker's start "
                      "(tidelog_internal_write_timeouts_total), by writer: offset_commit, group_metadata (SyncGroup, "
                      "group state), transaction_marker, transaction_state, share_state, dead_letter, delay_mover; "
                      "writers with none left out. A stuck or slow disk, or an ISR that did not follow."},
    "Broker": _obj({
        "node_id": INT, "ready": BOOL,
        "not_ready_reasons": {"type": "array", "items": STR, "description": "As GET /ready gives them."},
        "started_at_ms": INT, "uptime_ms": INT, "connections": INT, "event_loop": _ref("EventLoop"),
        "internal_write_timeouts": _ref("WriteTimeouts"), "now_ms": INT,
    }),
    "Partition": _obj({
        "partition": INT, "leader": {**NULLABLE_INT, "description": "null: offline (no live leader)."},
        "leader_epoch": INT,
        "replicas": {"type": "array", "items": INT}, "isr": {"type": "array", "items": INT},
        "offline_replicas": {"type": "array", "items": INT, "description": "Replicas on brokers that are not live."},
        "offline": BOOL, "under_replicated": BOOL,
        "log_start_offset": NULLABLE_INT,
        "log_end_offset": {**NULLABLE_INT, "description": "Known when the broker that answered leads the partition."},
        "high_watermark": {**NULLABLE_INT, "description": "What consumers can read up to."},
        "size_bytes": {**NULLABLE_INT, "description": "The leader's bytes on disk."},
        "segments": {**NULLABLE_INT, "description": "Known when the broker that answered leads the partition."},
        "backlog_bytes": {**NULLABLE_INT, "description": "Cluster: bytes the leader appended above the high watermark "
                          "(replica.backlog.max.bytes bounds them); known when the broker that answered leads the partition."},
        "backlog_held": {**NULLABLE_INT, "description": "Cluster: acks=all Produce requests whose connections the "
                         "backlog holds now (nothing more is read from them); known as backlog_bytes is."},
        "cleaner": {"oneOf": [{"type": "null"}, _obj({
            "replica": {**INT, "description": "The broker whose replica this is (each replica cleans its own log)."},
            "last_cleaned_offset": {**NULLABLE_INT, "description": "Cleaned up to here (exclusive: the first dirty "
                                    "offset, as in cleaner-offset-checkpoint); null before a first cleaning."},
            "first_uncleanable_offset": {**INT, "description": "Records from here on may not be cleaned yet (active "
                                         "segment, high watermark or last stable offset, min.compaction.lag.ms)."},
            "dirty_ratio": {**NUMBER, "description": "Cleanable bytes over clean plus cleanable bytes; the cleaner "
                            "takes the log above min.cleanable.dirty.ratio."},
            "min_cleanable_dirty_ratio": NUMBER,
            "clean_bytes": INT, "cleanable_bytes": INT, "cleaning": BOOL,
            "runs": {**INT, "description": "Cleanings of this log since the broker started."},
            "last_cleaned_ms": NULLABLE_INT, "last_error": NULLABLE_STR, "uncleanable": BOOL,
        })], "description": "The log cleaner's state of a compacted topic's partition on the broker that answered; "
            "null for other topics or where it has no replica."},
    }, required=["partition", "leader", "leader_epoch", "replicas", "isr", "offline_replicas", "offline",
                 "under_replicated", "log_start_offset", "log_end_offset", "high_watermark", "size_bytes", "segments"],
        description="Offsets and size are the leader's (asked of it when another broker leads); null when unknown."),
    "TopicSummary": _obj({
        "name": STR, "topic_id": STR, "internal": BOOL, "partitions": INT, "replication_factor": INT,
        "size_bytes": INT, "records": {**INT, "description": "Sum of high watermark minus log start offset."},
        "configs": {"type": "object", "additionalProperties": STR, "description": "Topic overrides only."},
        "offline_partitions": INT, "under_replicated_partitions": INT,
    }),
    "TopicList": _obj({"topics": {"type": "array", "items": _ref("TopicSummary")}}),
    "TopicConfig": _obj({
        "name": STR, "value": NULLABLE_STR, "source": {"type": "string", "enum": ["topic", "broker", "default"]},
        "documentation": STR,
    }),
    "TopicDetail": _obj({
        "name": STR, "topic_id": STR, "internal": BOOL, "partition_count": INT, "replication_factor": INT,
        "size_bytes": INT, "records": INT, "offline_partitions": INT, "under_replicated_partitions": INT,
        "partitions": {"type": "array", "items": _ref("Partition")},
        "configs": {"type": "array", "items": _ref("TopicConfig"), "description": "Every topic config, effective value."},
        "share_groups": {"type": "array", "description": "Share-partitions of the topic loaded on this broker "
                                                         "(issue 14, docs/queues.md).", "items": _obj({
            "group": STR, "partition": INT, "delayed": NULLABLE_INT,
            "available_by_priority": {"type": ["object", "null"], "additionalProperties": INT}})},
        "delay": {"oneOf": [{"type": "null"}, _ref("DelayTopic")],
                  "description": "A delay topic's movers (tidelog.delay.target.topic); null for other topics."},
    }),
    "DelayTopic": _obj({
        "target_topic": STR,
        "partitions": {"type": "array", "items": _ref("DelayPartition"), "description": "Each from its leader."},
    }, description="Where a delay topic's records go and how far its movers are (issue 14, docs/queues.md)."),
    "DelayPartition": _obj({
        "partition": INT,
        "target_topic": STR, "target_partition": {**NULLABLE_INT, "description": "null: the target topic does not exist."},
        "target_leader": {**NULLABLE_INT, "description": "The broker leading the target partition; null: none now."},
        "target_local": {**BOOL, "description": "The target partition is led by the broker that moves (no network hop)."},
        "leader": {**NULLABLE_INT, "description": "The broker whose mover this is (the partition's leader)."},
        "state": {"type": "string", "enum": ["moving", "waiting", "idle", "rebuilding", "failing", "starting",
                                             "no_target", "not_leader", "unavailable"],
                  "description": "moving: records are due; waiting: for next_due_ms; idle: nothing waiting; rebuilding: "
                                 "its due-time index from the log (a new leader); failing: since failing_since_ms, "
                                 "retried; unavailable: its leader could not be asked."},
        "waiting_records": {**NULLABLE_INT, "description": "Records not moved yet (due or not), from the due-time index."},
        "next_due_ms": {**NULLABLE_INT, "description": "Due time of the earliest waiting record (epoch ms)."},
        "moved_records": {**INT, "description": "Appended to the target by the leader's broker since it started."},
        "lost_records": {**INT, "description": "Removed by retention before they were due (the leader's broker, "
                                               "since it started)."},
        "last_move_ms": {**NULLABLE_INT, "description": "When the last batch was appended to the target."},
        "last_move_late_ms": {**NULLABLE_INT, "description": "How long after its due time the last batch's earliest "
                                                             "record was appended."},
        "failing_since_ms": NULLABLE_INT, "failures": INT, "last_error": NULLABLE_STR,
        "committed_offset": {**NULLABLE_INT, "description": "The mover's progress as last committed to __consumer_offsets "
                                                            "(group __tidelog-delay-mover): every record below it due by "
                                                            "then is moved; null: not committed by this mover yet."},
        "committed_ms": {**NULLABLE_INT, "description": "When that progress was committed."},
        "commit_error": {**NULLABLE_STR, "description": "Why the last commit failed (moves go on; committed again "
                                                        "shortly); null: it did not."},
        "recovered_from": {"type": ["string", "null"], "enum": ["target", "committed", "local", "start", None],
                           "description": "Where the mover found its progress when it started: its last batch in the "
                                          "target, the committed progress, this broker's copy, or the partition's start."},
    }),
    "NewTopic": _obj({
        "name": {**STR, "description": "1-249 of [a-zA-Z0-9._-]."},
        "partitions": {**INT, "minimum": -1, "maximum": 10000, "description": "-1 or absent: num.partitions."},
        "replication_factor": {**INT, "minimum": -1, "description": "-1 or absent: default.replication.factor."},
        "configs": {"type": "object", "additionalProperties": SCALAR},
    }, required=["name"]),
    "ConfigChanges": _obj({
        "configs": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                    "description": "name -> new value; null removes the topic's override."},
    }),
    "Deleted": _obj({"deleted": STR}),
    "Header": _obj({
        "key": STR,
        "value": {"oneOf": [{"type": ["string", "null"]},
                            _obj({"base64": {**STR, "contentEncoding": "base64"}}, additionalProperties=False)]},
    }, required=["key"]),
    "ProduceRecord": _obj({
        "key": {"description": "A string is stored as UTF-8, null as null, any other JSON as its JSON text."},
        "value": {"description": "As key."},
        "key_base64": {"type": ["string", "null"], "contentEncoding": "base64", "description": "Binary key instead of key."},
        "value_base64": {"type": ["string", "null"], "contentEncoding": "base64", "description": "Binary value instead of value."},
        "headers": {"oneOf": [{"type": "array", "items": _ref("Header")},
                              {"type": "object", "additionalProperties": {"type": ["string", "null"]}}]},
        "partition": {**INT, "minimum": 0, "description": "Absent: murmur2 of the key as Kafka's Java client "
                      "does; no key: one partition per request, round robin."},
        "timestamp": {**INT, "minimum": 0, "description": "CreateTime in ms; absent: now."},
    }, required=[]),
    "ProduceRequest": _obj({"records": {"type": "array", "items": _ref("ProduceRecord"), "minItems": 1, "maxItems": 10000}}),
    "RecordOffset": _obj({
        "partition": INT, "offset": {**INT, "description": "-1 when the record's partition failed."},
        "timestamp": INT, "error_code": STR, "message": STR,
    }, required=["partition", "offset"]),
    "ProduceResponse": _obj({"topic": STR, "offsets": {"type": "array", "items": _ref("RecordOffset"),
                                                       "description": "One per record, in request order."}}),
    "RecordHeader": _obj({"key": STR, "value": NULLABLE_STR, "value_encoding": ENCODING}),
    "Record": _obj({
        "partition": INT, "offset": INT, "timestamp": INT,
        "timestamp_type": {"type": "string", "enum": ["CreateTime", "LogAppendTime"]},
        "key": NULLABLE_STR, "key_encoding": ENCODING, "value": NULLABLE_STR, "value_encoding": ENCODING,
        "headers": {"type": "array", "items": _ref("RecordHeader")},
    }, required=["offset", "timestamp", "timestamp_type", "key", "key_encoding", "value", "value_encoding", "headers"],
        description="Bytes that are valid UTF-8 are given as text (encoding text), others as base64."),
    "Records": _obj({
        "topic": STR, "partition": INT, "log_start_offset": INT, "high_watermark": INT,
        "next_offset": {**INT, "description": "Where the next read should start."},
        "records": {"type": "array", "items": _ref("Record")},
    }),
    "GroupSummary": _obj({
        "group_id": STR, "state": STR, "protocol_type": STR, "type": STR, "members": INT, "lag": INT,
        "topics": {"type": "array", "items": STR},
    }),
    "GroupList": _obj({"groups": {"type": "array", "items": _ref("GroupSummary")}}),
    "TransactionList": _obj({
        "transactions": {"type": "array", "items": _obj({
            "transactional_id": STR, "coordinator": INT, "producer_id": INT, "state": STR,
            "producer_epoch": NULLABLE_INT, "timeout_ms": NULLABLE_INT,
            "start_time_ms": {**NULLABLE_INT, "description": "When the open transaction began (null: none open, or "
                                                             "coordinated by another broker)."},
            "partitions": {"type": "array", "items": _obj({"topic": STR, "partition": INT})},
        })},
        "unreachable": {"type": "array", "items": INT, "description": "Brokers that could not be asked."},
    }),
    "UserList": _obj({
        "users": {"type": "array", "items": _obj({"name": STR, "mechanisms": {"type": "array", "items": _obj(
            {"mechanism": STR, "iterations": INT})}})},
        "plain_users_file": {"type": "boolean", "description": "PLAIN users come from sasl.plain.users.file too."},
        "sasl_mechanisms": {"type": "array", "items": STR},
    }, description="SCRAM users: mechanisms and iterations, never a secret."),
    "AclList": _obj({
        "enabled": {"type": "boolean", "description": "ACLs are checked (authorizer.class.name is set)."},
        "super_users": {"type": "array", "items": STR},
        "allow_everyone_if_no_acl_found": {"type": ["boolean", "null"]},
        "acls": {"type": "array", "items": _obj({
            "resource_type": STR, "name": STR, "pattern_type": STR, "principal": STR, "host": STR, "operation": STR,
            "permission_type": STR})},
    }),
    "QuotaList": _obj({"quotas": {"type": "array", "items": _obj({
        "entity": {"type": "object", "additionalProperties": {"type": ["string", "null"]},
                   "description": "user and/or client-id; null is the default entity."},
        "values": {"type": "object", "additionalProperties": {"type": "number"}},
    })}}),
    "GroupOffset": _obj({
        "topic": STR, "partition": INT, "committed_offset": INT, "log_end_offset": INT, "lag": INT,
        "metadata": STR, "commit_timestamp_ms": INT,
    }),
    "GroupMember": _obj({
        "member_id": STR, "group_instance_id": NULLABLE_STR, "client_id": STR, "client_host": STR,
        "assignment": {"type": "array", "items": _obj({"topic": STR, "partitions": {"type": "array", "items": INT}})},
    }),
    "GroupDetail": _obj({
        "group_id": STR, "type": {"type": "string", "enum": ["classic", "consumer"],
                                  "description": "classic (JoinGroup/SyncGroup) or consumer (KIP-848)."},
        "state": STR, "protocol_type": STR, "protocol": STR, "generation_id": INT,
        "leader_id": NULLABLE_STR,
        "members": {"type": "array", "items": _ref("GroupMember")},
        "offsets": {"type": "array", "items": _ref("GroupOffset")}, "lag": INT,
    }),
    "CommitRequest": _obj({"offsets": {"type": "array", "minItems": 1, "items": _obj({
        "topic": STR, "partition": {**INT, "minimum": 0}, "offset": {**INT, "minimum": 0}})}}),
    "GroupOffsets": _obj({"group_id": STR, "offsets": {"type": "array", "items": _ref("GroupOffset")}}),
    "GroupFetchRequest": _obj({
        "topic": STR,
        "partitions": {"type": "array", "items": {**INT, "minimum": 0}, "description": "Absent: every partition."},
        "max_records": {**INT, "minimum": 1, "maximum": 1000, "default": 100},
        "timeout_ms": {**INT, "minimum": 0, "maximum": 30000, "default": 0,
                       "description": "Wait this long for a record when there is none."},
        "commit": {**BOOL, "default": True, "description": "Commit the new positions before answering (at-most-once)."},
        "auto_offset_reset": {"type": "string", "enum": ["earliest", "latest"], "default": "earliest"},
    }, required=["topic"]),
    "GroupFetchResponse": _obj({
        "group_id": STR, "topic": STR, "committed": BOOL,
        "positions": {"type": "array", "items": _obj({"partition": INT, "offset": INT})},
        "records": {"type": "array", "items": _ref("Record")},
    }),
    **{  # share groups (queues): http/share_routes.py
        "ShareReceiveRequest": _obj({
            "topic": STR,
            "member_id": {**NULLABLE_STR, "maxLength": 255, "pattern": "^[!-~]+$",
                          "description": "This consumer's member id; absent or null: the broker makes one (a UUID) "
                                         "and answers it, to pass on from then on."},
            "client_id": {**STR, "default": "tidelog-http", "description": "Shown in the group's description."},
            "max_records": {**INT, "minimum": 1, "maximum": 1000, "default": 10},
            "timeout_ms": {**INT, "minimum": 0, "maximum": 30000, "default": 0,
                           "description": "Wait this long for a record when none is available."},
            "encoding": {"type": "string", "enum": ["auto", "base64"], "default": "auto"},
        }, required=["topic"]),
        "ShareRecord": _obj({
            "receipt": {**STR, "description": "TOPIC/PARTITION/OFFSET: names the record to ack, release, reject or renew."},
            "topic": STR, "partition": INT,
            "delivery_count": {**INT, "minimum": 1, "description": "1 the first time, one more at each redelivery."},
            "offset": INT, "timestamp": INT, "timestamp_type": {"type": "string", "enum": ["CreateTime", "LogAppendTime"]},
            "key": NULLABLE_STR, "key_encoding": ENCODING, "value": NULLABLE_STR, "value_encoding": ENCODING,
            "headers": {"type": "array", "items": _ref("RecordHeader")},
        }),
        "ShareReceiveResponse": _obj({
            "group_id": STR, "member_id": STR, "topic": STR,
            "lock_timeout_ms": {**INT, "description": "How long the records stay locked for this member (the group's "
                                                      "share.record.lock.duration.ms)."},
            "records": {"type": "array", "items": _ref("ShareRecord")},
        }),
        "ShareAckRequest": _obj({
            "member_id": {**STR, "maxLength": 255, "pattern": "^[!-~]+$"},
            "receipts": {"type": "array", "items": STR, "minItems": 1, "maxItems": 1000},
            "delay_ms": {**INT, "minimum": 0, "maximum": 43200000, "default": 0,
                         "description": "release only: the record is available again after this long (kept in memory: "
                                        "a broker restart makes it available at once)."},
        }, required=["member_id", "receipts"]),
        "ShareAckResponse": _obj({
            "group_id": STR, "member_id": STR,
            "acknowledged": {"type": "array", "items": STR, "description": "Receipts done."},
            "failed": {"type": "array", "items": _obj({"receipt": STR, "error_code": STR, "message": STR}),
                       "description": "INVALID_RECORD_STATE: not locked by this member (any more): its lock ran out, "
                                      "or it was acknowledged already."},
        }),
        "ShareLeft": _obj({"group_id": STR, "member_id": STR, "left": BOOL}),
        "ShareGroupSummary": _obj({
            "group_id": STR, "state": STR, "members": INT, "topics": {"type": "array", "items": STR},
            "lag": {**INT, "description": "Records up to the high watermark not yet acknowledged or archived."},
            "in_flight": {**INT, "description": "Records between the start offsets and the next offsets."},
            "dead_lettered": INT,
        }),
        "ShareGroupList": _obj({"groups": {"type": "array", "items": _ref("ShareGroupSummary")}}),
        "ShareMember": _obj({
            "member_id": STR, "client_id": STR, "client_host": STR, "member_epoch": INT,
            "subscribed_topics": {"type": "array", "items": STR},
            "assignment": {"type": "array", "items": _obj({"topic": STR, "partitions": {"type": "array", "items": INT}})},
            "acquired_records": {**INT, "description": "Records locked for this member now."},
        }),
        "SharePartition": _obj({
            "topic": STR, "partition": INT, "start_offset": INT, "next_offset": NULLABLE_INT, "lag": NULLABLE_INT,
            "loaded": {**BOOL, "description": "In memory on this broker (records by state, delivery counts and runs are "
                                              "known only then)."},
            "in_flight": INT,
            "records": _obj({"available": INT, "acquired": INT, "acknowledged": INT, "archived": INT}),
            "delivery_counts": {"type": "object", "additionalProperties": INT,
                                "description": "delivery count -> records not yet acknowledged or archived"},
            "runs": {"type": "array", "items": _obj({
                "first_offset": INT, "last_offset": INT,
                "state": {"type": "string", "enum": ["available", "acquired", "acknowledged", "archived"]},
                "delivery_count": INT, "member_id": NULLABLE_STR})},
            "runs_truncated": BOOL,
            "queue": _obj({
                "settings": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]},
                             "description": "The topic's tidelog.* settings in force and the group's filter."},
                "delayed": {**NULLABLE_INT, "description": "Available records waiting for their time (a delay or a "
                                                           "retry back-off); null where not loaded."},
                "available_by_priority": {"type": ["object", "null"], "additionalProperties": INT,
                                          "description": "priority -> Available records due now, in the window, "
                                                         "where tidelog.priority.enable is on; else null."},
            }, description="Issue 14's queue features (docs/queues.md)."),
        }),
        "ShareGroupDetail": _obj({
            "group_id": STR, "state": STR, "group_epoch": INT, "assignment_epoch": INT,
            "members": {"type": "array", "items": _ref("ShareMember")},
            "partitions": {"type": "array", "items": _ref("SharePartition")},
            "lag": INT, "in_flight": INT,
            "counts": {**_obj({k: INT for k in ("acquired", "acknowledged", "released", "rejected", "renewed", "archived",
                                                "redelivered", "lock_expired", "dead_lettered")}),
                       "description": "Records since the broker started; other counters the broker keeps (queue "
                                      "features: expired, filtered, ...) are added."},
            "config": _obj({"record_lock_duration_ms": INT, "delivery_count_limit": INT, "auto_offset_reset": STR,
                            "isolation_level": STR, "dead_letter_topic": NULLABLE_STR,
                            "tidelog": {"type": "object", "additionalProperties": {"type": ["string", "number"]},
                                        "description": "The group's tidelog.* configs in force (retry back-off, "
                                                       "filter)."}}),
        }),
    },
    **{  # push subscriptions: http/push_routes.py, docs/push.md
        "PushSettings": _obj({
            "topics": {"type": "array", "items": STR, "minItems": 1, "maxItems": 100, "description": "Existing topics."},
            "endpoint": {**STR, "maxLength": 2048, "description": "http:// or https:// URL the records are POSTed to; its "
                                                                  "host must be allowed by push.allowed.hosts."},
            "batch_size": {**INT, "minimum": 1, "maximum": 1000, "default": 100, "description": "Records per POST at the most."},
            "linger_ms": {**INT, "minimum": 0, "maximum": 10000, "default": 50, "description": "Wait this long for a fuller batch."},
            "max_concurrency": {**INT, "minimum": 1, "maximum": 64, "default": 8,
                                "description": "POSTs in flight at the most (concurrency adapts below it)."},
            "ack_deadline_ms": {**INT, "minimum": 100, "maximum": 600000, "default": 30000,
                                "description": "A POST not answered by then fails (its records are released)."},
            "backoff_initial_ms": {**INT, "minimum": 0, "maximum": 3600000, "default": 1000},
            "backoff_multiplier": {**NUMBER, "minimum": 1, "maximum": 10, "default": 2},
            "backoff_max_ms": {**INT, "minimum": 0, "maximum": 86400000, "default": 60000},
            "delivery_limit": {**INT, "minimum": 2, "maximum": 10, "default": 5,
                               "description": "Deliveries of a record before it is archived (and dead-lettered)."},
            "dead_letter_topic": {**NULLABLE_STR, "description": "Where records past the delivery limit are copied; null: none."},
            "payload_format": {"type": "string", "enum": ["batch", "raw"], "default": "batch",
                               "description": "batch: a JSON body of records; raw: one record per POST, its value as the body."},
            "bearer_token": {**NULLABLE_STR, "description": "Sent as Authorization: Bearer to the endpoint; shown as \"***\"."},
            "paused": {**BOOL, "default": False},
        }, required=[]),
        "PushStatus": _obj({
            "state": {"type": "string", "enum": ["active", "idle", "paused", "failing"]},
            "last_error": NULLABLE_STR, "last_error_ms": NULLABLE_INT,
            "concurrency": {**INT, "description": "POSTs allowed in flight now (grows on success, halves on failure)."},
            "in_flight": {**INT, "description": "POSTs in flight now."},
            "delivered": INT, "acknowledged": INT, "retries": INT, "dead_lettered": INT,
            "failed_by_status": {"type": "object", "additionalProperties": INT,
                                 "description": "Failed POSTs by HTTP status or by cause (timeout, refused, ...)."},
            "backlog": {**INT, "description": "Records not yet acknowledged."},
            "latency_p50_ms": {"type": ["number", "null"], "description": "End-to-end latency of recent deliveries."},
            "latency_p99_ms": {"type": ["number", "null"]},
            "partitions": {"type": "array", "items": _obj({"topic": STR, "partition": INT}),
                           "description": "The share-partitions delivered (each by the broker leading it)."},
            "brokers": {"type": "array", "items": INT, "description": "The brokers whose deliveries are counted."},
            "unreachable": {"type": "array", "items": INT, "description": "Live brokers that did not say (not counted)."},
        }, required=["state", "last_error", "concurrency", "in_flight", "delivered", "acknowledged", "retries",
                     "dead_lettered", "failed_by_status", "backlog"],
            description="Every live broker's deliveries of the subscription (each of the share-partitions it leads) added up: "
                        "counters since each broker started; latencies the highest broker's."),
    },
}
SCHEMAS["NewPushSubscription"] = {**SCHEMAS["PushSettings"], "properties": {
    "name": {**STR, "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$", "description": "Its share group is push.<name>."},
    **SCHEMAS["PushSettings"]["properties"]}, "required": ["name", "topics", "endpoint"]}
SCHEMAS["PushSubscription"] = _obj({
    "name": STR, "share_group": STR, "created_ms": INT, **SCHEMAS["PushSettings"]["properties"], "status": _ref("PushStatus"),
})
SCHEMAS["CreatedPushSubscription"] = _obj({**SCHEMAS["PushSubscription"]["properties"], "secret": {
    **STR, "description": "The HMAC-SHA256 key of the requests' signatures: shown in this answer only."}})
SCHEMAS["PushSubscriptionList"] = _obj({"subscriptions": {"type": "array", "items": _ref("PushSubscription")}})

_ERROR_CONTENT = {"application/json": {"schema": _ref("Error")}}
_STATUS_TEXT = {400: "Invalid request", 404: "Not found", 409: "Conflict", 413: "Too large",
                416: "Offset out of range", 500: "Internal error", 503: "Not available now: starting, no live leader, a leader that does not answer, storage or coordinator"}


def _responses(ok_status: int, ok_schema: str, description: str, errors: tuple[int, ...]) -> dict:
    responses = {str(ok_status): {"description": description, "content": {"application/json": {"schema": _ref(ok_schema)}}}}
    for status in sorted({400, *errors}):
        responses[str(status)] = {"description": _STATUS_TEXT[status], "content": _ERROR_CONTENT}
    return responses


def _body(schema: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _path_param(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


TOPIC = _path_param("topic", STR, "Topic name.")
GROUP = _path_param("group", STR, "Consumer group id.")
SHARE_GROUP = _path_param("group", STR, "Share group id.")
PUSH = _path_param("name", STR, "Push subscription name.")


def _push_state(action: str, summary: str) -> dict:
    return {"parameters": [PUSH], "post": {"operationId": f"{action}PushSubscription", "summary": summary,
                                           "responses": _responses(200, "PushSubscription", "The subscription", (404, 503))}}


def _share_ack(action: str, summary: str) -> dict:
    return {"parameters": [SHARE_GROUP],
            "post": {"operationId": f"share{action.capitalize()}", "summary": summary, "requestBody": _body("ShareAckRequest"),
                     "responses": _responses(200, "ShareAckResponse", "Each receipt done or failed", (404, 409, 503))}}


def openapi_document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tidelog HTTP API",
            "version": __version__,
            "description": "Topics, records and consumer groups of a Tidelog broker as JSON. Errors are "
                           "{error_code, message}. Values read back are text when valid UTF-8, else base64.",
        },
        "servers": [{"url": "/api/v1"}],
        "paths": {
            "/cluster": {"get": {
                "operationId": "getCluster", "summary": "Cluster overview and traffic totals",
                "responses": _responses(200, "Cluster", "The cluster", ()),
            }},
            "/broker": {"get": {
                "operationId": "getBroker", "summary": "This broker's health: readiness, uptime, event-loop lag",
                "responses": _responses(200, "Broker", "The broker that answered", ()),
            }},
            "/topics": {
                "get": {
                    "operationId": "listTopics", "summary": "List topics",
                    "parameters": [_query("internal", {"type": "boolean", "default": True}, "Include __ topics.")],
                    "responses": _responses(200, "TopicList", "Topics by name", ()),
                },
                "post": {
                    "operationId": "createTopic", "summary": "Create a topic (Kafka's CreateTopics rules)",
                    "requestBody": _body("NewTopic"),
                    "responses": _responses(201, "TopicDetail", "Created", (409, 503)),
                },
            },
            "/topics/{topic}": {
                "parameters": [TOPIC],
                "get": {"operationId": "describeTopic", "summary": "Partitions with offsets, sizes, leader, ISR; configs",
                        "responses": _responses(200, "TopicDetail", "The topic", (404,))},
                "delete": {"operationId": "deleteTopic", "summary": "Delete a topic and its data",
                           "responses": _responses(200, "Deleted", "Deleted", (404, 503))},
            },
            "/topics/{topic}/delay": {
                "parameters": [TOPIC],
                "get": {"operationId": "describeDelayTopic", "summary": "A delay topic's movers: records waiting, next "
                                                                       "due time, moved, lost, state (per partition)",
                        "responses": _responses(200, "DelayTopic", "The delay topic's movers", (404,))},
            },
            "/topics/{topic}/configs": {
                "parameters": [TOPIC],
                "put": {"operationId": "alterTopicConfigs", "summary": "Set or remove topic config overrides",
                        "requestBody": _body("ConfigChanges"),
                        "responses": _responses(200, "TopicDetail", "The topic after the change", (404, 503))},
            },
            "/topics/{topic}/records": {
                "parameters": [TOPIC],
                "post": {"operationId": "produce", "summary": "Append records; answered once durable",
                         "requestBody": _body("ProduceRequest"),
                         "responses": _responses(200, "ProduceResponse", "Offsets, one per record", (404, 413, 503))},
            },
            "/topics/{topic}/partitions/{partition}/records": {
                "parameters": [TOPIC, _path_param("partition", {**INT, "minimum": 0}, "Partition index.")],
                "get": {
                    "operationId": "consume", "summary": "Read records by offset or time",
                    "parameters": [
                        _query("offset", {**INT, "minimum": 0}, "First offset (default: the log start)."),
                        _query("timestamp", {**INT, "minimum": 0}, "Start at the first record with this timestamp (ms) or later."),
                        _query("limit", {**INT, "minimum": 1, "maximum": 1000, "default": 100}, "Most records returned."),
                        _query("timeout_ms", {**INT, "minimum": 0, "maximum": 30000, "default": 0},
                               "Wait up to this long for a record when there is none."),
                        _query("encoding", {"type": "string", "enum": ["auto", "base64"], "default": "auto"},
                               "auto: text when valid UTF-8, else base64; base64: always base64."),
                    ],
                    "responses": _responses(200, "Records", "Records", (404, 416, 503)),
                },
            },
            "/transactions": {"get": {"operationId": "listTransactions",
                                      "summary": "Transactional ids of the cluster: coordinator, state, open partitions",
                                      "responses": _responses(200, "TransactionList", "Transactions", ())}},
            "/users": {"get": {"operationId": "listUsers", "summary": "SCRAM users and their mechanisms (no secrets)",
                               "responses": _responses(200, "UserList", "Users", ())}},
            "/acls": {"get": {"operationId": "listAcls", "summary": "ACL bindings, super users, whether ACLs are on",
                              "responses": _responses(200, "AclList", "ACLs", ())}},
            "/quotas": {"get": {"operationId": "listQuotas", "summary": "Client quotas by user and client id",
                                "responses": _responses(200, "QuotaList", "Quotas", ())}},
            "/groups": {"get": {"operationId": "listGroups", "summary": "Consumer groups with their total lag",
                                "responses": _responses(200, "GroupList", "Groups", ())}},
            "/groups/{group}": {
                "parameters": [GROUP],
                "get": {"operationId": "describeGroup", "summary": "Members, assignments, committed offsets and lag",
                        "responses": _responses(200, "GroupDetail", "The group", (404,))},
                "delete": {"operationId": "deleteGroup", "summary": "Delete an empty group and its offsets",
                           "responses": _responses(200, "Deleted", "Deleted", (404, 409, 503))},
            },
            "/groups/{group}/offsets": {
                "parameters": [GROUP],
                "post": {"operationId": "commitOffsets", "summary": "Commit offsets as an assign() consumer does",
                         "requestBody": _body("CommitRequest"),
                         "responses": _responses(200, "GroupOffsets", "The group's offsets", (404, 409, 503))},
            },
            "/groups/{group}/fetch": {
                "parameters": [GROUP],
                "post": {"operationId": "groupFetch",
                         "summary": "Read a topic from the group's committed offsets, committing the new positions",
                         "requestBody": _body("GroupFetchRequest"),
                         "responses": _responses(200, "GroupFetchResponse", "Records", (404, 409, 503))},
            },
            "/share-groups": {"get": {"operationId": "listShareGroups", "summary": "Share groups with lag, records in flight "
                                      "and dead-lettered counts",
                                      "responses": _responses(200, "ShareGroupList", "Share groups", (503,))}},
            "/share-groups/{group}": {
                "parameters": [SHARE_GROUP],
                "get": {"operationId": "describeShareGroup",
                        "summary": "Members, share-partitions (start offsets, lag, records by state, delivery counts, "
                                   "records in flight) and counters",
                        "responses": _responses(200, "ShareGroupDetail", "The share group", (404, 503))},
                "delete": {"operationId": "deleteShareGroup", "summary": "Delete a share group without members and its "
                           "share-partition state", "responses": _responses(200, "Deleted", "Deleted", (404, 409, 503))},
            },
            "/share-groups/{group}/receive": {
                "parameters": [SHARE_GROUP],
                "post": {"operationId": "shareReceive",
                         "summary": "Join or heartbeat as a member and take up to max_records records, each locked for "
                                    "this member",
                         "requestBody": _body("ShareReceiveRequest"),
                         "responses": _responses(200, "ShareReceiveResponse", "Records with receipts and delivery counts",
                                                 (404, 409, 503))},
            },
            "/share-groups/{group}/ack": _share_ack("ack", "Accept records: done, never delivered again"),
            "/share-groups/{group}/release": _share_ack("release", "Give records back (optionally after delay_ms) for "
                                                        "another delivery"),
            "/share-groups/{group}/reject": _share_ack("reject", "Reject records: archived (and dead-lettered where the "
                                                       "group has a dead-letter topic)"),
            "/share-groups/{group}/renew": _share_ack("renew", "Keep records locked: their locks start again"),
            "/share-groups/{group}/members/{member}": {
                "parameters": [SHARE_GROUP, _path_param("member", STR, "Member id.")],
                "delete": {"operationId": "shareLeave",
                           "summary": "Leave the group: the member's records are available again, that delivery not counted",
                           "responses": _responses(200, "ShareLeft", "Left", (404, 409, 503))},
            },
            "/push-subscriptions": {
                "get": {"operationId": "listPushSubscriptions", "summary": "Push subscriptions with their status",
                        "responses": _responses(200, "PushSubscriptionList", "Push subscriptions", ())},
                "post": {"operationId": "createPushSubscription",
                         "summary": "Create a push subscription; the answer shows its signing secret, once",
                         "requestBody": _body("NewPushSubscription"),
                         "responses": _responses(201, "CreatedPushSubscription", "Created", (409, 503))},
            },
            "/push-subscriptions/{name}": {
                "parameters": [PUSH],
                "get": {"operationId": "describePushSubscription", "summary": "Settings and status (state, last error, "
                        "concurrency, in flight, counters, backlog, latency)",
                        "responses": _responses(200, "PushSubscription", "The subscription", (404,))},
                "patch": {"operationId": "updatePushSubscription", "summary": "Change the settings given (null removes "
                          "dead_letter_topic or bearer_token); the name cannot change",
                          "requestBody": _body("PushSettings"),
                          "responses": _responses(200, "PushSubscription", "The subscription after the change", (404, 503))},
                "delete": {"operationId": "deletePushSubscription", "summary": "Delete a push subscription: its deliveries stop",
                           "responses": _responses(200, "Deleted", "Deleted", (404, 503))},
            },
            "/push-subscriptions/{name}/pause": _push_state("pause", "Stop delivering; records wait in the share group"),
            "/push-subscriptions/{name}/resume": _push_state("resume", "Start delivering again"),
        },
        "components": {"schemas": SCHEMAS},
    }
