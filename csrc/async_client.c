/* The async client type; see async_client.h. Its methods are the shared
 * ones (client.c); this file is its transport: picking the multiplexed
 * connection (and asking Python for a new one) and submitting to it. */
#include "async_client.h"

#include <math.h>

#include "client.h"
#include "cmd.h"
#include "conn.h"
#include "metrics.h"
#include "future.h"
#include "mux.h"
#include "state.h"

static const rc_transport async_transport;

/* Most multiplexed connections one client may use. */
#define RC_MAX_MUX 64

typedef struct {
    rc_client base; /* state, keyspace, transport: see client.h */
    rc_mux *muxes[RC_MAX_MUX];
    size_t n_mux, next;
    rc_mux_limits limits;
    int stall_ms; /* see rc_mux_stalled; -1: never reroute */
    /* Connections replaced while draining (their node stepped down, or
     * they stalled): still answering requests, closed with the client. */
    PyObject *retired;
    rc_tls_context *tls; /* NULL: plain TCP */
    int ready, closed;
} AsyncClient;

/* Seconds (None: no limit) to whole milliseconds, rounded up so that a tiny
 * positive timeout is never 0 ms (-1: no limit). */
static int seconds_to_ms(rc_state *st, const char *name, PyObject *value, int *ms)
{
    double seconds;

    if (value == Py_None) {
        *ms = -1;
        return 0;
    }
    seconds = PyFloat_AsDouble(value);
    if (seconds == -1.0 && PyErr_Occurred())
        return -1;
    if (!(seconds >= 0) || seconds > 2.0e6) {
        PyErr_Format(st->ConfigurationError,
                     "%s must be a number of seconds (up to 2e6) or None, got %R", name, value);
        return -1;
    }
    *ms = (int)ceil(seconds * 1000.0);
    return 0;
}

static int AsyncClient_init(AsyncClient *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"namespace",         "default_ttl",
                             "serializer",        "socket_timeout",
                             "max_in_flight",     "connections",
                             "compression",       "compression_threshold",
                             "compression_level", "max_decompressed_size",
                             "stringify_keys",    "connect_wait",
                             "max_key_size",      "tls",
                             "stall_timeout",     "metrics",
                             NULL};
    rc_compress_options compress = RC_COMPRESS_OPTIONS_DEFAULT;
    PyObject *namespace_ = Py_None, *default_ttl = Py_None, *serializer = NULL,
             *socket_timeout = Py_None, *connect_wait = Py_None, *tls = Py_None,
             *stall_timeout = Py_None;
    Py_ssize_t max_in_flight = 4096, connections = 1, max_key_size = RC_DEFAULT_MAX_KEY_SIZE;
    rc_state *st = self->base.state;
    int rc, no_tls, metrics = 1;

    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "the cache is already initialized");
        return -1;
    }
    /* A failed __init__ may be called again: start from nothing. */
    rc_keyspace_clear(&self->base.ks);
    rc_tls_context_unref(self->tls);
    self->tls = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOnnOninpOnOOp:RedisCache", kwlist,
                                     &namespace_, &default_ttl, &serializer, &socket_timeout,
                                     &max_in_flight, &connections, &compress.compression,
                                     &compress.threshold, &compress.level,
                                     &compress.max_decompressed, &compress.stringify_keys,
                                     &connect_wait, &max_key_size, &tls, &stall_timeout,
                                     &metrics))
        return -1;
    if (connections < 1 || connections > RC_MAX_MUX || max_in_flight < 1) {
        PyErr_Format(st->ConfigurationError, "connections must be 1-%d and max_in_flight >= 1",
                     RC_MAX_MUX);
        return -1;
    }
    if (seconds_to_ms(st, "socket_timeout", socket_timeout, &self->limits.timeout_ms) < 0 ||
        seconds_to_ms(st, "connect_wait", connect_wait, &self->limits.connect_wait_ms) < 0 ||
        seconds_to_ms(st, "stall_timeout", stall_timeout, &self->stall_ms) < 0)
        return -1;
    if (self->stall_ms == 0) {
        PyErr_SetString(st->ConfigurationError,
                        "stall_timeout must be a positive number of seconds or None");
        return -1;
    }
    if (self->limits.timeout_ms == 0) {
        PyErr_SetString(st->ConfigurationError,
                        "socket_timeout must be a positive number of seconds or None, got 0");
        return -1;
    }
    if (serializer == NULL)
        serializer = PyUnicode_FromString("json");
    else
        Py_INCREF(serializer);
    if (serializer == NULL)
        return -1;
    rc = rc_keyspace_init(&self->base.ks, namespace_, default_ttl, serializer, &compress,
                          max_key_size, st);
    Py_DECREF(serializer);
    if (rc < 0)
        return -1;
    self->tls = rc_client_tls_context(st, tls, &no_tls);
    if (self->tls == NULL && !no_tls)
        return -1;
    if (rc_client_metrics_init(&self->base, metrics) < 0)
        return -1;
    self->n_mux = (size_t)connections;
    self->limits.max_in_flight = max_in_flight;
    self->ready = 1;
    return 0;
}

