"""What issue 14's queue features need to know of the records in a share-partition's window: each
record's priority, when it is due (delayed delivery), when it expires (TTL), and whether it passes
the group's filter, read from the record batches of a log read.

Where the batch says there is nothing to do, nothing is done per record: a batch that does not
contain the priority header's name (when priority is on) nor the ``tidelog-`` header prefix, with
no filter and no topic delay/TTL that its timestamps leave undecided, becomes one ``AttrRun`` from
its header alone (one ``bytes.find`` over its records, decompressed if need be). Only the other
batches are walked record by record. Results are kept per batch by ``AttrCache`` (one per
share-partition, bounded by its window), so a record is looked at once per group, not per fetch.

Headers (a record's own setting wins over the topic's):

- ``priority`` (``tidelog.priority.header``): an integer 0-9, higher first; anything else is
  ``tidelog.priority.default`` (counted as ``invalid_priority``).
- ``tidelog-deliver-at``: epoch milliseconds or an RFC 3339 date (UTC when it names no offset);
  ``tidelog-delay-ms``: milliseconds after the record's timestamp. A date that does not parse or a
  negative delay is ignored (``invalid_delay``); a time in the past is simply due.
- ``tidelog-ttl-ms``: the record expires this long after its timestamp; not a positive integer is
  ignored (``invalid_ttl``).

Pure functions and a cache; no I/O, no clock (times passed in).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import compress, cycle, islice, repeat
from typing import Callable, Iterable, NamedTuple, Sequence

from tidelog.protocol.compression import decompress
from tidelog.protocol.records import BATCH_HEADER_SIZE, BatchInfo, parse_batch_header, read_varint

try:
    from tidelog.protocol._recordwalk import fields as _fields_in_c
    from tidelog.protocol._recordwalk import header_values as _header_values_in_c
except ImportError:  # built without a C compiler: the Python walk
    _fields_in_c = _header_values_in_c = None
try:
    from tidelog.protocol._recordwalk import has_header as _has_header_in_c
except ImportError:  # (an extension built before it: header_values)
    _has_header_in_c = None
try:
    from tidelog.protocol._recordwalk import HEADER_RUNS_FAILED as _HEADER_RUNS_FAILED  # noqa: F401 (filters.FAILED)
    from tidelog.protocol._recordwalk import header_runs as _header_runs_in_c
except ImportError:  # (an extension built before it, or before it counted failed verdicts, which an older
    _header_runs_in_c = None  # one took for a match: header_values and the filter's verdicts)
try:
    from tidelog.protocol._recordwalk import filter_atoms as _filter_atoms_in_c
except ImportError:  # (an extension built before it: the filter's plan over the walk's records)
    _filter_atoms_in_c = None

__all__ = ["DELAY_MS_HEADER", "DELIVER_AT_HEADER", "TTL_MS_HEADER", "AttrCache", "AttrRun", "AttrView", "FlagRuns",
           "QueueSettings", "parse_deliver_at", "scan_batch"]

DELIVER_AT_HEADER = "tidelog-deliver-at"
DELAY_MS_HEADER = "tidelog-delay-ms"
TTL_MS_HEADER = "tidelog-ttl-ms"
_PREFIX = b"tidelog-"
NEVER = 0  # expire_ms / due_ms of a record without one
_CRC = struct.Struct(">I")

RecordMatcher = Callable[[bytes | None, dict, int], bool]


@dataclass(frozen=True)
class QueueSettings:
    """A share-partition's queue-feature settings: its topic's tidelog.* configs and its group's filter."""

    priority_enabled: bool = False
    priority_header: str = "priority"
    default_priority: int = 0
    lookahead_records: int = 1000
    aging_ms: int = 60000
    delay_ms: int = 0
    ttl_ms: int = -1
    # The group's compiled filter (queues/filters.py): (key, headers, timestamp) -> matches.
    matches: RecordMatcher | None = field(default=None, compare=False)
    filter_source: str = ""  # what ``matches`` was compiled from (so settings compare by it)

    @property
    def reorders(self) -> bool:
        """Whether acquisition needs more than Kafka's offset order (a look-ahead and the attributes)."""
        return self.priority_enabled or self.delay_ms > 0 or self.ttl_ms > 0 or self.matches is not None


