/* The record walk of produce validation, in C: the loop over every record produced.
 *
 * walk(buffer, count) -> (min_timestamp_delta, max_timestamp_delta)
 *
 * The same checks, in the same order, as walk_records in record_walk.py (the pure-Python fallback,
 * which documents them): each record's length varint, its fields (attributes, timestamp delta,
 * offset delta = its index, key, value, header count, header keys and values) filling exactly
 * that length, -1 the only negative length (and not for header keys), `count` records and no
 * bytes after the last. Raises ValueError naming the record; the caller turns it into
 * INVALID_RECORD. Reads the buffer in place, never past its end; allocates nothing but the
 * result. Varints decode into 64 bits, as Kafka's ByteUtils does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define WALK_OK 0
#define PAST_END 1
#define TOO_LONG 2

static int read_varint(const uint8_t *buf, Py_ssize_t end, Py_ssize_t *pos, int max_bytes, int64_t *value)
{
    uint64_t raw = 0;
    Py_ssize_t p = *pos;
    for (int i = 0; i < max_bytes; i++) {
        if (p >= end)
            return PAST_END;
        uint8_t byte = buf[p++];
        raw |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (byte < 0x80) {
            *value = (int64_t)(raw >> 1) ^ -(int64_t)(raw & 1);
            *pos = p;
            return WALK_OK;
        }
    }
    return TOO_LONG;
}

static PyObject *fail(Py_ssize_t index, const char *what)
{
    PyErr_Format(PyExc_ValueError, "record %zd %s", index, what);
    return NULL;
}

static PyObject *varint_error(Py_ssize_t index, int status, int max_bytes)
{
    if (status == PAST_END)
        return fail(index, "runs past the end of the batch");
    PyErr_Format(PyExc_ValueError, "record %zd has a varint longer than %d bytes", index, max_bytes);
    return NULL;
}

#define READ(target, max_bytes)                                            \
    do {                                                                   \
        int status_ = read_varint(buf, end, &pos, (max_bytes), &(target)); \
        if (status_ != WALK_OK) {                                          \
            PyBuffer_Release(&view);                                       \
            return varint_error(index, status_, (max_bytes));              \
        }                                                                  \
    } while (0)

#define SKIP(size)                                                         \
    do {                                                                   \
        if ((size) > end - pos) {                                          \
            PyBuffer_Release(&view);                                       \
            return fail(index, "runs past the end of the batch");          \
        }                                                                  \
        pos += (Py_ssize_t)(size);                                         \
    } while (0)

#define FAIL(...)                                                          \
    do {                                                                   \
        PyBuffer_Release(&view);                                           \
        PyErr_Format(PyExc_ValueError, __VA_ARGS__);                       \
        return NULL;                                                       \
    } while (0)

static PyObject *walk(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*n", &view, &count))
        return NULL;
    const uint8_t *buf = (const uint8_t *)view.buf;
    const Py_ssize_t end = view.len;
    Py_ssize_t pos = 0, index = 0;
    int64_t min_delta = INT64_MAX, max_delta = INT64_MIN;
    int64_t length, timestamp_delta, offset_delta, size, headers;

    for (index = 0; index < count; index++) {
        READ(length, 5);
        if (length < 0 || length > end - pos)
            FAIL("record %zd has length %lld, %zd bytes are left", index, (long long)length, end - pos);
        const Py_ssize_t record_end = pos + (Py_ssize_t)length;
        if (pos >= end) {
            PyBuffer_Release(&view);
            return fail(index, "runs past the end of the batch");
        }
        pos += 1; /* attributes */
        READ(timestamp_delta, 10);
        if (timestamp_delta < min_delta)
            min_delta = timestamp_delta;
        if (timestamp_delta > max_delta)
            max_delta = timestamp_delta;
        READ(offset_delta, 5);
        if (offset_delta != index)
            FAIL("record %zd has offset delta %lld", index, (long long)offset_delta);
        for (int field = 0; field < 2; field++) { /* key, then value */
            READ(size, 5);
            if (size < -1)
                FAIL("record %zd has a key or value of length %lld", index, (long long)size);
            if (size > 0)
                SKIP(size);
        }
        READ(headers, 5);
        if (headers < 0 || (headers > 0 && headers > record_end - pos))
            FAIL("record %zd has %lld headers", index, (long long)headers);
        for (int64_t h = 0; h < headers && pos <= record_end; h++) {
            READ(size, 5);
            if (size < 0)
                FAIL("record %zd has a header key of length %lld", index, (long long)size);
            SKIP(size);
            READ(size, 5);
            if (size < -1)
                FAIL("record %zd has a header value of length %lld", index, (long long)size);
            if (size > 0)
                SKIP(size);
        }
        if (pos != record_end)
            FAIL("record %zd has length %lld but its fields take %lld", index, (long long)length,
                 (long long)(length + pos - record_end));
    }
    PyBuffer_Release(&view);
    if (pos != end) {
        PyErr_Format(PyExc_ValueError, "%zd bytes after the last of %zd records", end - pos, count);
        return NULL;
    }
    if (count <= 0)
        min_delta = max_delta = 0;
    return Py_BuildValue("(LL)", (long long)min_delta, (long long)max_delta);
}

#define FIELDS_FAIL(...)                                                   \
    do {                                                                   \
        Py_XDECREF(out);                                                   \
        PyBuffer_Release(&view);                                           \
        PyErr_Format(PyExc_ValueError, __VA_ARGS__);                       \
        return NULL;                                                       \
    } while (0)

#define FIELDS_READ(target, max_bytes)                                     \
    do {                                                                   \
        if (read_varint(buf, end, &pos, (max_bytes), &(target)) != WALK_OK) \
            FIELDS_FAIL("record %zd is malformed", index);                 \
    } while (0)

#define FIELDS_MAX_NAMES 16

