/* A request: what a cache method asks its client's transport to carry. The
 * methods (client.c) describe it; the transports (sync_client.c, mux.c)
 * encode it into a connection's buffer, send it, check and collect its
 * replies, and turn them into the caller's result (result.c).
 */
#ifndef RC_REQUEST_H
#define RC_REQUEST_H

#include <Python.h>

#include "buf.h"
#include "cmd.h"
#include "metrics.h"
#include "result.h"

/* Writes a request's command(s) into b. Runs no Python code: it is called
 * while a command is half-written into a buffer other callers may share (see
 * the rule at the top of mux.c). Returns 0, or -1 with an exception set (and
 * whatever it wrote still in b, for the caller to cut off). */
typedef int (*rc_encode_fn)(const rc_keyspace *ks, rc_buf *b, void *arg);

typedef struct rc_request {
    const char *command; /* the command's name, for error messages */
    rc_encode_fn encode;
    void *arg;
    Py_ssize_t replies;    /* how many replies the encoded commands get */
    rc_result_kind kind;   /* what the replies mean (result.h) */
    const rc_codec *codec; /* decodes bulk replies; NULL: bytes */
    PyObject *extra;       /* see rc_result_kind */
    /* Non-zero when sending the request twice does no harm, so it may be
     * sent again on a fresh connection after the first one turned out dead
     * before any reply came back (DESIGN.md's retry rule). */
    int retry_safe;
    /* Non-zero to send ASKING first, on the same connection (a cluster
     * node's ASK redirect): its +OK is read and dropped before the
     * request's own replies. */
    int asking;
    /* Which histogram the request's latency goes to (metrics.h); a request
     * that names none counts as RC_OP_OTHER. */
    rc_op op;
} rc_request;

#endif