static PyObject *AsyncClient_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    rc_state *st = rc_state_of_type(type);
    AsyncClient *self;

    (void)args;
    (void)kwargs;
    if (st == NULL)
        return NULL;
    self = (AsyncClient *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->base.state = st;
        self->base.transport = &async_transport;
    }
    return (PyObject *)self;
}

static int AsyncClient_traverse(AsyncClient *self, visitproc visit, void *arg)
{
    size_t i;

    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->base.ks.codec.dumps);
    Py_VISIT(self->base.ks.codec.loads);
    for (i = 0; i < RC_MAX_MUX; i++)
        Py_VISIT((PyObject *)self->muxes[i]);
    Py_VISIT(self->retired);
    return 0;
}

static int AsyncClient_clear(AsyncClient *self)
{
    size_t i;

    rc_codec_clear(&self->base.ks.codec);
    for (i = 0; i < RC_MAX_MUX; i++)
        Py_CLEAR(self->muxes[i]);
    Py_CLEAR(self->retired);
    return 0;
}

static int has_open_connection(AsyncClient *self)
{
    size_t i;

    for (i = 0; i < self->n_mux; i++)
        if (self->muxes[i] != NULL && !rc_mux_is_closed(self->muxes[i]))
            return 1;
    return 0;
}

static void AsyncClient_finalize(AsyncClient *self)
{
    PyObject *type, *value, *tb;

    if (self->closed || !has_open_connection(self))
        return;
    PyErr_Fetch(&type, &value, &tb);
    if (PyErr_ResourceWarning((PyObject *)self, 1,
                              "unclosed cache %R; await cache.close() or use "
                              "'async with'",
                              self) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    PyErr_Restore(type, value, tb);
}

static void AsyncClient_dealloc(AsyncClient *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return;
    PyObject_GC_UnTrack(self);
    AsyncClient_clear(self);
    rc_keyspace_clear(&self->base.ks);
    rc_tls_context_unref(self->tls);
    rc_metrics_unref(self->base.metrics);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------ dispatch */

/* Keeps a replaced connection that still has requests to answer, so that
 * close() closes it too; forgets those that closed meanwhile. */
static int retire(AsyncClient *self, rc_mux *old)
{
    Py_ssize_t i;

    if (old == NULL || rc_mux_is_closed(old))
        return 0;
    if (self->retired == NULL) {
        self->retired = PyList_New(0);
        if (self->retired == NULL)
            return -1;
    }
    for (i = PyList_GET_SIZE(self->retired) - 1; i >= 0; i--)
        if (rc_mux_is_closed((rc_mux *)PyList_GET_ITEM(self->retired, i)) &&
            PySequence_DelItem(self->retired, i) < 0)
            return -1;
    return PyList_Append(self->retired, (PyObject *)old);
}

/* The connection for the next command: round robin over the multiplexers,
 * asking Python (_open_multiplexer) for a new one when the slot is empty,
 * closed, or bound to another event loop. Borrowed reference or NULL. */
static rc_mux *pick(AsyncClient *self)
{
    PyObject *loop, *fresh;
    size_t i;
    rc_mux *m;
    int rerouted = 0;

    if (!self->ready || self->closed) {
        PyErr_SetString(self->base.state->ConnectionError,
                        self->ready ? "the cache is closed; create a new one"
                                    : "the cache was not initialized (__init__ not called)");
        return NULL;
    }
    loop = rc_running_loop(self->base.state);
    if (loop == NULL)
        return NULL;
    i = self->next++ % self->n_mux;
    m = self->muxes[i];
    if (m != NULL && rc_mux_loop(m) == loop && rc_mux_takes_commands(m)) {
        if (!rc_mux_stalled(m, self->stall_ms)) {
            Py_DECREF(loop);
            return m;
        }
        /* Held up (a paused write, a slow command): it keeps its requests
         * and closes once they are answered; this command and the next
         * take a new connection rather than queue behind. */
        rc_mux_drain(m);
        rerouted = 1;
    }
    fresh = PyObject_CallMethod((PyObject *)self, "_open_multiplexer", "OO", loop,
                                m != NULL ? (PyObject *)m : Py_None);
    Py_DECREF(loop);
    if (fresh == NULL)
        return NULL;
    if (!Py_IS_TYPE(fresh, self->base.state->MuxType)) {
        Py_DECREF(fresh);
        PyErr_SetString(PyExc_TypeError, "_open_multiplexer() must return a Multiplexer");
        return NULL;
    }
    if (rerouted)
        rc_mux_mark_rerouted((rc_mux *)fresh);
    if (retire(self, self->muxes[i]) < 0) {
        Py_DECREF(fresh);
        return NULL;
    }
    Py_XSETREF(self->muxes[i], (rc_mux *)fresh);
    return (rc_mux *)fresh;
}

/* An already-completed future, for requests that need no round trip. */
static PyObject *done_future(rc_client *self, PyObject *result)
{
    PyObject *loop, *future;

    loop = rc_running_loop(self->state);
    if (loop == NULL)
        return NULL;
    future = rc_future_new(self->state, loop);
    Py_DECREF(loop);
    if (future != NULL && rc_future_finish(future, result, NULL, NULL) < 0)
        Py_CLEAR(future);
    return future;
}

/* The transport: requests join a multiplexed connection's pipeline; the
 * result is a future. A codec, when the request has one, is this client's,
 * so the request keeps the client alive until its reply is decoded. */
static PyObject *async_send(rc_client *base, const rc_request *r)
{
    AsyncClient *self = (AsyncClient *)base;
    rc_mux *m = pick(self);
    PyObject *future;

    if (m == NULL)
        return NULL;
    /* pick() lends m; submitting may run Python code (a GC's finalizers)
     * that has the client replace, and so free, it. */
    Py_INCREF(m);
    future = rc_mux_submit(m, r, &base->ks, r->codec ? (PyObject *)self : NULL);
    Py_DECREF(m);
    return future;
}

static const rc_transport async_transport = {async_send, done_future, 1};

/* _new_multiplexer(loop, dedicated=False): a fresh, not yet attached
 * connection object with this client's limits. A dedicated one (for
 * blocking commands and transactions) has no request timeout: a BLPOP may
 * rightly wait longer than socket_timeout. */
static PyObject *AsyncClient_new_multiplexer(AsyncClient *self, PyObject *const *args,
                                             Py_ssize_t nargs)
{
    rc_mux_limits limits;
    PyObject *on_stale = NULL, *m;
    int dedicated = 0;

    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "_new_multiplexer(loop, dedicated=False)");
        return NULL;
    }
    if (nargs == 2) {
        dedicated = PyObject_IsTrue(args[1]);
        if (dedicated < 0)
            return NULL;
    }
    limits = self->limits;
    if (dedicated)
        limits.timeout_ms = -1;
    /* A shared connection whose node steps down hands its safe requests to
     * the one that replaces it (RedisCache._on_node_stale). */
    if (!dedicated && PyObject_HasAttrString((PyObject *)self, "_on_node_stale")) {
        on_stale = PyWeakref_NewRef((PyObject *)self, NULL);
        if (on_stale == NULL)
            return NULL;
    }
    m = (PyObject *)rc_mux_new(self->base.state, args[0], &limits, self->tls, on_stale,
                               dedicated ? NULL : self->base.metrics);
    Py_XDECREF(on_stale);
    return m;
}