/* fields(buffer, start, stop, count, want_key[, names]) -> [(offset_delta, timestamp_delta, key, headers)]
 *
 * The records of an (uncompressed) batch body in buffer[start:stop], for the queue features
 * (queues/record_attrs.py): key is bytes or None (always None unless want_key), headers a dict of
 * name (str, UTF-8 with replacement) to value (bytes or None), the last of a repeated name winning.
 * names (a tuple of at most 16 bytes, or None for all): only the headers of those names are decoded
 * and returned (a filter reading one header need not pay for the others).
 * The records were validated when produced; a malformed one is a ValueError all the same. */
static PyObject *fields(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, stop, count;
    int want_key;
    PyObject *names = Py_None;
    if (!PyArg_ParseTuple(args, "y*nnnp|O", &view, &start, &stop, &count, &want_key, &names))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t index = 0;
    const char *name_data[FIELDS_MAX_NAMES];
    Py_ssize_t name_size[FIELDS_MAX_NAMES];
    Py_ssize_t name_count = -1; /* -1: every header */
    if (names != Py_None) {
        if (!PyTuple_Check(names) || PyTuple_GET_SIZE(names) > FIELDS_MAX_NAMES) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_TypeError, "names must be None or a tuple of at most 16 bytes");
            return NULL;
        }
        name_count = PyTuple_GET_SIZE(names);
        for (Py_ssize_t n = 0; n < name_count; n++) {
            char *data;
            if (PyBytes_AsStringAndSize(PyTuple_GET_ITEM(names, n), &data, &name_size[n]) < 0) {
                PyBuffer_Release(&view);
                return NULL;
            }
            name_data[n] = data;
        }
    }
    if (start < 0 || stop > view.len || start > stop)
        FIELDS_FAIL("bad bounds %zd..%zd of %zd bytes", start, stop, view.len);
    const uint8_t *buf = (const uint8_t *)view.buf;
    const Py_ssize_t end = stop;
    Py_ssize_t pos = start;
    int64_t length, timestamp_delta, offset_delta, size, header_count;
    out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    for (index = 0; index < count && pos < end; index++) {
        FIELDS_READ(length, 5);
        if (length < 1 || length > end - pos)
            FIELDS_FAIL("record %zd has length %lld", index, (long long)length);
        const Py_ssize_t record_end = pos + (Py_ssize_t)length;
        pos += 1; /* attributes */
        FIELDS_READ(timestamp_delta, 10);
        FIELDS_READ(offset_delta, 5);
        FIELDS_READ(size, 5);
        if (size < -1 || size > record_end - pos)
            FIELDS_FAIL("record %zd has a key of length %lld", index, (long long)size);
        PyObject *key = Py_None;
        Py_INCREF(Py_None);
        if (size >= 0) {
            if (want_key) {
                Py_DECREF(key);
                key = PyBytes_FromStringAndSize((const char *)buf + pos, (Py_ssize_t)size);
                if (key == NULL) {
                    Py_DECREF(out);
                    PyBuffer_Release(&view);
                    return NULL;
                }
            }
            pos += (Py_ssize_t)size;
        }
        PyObject *headers = PyDict_New();
        PyObject *item = NULL;
        if (headers == NULL)
            goto record_error;
        if (read_varint(buf, end, &pos, 5, &size) != WALK_OK || size < -1 || size > record_end - pos)
            goto malformed;
        if (size > 0)
            pos += (Py_ssize_t)size; /* the value */
        if (read_varint(buf, end, &pos, 5, &header_count) != WALK_OK || header_count < 0)
            goto malformed;
        for (int64_t h = 0; h < header_count; h++) {
            if (read_varint(buf, end, &pos, 5, &size) != WALK_OK || size < 0 || size > record_end - pos)
                goto malformed;
            if (name_count >= 0) {
                int wanted = 0;
                for (Py_ssize_t n = 0; n < name_count && !wanted; n++)
                    wanted = name_size[n] == size && memcmp(name_data[n], buf + pos, (size_t)size) == 0;
                if (!wanted) {
                    pos += (Py_ssize_t)size;
                    if (read_varint(buf, end, &pos, 5, &size) != WALK_OK || size < -1 || size > record_end - pos)
                        goto malformed;
                    if (size > 0)
                        pos += (Py_ssize_t)size;
                    continue;
                }
            }
            PyObject *name = PyUnicode_DecodeUTF8((const char *)buf + pos, (Py_ssize_t)size, "replace");
            if (name == NULL)
                goto record_error;
            pos += (Py_ssize_t)size;
            PyObject *value;
            if (read_varint(buf, end, &pos, 5, &size) != WALK_OK || size < -1 || size > record_end - pos) {
                Py_DECREF(name);
                goto malformed;
            }
            if (size < 0) {
                value = Py_None;
                Py_INCREF(Py_None);
            } else {
                value = PyBytes_FromStringAndSize((const char *)buf + pos, (Py_ssize_t)size);
                pos += (Py_ssize_t)size;
            }
            if (value == NULL || PyDict_SetItem(headers, name, value) < 0) {
                Py_DECREF(name);
                Py_XDECREF(value);
                goto record_error;
            }
            Py_DECREF(name);
            Py_DECREF(value);
        }
        item = Py_BuildValue("(LLNN)", (long long)offset_delta, (long long)timestamp_delta, key, headers);
        key = headers = NULL; /* stolen by N */
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(item);
        pos = record_end;
        continue;
    malformed:
        Py_XDECREF(key);
        Py_XDECREF(headers);
        FIELDS_FAIL("record %zd is malformed", index);
    record_error:
        Py_XDECREF(key);
        Py_XDECREF(headers);
        Py_DECREF(out);
        PyBuffer_Release(&view);
        return NULL;
    }
    PyBuffer_Release(&view);
    return out;
}

/* The names of a tuple of at most FIELDS_MAX_NAMES bytes (header_values, header_runs: the queue
 * features' own) into data/size: their count, or -1 with an exception set. */
static Py_ssize_t name_list(PyObject *names, const char **data, Py_ssize_t *size)
{
    if (!PyTuple_Check(names) || PyTuple_GET_SIZE(names) > FIELDS_MAX_NAMES) {
        PyErr_SetString(PyExc_TypeError, "others must be a tuple of at most 16 bytes");
        return -1;
    }
    for (Py_ssize_t n = 0; n < PyTuple_GET_SIZE(names); n++) {
        char *bytes;
        if (PyBytes_AsStringAndSize(PyTuple_GET_ITEM(names, n), &bytes, &size[n]) < 0)
            return -1;
        data[n] = bytes;
    }
    return PyTuple_GET_SIZE(names);
}

