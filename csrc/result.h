/* What a request's reply means to the caller: shared by the sync client and
 * the async engine so both give the same results for the same replies. */
#ifndef RC_RESULT_H
#define RC_RESULT_H

#include <Python.h>

#include "reply.h"
#include "state.h"

/* How a request's reply(ies) become its result. */
typedef enum rc_result_kind {
    RC_RESULT_RAW,         /* the reply as parsed */
    RC_RESULT_VALUE,       /* GET: the decoded value, or `extra` (the default) on nil */
    RC_RESULT_STORED,      /* SET: True unless a nil came back */
    RC_RESULT_STORED_MANY, /* set_many's SETs: a list of replies; errors: PartialWriteError */
    RC_RESULT_POSITIVE,    /* integer reply > 0, as a bool */
    RC_RESULT_INTEGER,     /* an integer reply, as it is (TTL, INCRBY, UNLINK of many) */
    RC_RESULT_PONG,        /* PING: True on PONG */
    RC_RESULT_MGET,        /* dict of the keys in `extra` (a list or tuple) that were found */
    RC_RESULT_TYPED_VALUE, /* VALUE made an instance of a model: extra is (default, model) */
    RC_RESULT_TYPED_MGET,  /* MGET with each value made a model: extra is (keys, model) */
    RC_RESULT_HANDSHAKE,   /* AUTH / SELECT / CLIENT SETNAME: checked by the connection */
    /* get_many on a cluster node as one GET per key (keys of one node may
     * sit in different slots, which one MGET cannot read): the list of
     * replies made the dict MGET gives; TYPED_: extra is (keys, model). */
    RC_RESULT_VALUES,
    RC_RESULT_TYPED_VALUES,
    RC_RESULT_SUM, /* delete_many on a cluster node, one UNLINK per key: the total */
} rc_result_kind;

/* Non-zero when the replies of a request of this kind are collected into a
 * list, one item per command, however many there are. */
static inline int rc_result_collects(rc_result_kind kind)
{
    return kind == RC_RESULT_STORED_MANY || kind == RC_RESULT_VALUES ||
           kind == RC_RESULT_TYPED_VALUES || kind == RC_RESULT_SUM;
}

/* A list of n None: a list to fill item by item must never show Python a
 * NULL item (gc.get_objects() can reach it meanwhile). New reference. */
PyObject *rc_none_list(Py_ssize_t n);

/* The `extra` of a typed request, (first, model). New reference or NULL. */
PyObject *rc_result_typed_extra(PyObject *first, PyObject *model);

/* Checks that a reply of this shape is one `command` can give for a request
 * of this kind (an error reply always is); reply is NULL when it could not
 * be built (a decoding error), and then only its shape is checked. Returns 0, or -1 with
 * ProtocolError set: the stream cannot be trusted and the connection must be
 * dropped. */
int rc_result_check(rc_state *st, rc_result_kind kind, const rc_reply_shape *shape,
                    PyObject *reply, PyObject *extra, const char *command);

/* Builds the result from one reply, or from the list of replies of
 * set_many's pipelined SETs (STORED_MANY: `extra` is the batch they were
 * written from, and error replies among them make a PartialWriteError).
 * Returns a new reference, or NULL with an exception set. A lone reply must
 * not be an error reply. */
PyObject *rc_result_build(rc_state *st, rc_result_kind kind, PyObject *reply, PyObject *extra);

/* Non-zero when reply is an error reply: reply.c turns those into exception
 * instances (ResponseError, or AuthenticationError for NOAUTH/WRONGPASS), and
 * no other reply is one. */
static inline int rc_is_error_reply(rc_state *st, PyObject *reply)
{
    (void)st;
    return PyExceptionInstance_Check(reply);
}

/* Non-zero for READONLY, LOADING and MASTERDOWN replies: the node is not a
 * working primary (see errors.FailoverError). */
static inline int rc_is_failover_reply(rc_state *st, PyObject *reply)
{
    return reply != NULL && Py_IS_TYPE(reply, (PyTypeObject *)st->FailoverError);
}

#endif