/* _close_connections(): marks the client closed and closes every
 * multiplexer (requests still waiting fail with ConnectionError). */
static PyObject *AsyncClient_close_connections(AsyncClient *self, PyObject *unused)
{
    size_t i;
    PyObject *r;

    (void)unused;
    self->closed = 1;
    for (i = 0; i < RC_MAX_MUX; i++) {
        if (self->muxes[i] == NULL)
            continue;
        r = PyObject_CallMethod((PyObject *)self->muxes[i], "close", NULL);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
        Py_CLEAR(self->muxes[i]);
    }
    while (self->retired != NULL && PyList_GET_SIZE(self->retired) > 0) {
        PyObject *old = Py_NewRef(PyList_GET_ITEM(self->retired, 0));
        if (PySequence_DelItem(self->retired, 0) < 0) {
            Py_DECREF(old);
            return NULL;
        }
        r = PyObject_CallMethod(old, "close", NULL);
        Py_DECREF(old);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

/* _replace_multiplexer(old) -> Multiplexer or None: the connection that
 * takes over from old (draining: its node stepped down) for new commands,
 * opened now through _open_multiplexer; None when old is no longer one of
 * this client's or the client is closed. */
static PyObject *AsyncClient_replace_multiplexer(AsyncClient *self, PyObject *old)
{
    size_t i;
    PyObject *fresh;

    if (!Py_IS_TYPE(old, self->base.state->MuxType)) {
        PyErr_SetString(PyExc_TypeError, "_replace_multiplexer(multiplexer)");
        return NULL;
    }
    for (i = 0; i < self->n_mux; i++)
        if ((PyObject *)self->muxes[i] == old)
            break;
    if (i == self->n_mux || self->closed || !self->ready)
        Py_RETURN_NONE;
    fresh = PyObject_CallMethod((PyObject *)self, "_open_multiplexer", "OO",
                                rc_mux_loop((rc_mux *)old), old);
    if (fresh == NULL)
        return NULL;
    if (!Py_IS_TYPE(fresh, self->base.state->MuxType)) {
        Py_DECREF(fresh);
        PyErr_SetString(PyExc_TypeError, "_open_multiplexer() must return a Multiplexer");
        return NULL;
    }
    if (retire(self, self->muxes[i]) < 0) {
        Py_DECREF(fresh);
        return NULL;
    }
    Py_XSETREF(self->muxes[i], (rc_mux *)Py_NewRef(fresh));
    return fresh;
}

/* _drain_connections(): the node may have changed (Sentinel announced a
 * failover): every connection takes no new command and closes once its
 * replies are in; the next command opens a new one, which finds the
 * primary. */
static PyObject *AsyncClient_drain_connections(AsyncClient *self, PyObject *unused)
{
    size_t i;

    (void)unused;
    for (i = 0; i < RC_MAX_MUX; i++)
        if (self->muxes[i] != NULL)
            rc_mux_drain(self->muxes[i]);
    Py_RETURN_NONE;
}

static PyObject *AsyncClient_get_closed(AsyncClient *self, void *unused)
{
    (void)unused;
    return PyBool_FromLong(!self->ready || self->closed);
}

static PyObject *AsyncClient_get_retired(AsyncClient *self, void *unused)
{
    (void)unused;
    return self->retired != NULL ? PySequence_List(self->retired) : PyList_New(0);
}

static PyObject *AsyncClient_get_multiplexers(AsyncClient *self, void *unused)
{
    PyObject *list = PyList_New(0);
    size_t i;

    (void)unused;
    if (list == NULL)
        return NULL;
    for (i = 0; i < self->n_mux; i++) {
        if (self->muxes[i] != NULL && PyList_Append(list, (PyObject *)self->muxes[i]) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

/* _metrics() -> dict: a snapshot of the counters (metrics.h), or None when
 * the cache was made with metrics=False. */
static PyObject *AsyncClient_metrics(AsyncClient *self, PyObject *unused)
{
    (void)unused;
    if (self->base.metrics == NULL)
        Py_RETURN_NONE;
    return rc_metrics_snapshot(self->base.metrics, NULL);
}

static PyMethodDef AsyncClient_methods[] = {
    RC_CLIENT_METHOD_DEFS,
    {"_new_multiplexer", (PyCFunction)(void (*)(void))AsyncClient_new_multiplexer, METH_FASTCALL,
     NULL},
    {"_close_connections", (PyCFunction)AsyncClient_close_connections, METH_NOARGS, NULL},
    {"_replace_multiplexer", (PyCFunction)AsyncClient_replace_multiplexer, METH_O, NULL},
    {"_drain_connections", (PyCFunction)AsyncClient_drain_connections, METH_NOARGS, NULL},
    {"_metrics", (PyCFunction)AsyncClient_metrics, METH_NOARGS,
     "_metrics() -> dict | None: the client's counters and latency histograms."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef AsyncClient_getset[] = {
    {"closed", (getter)AsyncClient_get_closed, NULL, "True once close() was called.", NULL},
    {"_key_prefix", (getter)rc_client_key_prefix, NULL, NULL, NULL},
    {"_multiplexers", (getter)AsyncClient_get_multiplexers, NULL, NULL, NULL},
    {"_retired_multiplexers", (getter)AsyncClient_get_retired, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot AsyncClient_slots[] = {
    {Py_tp_new, AsyncClient_new},
    {Py_tp_init, AsyncClient_init},
    {Py_tp_dealloc, AsyncClient_dealloc},
    {Py_tp_finalize, AsyncClient_finalize},
    {Py_tp_traverse, AsyncClient_traverse},
    {Py_tp_clear, AsyncClient_clear},
    {Py_tp_methods, AsyncClient_methods},
    {Py_tp_getset, AsyncClient_getset},
    {Py_tp_doc, "The async cache client's C core; use redis_cache.RedisCache."},
    {0, NULL},
};

PyType_Spec rc_async_client_spec = {
    .name = "redis_cache._core.AsyncClient",
    .basicsize = sizeof(AsyncClient),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = AsyncClient_slots,
};