/* One header of a record whose bytes end at record_end: its name's position and size, then *pos
 * at its value and *value_size the value's (-1: null). 0; -1: malformed. */
static int read_header(const uint8_t *buf, Py_ssize_t end, Py_ssize_t *pos, Py_ssize_t record_end,
                       Py_ssize_t *name_pos, Py_ssize_t *name_size, int64_t *value_size)
{
    int64_t size;
    if (read_varint(buf, end, pos, 5, &size) != WALK_OK || size < 0 || size > record_end - *pos)
        return -1;
    *name_pos = *pos;
    *name_size = (Py_ssize_t)size;
    *pos += *name_size;
    if (read_varint(buf, end, pos, 5, value_size) != WALK_OK || *value_size < -1 || *value_size > record_end - *pos)
        return -1;
    return 0;
}

/* A record's fields before its headers (header_values, header_runs, filter_atoms): from its length
 * varint at *pos to its header count, *pos then at its first header; its timestamp delta and key
 * (its bytes and size, -1 for a null key) where those pointers are not NULL. 0; -1: its length is
 * out of bounds (*length says it); -2: it is malformed. */
static int skip_to_headers(const uint8_t *buf, Py_ssize_t end, Py_ssize_t *pos, Py_ssize_t *record_end,
                           int64_t *length, int64_t *header_count, int64_t *timestamp_delta, const uint8_t **key,
                           Py_ssize_t *key_size)
{
    int64_t skipped, size;
    if (read_varint(buf, end, pos, 5, length) != WALK_OK)
        return -2;
    if (*length < 1 || *length > end - *pos)
        return -1;
    *record_end = *pos + (Py_ssize_t)*length;
    *pos += 1; /* attributes */
    if (read_varint(buf, end, pos, 10, timestamp_delta != NULL ? timestamp_delta : &skipped) != WALK_OK
        || read_varint(buf, end, pos, 5, &skipped) != WALK_OK) /* offset delta */
        return -2;
    for (int field = 0; field < 2; field++) { /* key, value */
        if (read_varint(buf, end, pos, 5, &size) != WALK_OK || size < -1 || size > *record_end - *pos)
            return -2;
        if (field == 0 && key != NULL) {
            *key = buf + *pos;
            *key_size = (Py_ssize_t)size;
        }
        if (size > 0)
            *pos += (Py_ssize_t)size;
    }
    if (read_varint(buf, end, pos, 5, header_count) != WALK_OK || *header_count < 0)
        return -2;
    return 0;
}

/* header_values(buffer, start, stop, count, name, others) -> (values, other_found)
 *
 * For a filter that reads one header: the value of header ``name`` (bytes) of each record of an
 * (uncompressed) batch body in buffer[start:stop], in record order (bytes, None for a null value,
 * False where the record has no such header; the last of a repeated name winning), and whether any
 * record has a header named in ``others`` (a tuple of at most 16 bytes: the queue features' own,
 * which need the whole walk). No other object per record. A malformed record is a ValueError. */
