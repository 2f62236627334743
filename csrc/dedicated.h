/* DedicatedConnection: one blocking connection held by one owner outside
 * the pool, for the sync API's subscribers (pub/sub). A subscribed
 * connection receives replies nobody asked for, so it can never go back to
 * the pool; its owner sends commands and reads replies one at a time, with a
 * timeout on the wait for the next one.
 *
 * Locking rule: as conn.h. One thread at a time sends or reads; close() may
 * come from any thread and only shuts the socket down while another thread
 * is inside a call (that call then fails and frees it).
 */
#ifndef RC_DEDICATED_H
#define RC_DEDICATED_H

#include <Python.h>

#include "conn.h"
#include "state.h"

extern PyType_Spec rc_dedicated_spec;

/* Wraps an open connection, which the object then owns (freed on close or
 * dealloc). New reference, or NULL with an exception set (c is freed). */
PyObject *rc_dedicated_new(rc_state *st, rc_conn *c);

#endif