class AttrRun(NamedTuple):
    """Offsets first..last sharing the attributes a selection needs."""

    first: int
    last: int
    priority: int
    timestamp: int  # the record's timestamp (what aging counts from)
    due_ms: int  # not acquirable before (0: at once)
    expire_ms: int  # never delivered at or after (0: never)
    matches: bool  # passes the group's filter


def _flag_runs(flags: bytes, offsets: Sequence[int] | None, base: int, last: int, priority: int, timestamp: int,
               due: int, expire: int) -> list[AttrRun]:
    """The AttrRuns of a batch judged by a filter: ``flags`` a byte a record (1: matches, 0: not),
    ``offsets`` the records' offsets (None: ``base`` + index), ``last`` the batch's last offset; a
    run of equal flags is one AttrRun with the other fields given. No Python step per run or record:
    a run starts where a flag differs from the one before it (one xor of the flags and the flags
    shifted by one, as integers), the runs alternate match / no match, and the AttrRuns are made by
    ``map`` over iterators (a filter keeping every fourth record makes a run of every other record)."""
    n = len(flags)
    if not n:
        return []
    before = bytes((flags[0] ^ 1,)) + flags[:-1]  # (the first record always starts a run)
    starts = list(compress(range(n), (int.from_bytes(flags, "big") ^ int.from_bytes(before, "big")).to_bytes(n, "big")))
    if offsets is None:
        firsts = list(map(base.__add__, starts))
    else:
        firsts = list(map(offsets.__getitem__, starts))
    lasts = list(map((-1).__add__, islice(firsts, 1, None)))
    lasts.append(last)
    first_matches = flags[0] == 1
    return list(map(tuple.__new__, repeat(AttrRun), zip(
        firsts, lasts, repeat(priority), repeat(timestamp), repeat(due), repeat(expire),
        islice(cycle((first_matches, not first_matches)), len(firsts)))))


class FlagRuns:
    """A batch judged by the group's filter alone, one record an offset (first..last), as columns:
    the first and last offsets of its runs of matching records (``firsts``, ``lasts``, in offset
    order; the records around them do not match) and what every record of it shares. Made from
    the verdicts without a Python step per run (``flag_columns``); QueuePolicy slices the columns
    of a read's batches (``QueuePolicy.columns``) where an AttrRun a run was most of a filtered
    fetch's cost. ``runs()``: the AttrRuns ``_flag_runs`` makes of the same verdicts, for the
    general walk (made once)."""

    __slots__ = ("first", "last", "firsts", "lasts", "priority", "timestamp", "due_ms", "expire_ms", "_runs")

    def __init__(self, first: int, last: int, firsts: list[int], lasts: list[int], priority: int, timestamp: int,
                 due_ms: int, expire_ms: int) -> None:
        self.first, self.last, self.firsts, self.lasts = first, last, firsts, lasts
        self.priority, self.timestamp, self.due_ms, self.expire_ms = priority, timestamp, due_ms, expire_ms
        self._runs: list[AttrRun] | None = None

    def runs(self) -> list[AttrRun]:
        if self._runs is None:
            firsts, lasts = self.firsts, self.lasts
            # the records not matching: before each matching run, and after the last one
            other_firsts = [self.first, *map((1).__add__, lasts)]
            other_lasts = [*map((-1).__add__, firsts), self.last]
            n = len(firsts) * 2 + 1
            all_firsts, all_lasts = [0] * n, [0] * n
            all_firsts[0::2], all_firsts[1::2] = other_firsts, firsts
            all_lasts[0::2], all_lasts[1::2] = other_lasts, lasts
            matches = False
            if all_lasts[0] < all_firsts[0]:  # (the batch starts with a match)
                del all_firsts[0], all_lasts[0]
                matches = True
            if all_lasts[-1] < all_firsts[-1]:  # (it ends with one)
                del all_firsts[-1], all_lasts[-1]
            self._runs = list(map(tuple.__new__, repeat(AttrRun), zip(
                all_firsts, all_lasts, repeat(self.priority), repeat(self.timestamp), repeat(self.due_ms),
                repeat(self.expire_ms), islice(cycle((matches, not matches)), len(all_firsts)))))
        return self._runs

    def __repr__(self) -> str:
        return f"<FlagRuns {self.first}-{self.last} matching {list(zip(self.firsts, self.lasts))}>"


