/* Value serializers: how a Python value becomes the bytes stored in Redis
 * and back. JSON (the default) and raw bytes run in C; a custom serializer is
 * any object with dumps() and loads(). All functions need the GIL.
 */
#ifndef RC_CODEC_H
#define RC_CODEC_H

#include <Python.h>

#include "buf.h"
#include "compress.h"
#include "state.h"

/* Largest value decompression may produce unless told otherwise. */
#define RC_DEFAULT_MAX_DECOMPRESSED (64 * 1024 * 1024)

typedef enum rc_codec_kind {
    RC_CODEC_JSON,
    RC_CODEC_RAW,
    RC_CODEC_CUSTOM,
} rc_codec_kind;

typedef struct rc_codec {
    rc_codec_kind kind;
    PyObject *dumps; /* strong references, custom serializers only */
    PyObject *loads;
    /* Values of at least compress_threshold bytes are compressed. */
    rc_compress_kind compress;
    int compress_level; /* -1: the format's default */
    size_t compress_threshold;
    size_t max_decompressed;
    int json_flags; /* RC_JSON_* for the JSON encoder */
} rc_codec;

/* The user's codec settings beyond the serializer, as the constructors take
 * them: compression, and the JSON encoder's options. */
typedef struct rc_compress_options {
    PyObject *compression; /* None, "zlib" or "zstd" */
    Py_ssize_t threshold;
    int level;
    Py_ssize_t max_decompressed;
    int stringify_keys;
} rc_compress_options;

/* clang-format off */
#define RC_COMPRESS_OPTIONS_DEFAULT {Py_None, 1024, -1, RC_DEFAULT_MAX_DECOMPRESSED, 0}
/* clang-format on */

/* Fills codec from the user's `serializer` argument ("json", "raw" or an
 * object with dumps/loads) and compression settings. Returns 0, or -1 with
 * ConfigurationError set. */
int rc_codec_init(rc_codec *codec, PyObject *serializer, const rc_compress_options *compress,
                  rc_state *st);
void rc_codec_clear(rc_codec *codec);

/* Runs the part of encoding that may execute Python code (a custom
 * serializer's dumps(); reading a buffer object, which may be a Python
 * __buffer__ since 3.12), so that it happens before a command is
 * half-written into a buffer that the code could also write to. Raw and
 * custom values come out as exact bytes or a str. Returns a new reference
 * to what rc_codec_write takes, or NULL with SerializationError set. */
PyObject *rc_codec_prepare(const rc_codec *codec, PyObject *value, rc_state *st);

/* Non-zero when rc_codec_prepare does real work: a custom serializer's
 * dumps(), or turning a raw value that is not bytes or str into bytes. */
#define rc_codec_needs_prepare(codec) ((codec)->kind != RC_CODEC_JSON)

/* Appends a prepared value as one RESP bulk string. Runs no Python code.
 * Returns 0, or -1 with SerializationError (or MemoryError) set; out may
 * then hold a partial string, which the caller truncates. */
int rc_codec_write(const rc_codec *codec, rc_buf *out, PyObject *prepared, rc_state *st);

/* Decodes a stored value. New reference, or NULL with SerializationError. */
PyObject *rc_codec_decode(const rc_codec *codec, const char *p, size_t n, rc_state *st);

#endif
