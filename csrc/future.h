/* The future an async command returns: asyncio's Future protocol, written
 * for the multiplexer's one awaiting caller.
 *
 * Why not asyncio.Future: its done callbacks always go through
 * loop.call_soon, so a reply read in one loop iteration resumes the task
 * that awaits it only in the next one, after another trip through the
 * selector (an epoll_wait and the loop's Python bookkeeping). A caller that
 * awaits one command at a time pays that on every command. This future, when
 * the multiplexer completes it while reading, runs its callbacks (the
 * task's wake-up) itself, right after the read, still inside the loop's
 * reader callback: the task resumes in the same iteration and its next
 * command goes out at once.
 *
 * Everything else follows asyncio.Future: asyncio.isfuture() is true, tasks
 * await it (through the Future-compatible protocol: _asyncio_future_blocking,
 * get_loop, add_done_callback, result), gather/wait/wait_for/shield accept
 * it, cancel() cancels it (the reply is then read and dropped), callbacks run
 * in the context they were added with, and a callback's exception goes to the
 * loop's exception handler. Completed any other way (set_result by hand, a
 * connection failure, a cancel), callbacks are scheduled with call_soon as
 * usual.
 */
#ifndef RC_FUTURE_H
#define RC_FUTURE_H

#include <Python.h>

#include "state.h"

extern PyType_Spec rc_future_spec;

/* A pending future bound to loop. New reference, NULL on error. */
PyObject *rc_future_new(rc_state *st, PyObject *loop);

/* Completes fut with result (exc NULL) or with the exception exc. Returns 1
 * when completed, 0 when fut was already done (a cancelled request: the
 * reply is dropped), -1 on error (out of memory; fut left pending).
 *
 * woken NULL: the callbacks are scheduled with loop.call_soon. Otherwise
 * woken is a list the caller drains with rc_future_wake() once it can let
 * Python code run; fut is appended to it and its callbacks wait for that. */
int rc_future_finish(PyObject *fut, PyObject *result, PyObject *exc, PyObject *woken);

/* Runs the callbacks of every future in woken (emptied), each in its own
 * context. A callback's exception is reported to the loop's exception
 * handler, as call_soon would; KeyboardInterrupt and SystemExit are
 * re-raised (-1), the remaining callbacks first scheduled with call_soon. */
int rc_future_wake(PyObject *woken);

/* Cancels fut as fut.cancel() would. Returns 1 if it was pending. */
int rc_future_cancel(PyObject *fut);

/* Names the multiplexer that reads fut's reply (a reference is kept): a
 * task that awaits fut may then wait for that reply in its own step
 * (rc_mux_wait_in_place) instead of through the loop. Runs no Python code
 * (source is alive: the caller holds it). */
void rc_future_set_source(PyObject *fut, PyObject *source);

#endif
