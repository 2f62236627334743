/* The async engine: one non-blocking connection shared by every coroutine of
 * an event loop, with automatic pipelining.
 *
 * A command is encoded into the connection's output buffer and a request slot
 * (the future to complete, and how to turn the reply into its result) joins
 * the FIFO. All commands issued during one loop iteration leave in one
 * write; each read feeds hiredis and completes every reply it holds, in FIFO
 * order. A slot is never reused: a cancelled request's reply is still read and
 * then dropped, so no reply can reach the wrong caller.
 *
 * Everything here runs on the event loop's thread with the GIL held; the
 * syscalls are non-blocking, so the GIL is never released.
 */
#ifndef RC_MUX_H
#define RC_MUX_H

#include <Python.h>

#include "buf.h"
#include "codec.h"
#include "result.h"
#include "state.h"

extern PyType_Spec rc_mux_spec;

typedef struct rc_mux rc_mux;

/* Creates a multiplexer bound to loop, not yet attached to a socket: commands
 * queue until rc_mux's attach() is called from Python. New reference. */
rc_mux *rc_mux_new(rc_state *st, PyObject *loop, int timeout_ms, Py_ssize_t max_in_flight);

/* Non-zero when the multiplexer failed or was closed: replace it. */
int rc_mux_is_closed(rc_mux *m);
PyObject *rc_mux_loop(rc_mux *m);

/* The buffer to encode the next command into. */
rc_buf *rc_mux_out(rc_mux *m);

/* Queues the command(s) encoded since `mark` (the buffer's length before
 * encoding) as one request expecting `replies` replies, and returns the
 * future that completes with its result. codec decodes bulk strings (NULL:
 * bytes) and belongs to codec_owner, which the request keeps alive: the
 * loop may outlive a client dropped with requests in flight. extra is kept
 * for the result (the default of a GET, the keys of an MGET). On failure
 * returns NULL with an exception set and the encoded bytes dropped. */
PyObject *rc_mux_submit(rc_mux *m, size_t mark, Py_ssize_t replies, rc_result_kind kind,
                        const rc_codec *codec, PyObject *codec_owner, PyObject *extra);

/* Drops what was encoded since mark (the command failed to encode). */
void rc_mux_discard(rc_mux *m, size_t mark);

#endif
