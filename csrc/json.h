/* JSON (RFC 8259) codec between Python objects and UTF-8 bytes.
 *
 * The encoder writes straight into an outgoing rc_buf, so a value becomes part
 * of a RESP command without an intermediate bytes object; the decoder reads
 * the bytes of a reply where they lie in the protocol reader's buffer.
 * Both need the GIL.
 */
#ifndef RC_JSON_H
#define RC_JSON_H

#include <Python.h>

#include "buf.h"
#include "state.h"

/* Deeper nesting than this is refused both ways (and catches cycles when
 * encoding) long before the C stack is at risk. */
#define RC_JSON_MAX_DEPTH 512

/* Decoded object keys up to this length are shared through a small cache in
 * the module state, so a list of 1000 records holds one str per key name. */
#define RC_JSON_KEY_CACHE_MAX_LEN 32

/* Append the JSON form of obj to out. Besides the JSON types (dict with str
 * keys, list, tuple, str, int, float, bool, None) it writes datetime, date
 * and time as ISO 8601 strings, UUID and Decimal as strings, Enum members as
 * their value, set and frozenset as arrays, dataclasses and pydantic models
 * as objects. Returns 0, or -1 with SerializationError set naming the
 * offending type and where in the value it sits; out may then hold a partial
 * value the caller must drop. */
int rc_json_encode(rc_buf *out, PyObject *obj, rc_state *st, int flags);

/* The JSON form of obj as a new bytes object (json_dumps()), written in
 * place with no copy. NULL with SerializationError set on failure. */
PyObject *rc_json_dumps(PyObject *obj, rc_state *st, int flags);

/* rc_json_encode flags. */
/* Dict keys that are not str are written as strings, as Python's json module
 * does (1 -> "1", True -> "true", None -> "null"), and so are keys of the
 * extra types (UUID, Decimal, enum members, datetimes); others are refused. */
#define RC_JSON_STRINGIFY_KEYS 1
/* Run no Python code: at a value that needs some (a datetime's isoformat(),
 * a model's model_dump(), an enum key, ...) stop with the private
 * HooksNeeded exception of the module state, so the caller can encode the
 * value again where that code may run safely (see send_values in
 * client.c). Any other failure stops the same way, with no message built
 * (a message's reprs may be user code too); the second encoding tells it. */
#define RC_JSON_NO_HOOKS 2

/* Decode exactly one JSON value from p[0..n) (strict RFC 8259). Returns a
 * new reference, or NULL with SerializationError set giving the byte offset. */
PyObject *rc_json_decode(const char *p, size_t n, rc_state *st);

/* Checks, once per process, that the encoder may read dicts' entry tables
 * directly (see json_encode.c); it uses PyDict_Next otherwise. Returns 0, or
 * -1 with an exception set (out of memory). */
int rc_json_check_dict_layout(void);

/* 1 when that check passed and the encoder reads entry tables directly, 0
 * when it walks every dict with PyDict_Next. */
int rc_json_dict_walk_direct(void);

/* Loads the classes the encoder recognizes into st. Returns 0 or -1. */
int rc_json_init_types(rc_state *st);

#endif