def flag_columns(flags: bytes, base: int, priority: int, timestamp: int, due: int, expire: int) -> FlagRuns:
    """The FlagRuns of a batch of ``len(flags)`` records at offsets base, base + 1, ... judged by a
    filter (``flags`` a byte a record, 1: matches, 0: not). A matching run starts where a flag is 1
    and the one before it 0 (or it is the first), ends where it is 1 and the next 0 (or it is the
    last): found by ``compress`` over bytes made from two integers' bits (no Python step per run)."""
    n = len(flags)
    edged = b"\x00" + flags + b"\x00"
    here = int.from_bytes(edged[1:], "big")  # the flags, then a 0 (n + 1 bytes)
    before = int.from_bytes(edged[:-1], "big")  # a 0, then the flags
    change = here ^ before
    rises = (change & here).to_bytes(n + 1, "big")  # position p: record p starts a match
    falls = (change & before).to_bytes(n + 1, "big")  # position p: record p - 1 ended one
    # (positions from a kept list: a range would make an int object a record, most of the cost)
    positions = _positions(n + 1)
    return FlagRuns(base, base + n - 1, list(map(base.__add__, compress(positions, rises))),
                    list(map((base - 1).__add__, compress(positions, falls))), priority, timestamp, due, expire)


_POSITIONS: list[int] = []  # record positions in a batch, made at the first filtered batch (~0.6 MB)


def _positions(count: int) -> Sequence[int]:
    """0 .. count - 1 at least, from ``_POSITIONS`` (made once, 16,384 of them: a batch of 100-byte
    records of 1 MB); a range for a batch with more records."""
    if not _POSITIONS:
        _POSITIONS.extend(range(1 << 14))
    return _POSITIONS if count <= len(_POSITIONS) else range(count)


class AttrView:
    """The attributes of one read (``AttrCache.runs``): its batches' entries in offset order
    (``parts``: a FlagRuns, or a batch's list of AttrRuns), and all their AttrRuns (``runs``, made
    on first use: a filter alone needs none, ``QueuePolicy.columns`` slices the FlagRuns)."""

    __slots__ = ("parts", "_runs")

    def __init__(self, parts: list) -> None:
        self.parts = parts
        self._runs: list[AttrRun] | None = None

    @property
    def runs(self) -> list[AttrRun]:
        if self._runs is None:
            out: list[AttrRun] = []
            for part in self.parts:
                out.extend(part.runs() if type(part) is FlagRuns else part)
            self._runs = out
        return self._runs


