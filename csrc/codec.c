/* Value serializers; see codec.h. */
#include "codec.h"

#include "json.h"
#include "resp.h"

int rc_codec_init(rc_codec *codec, PyObject *serializer, rc_state *st)
{
    codec->kind = RC_CODEC_JSON;
    codec->dumps = NULL;
    codec->loads = NULL;
    if (PyUnicode_Check(serializer)) {
        if (PyUnicode_CompareWithASCIIString(serializer, "json") == 0)
            return 0;
        if (PyUnicode_CompareWithASCIIString(serializer, "raw") == 0) {
            codec->kind = RC_CODEC_RAW;
            return 0;
        }
        PyErr_Format(st->ConfigurationError,
                     "unknown serializer %R: use \"json\", \"raw\" or an object with "
                     "dumps() and loads() methods",
                     serializer);
        return -1;
    }
    codec->dumps = PyObject_GetAttrString(serializer, "dumps");
    codec->loads = PyObject_GetAttrString(serializer, "loads");
    if (codec->dumps == NULL || codec->loads == NULL || !PyCallable_Check(codec->dumps) ||
        !PyCallable_Check(codec->loads)) {
        rc_codec_clear(codec);
        PyErr_Clear();
        PyErr_Format(st->ConfigurationError,
                     "serializer must be \"json\", \"raw\" or an object with callable dumps() "
                     "and loads(); got %.100s",
                     Py_TYPE(serializer)->tp_name);
        return -1;
    }
    codec->kind = RC_CODEC_CUSTOM;
    return 0;
}

void rc_codec_clear(rc_codec *codec)
{
    Py_CLEAR(codec->dumps);
    Py_CLEAR(codec->loads);
}

/* Raises error_type with "what: <pending exception>", chained to the pending
 * exception so its traceback is kept. */
static void raise_from_pending(PyObject *error_type, const char *what)
{
    PyObject *cause_type, *cause, *tb, *exc_type, *exc, *exc_tb;

    PyErr_Fetch(&cause_type, &cause, &tb);
    PyErr_NormalizeException(&cause_type, &cause, &tb);
    PyErr_Format(error_type, "%s: %S", what, cause);
    PyErr_Fetch(&exc_type, &exc, &exc_tb);
    PyErr_NormalizeException(&exc_type, &exc, &exc_tb);
    if (cause != NULL)
        PyException_SetCause(exc, Py_NewRef(cause));
    PyErr_Restore(exc_type, exc, exc_tb);
    Py_XDECREF(cause_type);
    Py_XDECREF(cause);
    Py_XDECREF(tb);
}

/* Appends a bytes-like or str value verbatim. */
static int encode_bytes_like(rc_buf *out, PyObject *value, rc_state *st, const char *who)
{
    Py_buffer view;
    int rc;

    if (PyUnicode_Check(value)) {
        Py_ssize_t n;
        const char *p = PyUnicode_AsUTF8AndSize(value, &n);
        if (p == NULL) {
            raise_from_pending(st->SerializationError, "cannot store a str with no UTF-8 form");
            return -1;
        }
        return rc_resp_bulk(out, p, (size_t)n) < 0 ? (PyErr_NoMemory(), -1) : 0;
    }
    if (!PyObject_CheckBuffer(value)) {
        PyErr_Format(st->SerializationError, "%s must give bytes or str; got '%.100s'", who,
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    if (PyObject_GetBuffer(value, &view, PyBUF_CONTIG_RO) < 0)
        return -1;
    rc = rc_resp_bulk(out, view.buf, (size_t)view.len) < 0 ? (PyErr_NoMemory(), -1) : 0;
    PyBuffer_Release(&view);
    return rc;
}

PyObject *rc_codec_prepare(const rc_codec *codec, PyObject *value, rc_state *st)
{
    PyObject *encoded;

    if (codec->kind != RC_CODEC_CUSTOM)
        return Py_NewRef(value);
    encoded = PyObject_CallOneArg(codec->dumps, value);
    if (encoded == NULL)
        raise_from_pending(st->SerializationError, "the serializer's dumps() failed");
    return encoded;
}

int rc_codec_write(const rc_codec *codec, rc_buf *out, PyObject *prepared, rc_state *st)
{
    size_t mark;

    switch (codec->kind) {
    case RC_CODEC_JSON:
        if (rc_resp_bulk_open(out, &mark) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        if (rc_json_encode(out, prepared, st) < 0)
            return -1;
        if (rc_resp_bulk_close(out, mark) < 0) {
            PyErr_Format(st->SerializationError, "value too large to store (%zu bytes)",
                         out->len - mark);
            return -1;
        }
        return 0;
    case RC_CODEC_RAW:
        return encode_bytes_like(out, prepared, st, "serializer=\"raw\"");
    case RC_CODEC_CUSTOM:
        return encode_bytes_like(out, prepared, st, "the serializer's dumps()");
    }
    Py_UNREACHABLE();
}

PyObject *rc_codec_decode(const rc_codec *codec, const char *p, size_t n, rc_state *st)
{
    PyObject *raw, *value;

    switch (codec->kind) {
    case RC_CODEC_JSON:
        return rc_json_decode(p, n, st);
    case RC_CODEC_RAW:
        return PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    case RC_CODEC_CUSTOM:
        raw = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
        if (raw == NULL)
            return NULL;
        value = PyObject_CallOneArg(codec->loads, raw);
        Py_DECREF(raw);
        if (value == NULL)
            raise_from_pending(st->SerializationError, "the serializer's loads() failed");
        return value;
    }
    Py_UNREACHABLE();
}
