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
#include "metrics.h"
#include "request.h"
#include "state.h"
#include "tls.h"

extern PyType_Spec rc_mux_spec;

typedef struct rc_mux rc_mux;

/* How a multiplexer waits: timeout_ms for a reply once a request is on the
 * wire (-1: forever), connect_wait_ms for a connection while none is up
 * (connecting, or reconnecting after failed attempts; -1: forever), and at
 * most max_in_flight requests on the wire at once. */
typedef struct rc_mux_limits {
    int timeout_ms;
    int connect_wait_ms;
    Py_ssize_t max_in_flight;
} rc_mux_limits;

/* Creates a multiplexer bound to loop, not yet attached to a socket: commands
 * queue until its attach() is called from Python. With tls (the client's
 * context, which the multiplexer keeps a reference to), attach() runs a TLS
 * handshake first. client_ref (or NULL) is a weak reference to the client:
 * when the node answers READONLY / LOADING / MASTERDOWN, its
 * _on_node_stale(multiplexer) returns the multiplexer that takes over (a
 * lone safe command is sent again there). metrics (or NULL) is the block
 * its requests count into; the multiplexer keeps a reference. New
 * reference. */
rc_mux *rc_mux_new(rc_state *st, PyObject *loop, const rc_mux_limits *limits,
                   rc_tls_context *tls, PyObject *client_ref, rc_metrics *metrics);

/* Non-zero when the multiplexer failed or was closed: replace it. */
int rc_mux_is_closed(rc_mux *m);

/* Non-zero when new commands may go here: open and not draining (a node
 * that stepped down; see on_stale in rc_mux_new). */
int rc_mux_takes_commands(rc_mux *m);

/* Takes no new commands from now on, and closes once nothing waits. */
void rc_mux_drain(rc_mux *m);

/* Non-zero when the oldest request has had no answer, and no reply at all
 * came, for stall_ms (-1: never): the connection is held up (a write paused
 * by CLIENT PAUSE WRITE during a failover, a slow command) and new commands
 * had better take another. Not for a connection opened for that reason that
 * has not answered yet (see rc_mux_mark_rerouted). */
int rc_mux_stalled(rc_mux *m, int stall_ms);
void rc_mux_mark_rerouted(rc_mux *m);
PyObject *rc_mux_loop(rc_mux *m);

/* Queues a request: encodes it into the output buffer (ks: the client's
 * keyspace, NULL for raw commands) and returns the future that completes
 * with its result. The request's codec and extra are kept by the slot;
 * codec_owner is what keeps the codec alive (the loop may outlive a client
 * dropped with requests in flight). On failure returns NULL with an
 * exception set, and nothing of the request is queued. */
PyObject *rc_mux_submit(rc_mux *m, const rc_request *r, const rc_keyspace *ks,
                        PyObject *codec_owner);

/* A task awaits fut, still pending, whose reply m is to read (its source,
 * see future.h). When fut's request is the only one m has in flight, no
 * other task is still to be woken by a read (rc_state.wakes_pending) and
 * the loop would do nothing but wait (loopwait.h), waits for the reply here,
 * in the task's step, and reads it: the task goes on without handing fut to
 * the loop and being woken by its callback. Returns 0 (fut done, or left to
 * the loop as usual), -1 with an exception set (KeyboardInterrupt or
 * SystemExit). */
int rc_mux_wait_in_place(rc_mux *m, PyObject *fut);

#endif
