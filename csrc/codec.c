/* Value serializers; see codec.h. */
#include "codec.h"

#include "json.h"
#include "resp.h"

static int init_compression(rc_codec *codec, const rc_compress_options *o, rc_state *st)
{
    codec->compress = RC_COMPRESS_NONE;
    codec->compress_level = o->level;
    codec->compress_threshold = o->threshold < 0 ? 0 : (size_t)o->threshold;
    codec->max_decompressed = (size_t)o->max_decompressed;
    if (o->threshold < 0 || o->max_decompressed < 1) {
        PyErr_SetString(st->ConfigurationError, "compression_threshold must be >= 0 and "
                                                "max_decompressed_size >= 1");
        return -1;
    }
    if (o->compression == Py_None)
        return 0;
    if (PyUnicode_Check(o->compression) &&
        PyUnicode_CompareWithASCIIString(o->compression, "zlib") == 0) {
        codec->compress = RC_COMPRESS_ZLIB;
        if (o->level < -1 || o->level > 9)
            goto bad_level;
        return 0;
    }
    if (PyUnicode_Check(o->compression) &&
        PyUnicode_CompareWithASCIIString(o->compression, "zstd") == 0) {
        codec->compress = RC_COMPRESS_ZSTD;
        if (o->level < -1 || o->level > 22)
            goto bad_level;
        return 0;
    }
    PyErr_Format(st->ConfigurationError, "unknown compression %R: use None, \"zlib\" or \"zstd\"",
                 o->compression);
    return -1;
bad_level:
    PyErr_Format(st->ConfigurationError,
                 "compression_level %d is out of range (zlib: 0-9, zstd: 1-22, -1: default)",
                 o->level);
    return -1;
}