static PyObject *header_values(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, stop, count, wanted_size;
    const char *wanted;
    PyObject *others;
    if (!PyArg_ParseTuple(args, "y*nnny#O", &view, &start, &stop, &count, &wanted, &wanted_size, &others))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t index = 0;
    const char *other_data[FIELDS_MAX_NAMES];
    Py_ssize_t other_size[FIELDS_MAX_NAMES];
    const Py_ssize_t other_count = name_list(others, other_data, other_size);
    if (other_count < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (start < 0 || stop > view.len || start > stop)
        FIELDS_FAIL("bad bounds %zd..%zd of %zd bytes", start, stop, view.len);
    const uint8_t *buf = (const uint8_t *)view.buf;
    const Py_ssize_t end = stop;
    Py_ssize_t pos = start;
    int other_found = 0;
    int64_t length, size, header_count;
    out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    for (index = 0; index < count && pos < end; index++) {
        Py_ssize_t record_end;
        const int head = skip_to_headers(buf, end, &pos, &record_end, &length, &header_count, NULL, NULL, NULL);
        if (head == -1)
            FIELDS_FAIL("record %zd has length %lld", index, (long long)length);
        if (head < 0)
            FIELDS_FAIL("record %zd is malformed", index);
        PyObject *value = Py_False;
        Py_INCREF(value);
        for (int64_t h = 0; h < header_count; h++) {
            Py_ssize_t name_pos, name_size;
            if (read_header(buf, end, &pos, record_end, &name_pos, &name_size, &size) != 0)
                goto malformed;
            if (name_size == wanted_size && memcmp(wanted, buf + name_pos, (size_t)name_size) == 0) {
                Py_DECREF(value);
                if (size < 0) {
                    value = Py_None;
                    Py_INCREF(value);
                } else {
                    value = PyBytes_FromStringAndSize((const char *)buf + pos, (Py_ssize_t)size);
                    if (value == NULL) {
                        Py_DECREF(out);
                        PyBuffer_Release(&view);
                        return NULL;
                    }
                }
            } else {
                for (Py_ssize_t n = 0; n < other_count && !other_found; n++)
                    other_found = other_size[n] == name_size && memcmp(other_data[n], buf + name_pos, (size_t)name_size) == 0;
            }
            if (size > 0)
                pos += (Py_ssize_t)size;
        }
        if (PyList_Append(out, value) < 0) {
            Py_DECREF(value);
            Py_DECREF(out);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(value);
        pos = record_end;
        continue;
    malformed:
        Py_DECREF(value);
        FIELDS_FAIL("record %zd is malformed", index);
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(NO)", out, other_found ? Py_True : Py_False);
}

/* A varint as read_varint reads it, one of one or two bytes (most of a record's: its length, its
 * deltas, a 1 KiB value's length) without the loop. */
static inline int read_varint_short(const uint8_t *buf, Py_ssize_t end, Py_ssize_t *pos, int max_bytes,
                                    int64_t *value)
{
    const Py_ssize_t p = *pos;
    if (p < end && buf[p] < 0x80) {
        const uint64_t raw = buf[p];
        *value = (int64_t)(raw >> 1) ^ -(int64_t)(raw & 1);
        *pos = p + 1;
        return WALK_OK;
    }
    if (p + 1 < end && buf[p + 1] < 0x80 && max_bytes >= 2) {
        const uint64_t raw = (uint64_t)(buf[p] & 0x7F) | ((uint64_t)buf[p + 1] << 7);
        *value = (int64_t)(raw >> 1) ^ -(int64_t)(raw & 1);
        *pos = p + 2;
        return WALK_OK;
    }
    return read_varint(buf, end, pos, max_bytes, value);
}

/* has_header(buffer, start, stop, count, names) -> bool
 *
 * Whether a record of an (uncompressed) batch body in buffer[start:stop] has a header named in
 * ``names`` (a tuple of at most 16 bytes): header_values(buffer, start, stop, count, b"", names)[1]
 * without the list of values, for a share-fetch's question whether a batch carries a queue feature's
 * header (queues/record_attrs.py). It walks every record as header_values does and fails where it
 * fails (a ValueError for a malformed record), so both answer alike; no object per record. */
static PyObject *has_header(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, stop, count;
    PyObject *names;
    PyObject *out = NULL; /* (FIELDS_FAIL's) */
    if (!PyArg_ParseTuple(args, "y*nnnO", &view, &start, &stop, &count, &names))
        return NULL;
    const char *name_data[FIELDS_MAX_NAMES];
    Py_ssize_t name_size_of[FIELDS_MAX_NAMES];
    const Py_ssize_t name_count = name_list(names, name_data, name_size_of);
    if (name_count < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (start < 0 || stop > view.len || start > stop)
        FIELDS_FAIL("bad bounds %zd..%zd of %zd bytes", start, stop, view.len);
    const uint8_t *buf = (const uint8_t *)view.buf;
    const Py_ssize_t end = stop;
    Py_ssize_t pos = start;
    int found = 0;
    for (Py_ssize_t index = 0; index < count && pos < end; index++) {
        int64_t length, skipped, size, header_count;
        if (read_varint_short(buf, end, &pos, 5, &length) != WALK_OK)
            FIELDS_FAIL("record %zd is malformed", index);
        if (length < 1 || length > end - pos)
            FIELDS_FAIL("record %zd has length %lld", index, (long long)length);
        const Py_ssize_t record_end = pos + (Py_ssize_t)length;
        pos += 1; /* attributes */
        if (read_varint_short(buf, end, &pos, 10, &skipped) != WALK_OK /* timestamp delta */
            || read_varint_short(buf, end, &pos, 5, &skipped) != WALK_OK) /* offset delta */
            FIELDS_FAIL("record %zd is malformed", index);
        for (int field = 0; field < 2; field++) { /* key, value */
            if (read_varint_short(buf, end, &pos, 5, &size) != WALK_OK || size < -1 || size > record_end - pos)
                FIELDS_FAIL("record %zd is malformed", index);
            if (size > 0)
                pos += (Py_ssize_t)size;
        }
        if (read_varint_short(buf, end, &pos, 5, &header_count) != WALK_OK || header_count < 0)
            FIELDS_FAIL("record %zd is malformed", index);
        for (int64_t h = 0; h < header_count; h++) {
            Py_ssize_t name_pos, name_size;
            if (read_header(buf, end, &pos, record_end, &name_pos, &name_size, &size) != 0)
                FIELDS_FAIL("record %zd is malformed", index);
            /* (a header named "" is header_values' wanted name there: never one of ``names``) */
            for (Py_ssize_t n = 0; n < name_count && !found && name_size > 0; n++)
                found = name_size_of[n] == name_size && memcmp(name_data[n], buf + name_pos, (size_t)name_size) == 0;
            if (size > 0)
                pos += (Py_ssize_t)size;
        }
        pos = record_end;
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(found);
}

/* header_runs(buffer, start, stop, count, name, others, verdicts, base)
 *     -> (firsts, lasts, failed, other_found) | None
 *
 * header_values and a one-header filter's verdicts in one walk, as the runs of matching records: the
 * value of header ``name`` of each record (as header_values reads it: the last of a repeated name,
 * None for a null value, False for none) looked up in ``verdicts`` (a dict of those values to 1, 0
 * or HEADER_RUNS_FAILED (2): the filter failed on it, the record does not match: RecordFilter's),
 * record ``index`` at offset ``base + index``, and the first and last offsets of each run of records
 * whose verdict is 1 (``firsts``, ``lasts``: lists of ints, in offset order); ``failed``: the number
 * of records whose verdict is HEADER_RUNS_FAILED (filter_errors counts each record).
 * No object per record: a value is compared with the distinct ones this walk met before (up to
 * RUNS_SEEN of them; past that, each is looked up in the dict). None where a value has no verdict
 * yet or the batch ends before ``count`` records (the caller takes header_values and the filter
 * then); (None, None, 0, True) as soon as a record has a header named in ``others``. A malformed
 * record is a ValueError. */
#define RUNS_SEEN 16
#define HEADER_RUNS_FAILED 2

typedef struct {
    const uint8_t *data;
    Py_ssize_t size; /* -1: a null value */
    int verdict;
} seen_value;

static int verdict_of(PyObject *verdicts, PyObject *value)
{
    PyObject *found = PyDict_GetItemWithError(verdicts, value); /* borrowed */
    if (found == NULL)
        return PyErr_Occurred() ? -2 : -1;
    if (PyLong_CheckExact(found) && PyLong_AsLong(found) == HEADER_RUNS_FAILED)
        return HEADER_RUNS_FAILED; /* (an int in range: no error to clear) */
    return PyObject_IsTrue(found) > 0 ? 1 : 0;
}

#define RUNS_FAIL(...)                                                     \
    do {                                                                   \
        Py_XDECREF(firsts);                                                \
        Py_XDECREF(lasts);                                                 \
        PyBuffer_Release(&view);                                           \
        PyErr_Format(PyExc_ValueError, __VA_ARGS__);                       \
        return NULL;                                                       \
    } while (0)

static PyObject *header_runs(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, stop, count, wanted_size;
    long long base;
    const char *wanted;
    PyObject *others, *verdicts;
    if (!PyArg_ParseTuple(args, "y*nnny#OO!L", &view, &start, &stop, &count, &wanted, &wanted_size, &others,
                          &PyDict_Type, &verdicts, &base))
        return NULL;
    PyObject *firsts = NULL, *lasts = NULL;
    Py_ssize_t index = 0;
    const char *other_data[FIELDS_MAX_NAMES];
    Py_ssize_t other_size[FIELDS_MAX_NAMES];
    const Py_ssize_t other_count = name_list(others, other_data, other_size);
    if (other_count < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (start < 0 || stop > view.len || start > stop)
        RUNS_FAIL("bad bounds %zd..%zd of %zd bytes", start, stop, view.len);
    const uint8_t *buf = (const uint8_t *)view.buf;
    const Py_ssize_t end = stop;
    Py_ssize_t pos = start;
    int64_t length, size, header_count;
    seen_value seen[RUNS_SEEN];
    int seen_count = 0;
    int missing_verdict = -1; /* of a record without the header (False), once looked up */
    int matching = 0;         /* whether the record before is in a run */
    Py_ssize_t failed = 0;    /* records whose verdict is HEADER_RUNS_FAILED */
    firsts = PyList_New(0);
    lasts = PyList_New(0);
    if (firsts == NULL || lasts == NULL)
        goto error;
    for (index = 0; index < count && pos < end; index++) {
        Py_ssize_t record_end;
        const int head = skip_to_headers(buf, end, &pos, &record_end, &length, &header_count, NULL, NULL, NULL);
        if (head == -1)
            RUNS_FAIL("record %zd has length %lld", index, (long long)length);
        if (head < 0)
            RUNS_FAIL("record %zd is malformed", index);
        const uint8_t *value_data = NULL;
        Py_ssize_t value_size = -2; /* -2: no such header, -1: a null value */
        for (int64_t h = 0; h < header_count; h++) {
            Py_ssize_t name_pos, name_size;
            if (read_header(buf, end, &pos, record_end, &name_pos, &name_size, &size) != 0)
                RUNS_FAIL("record %zd is malformed", index);
            if (name_size == wanted_size && memcmp(wanted, buf + name_pos, (size_t)name_size) == 0) {
                value_data = buf + pos;
                value_size = (Py_ssize_t)size;
            } else {
                for (Py_ssize_t n = 0; n < other_count; n++) {
                    if (other_size[n] == name_size && memcmp(other_data[n], buf + name_pos, (size_t)name_size) == 0) {
                        Py_DECREF(firsts);
                        Py_DECREF(lasts);
                        PyBuffer_Release(&view);
                        return Py_BuildValue("(OOiO)", Py_None, Py_None, 0, Py_True);
                    }
                }
            }
            if (size > 0)
                pos += (Py_ssize_t)size;
        }
        int verdict = -1;
        if (value_size == -2) {
            if (missing_verdict < 0) {
                missing_verdict = verdict_of(verdicts, Py_False);
                if (missing_verdict == -2)
                    goto error;
            }
            verdict = missing_verdict;
        } else {
            for (int k = 0; k < seen_count; k++) {
                if (seen[k].size == value_size && (value_size <= 0 || memcmp(seen[k].data, value_data, (size_t)value_size) == 0)) {
                    verdict = seen[k].verdict;
                    break;
                }
            }
            if (verdict < 0) {
                PyObject *value = value_size == -1 ? Py_NewRef(Py_None)
                                                   : PyBytes_FromStringAndSize((const char *)value_data, value_size);
                if (value == NULL)
                    goto error;
                verdict = verdict_of(verdicts, value);
                Py_DECREF(value);
                if (verdict == -2)
                    goto error;
                if (verdict >= 0 && seen_count < RUNS_SEEN) {
                    seen[seen_count].data = value_data;
                    seen[seen_count].size = value_size;
                    seen[seen_count].verdict = verdict;
                    seen_count++;
                }
            }
        }
        if (verdict < 0) /* not judged yet */
            goto unknown;
        if (verdict == HEADER_RUNS_FAILED) {
            failed++;
            verdict = 0;
        }
        if (verdict != matching) {
            PyObject *offset = PyLong_FromLongLong(verdict ? base + index : base + index - 1);
            if (offset == NULL || PyList_Append(verdict ? firsts : lasts, offset) < 0) {
                Py_XDECREF(offset);
                goto error;
            }
            Py_DECREF(offset);
            matching = verdict;
        }
        pos = record_end;
    }
    if (index < count)
        goto unknown;
    if (matching) {
        PyObject *offset = PyLong_FromLongLong(base + index - 1);
        if (offset == NULL || PyList_Append(lasts, offset) < 0) {
            Py_XDECREF(offset);
            goto error;
        }
        Py_DECREF(offset);
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(NNnO)", firsts, lasts, failed, Py_False);
unknown:
    Py_DECREF(firsts);
    Py_DECREF(lasts);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
error:
    Py_XDECREF(firsts);
    Py_XDECREF(lasts);
    PyBuffer_Release(&view);
    return NULL;
}

/* pack_tiled(firsts, lasts, fields) -> bytes
 *
 * The state batches of a share-partition's TiledBatches (queues/state_records.py: an acquisition's
 * taken and filtered-out records in turn) as __share_group_state's records hold them, without the
 * array's length: for each index i, firsts[i] and lasts[i] as big-endian int64, then the 4 bytes
 * fields[4 * (i % 2):4 * (i % 2) + 4] (delivery state, count, no tagged fields). ``firsts`` and
 * ``lasts``: lists of ints of one length; ``fields``: 8 bytes. An int past int64 is an
 * OverflowError. (In Python each int's conversion and a strided copy a byte were ~880 instructions
 * a batch, two batches a match of a filter.) */
static void put_int64(uint8_t *out, long long value)
{
    const uint64_t raw = (uint64_t)value;
    for (int k = 0; k < 8; k++)
        out[k] = (uint8_t)(raw >> (56 - 8 * k));
}

static PyObject *pack_tiled(PyObject *module, PyObject *args)
{
    PyObject *firsts, *lasts;
    const char *fields;
    Py_ssize_t fields_size;
    if (!PyArg_ParseTuple(args, "O!O!y#", &PyList_Type, &firsts, &PyList_Type, &lasts, &fields, &fields_size))
        return NULL;
    const Py_ssize_t n = PyList_GET_SIZE(firsts);
    if (PyList_GET_SIZE(lasts) != n || fields_size != 8) {
        PyErr_SetString(PyExc_ValueError, "firsts and lasts of one length, and 8 bytes of fields, expected");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 20);
    if (out == NULL)
        return NULL;
    uint8_t *data = (uint8_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyList_GET_SIZE(firsts) != n || PyList_GET_SIZE(lasts) != n) { /* (changed meanwhile) */
            Py_DECREF(out);
            PyErr_SetString(PyExc_RuntimeError, "a column changed while being packed");
            return NULL;
        }
        const long long first = PyLong_AsLongLong(PyList_GET_ITEM(firsts, i));
        if (first == -1 && PyErr_Occurred()) {
            Py_DECREF(out);
            return NULL;
        }
        const long long last = PyLong_AsLongLong(PyList_GET_ITEM(lasts, i));
        if (last == -1 && PyErr_Occurred()) {
            Py_DECREF(out);
            return NULL;
        }
        uint8_t *batch = data + 20 * i;
        put_int64(batch, first);
        put_int64(batch + 8, last);
        memcpy(batch + 16, fields + 4 * (i % 2), 4);
    }
    return out;
}

/* filter_atoms(buffer, start, stop, count, base_timestamp, log_append_timestamp, atoms, others[, program, base])
 *     -> (codes, other_found) | (firsts, lasts, errors, other_found) | None
 *
 * The atoms of a share-group filter in queues/filters.py's CEL subset, judged for each record of an
 * (uncompressed) batch body in buffer[start:stop]: for each atom a bytes of one code a record (0:
 * false, 1: true, 2: an error, as CEL's evaluation of that atom on the record), in record order
 * (``codes``, a tuple), for the caller to combine without a Python step a record. A record's
 * timestamp is ``log_append_timestamp`` where it is not None (a LogAppendTime batch), else
 * ``base_timestamp`` plus its delta. ``atoms``: a tuple of at most ATOMS_MAX tuples (kind, ...):
 *
 *   (0, op, value)    timestamp <op> value: op 0 <, 1 <=, 2 >, 3 >=, 4 ==, 5 !=; value an int64
 *   (1,)              key == null
 *   (2, value)        key == value (bytes): false for a null key
 *   (3, name)         "name" in headers
 *   (4, name, value)  headers["name"] == value (bytes): false for a null value, an error for none
 *   (5, name)         headers["name"] == null: true for a null value, an error for none
 *   (6, name)         headers["name"] == "...": CEL compares bytes with a string as unequal: false,
 *                     an error for none
 *
 * A header's value is the last of a repeated name (what the filter's map holds), names compared as
 * bytes (the caller gives only names whose UTF-8 decoding cannot come from other bytes). At most
 * FIELDS_MAX_NAMES distinct names. (None, True) as soon as a record has a header named in
 * ``others`` (the queue features' own: the whole walk judges that batch); None where a timestamp
 * leaves int64 or the batch ends before ``count`` records (the caller judges it otherwise). A
 * malformed record is a ValueError.
 *
 * With ``program`` (bytes: a postfix program of 2-byte steps, at most PROGRAM_MAX: 0 i the codes of
 * atom i, 1 v the constant v (0 false, 1 true), 2 0 not, 3 0 and, 4 0 or) and ``base`` (the offset
 * of record 0): the expression's verdict on each record, the atoms combined as CEL does (a && b
 * false where either is false, true where both are true, else an error; a || b the other way
 * round; !a an error where a is one), as header_runs returns them: the first and last offsets of
 * each run of records it is true for (``firsts``, ``lasts``, lists of ints in offset order, record
 * ``index`` at offset ``base + index``) and how many records it fails on (``errors``); no column
 * and no object a record; (None, None, 0, True) for a header of ``others``. */
#define ATOMS_MAX 64
#define PROGRAM_MAX 256

/* A step of a filter's program on three-valued verdicts (0 false, 1 true, 2 an error). */
static char and3(char a, char b) { return (a == 0 || b == 0) ? 0 : (a == 1 && b == 1) ? 1 : 2; }
static char or3(char a, char b) { return (a == 1 || b == 1) ? 1 : (a == 0 && b == 0) ? 0 : 2; }

static int append_offset(PyObject *list, long long offset)
{
    PyObject *value = PyLong_FromLongLong(offset);
    if (value == NULL)
        return -1;
    const int status = PyList_Append(list, value);
    Py_DECREF(value);
    return status;
}

typedef struct {
    int kind, op, name;
    int64_t number;
    const char *data;
    Py_ssize_t size;
    char *out;
} filter_atom;

static PyObject *filter_atoms(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, stop, count;
    long long base_timestamp;
    PyObject *fixed, *atom_specs, *others;
    const char *program = NULL;
    Py_ssize_t program_size = 0;
    long long base = 0;
    if (!PyArg_ParseTuple(args, "y*nnnLOO!O|y#L", &view, &start, &stop, &count, &base_timestamp, &fixed,
                          &PyTuple_Type, &atom_specs, &others, &program, &program_size, &base))
        return NULL;
    PyObject *codes = NULL, *firsts = NULL, *lasts = NULL;
    char stack[PROGRAM_MAX], record_codes[ATOMS_MAX];
    int matching = 0;
    Py_ssize_t errors = 0;
    Py_ssize_t index = 0;
    const char *other_data[FIELDS_MAX_NAMES], *name_data[FIELDS_MAX_NAMES];
    Py_ssize_t other_size[FIELDS_MAX_NAMES], name_size[FIELDS_MAX_NAMES];
    filter_atom atoms[ATOMS_MAX];
    int name_count = 0;
    long long fixed_timestamp = 0;
    const Py_ssize_t other_count = name_list(others, other_data, other_size);
    const Py_ssize_t atom_count = PyTuple_GET_SIZE(atom_specs);
    if (other_count < 0)
        goto error;
    if (fixed != Py_None) {
        fixed_timestamp = PyLong_AsLongLong(fixed);
        if (fixed_timestamp == -1 && PyErr_Occurred())
            goto error;
    }
    if (atom_count > ATOMS_MAX || count < 0) {
        PyErr_SetString(PyExc_ValueError, "at most 64 atoms, and a record count >= 0, expected");
        goto error;
    }
    if (start < 0 || stop > view.len || start > stop) {
        PyErr_Format(PyExc_ValueError, "bad bounds %zd..%zd of %zd bytes", start, stop, view.len);
        goto error;
    }
    if (program != NULL) { /* checked once: each step's operands on the stack, one verdict at the end */
        int depth = 0;
        if (program_size % 2 || program_size == 0 || program_size > 2 * PROGRAM_MAX)
            goto bad_program;
        for (Py_ssize_t k = 0; k < program_size; k += 2) {
            const int op = program[k], arg = (unsigned char)program[k + 1];
            if ((op == 0 && arg >= atom_count) || (op == 1 && arg > 1) || op < 0 || op > 4
                || (op >= 2 && arg != 0) || (op == 2 && depth < 1) || (op >= 3 && depth < 2))
                goto bad_program;
            depth += op <= 1 ? 1 : op == 2 ? 0 : -1;
        }
        if (depth != 1)
            goto bad_program;
    }
    if (count > (stop - start) / 2) { /* (a record takes 2 bytes at least: no column sized by a lying count) */
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    codes = PyTuple_New(atom_count);
    if (codes == NULL)
        goto error;
    if (program != NULL) {
        firsts = PyList_New(0);
        lasts = PyList_New(0);
        if (firsts == NULL || lasts == NULL)
            goto error;
    }
    for (Py_ssize_t a = 0; a < atom_count; a++) {
        PyObject *spec = PyTuple_GET_ITEM(atom_specs, a);
        filter_atom *atom = &atoms[a];
        atom->name = -1;
        atom->data = NULL;
        atom->size = 0;
        atom->number = 0;
        atom->op = 0;
        if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 1)
            goto bad_atom;
        atom->kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
        const Py_ssize_t arity = PyTuple_GET_SIZE(spec);
        switch (atom->kind) {
        case 0:
            if (arity != 3)
                goto bad_atom;
            atom->op = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
            atom->number = PyLong_AsLongLong(PyTuple_GET_ITEM(spec, 2));
            if (PyErr_Occurred() || atom->op < 0 || atom->op > 5)
                goto bad_atom;
            break;
        case 1:
            if (arity != 1)
                goto bad_atom;
            break;
        case 2:
            if (arity != 2 || !PyBytes_Check(PyTuple_GET_ITEM(spec, 1)))
                goto bad_atom;
            atom->data = PyBytes_AS_STRING(PyTuple_GET_ITEM(spec, 1));
            atom->size = PyBytes_GET_SIZE(PyTuple_GET_ITEM(spec, 1));
            break;
        case 3: case 4: case 5: case 6: {
            if (arity != (atom->kind == 4 ? 3 : 2) || !PyBytes_Check(PyTuple_GET_ITEM(spec, 1)))
                goto bad_atom;
            PyObject *name = PyTuple_GET_ITEM(spec, 1);
            int n = 0;
            while (n < name_count && !(name_size[n] == PyBytes_GET_SIZE(name)
                                       && memcmp(name_data[n], PyBytes_AS_STRING(name), (size_t)name_size[n]) == 0))
                n++;
            if (n == name_count) {
                if (name_count == FIELDS_MAX_NAMES)
                    goto bad_atom;
                name_data[n] = PyBytes_AS_STRING(name);
                name_size[n] = PyBytes_GET_SIZE(name);
                name_count++;
            }
            atom->name = n;
            if (atom->kind == 4) {
                if (!PyBytes_Check(PyTuple_GET_ITEM(spec, 2)))
                    goto bad_atom;
                atom->data = PyBytes_AS_STRING(PyTuple_GET_ITEM(spec, 2));
                atom->size = PyBytes_GET_SIZE(PyTuple_GET_ITEM(spec, 2));
            }
            break;
        }
        default:
            goto bad_atom;
        }
        atom->out = NULL;
        if (program == NULL) {
            PyObject *column = PyBytes_FromStringAndSize(NULL, count);
            if (column == NULL)
                goto error;
            PyTuple_SET_ITEM(codes, a, column);
            atom->out = PyBytes_AS_STRING(column);
        }
    }
    const uint8_t *buf = (const uint8_t *)view.buf;
    const Py_ssize_t end = stop;
    Py_ssize_t pos = start;
    for (index = 0; index < count && pos < end; index++) {
        int64_t length, header_count, size, timestamp_delta;
        Py_ssize_t record_end, key_size;
        const uint8_t *key_data;
        const int head = skip_to_headers(buf, end, &pos, &record_end, &length, &header_count, &timestamp_delta,
                                         &key_data, &key_size);
        if (head == -1) {
            PyErr_Format(PyExc_ValueError, "record %zd has length %lld", index, (long long)length);
            goto error;
        }
        if (head < 0)
            goto malformed;
        long long timestamp = fixed_timestamp;
        if (fixed == Py_None && __builtin_add_overflow(base_timestamp, (long long)timestamp_delta, &timestamp))
            goto undecided; /* past int64: CEL's conversion of it is not ours to guess */
        const uint8_t *value_data[FIELDS_MAX_NAMES];
        Py_ssize_t value_size[FIELDS_MAX_NAMES];
        for (int n = 0; n < name_count; n++)
            value_size[n] = -2; /* -2: no such header, -1: a null value */
        for (int64_t h = 0; h < header_count; h++) {
            Py_ssize_t header_name_pos, header_name_size;
            if (read_header(buf, end, &pos, record_end, &header_name_pos, &header_name_size, &size) != 0)
                goto malformed;
            int n = 0;
            while (n < name_count && !(name_size[n] == header_name_size
                                       && memcmp(name_data[n], buf + header_name_pos, (size_t)header_name_size) == 0))
                n++;
            if (n < name_count) {
                value_data[n] = buf + pos;
                value_size[n] = (Py_ssize_t)size;
            } else {
                for (Py_ssize_t o = 0; o < other_count; o++) {
                    if (other_size[o] == header_name_size
                        && memcmp(other_data[o], buf + header_name_pos, (size_t)header_name_size) == 0) {
                        Py_DECREF(codes);
                        Py_XDECREF(firsts);
                        Py_XDECREF(lasts);
                        PyBuffer_Release(&view);
                        if (program != NULL)
                            return Py_BuildValue("(OOnO)", Py_None, Py_None, (Py_ssize_t)0, Py_True);
                        return Py_BuildValue("(OO)", Py_None, Py_True);
                    }
                }
            }
            if (size > 0)
                pos += (Py_ssize_t)size;
        }
        for (Py_ssize_t a = 0; a < atom_count; a++) {
            const filter_atom *atom = &atoms[a];
            char code = 0;
            Py_ssize_t found = atom->name >= 0 ? value_size[atom->name] : 0;
            switch (atom->kind) {
            case 0:
                switch (atom->op) {
                case 0: code = timestamp < atom->number; break;
                case 1: code = timestamp <= atom->number; break;
                case 2: code = timestamp > atom->number; break;
                case 3: code = timestamp >= atom->number; break;
                case 4: code = timestamp == atom->number; break;
                default: code = timestamp != atom->number; break;
                }
                break;
            case 1:
                code = key_size < 0;
                break;
            case 2:
                code = key_size == atom->size && (key_size == 0 || memcmp(key_data, atom->data, (size_t)key_size) == 0);
                break;
            case 3:
                code = found != -2;
                break;
            case 4:
                code = found == -2 ? 2
                                   : found == atom->size
                                         && (found == 0 || memcmp(value_data[atom->name], atom->data, (size_t)found) == 0);
                break;
            case 5:
                code = found == -2 ? 2 : found == -1;
                break;
            default:
                code = found == -2 ? 2 : 0;
                break;
            }
            if (atom->out != NULL)
                atom->out[index] = code;
            record_codes[a] = code;
        }
        if (program != NULL) {
            int depth = 0;
            for (Py_ssize_t k = 0; k < program_size; k += 2) {
                switch (program[k]) {
                case 0: stack[depth++] = record_codes[(unsigned char)program[k + 1]]; break;
                case 1: stack[depth++] = program[k + 1]; break;
                case 2: stack[depth - 1] = stack[depth - 1] == 2 ? 2 : !stack[depth - 1]; break;
                case 3: depth--; stack[depth - 1] = and3(stack[depth - 1], stack[depth]); break;
                default: depth--; stack[depth - 1] = or3(stack[depth - 1], stack[depth]); break;
                }
            }
            const int verdict = stack[0] == 1;
            errors += stack[0] == 2;
            if (verdict != matching) {
                if (append_offset(verdict ? firsts : lasts, verdict ? base + index : base + index - 1) < 0)
                    goto error;
                matching = verdict;
            }
        }
        pos = record_end;
    }
    if (index < count)
        goto undecided;
    PyBuffer_Release(&view);
    if (program != NULL) {
        Py_DECREF(codes);
        if (matching && append_offset(lasts, base + index - 1) < 0) {
            Py_DECREF(firsts);
            Py_DECREF(lasts);
            return NULL;
        }
        return Py_BuildValue("(NNnO)", firsts, lasts, errors, Py_False);
    }
    return Py_BuildValue("(NO)", codes, Py_False);
bad_program:
    PyErr_SetString(PyExc_ValueError, "a program of unknown steps, or not leaving one verdict");
    goto error;
bad_atom:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "an atom of an unknown kind or shape");
    goto error;
malformed:
    PyErr_Format(PyExc_ValueError, "record %zd is malformed", index);
    goto error;
undecided:
    Py_DECREF(codes);
    Py_XDECREF(firsts);
    Py_XDECREF(lasts);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
error:
    Py_XDECREF(codes);
    Py_XDECREF(firsts);
    Py_XDECREF(lasts);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "walk(buffer, count) -> (min_timestamp_delta, max_timestamp_delta)"},
    {"fields", fields, METH_VARARGS,
     "fields(buffer, start, stop, count, want_key[, names]) -> [(offset_delta, timestamp_delta, key, headers)]"},
    {"header_values", header_values, METH_VARARGS,
     "header_values(buffer, start, stop, count, name, others) -> (values, other_found)"},
    {"has_header", has_header, METH_VARARGS, "has_header(buffer, start, stop, count, names) -> bool"},
    {"pack_tiled", pack_tiled, METH_VARARGS, "pack_tiled(firsts, lasts, fields) -> bytes"},
    {"header_runs", header_runs, METH_VARARGS,
     "header_runs(buffer, start, stop, count, name, others, verdicts, base) -> (firsts, lasts, failed, other_found) | None"},
    {"filter_atoms", filter_atoms, METH_VARARGS,
     "filter_atoms(buffer, start, stop, count, base_timestamp, log_append_timestamp, atoms, others[, program, base])"
     " -> (codes, other_found) | (firsts, lasts, errors, other_found) | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_recordwalk", "The record walk of produce validation.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__recordwalk(void)
{
    PyObject *m = PyModule_Create(&module);
    /* header_runs' verdict of a value the filter failed on (also: header_runs counts such records) */
    if (m != NULL && PyModule_AddIntConstant(m, "HEADER_RUNS_FAILED", HEADER_RUNS_FAILED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
