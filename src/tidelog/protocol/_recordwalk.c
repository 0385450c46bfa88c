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

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "walk(buffer, count) -> (min_timestamp_delta, max_timestamp_delta)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_recordwalk", "The record walk of produce validation.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__recordwalk(void)
{
    return PyModule_Create(&module);
}