def parse_deliver_at(value: bytes) -> int | None:
    """``tidelog-deliver-at``: epoch milliseconds, or an RFC 3339 date (UTC when it has no offset)."""
    text = value.decode("utf-8", "replace").strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _positive_int(value: bytes | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def scan_batch(data, pos: int, info: BatchInfo, settings: QueueSettings, counts: dict[str, int]) -> list[AttrRun]:
    """The attribute runs of the batch at ``pos`` of ``data`` (``info`` its parsed header);
    ``counts`` gets the bad-input counters (invalid_priority, invalid_delay, invalid_ttl)."""
    scanned = _scan(data, pos, info, settings, counts)
    return scanned.runs() if type(scanned) is FlagRuns else scanned


def _scan(data, pos: int, info: BatchInfo, settings: QueueSettings, counts: dict[str, int]) -> list[AttrRun] | FlagRuns:
    """``scan_batch``, a batch judged by the filter alone (one record an offset) as its FlagRuns."""
    default = settings.default_priority
    end = pos + info.size
    if info.compression:
        body = decompress(info.compression, memoryview(data)[pos + BATCH_HEADER_SIZE:end])
        start, stop = 0, len(body)
    else:
        body = data if isinstance(data, (bytes, bytearray)) else bytes(memoryview(data)[pos:end])
        start, stop = (pos + BATCH_HEADER_SIZE, end) if body is data else (BATCH_HEADER_SIZE, info.size)
    log_append = info.timestamp_type == 1
    same_time = log_append or info.base_timestamp == info.max_timestamp
    batch_level = same_time or (settings.delay_ms <= 0 and settings.ttl_ms <= 0)
    if settings.matches is not None and batch_level:
        # Walked anyway for the filter: no search of the batch's bytes; the walk itself says
        # whether a record has a header of ours (then the whole walk below).
        filtered = _filtered_runs(body, start, stop, info, log_append, settings)
        if filtered is not None:
            return filtered
        need_priority, need_headers = settings.priority_enabled, True
    else:
        if batch_level and settings.matches is None:
            need_priority, need_headers = _ours_in(body, start, stop, info, settings)
        else:  # (walked anyway: these only spare reading the headers)
            need_priority = settings.priority_enabled and body.find(settings.priority_header.encode(), start, stop) >= 0
            need_headers = body.find(_PREFIX, start, stop) >= 0
        if not (need_priority or need_headers or settings.matches is not None) and batch_level:
            timestamp = info.max_timestamp
            due = timestamp + settings.delay_ms if settings.delay_ms > 0 else NEVER
            expire = timestamp + settings.ttl_ms if settings.ttl_ms > 0 else NEVER
            return [AttrRun(info.base_offset, info.last_offset, default, timestamp, due, expire, True)]
    runs: list[AttrRun] = []
    for offset, timestamp, key, headers in _walk(body, start, stop, info, log_append,
                                                 settings.matches is not None):
        priority = default
        if settings.priority_enabled:
            value = headers.get(settings.priority_header)
            if value is not None:
                text = value.strip()
                if len(text) == 1 and 48 <= text[0] <= 57:
                    priority = text[0] - 48
                else:
                    counts["invalid_priority"] = counts.get("invalid_priority", 0) + 1
        due = timestamp + settings.delay_ms if settings.delay_ms > 0 else NEVER
        expire = timestamp + settings.ttl_ms if settings.ttl_ms > 0 else NEVER
        if need_headers:
            at = headers.get(DELIVER_AT_HEADER)
            delay = headers.get(DELAY_MS_HEADER)
            if at is not None:
                parsed = parse_deliver_at(at)
                if parsed is None:
                    counts["invalid_delay"] = counts.get("invalid_delay", 0) + 1
                else:
                    due = max(parsed, 0)
            elif delay is not None:
                parsed = _positive_int(delay)
                if parsed is None:
                    counts["invalid_delay"] = counts.get("invalid_delay", 0) + 1
                else:
                    due = timestamp + parsed
            ttl = headers.get(TTL_MS_HEADER)
            if ttl is not None:
                parsed = _positive_int(ttl)
                if parsed is None or parsed == 0:
                    counts["invalid_ttl"] = counts.get("invalid_ttl", 0) + 1
                else:
                    expire = timestamp + parsed
        matches = True if settings.matches is None else settings.matches(key, headers, timestamp)
        if runs and runs[-1].last + 1 == offset and runs[-1][2:] == (priority, timestamp, due, expire, matches):
            runs[-1] = runs[-1]._replace(last=offset)
        else:
            runs.append(AttrRun(offset, offset, priority, timestamp, due, expire, matches))
    return runs


_OURS = (DELIVER_AT_HEADER.encode(), DELAY_MS_HEADER.encode(), TTL_MS_HEADER.encode())


def _ours_in(body, start: int, stop: int, info: BatchInfo, settings: QueueSettings) -> tuple[bool, bool]:
    """scan_batch's (need_priority, need_headers): whether a record may have the priority header
    (where priority is on) or a header of ours (delay, TTL), else the batch is one AttrRun. The C
    record walk reads header names only, skipping keys and values by their lengths: a search of the
    batch's bytes for the names took about a nanosecond a byte, most of an unfiltered share-fetch's
    scan with 1 KiB records. Without the extension, or where a record is malformed (the walk that
    follows says so), the bytes are searched."""
    if _header_values_in_c is not None:
        ours = _OURS + (settings.priority_header.encode(),) if settings.priority_enabled else _OURS
        try:
            if _has_header_in_c is not None:  # (the same walk and answer, no list of values: ~100 instructions a record)
                found = _has_header_in_c(body, start, stop, info.record_count, ours)
            else:  # (the values of a header named "" come back, unused: a name it asks for is not among ``ours``)
                _, found = _header_values_in_c(body, start, stop, info.record_count, b"", ours)
        except ValueError:
            pass
        else:
            return settings.priority_enabled and found, found
    return (settings.priority_enabled and body.find(settings.priority_header.encode(), start, stop) >= 0,
            body.find(_PREFIX, start, stop) >= 0)


def _filtered_runs(body, start: int, stop: int, info: BatchInfo, log_append: bool,
                   settings: QueueSettings) -> list[AttrRun] | FlagRuns | None:
    """A batch whose only per-record question is the group's filter: runs of records it matches or
    not, the rest decided for the whole batch (as scan_batch's short cut). None as soon as a record
    has a header of ours (delay, TTL, or the priority header where priority is on). The filter
    judges the whole batch at once (``RecordFilter.judge``: one CEL evaluation per distinct thing
    it reads)."""
    ours = {DELIVER_AT_HEADER, DELAY_MS_HEADER, TTL_MS_HEADER}
    if settings.priority_enabled:
        ours.add(settings.priority_header)
    read_names = getattr(settings.matches, "header_names", None)
    single = read_names[0] if read_names is not None and len(read_names) == 1 else None
    if single is not None and single not in ours and _header_values_in_c is not None \
            and not settings.matches.reads_key and not settings.matches.reads_timestamp \
            and info.last_offset - info.base_offset + 1 == info.record_count:
        # The usual filter, over one header: its values alone, no object per record (offsets are
        # base + index: the batch has as many records as offsets, not compacted).
        name, others = single.encode(), tuple(n.encode() for n in sorted(ours))
        known = getattr(settings.matches, "known_verdicts", None)
        if known is not None and _header_runs_in_c is not None:
            # Where the filter has judged every value the batch holds before (all but its first
            # batches): the verdicts and their runs in the walk itself, the runs' first and last
            # offsets the only objects made (the two steps below were ~0.1 us a record at 100 B).
            found = _header_runs_in_c(body, start, stop, info.record_count, name, others, known, info.base_offset)
            if found is not None:
                firsts, lasts, failed, ours_found = found
                if ours_found:
                    return None
                settings.matches.count_errors(failed)
                timestamp = info.max_timestamp
                return FlagRuns(info.base_offset, info.last_offset, firsts, lasts, settings.default_priority,
                                timestamp, timestamp + settings.delay_ms if settings.delay_ms > 0 else NEVER,
                                timestamp + settings.ttl_ms if settings.ttl_ms > 0 else NEVER)
        values, ours_found = _header_values_in_c(body, start, stop, info.record_count, name, others)
        if ours_found:
            return None
        # A byte a record (1: matches), its runs found without a Python step per record or run.
        flags = settings.matches.verdicts(values)
        offsets = None
    elif (plan := getattr(settings.matches, "plan", None)) is not None and _filter_atoms_in_c is not None \
            and info.last_offset - info.base_offset + 1 == info.record_count and plan.header_names.isdisjoint(ours) \
            and (found := _filter_atoms_in_c(body, start, stop, info.record_count, info.base_timestamp,
                                             info.max_timestamp if log_append else None, plan.atoms,
                                             tuple(n.encode() for n in sorted(ours)), plan.steps,
                                             info.base_offset)) is not None:
        # A filter of the subset queues/filters.py judges a batch at a time: its comparisons and
        # their combination in the walk, the runs of matching records' first and last offsets the
        # only objects made (as header_runs does for one header).
        firsts, lasts, failed, ours_found = found
        if ours_found:
            return None
        settings.matches.count_errors(failed)
        timestamp = info.max_timestamp
        return FlagRuns(info.base_offset, info.last_offset, firsts, lasts, settings.default_priority, timestamp,
                        timestamp + settings.delay_ms if settings.delay_ms > 0 else NEVER,
                        timestamp + settings.ttl_ms if settings.ttl_ms > 0 else NEVER)
    else:
        # Only what the filter reads is decoded (its header names, plus ours to notice them).
        names = None if read_names is None else tuple(n.encode() for n in sorted(ours.union(read_names)))
        records = _walk(body, start, stop, info, log_append, getattr(settings.matches, "reads_key", True), names)
        if any(headers and not ours.isdisjoint(headers) for _, _, _, headers in records):
            return None
        judge = getattr(settings.matches, "judge", None)
        if judge is not None:
            results = judge(records)
        else:
            matches = settings.matches
            results = [matches(key, headers, timestamp) for _, timestamp, key, headers in records]
        flags = bytes(map(bool, results))
        offsets = [offset for offset, _, _, _ in records]
    timestamp = info.max_timestamp
    due = timestamp + settings.delay_ms if settings.delay_ms > 0 else NEVER
    expire = timestamp + settings.ttl_ms if settings.ttl_ms > 0 else NEVER
    base, n = info.base_offset, len(flags)
    if n and info.last_offset - base + 1 == n and (offsets is None or offsets == list(range(base, base + n))):
        # (a record an offset: the runs are columns of offsets)
        return flag_columns(flags, base, settings.default_priority, timestamp, due, expire)
    return _flag_runs(flags, offsets, base, info.last_offset, settings.default_priority, timestamp, due, expire)


def _walk(body, pos: int, stop: int, info: BatchInfo, log_append: bool, want_key: bool,
          names: tuple[bytes, ...] | None = None):
    """(offset, timestamp, key, headers) of each record; headers as {name: value bytes} (the last wins),
    only those named in ``names`` when given. In C where the extension is built
    (protocol/_recordwalk.c ``fields``), else ``_walk_python``."""
    if _fields_in_c is None or len(names or ()) > 16:
        records = list(_walk_python(body, pos, stop, info, log_append, want_key))
        if names is None:
            return records
        wanted = {name.decode("utf-8", "replace") for name in names}
        return [(offset, timestamp, key, {n: v for n, v in headers.items() if n in wanted})
                for offset, timestamp, key, headers in records]
    base_offset, base_timestamp, max_timestamp = info.base_offset, info.base_timestamp, info.max_timestamp
    found = _fields_in_c(body, pos, stop, info.record_count, want_key, names)
    if log_append:
        return [(base_offset + offset_delta, max_timestamp, key, headers)
                for offset_delta, _, key, headers in found]
    return [(base_offset + offset_delta, base_timestamp + timestamp_delta, key, headers)
            for offset_delta, timestamp_delta, key, headers in found]


def _walk_python(body, pos: int, stop: int, info: BatchInfo, log_append: bool, want_key: bool):
    """_walk without the C extension. One-byte varints (most lengths and deltas) are read inline: a
    function call per field was most of the cost."""
    base_offset, base_timestamp = info.base_offset, info.base_timestamp
    names: dict[bytes, str] = {}
    for _ in range(info.record_count):
        if pos >= stop:
            return
        length, pos = read_varint(body, pos)
        record_end = pos + length
        pos += 1  # attributes
        b = body[pos]
        if b < 0x80:
            timestamp_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
        else:
            timestamp_delta, pos = read_varint(body, pos)
        b = body[pos]
        if b < 0x80:
            offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
        else:
            offset_delta, pos = read_varint(body, pos)
        b = body[pos]
        if b < 0x80:
            key_length, pos = (b >> 1) ^ -(b & 1), pos + 1
        else:
            key_length, pos = read_varint(body, pos)
        key = None
        if key_length >= 0:
            key = bytes(body[pos:pos + key_length]) if want_key else None
            pos += key_length
        value_length, pos = read_varint(body, pos)
        pos += max(0, value_length)
        b = body[pos]
        if b < 0x80:
            count, pos = (b >> 1) ^ -(b & 1), pos + 1
        else:
            count, pos = read_varint(body, pos)
        headers: dict[str, bytes | None] = {}
        for _ in range(count):
            b = body[pos]
            if b < 0x80:
                name_length, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                name_length, pos = read_varint(body, pos)
            raw = bytes(body[pos:pos + name_length])
            name = names.get(raw)
            if name is None:
                name = names[raw] = raw.decode("utf-8", "replace")
            pos += name_length
            b = body[pos]
            if b < 0x80:
                value_length, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                value_length, pos = read_varint(body, pos)
            if value_length < 0:
                headers[name] = None
            else:
                headers[name] = bytes(body[pos:pos + value_length])
                pos += value_length
        timestamp = info.max_timestamp if log_append else base_timestamp + timestamp_delta
        yield base_offset + offset_delta, timestamp, key, headers
        pos = record_end


class AttrCache:
    """The attributes of one share-partition's batches (a FlagRuns, or a list of AttrRuns, each),
    kept by batch base offset while they are in its window (``prune`` drops those below the start
    offset); dropped whole when the settings change. Bounded by the window
    (share.partition.max.record.locks records)."""

    def __init__(self) -> None:
        self.settings: QueueSettings | None = None
        self._batches: dict[tuple[int, int], list[AttrRun] | FlagRuns] = {}
        self.counts: dict[str, int] = {}  # bad input seen, since the owner last took them

    def runs(self, data, batches: Iterable[tuple[int, int, object]], settings: QueueSettings,
             first: int, last: int) -> AttrView:
        """The attributes of the read's batches (``parse_log_batches`` output over ``data``)
        overlapping first..last, in offset order."""
        if settings != self.settings:
            self.settings = settings
            self._batches.clear()
        parts: list = []
        view = memoryview(data)
        for pos, _size, batch in batches:
            if batch.last_offset < first or batch.base_offset > last or batch.control or batch.aborted:
                continue
            # By offset and CRC: a failover may truncate the log and write other batches at an offset.
            key = (batch.base_offset, _CRC.unpack_from(view, pos + 17)[0])
            cached = self._batches.get(key)
            if cached is None:
                info = parse_batch_header(view, pos)
                cached = self._batches[key] = _scan(data, pos, info, settings, self.counts)
            parts.append(cached)
        return AttrView(parts)

    def batches(self) -> Iterable[list[AttrRun]]:
        """The cached runs, batch by batch (in no particular order)."""
        return (part.runs() if type(part) is FlagRuns else part for part in self._batches.values())

    def prune(self, start_offset: int) -> None:
        for base in [b for b, part in self._batches.items() if _last_of(part) < start_offset]:
            del self._batches[base]

    def take_counts(self) -> dict[str, int]:
        counts, self.counts = self.counts, {}
        return counts

    def __len__(self) -> int:
        return len(self._batches)


def _last_of(part: list[AttrRun] | FlagRuns) -> int:
    if type(part) is FlagRuns:
        return part.last
    return part[-1].last if part else -1


def runs_overlapping(runs: Sequence[AttrRun], first: int, last: int) -> Iterable[AttrRun]:
    for run in runs:
        if run.last >= first and run.first <= last:
            yield run
