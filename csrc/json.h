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

/* Deeper nesting than this is refused both ways (and catches cycles when
 * encoding) long before the C stack is at risk. */
#define RC_JSON_MAX_DEPTH 512

/* Append the JSON form of obj to out. Returns 0, or -1 with an exception of
 * error_type set whose message names the offending type and where in the
 * value it sits; out may then hold a partial value the caller must drop. */
int rc_json_encode(rc_buf *out, PyObject *obj, PyObject *error_type);

/* Decode exactly one JSON value from p[0..n). Returns a new reference, or
 * NULL with an exception of error_type set that gives the byte offset. */
PyObject *rc_json_decode(const char *p, size_t n, PyObject *error_type);

#endif