int rc_codec_init(rc_codec *codec, PyObject *serializer, const rc_compress_options *compress,
                  rc_state *st)
{
    codec->kind = RC_CODEC_JSON;
    codec->dumps = NULL;
    codec->loads = NULL;
    codec->json_flags = compress->stringify_keys ? RC_JSON_STRINGIFY_KEYS : 0;
    if (init_compression(codec, compress, st) < 0)
        return -1;
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

/* A prepared raw or custom value: exact bytes or a str (rc_codec_prepare
 * made it one), read without running any Python code. */
static int bytes_of(PyObject *value, const char **p, Py_ssize_t *n, rc_state *st)
{
    if (PyBytes_CheckExact(value)) {
        *p = PyBytes_AS_STRING(value);
        *n = PyBytes_GET_SIZE(value);
        return 0;
    }
    *p = PyUnicode_Check(value) ? PyUnicode_AsUTF8AndSize(value, n) : NULL;
    if (*p == NULL) {
        if (PyErr_Occurred())
            PyErr_Clear();
        PyErr_SetString(st->SerializationError, "cannot store a str with no UTF-8 form");
        return -1;
    }
    return 0;
}

/* value as exact bytes or a str: what bytes_of reads. Buffer objects
 * (bytearray, memoryview, bytes subclasses) are copied into bytes here,
 * where their buffer code may run. New reference or NULL. */
static PyObject *as_bytes_or_str(PyObject *value, rc_state *st, const char *who)
{
    PyObject *bytes;

    if (PyBytes_CheckExact(value))
        return Py_NewRef(value);
    if (PyUnicode_Check(value)) {
        if (PyUnicode_AsUTF8AndSize(value, NULL) == NULL) {
            raise_from_pending(st->SerializationError, "cannot store a str with no UTF-8 form");
            return NULL;
        }
        return Py_NewRef(value);
    }
    if (!PyObject_CheckBuffer(value)) {
        PyErr_Format(st->SerializationError, "%s must give bytes or str; got '%.100s'", who,
                     Py_TYPE(value)->tp_name);
        return NULL;
    }
    bytes = PyBytes_FromObject(value);
    if (bytes == NULL)
        raise_from_pending(st->SerializationError, "cannot read the value's bytes");
    return bytes;
}

/* The serialized form of a prepared value, appended to out as it is. */
static int serialize(const rc_codec *codec, rc_buf *out, PyObject *prepared, rc_state *st)
{
    const char *p;
    Py_ssize_t n;

    if (codec->kind == RC_CODEC_JSON)
        return rc_json_encode(out, prepared, st, codec->json_flags);
    if (bytes_of(prepared, &p, &n, st) < 0)
        return -1;
    return rc_buf_append(out, p, (size_t)n) < 0 ? (PyErr_NoMemory(), -1) : 0;
}

/* With compression on: serialize to a scratch buffer, then store it
 * compressed (at or above the threshold) or as it is, escaped when it could
 * be mistaken for a compression header. */
static int write_compressed(const rc_codec *codec, rc_buf *out, PyObject *prepared, rc_state *st)
{
    rc_buf plain, packed;
    char err[128];
    int rc = -1;

    rc_buf_init(&plain);
    rc_buf_init(&packed);
    if (serialize(codec, &plain, prepared, st) < 0)
        goto out;
    if (plain.len >= codec->compress_threshold && plain.len > 0) {
        if (rc_compress(codec->compress, codec->compress_level, plain.data, plain.len, &packed, err,
                        sizeof(err)) < 0) {
            PyErr_Format(st->SerializationError, "cannot compress the value: %s", err);
            goto out;
        }
        rc = rc_resp_bulk(out, packed.data, packed.len);
    } else if (rc_is_compressed(plain.data, plain.len) ||
               (plain.len == 1 && (unsigned char)plain.data[0] == RC_COMPRESS_MAGIC)) {
        static const char escape[RC_COMPRESS_HEADER] = {(char)RC_COMPRESS_MAGIC, 'n'};
        rc = rc_resp_bulk2(out, escape, sizeof(escape), plain.data, plain.len);
    } else {
        rc = rc_resp_bulk(out, plain.data ? plain.data : "", plain.len);
    }
    if (rc < 0)
        PyErr_NoMemory();
out:
    rc_buf_free(&plain);
    rc_buf_free(&packed);
    return rc;
}

/* Appends a prepared raw or custom value verbatim, as one bulk string. */
static int encode_bytes_like(rc_buf *out, PyObject *value, rc_state *st)
{
    const char *p;
    Py_ssize_t n;

    if (bytes_of(value, &p, &n, st) < 0)
        return -1;
    return rc_resp_bulk(out, p, (size_t)n) < 0 ? (PyErr_NoMemory(), -1) : 0;
}

PyObject *rc_codec_prepare(const rc_codec *codec, PyObject *value, rc_state *st)
{
    PyObject *encoded;

    PyObject *prepared;

    if (codec->kind == RC_CODEC_JSON)
        return Py_NewRef(value);
    if (codec->kind == RC_CODEC_RAW)
        return as_bytes_or_str(value, st, "serializer=\"raw\"");
    encoded = PyObject_CallOneArg(codec->dumps, value);
    if (encoded == NULL) {
        raise_from_pending(st->SerializationError, "the serializer's dumps() failed");
        return NULL;
    }
    prepared = as_bytes_or_str(encoded, st, "the serializer's dumps()");
    Py_DECREF(encoded);
    return prepared;
}

int rc_codec_write(const rc_codec *codec, rc_buf *out, PyObject *prepared, rc_state *st)
{
    size_t mark;

    if (codec->compress != RC_COMPRESS_NONE)
        return write_compressed(codec, out, prepared, st);
    switch (codec->kind) {
    case RC_CODEC_JSON:
        if (rc_resp_bulk_open(out, &mark) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        if (rc_json_encode(out, prepared, st, codec->json_flags) < 0)
            return -1;
        if (rc_resp_bulk_close(out, mark) < 0) {
            PyErr_Format(st->SerializationError, "value too large to store (%zu bytes)",
                         out->len - mark);
            return -1;
        }
        return 0;
    case RC_CODEC_RAW:
    case RC_CODEC_CUSTOM:
        return encode_bytes_like(out, prepared, st);
    }
    Py_UNREACHABLE();
}

/* Decodes plain bytes (no compression header). */
static PyObject *decode_plain(const rc_codec *codec, const char *p, size_t n, rc_state *st)
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

PyObject *rc_codec_decode(const rc_codec *codec, const char *p, size_t n, rc_state *st)
{
    rc_buf plain;
    char err[128];
    PyObject *value;

    /* A JSON value never starts with the header byte, so JSON caches read
     * compressed values whatever their own setting; raw and custom values
     * could, so only caches with compression on look for it. */
    if (!rc_is_compressed(p, n) ||
        (codec->kind != RC_CODEC_JSON && codec->compress == RC_COMPRESS_NONE))
        return decode_plain(codec, p, n, st);
    if (p[1] == 'n')
        return decode_plain(codec, p + RC_COMPRESS_HEADER, n - RC_COMPRESS_HEADER, st);
    rc_buf_init(&plain);
    if (rc_decompress(p, n, codec->max_decompressed, &plain, err, sizeof(err)) < 0) {
        PyErr_Format(st->SerializationError, "cannot decompress the stored value: %s", err);
        value = NULL;
    } else {
        value = decode_plain(codec, plain.data ? plain.data : "", plain.len, st);
    }
    rc_buf_free(&plain);
    return value;
}
