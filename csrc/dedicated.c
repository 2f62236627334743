/* The dedicated connection type; see dedicated.h. */
#include "dedicated.h"

#include <limits.h>
#include <math.h>
#include <sys/socket.h>

#include "cmd.h"

typedef struct {
    PyObject_HEAD
    rc_state *state;
    rc_conn *conn; /* NULL once closed */
    /* Set while a thread is inside send() or read() with the GIL released:
     * close() then only shuts the socket down, and that call frees it. */
    int busy;
    int closing;
} rc_dedicated;

PyObject *rc_dedicated_new(rc_state *st, rc_conn *c)
{
    rc_dedicated *d = PyObject_New(rc_dedicated, st->DedicatedType);

    if (d == NULL) {
        rc_conn_free(c);
        return NULL;
    }
    d->state = st;
    d->conn = c;
    d->busy = 0;
    d->closing = 0;
    return (PyObject *)d;
}

/* The connection, or NULL with ConnectionError (closed, broken, from before
 * a fork) or RuntimeError (another thread is using it) set. */
static rc_conn *usable(rc_dedicated *d)
{
    rc_conn *c = d->conn;

    if (c == NULL || d->closing) {
        PyErr_SetString(d->state->ConnectionError, "the subscriber's connection is closed");
        return NULL;
    }
    if (d->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a subscriber's connection is used from two threads at once; "
                        "use one subscriber per thread");
        return NULL;
    }
    if (c->broken || c->generation != rc_fork_generation) {
        PyErr_SetString(d->state->ConnectionError,
                        c->broken ? "the subscriber's connection broke"
                                  : "the subscriber's connection belongs to the parent process");
        return NULL;
    }
    return c;
}

/* After a call: a close() that came meanwhile takes effect now. */
static void done(rc_dedicated *d)
{
    d->busy = 0;
    if (d->closing && d->conn != NULL) {
        rc_conn_free(d->conn);
        d->conn = NULL;
    }
}

/* send(*args): sends one raw command (arguments as for execute_command). */
static PyObject *dedicated_send(rc_dedicated *d, PyObject *const *args, Py_ssize_t nargs)
{
    rc_conn *c = usable(d);
    int rc;

    if (c == NULL)
        return NULL;
    c->out.len = 0;
    if (rc_cmd_raw(&c->out, args, nargs) < 0) {
        c->out.len = 0;
        return NULL;
    }
    d->busy = 1;
    rc_conn_begin(c);
    rc = rc_conn_flush(c, d->state);
    done(d);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* read(timeout): the next reply (bulk strings as bytes), or MISSING when
 * none began within timeout seconds (None: wait as long as it takes). Once
 * a reply begins, the rest of it must come within socket_timeout. */
static PyObject *dedicated_read(rc_dedicated *d, PyObject *timeout)
{
    rc_conn *c = usable(d);
    PyObject *reply = NULL;
    int wait_ms = -1, ready;
    rc_reply_status status;

    if (c == NULL)
        return NULL;
    if (timeout != Py_None) {
        double seconds = PyFloat_AsDouble(timeout);
        if (seconds == -1.0 && PyErr_Occurred())
            return NULL;
        if (!(seconds >= 0) || seconds > 2.0e6) {
            PyErr_Format(PyExc_ValueError,
                         "timeout must be a number of seconds >= 0 (up to 2e6) or None, got %R",
                         timeout);
            return NULL;
        }
        wait_ms = (int)ceil(seconds * 1000.0);
    }
    d->busy = 1;
    ready = rc_conn_wait_readable(c, wait_ms, d->state);
    if (ready > 0 && !d->closing) {
        rc_conn_begin(c);
        status = rc_conn_read(c, NULL, &reply, d->state);
        if (status != RC_REPLY_READY) {
            Py_CLEAR(reply);
            c->broken = 1;
        }
    } else if (ready == 0 && !d->closing) {
        reply = Py_NewRef(d->state->missing);
    } else if (ready >= 0) {
        PyErr_SetString(d->state->ConnectionError, "the subscriber's connection was closed");
    }
    if (reply == NULL && d->closing && !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        PyErr_Clear();
        PyErr_SetString(d->state->ConnectionError, "the subscriber's connection was closed");
    }
    done(d);
    return reply;
}

/* close(): closes the socket (bare close, no QUIT); from another thread
 * while one is inside read(), shuts it down so that read() returns. */
static PyObject *dedicated_close(rc_dedicated *d, PyObject *unused)
{
    (void)unused;
    if (d->conn == NULL)
        Py_RETURN_NONE;
    if (d->busy) {
        d->closing = 1;
        if (d->conn->fd >= 0 && d->conn->generation == rc_fork_generation)
            (void)shutdown(d->conn->fd, SHUT_RDWR); /* wakes the reader; it frees */
        Py_RETURN_NONE;
    }
    rc_conn_free(d->conn);
    d->conn = NULL;
    Py_RETURN_NONE;
}

/* _interrupt(): shuts the socket down (any thread): the owner's next or
 * current read() fails, and the owner reconnects (a Sentinel failover). */
static PyObject *dedicated_interrupt(rc_dedicated *d, PyObject *unused)
{
    (void)unused;
    if (d->conn != NULL && d->conn->fd >= 0 && d->conn->generation == rc_fork_generation)
        (void)shutdown(d->conn->fd, SHUT_RDWR);
    Py_RETURN_NONE;
}

static PyObject *dedicated_get_closed(rc_dedicated *d, void *unused)
{
    (void)unused;
    return PyBool_FromLong(d->conn == NULL || d->closing || d->conn->broken);
}

static PyObject *dedicated_get_fileno(rc_dedicated *d, void *unused)
{
    (void)unused;
    return PyLong_FromLong(d->conn != NULL ? d->conn->fd : -1);
}

static void dedicated_dealloc(rc_dedicated *d)
{
    PyTypeObject *tp = Py_TYPE(d);

    /* No I/O here: the socket is closed, never written to. */
    rc_conn_free(d->conn);
    d->conn = NULL;
    tp->tp_free((PyObject *)d);
    Py_DECREF(tp);
}

static PyMethodDef dedicated_methods[] = {
    {"send", (PyCFunction)(void (*)(void))dedicated_send, METH_FASTCALL,
     "send(*args): send one raw command."},
    {"read", (PyCFunction)dedicated_read, METH_O,
     "read(timeout) -> the next reply, or MISSING when none began within timeout seconds."},
    {"close", (PyCFunction)dedicated_close, METH_NOARGS, "Close the connection."},
    {"_interrupt", (PyCFunction)dedicated_interrupt, METH_NOARGS,
     "Shut the socket down so that the owner's read fails (any thread)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef dedicated_getset[] = {
    {"closed", (getter)dedicated_get_closed, NULL, NULL, NULL},
    {"fileno", (getter)dedicated_get_fileno, NULL, "The socket, for select() (-1: closed).",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot dedicated_slots[] = {
    {Py_tp_dealloc, dedicated_dealloc},
    {Py_tp_methods, dedicated_methods},
    {Py_tp_getset, dedicated_getset},
    {Py_tp_doc, "A blocking connection outside the pool, for a subscriber (internal)."},
    {0, NULL},
};

PyType_Spec rc_dedicated_spec = {
    .name = "redis_cache._core.DedicatedConnection",
    .basicsize = sizeof(rc_dedicated),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = dedicated_slots,
};
