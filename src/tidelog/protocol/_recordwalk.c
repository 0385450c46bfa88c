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
    if (!PyTuple_Check(others) || PyTuple_GET_SIZE(others) > FIELDS_MAX_NAMES) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "others must be a tuple of at most 16 bytes");
        return NULL;
    }
    const Py_ssize_t other_count = PyTuple_GET_SIZE(others);
    for (Py_ssize_t n = 0; n < other_count; n++) {
        char *data;
        if (PyBytes_AsStringAndSize(PyTuple_GET_ITEM(others, n), &data, &other_size[n]) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        other_data[n] = data;
    }
    if (start < 0 || stop > view.len || start > stop)
        FIELDS_FAIL("bad bounds %zd..%zd of %zd bytes", start, stop, view.len);
    const uint8_t *buf = (const uint8_t *)view.buf;
    const Py_ssize_t end = stop;
    Py_ssize_t pos = start;
    int other_found = 0;
    int64_t length, skipped, size, header_count;
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
        FIELDS_READ(skipped, 10); /* timestamp delta */
        FIELDS_READ(skipped, 5);  /* offset delta */
        for (int field = 0; field < 2; field++) { /* key, value */
            FIELDS_READ(size, 5);
            if (size < -1 || size > record_end - pos)
                FIELDS_FAIL("record %zd is malformed", index);
            if (size > 0)
                pos += (Py_ssize_t)size;
        }
        FIELDS_READ(header_count, 5);
        if (header_count < 0)
            FIELDS_FAIL("record %zd is malformed", index);
        PyObject *value = Py_False;
        Py_INCREF(value);
        for (int64_t h = 0; h < header_count; h++) {
            if (read_varint(buf, end, &pos, 5, &size) != WALK_OK || size < 0 || size > record_end - pos)
                goto malformed;
            const Py_ssize_t name_pos = pos, name_size = (Py_ssize_t)size;
            pos += name_size;
            if (read_varint(buf, end, &pos, 5, &size) != WALK_OK || size < -1 || size > record_end - pos)
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

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "walk(buffer, count) -> (min_timestamp_delta, max_timestamp_delta)"},
    {"fields", fields, METH_VARARGS,
     "fields(buffer, start, stop, count, want_key[, names]) -> [(offset_delta, timestamp_delta, key, headers)]"},
    {"header_values", header_values, METH_VARARGS,
     "header_values(buffer, start, stop, count, name, others) -> (values, other_found)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_recordwalk", "The record walk of produce validation.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__recordwalk(void)
{
    return PyModule_Create(&module);
}
