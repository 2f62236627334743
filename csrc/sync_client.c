/* The blocking client type; see sync_client.h. Its methods are the shared
 * ones (client.c); this file is its transport and its pool.
 *
 * A request borrows a connection, is encoded into its output buffer (nothing
 * is sent if that fails), sent, and its replies read with the GIL released
 * around the syscalls; then the connection goes back. A request that fails
 * mid-stream leaves the connection marked broken, so the pool closes it
 * rather than lend out a socket with an unread reply in it.
 */
#include "sync_client.h"

#include <math.h>

#include "client.h"
#include "cmd.h"
#include "conn.h"
#include "dedicated.h"
#include "metrics.h"
#include "pool.h"
#include "result.h"
#include "state.h"

typedef struct {
    rc_client base; /* state, keyspace, transport: see client.h */
    rc_pool pool;
    rc_conn_options options;
    /* PyMem_Raw copies behind options' strings. */
    char *host, *unix_path, *username, *password, *client_name;
    int pool_timeout_ms;
    int ready;
    /* With Sentinel: a callable giving the current primary's (host, port). */
    PyObject *resolver;
} SyncClient;

static const rc_transport sync_transport;

/* ------------------------------------------------------------ setup */

static char *copy_string(const char *s)
{
    char *copy;
    size_t n;

    if (s == NULL)
        return NULL;
    n = strlen(s) + 1;
    copy = PyMem_RawMalloc(n);
    if (copy != NULL)
        memcpy(copy, s, n);
    return copy;
}

/* A timeout in seconds (None: none) to milliseconds (-1: none). */
static int timeout_ms(rc_state *st, const char *name, PyObject *value, int *ms)
{
    double seconds;

    if (value == Py_None) {
        *ms = -1;
        return 0;
    }
    seconds = PyFloat_AsDouble(value);
    if (seconds == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(st->ConfigurationError, "%s must be a number of seconds or None, not %.100s",
                     name, Py_TYPE(value)->tp_name);
        return -1;
    }
    if (!(seconds > 0) || seconds > 2.0e6) {
        PyErr_Format(st->ConfigurationError,
                     "%s must be a positive number of seconds (up to 2e6) or None, got %R", name,
                     value);
        return -1;
    }
    *ms = (int)ceil(seconds * 1000.0);
    return 0;
}

/* Frees a string that may be a password, wiping it first. */
static void free_secret(char **s)
{
    if (*s != NULL) {
        volatile char *p = *s;
        while (*p)
            *p++ = 0;
        PyMem_RawFree(*s);
        *s = NULL;
    }
}

/* Frees what SyncClient_init set up, if anything (after a failed init, and
 * at dealloc). */
static void free_settings(SyncClient *self)
{
    rc_keyspace_clear(&self->base.ks);
    Py_CLEAR(self->resolver);
    free_secret(&self->host);
    free_secret(&self->unix_path);
    free_secret(&self->username);
    free_secret(&self->password);
    free_secret(&self->client_name);
    if (rc_pool_ready(&self->pool)) {
        rc_pool_close(&self->pool);
        rc_pool_free(&self->pool);
    }
    rc_tls_context_unref(self->options.tls);
    self->options.tls = NULL;
    rc_metrics_unref(self->base.metrics);
    self->base.metrics = NULL;
}

/* A wait in seconds (None: no limit; 0: none) to milliseconds (-1: no limit). */
static int wait_ms(rc_state *st, const char *name, PyObject *value, int *ms)
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
                     "%s must be a number of seconds >= 0 (up to 2e6) or None, got %R", name,
                     value);
        return -1;
    }
    *ms = (int)ceil(seconds * 1000.0);
    return 0;
}

static int SyncClient_init(SyncClient *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"host",
                             "port",
                             "db",
                             "username",
                             "password",
                             "unix_socket_path",
                             "max_connections",
                             "socket_timeout",
                             "socket_connect_timeout",
                             "pool_timeout",
                             "client_name",
                             "namespace",
                             "default_ttl",
                             "serializer",
                             "compression",
                             "compression_threshold",
                             "compression_level",
                             "max_decompressed_size",
                             "stringify_keys",
                             "max_key_size",
                             "connect_wait",
                             "tls",
                             "metrics",
                             NULL};
    rc_compress_options compress = RC_COMPRESS_OPTIONS_DEFAULT;
    const char *host = "localhost", *username = NULL, *password = NULL, *unix_path = NULL,
               *client_name = NULL;
    int port = 6379, db = 0, max_connections = 50, no_tls, metrics = 1;
    Py_ssize_t max_key_size = RC_DEFAULT_MAX_KEY_SIZE;
    PyObject *socket_timeout = Py_None, *connect_timeout = Py_None, *pool_timeout = Py_None,
             *connect_wait = Py_None, *tls = Py_None,
             *namespace_ = Py_None, *default_ttl = Py_None, *serializer = NULL;
    rc_state *st = self->base.state;

    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "the cache is already initialized");
        return -1;
    }
    /* A failed __init__ may be called again: start from nothing. */
    free_settings(self);
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "|$ziizzziOOOzOOOOninpnOOp:SyncRedisCache", kwlist, &host, &port, &db,
            &username, &password, &unix_path, &max_connections, &socket_timeout, &connect_timeout,
            &pool_timeout, &client_name, &namespace_, &default_ttl, &serializer,
            &compress.compression, &compress.threshold, &compress.level, &compress.max_decompressed,
            &compress.stringify_keys, &max_key_size, &connect_wait, &tls, &metrics))
        return -1;
    if (port < 1 || port > 65535 || db < 0 || max_connections < 1) {
        PyErr_Format(st->ConfigurationError,
                     "port must be 1-65535, db >= 0 and max_connections >= 1 "
                     "(got port=%d, db=%d, max_connections=%d)",
                     port, db, max_connections);
        return -1;
    }
    if (timeout_ms(st, "socket_timeout", socket_timeout, &self->options.socket_timeout_ms) < 0 ||
        timeout_ms(st, "socket_connect_timeout", connect_timeout,
                   &self->options.connect_timeout_ms) < 0 ||
        timeout_ms(st, "pool_timeout", pool_timeout, &self->pool_timeout_ms) < 0 ||
        wait_ms(st, "connect_wait", connect_wait, &self->options.connect_wait_ms) < 0)
        return -1;
    if (serializer == NULL) {
        serializer = PyUnicode_FromString("json");
        if (serializer == NULL)
            return -1;
    } else {
        Py_INCREF(serializer);
    }
    if (rc_keyspace_init(&self->base.ks, namespace_, default_ttl, serializer, &compress,
                         max_key_size, st) < 0) {
        Py_DECREF(serializer);
        return -1;
    }
    Py_DECREF(serializer);

    self->host = copy_string(unix_path == NULL ? host : NULL);
    self->unix_path = copy_string(unix_path);
    self->username = copy_string(username);
    self->password = copy_string(password);
    self->client_name = copy_string(client_name);
    if ((unix_path == NULL && self->host == NULL) || (unix_path && !self->unix_path) ||
        (username && !self->username) || (password && !self->password) ||
        (client_name && !self->client_name)) {
        PyErr_NoMemory();
        return -1;
    }
    self->options.host = self->host;
    self->options.port = port;
    self->options.unix_path = self->unix_path;
    self->options.username = self->username;
    self->options.password = self->password;
    self->options.db = db;
    self->options.client_name = self->client_name;
    self->options.tls = rc_client_tls_context(st, tls, &no_tls);
    if (self->options.tls == NULL && !no_tls)
        return -1;
    if (self->options.tls != NULL && self->options.unix_path != NULL) {
        PyErr_SetString(st->ConfigurationError,
                        "TLS (ssl=True, rediss://) works over TCP only, not a unix socket");
        return -1;
    }
    if (rc_pool_init(&self->pool, (size_t)max_connections) < 0 ||
        rc_client_metrics_init(&self->base, metrics) < 0)
        return -1;
    self->ready = 1;
    return 0;
}

static PyObject *SyncClient_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    rc_state *st = rc_state_of_type(type);
    SyncClient *self;

    (void)args;
    (void)kwargs;
    if (st == NULL)
        return NULL;
    self = (SyncClient *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->base.state = st;
        self->base.transport = &sync_transport;
    }
    return (PyObject *)self;
}

static void release_resources(SyncClient *self)
{
    if (self->ready) {
        rc_pool_close(&self->pool);
    }
}

static int SyncClient_traverse(SyncClient *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->resolver);
    Py_VISIT(self->base.ks.codec.dumps);
    Py_VISIT(self->base.ks.codec.loads);
    return 0;
}

static int SyncClient_clear(SyncClient *self)
{
    rc_codec_clear(&self->base.ks.codec);
    Py_CLEAR(self->resolver);
    return 0;
}

static void SyncClient_finalize(SyncClient *self)
{
    PyObject *type, *value, *tb;

    if (!self->ready || self->pool.closed || self->pool.n_open == 0)
        return;
    PyErr_Fetch(&type, &value, &tb);
    if (PyErr_ResourceWarning((PyObject *)self, 1,
                              "unclosed cache %R; call close() or use it in a with block",
                              self) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    PyErr_Restore(type, value, tb);
}

static void SyncClient_dealloc(SyncClient *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return;
    PyObject_GC_UnTrack(self);
    free_settings(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------ one round trip */

static rc_conn *checkout(SyncClient *self, int fresh)
{
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "the cache was not initialized (__init__ not called)");
        return NULL;
    }
    return rc_pool_acquire(&self->pool, self->pool_timeout_ms, &self->options, self->base.state,
                           fresh);
}

/* Drops a command that failed to encode and gives the connection back. */
static PyObject *abandon(SyncClient *self, rc_conn *c)
{
    rc_buf_reset(&c->out);
    rc_pool_release(&self->pool, c);
    return NULL;
}

/* Reads the request's replies, checking each against what its command can
 * return. Returns the reply (one), or the list of them; every reply is read
 * even when one is an error, so the stream stays in step, and the first
 * error is raised, except in a batch of SETs, whose errors go to the result
 * (a PartialWriteError). A reply of the wrong type breaks the connection. */
static PyObject *read_replies(SyncClient *self, rc_conn *c, const rc_request *r, int *failover)
{
    rc_state *st = self->base.state;
    PyObject *result = NULL, *reply, *err_type = NULL, *err_value = NULL, *err_tb = NULL;
    int batch = r->kind == RC_RESULT_STORED_MANY;
    Py_ssize_t i, n = r->replies;

    if (r->asking) {
        /* ASKING's +OK (or its error, raised once the rest is read). */
        rc_reply_status status = rc_conn_read(c, NULL, &reply, st);
        if (status == RC_REPLY_BROKEN)
            goto fail;
        if (status == RC_REPLY_BAD_VALUE || reply == NULL)
            goto broken;
        if (rc_is_error_reply(st, reply)) {
            err_type = Py_NewRef((PyObject *)Py_TYPE(reply));
            err_value = reply;
        } else {
            Py_DECREF(reply);
        }
    }
    /* The list lives across recv() calls made without the GIL: filled with
     * None first, never NULL where another thread's gc.get_objects() sees. */
    if (n != 1 || rc_result_collects(r->kind)) {
        result = rc_none_list(n);
        if (result == NULL)
            goto broken;
    }
    for (i = 0; i < n; i++) {
        rc_reply_status status = rc_conn_read(c, r->codec, &reply, st);
        if (status == RC_REPLY_BROKEN)
            goto fail;
        if (status == RC_REPLY_BAD_VALUE) {
            if (err_type == NULL)
                PyErr_Fetch(&err_type, &err_value, &err_tb);
            else
                PyErr_Clear();
        }
        if (rc_result_check(st, r->kind, rc_reader_shape(&c->reader), reply, r->extra,
                            r->command) < 0) {
            Py_XDECREF(reply);
            goto broken;
        }
        if (self->base.metrics != NULL) {
            self->base.metrics->replies++;
            self->base.metrics->error_replies += reply != NULL && rc_is_error_reply(st, reply);
        }
        if (rc_is_failover_reply(st, reply)) {
            *failover = 1;
            c->broken = 1; /* a node that is not the primary: not to be reused */
        }
        if (reply == NULL)
            reply = Py_NewRef(Py_None);
        else if (!batch && err_type == NULL && rc_is_error_reply(st, reply)) {
            err_type = Py_NewRef((PyObject *)Py_TYPE(reply));
            err_value = Py_NewRef(reply);
        }
        if (result == NULL) {
            result = reply;
        } else {
            PyObject *old = PyList_GET_ITEM(result, i);
            PyList_SET_ITEM(result, i, reply);
            Py_DECREF(old);
        }
    }
    c->requests++;
    if (err_type != NULL) {
        Py_CLEAR(result);
        PyErr_Restore(err_type, err_value, err_tb);
        return NULL;
    }
    return result;
broken:
    c->broken = 1;
fail:
    Py_XDECREF(result);
    Py_XDECREF(err_type);
    Py_XDECREF(err_value);
    Py_XDECREF(err_tb);
    return NULL;
}

/* Sends the request encoded into c, reads its replies and gives c back.
 * *may_retry is set when it failed in a way that sending it again on a
 * fresh connection can mend: c had served earlier requests, nothing came
 * back, and the failure was the connection's (the server dropped it while
 * it sat idle, say), not a timeout, a protocol error or the cache closing. */
static PyObject *exchange(SyncClient *self, rc_conn *c, const rc_request *r, int *may_retry)
{
    rc_state *st = self->base.state;
    unsigned long long received = c->received;
    int reused = c->requests > 0, failover = 0;
    PyObject *reply = NULL;

    rc_conn_begin(c);
    if (rc_conn_flush(c, st) == 0)
        reply = read_replies(self, c, r, &failover);
    *may_retry = reply == NULL && c->broken && reused && c->received == received && !c->closing &&
                 PyErr_ExceptionMatches(st->ConnectionError) &&
                 !PyErr_ExceptionMatches(st->ProtocolError);
    rc_pool_release(&self->pool, c);
    if (failover) {
        /* The node stepped down (or is not up yet): connections to it go,
         * and the next one looks for the primary; a lone safe command may
         * go again there. */
        rc_pool_node_stale(&self->pool);
        *may_retry = reply == NULL && r->replies == 1 && PyErr_ExceptionMatches(st->FailoverError);
    }
    return reply;
}

/* The transport: a pooled blocking connection per request, and one more try
 * on a fresh connection when that is safe (see exchange). */
static PyObject *send_once(SyncClient *self, const rc_request *r);

/* Counts a failed request by what it failed with (exception pending). */
static void count_failure(rc_metrics *m, rc_state *st)
{
    if (PyErr_ExceptionMatches(st->TimeoutError))
        m->timeouts++;
    else if (PyErr_ExceptionMatches(st->ConnectionError))
        m->connection_errors++;
}

/* The transport, timed when metrics are on: from the call to the result, so
 * the time waiting for a pooled connection is in (as the caller sees it). */
static PyObject *sync_send(rc_client *base, const rc_request *r)
{
    rc_metrics *m = base->metrics;
    uint64_t start;
    PyObject *result;

    if (m == NULL)
        return send_once((SyncClient *)base, r);
    start = rc_metrics_now_ns();
    rc_metrics_start(m, r->replies);
    result = send_once((SyncClient *)base, r);
    if (result == NULL)
        count_failure(m, base->state);
    rc_metrics_finish(m, r->op, rc_metrics_now_ns() - start, result == NULL);
    return result;
}

static PyObject *send_once(SyncClient *self, const rc_request *r)
{
    rc_client *base = &self->base;
    PyObject *reply, *result;
    int attempt, may_retry;
    rc_conn *c;

    for (attempt = 0;; attempt++) {
        /* The retry goes on a connection opened for it, not another idle
         * one that may have met the same fate. */
        c = checkout(self, attempt > 0);
        if (c == NULL)
            return NULL;
        if ((r->asking && rc_cmd_asking(&c->out) < 0) || r->encode(&base->ks, &c->out, r->arg) < 0)
            return abandon(self, c);
        reply = exchange(self, c, r, &may_retry);
        if (reply != NULL)
            break;
        if (!(may_retry && r->retry_safe && attempt == 0))
            return NULL;
        PyErr_Clear();
    }
    result = rc_result_build(base->state, r->kind, reply, r->extra);
    Py_DECREF(reply);
    return result;
}

static PyObject *sync_done(rc_client *base, PyObject *result)
{
    (void)base;
    return Py_NewRef(result);
}

static const rc_transport sync_transport = {sync_send, sync_done, 0};

static PyObject *SyncClient_close(SyncClient *self, PyObject *unused)
{
    (void)unused;
    release_resources(self);
    Py_RETURN_NONE;
}

static PyObject *SyncClient_get_closed(SyncClient *self, void *unused)
{
    (void)unused;
    return PyBool_FromLong(!self->ready || self->pool.closed);
}

/* The pool's discovery (rc_pool_discover_fn): the resolver's (host, port). */
static int discover(void *owner, char *host, size_t hostlen, int *port)
{
    SyncClient *self = owner;
    PyObject *found = PyObject_CallNoArgs(self->resolver);
    const char *text;
    long number;
    int rc = -1;

    if (found == NULL)
        return -1;
    if (!PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 2 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(found, 0))) {
        PyErr_SetString(PyExc_TypeError, "the resolver must return (host: str, port: int)");
        goto out;
    }
    text = PyUnicode_AsUTF8(PyTuple_GET_ITEM(found, 0));
    number = PyLong_AsLong(PyTuple_GET_ITEM(found, 1));
    if (text == NULL || (number == -1 && PyErr_Occurred()))
        goto out;
    if (number < 1 || number > 65535 || strlen(text) >= hostlen) {
        PyErr_Format(self->base.state->ConnectionError, "discovery gave a bad address: %R",
                     found);
        goto out;
    }
    memcpy(host, text, strlen(text) + 1);
    *port = (int)number;
    rc = 0;
out:
    Py_DECREF(found);
    return rc;
}

/* _set_resolver(callable): connections go to the (host, port) it returns,
 * asked again whenever the node may have changed (Sentinel). */
static PyObject *SyncClient_set_resolver(SyncClient *self, PyObject *resolver)
{
    if (!self->ready || !PyCallable_Check(resolver)) {
        PyErr_SetString(PyExc_TypeError, "_set_resolver(callable) on an initialized cache");
        return NULL;
    }
    Py_XSETREF(self->resolver, Py_NewRef(resolver));
    rc_pool_set_discovery(&self->pool, discover, self);
    Py_RETURN_NONE;
}

/* _node_stale(): the node may no longer be the primary; look again. */
static PyObject *SyncClient_node_stale(SyncClient *self, PyObject *unused)
{
    (void)unused;
    if (self->ready)
        rc_pool_node_stale(&self->pool);
    Py_RETURN_NONE;
}

/* _metrics() -> dict: a snapshot of the counters (metrics.h), or None when
 * the cache was made with metrics=False. */
static PyObject *SyncClient_metrics(SyncClient *self, PyObject *unused)
{
    rc_pool_metrics pool;

    (void)unused;
    if (self->base.metrics == NULL)
        Py_RETURN_NONE;
    rc_pool_read_metrics(&self->pool, &pool);
    return rc_metrics_snapshot(self->base.metrics, &pool);
}

/* _open_dedicated(host=None, port=0): a connection outside the pool (a
 * subscriber's), with this client's handshake, TLS and timeouts, to
 * host:port (None: the configured address; a unix socket ignores both).
 * Connecting blocks for at most socket_connect_timeout; it is not retried
 * here (the subscriber has its own backoff). */
static PyObject *SyncClient_open_dedicated(SyncClient *self, PyObject *const *args,
                                           Py_ssize_t nargs)
{
    rc_conn_options o;
    rc_conn *c;
    int unreachable = 0;
    long port;

    if (!self->ready || self->pool.closed) {
        PyErr_SetString(self->base.state->ConnectionError, "the cache is closed; create a new one");
        return NULL;
    }
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_open_dedicated(host, port)");
        return NULL;
    }
    o = self->options;
    if (args[0] != Py_None && o.unix_path == NULL) {
        o.host = PyUnicode_AsUTF8(args[0]);
        if (o.host == NULL)
            return NULL;
        port = PyLong_AsLong(args[1]);
        if (port == -1 && PyErr_Occurred())
            return NULL;
        if (port < 1 || port > 65535) {
            PyErr_Format(PyExc_ValueError, "_open_dedicated(): bad port %ld", port);
            return NULL;
        }
        o.port = (int)port;
    }
    c = rc_conn_open(&o, self->base.state, &unreachable);
    if (c == NULL)
        return NULL;
    return rc_dedicated_new(self->base.state, c);
}

static PyMethodDef SyncClient_methods[] = {
    {"_open_dedicated", (PyCFunction)(void (*)(void))SyncClient_open_dedicated, METH_FASTCALL,
     NULL},
    RC_CLIENT_METHOD_DEFS,
    {"close", (PyCFunction)SyncClient_close, METH_NOARGS,
     "close(): close every connection; the cache cannot be used afterwards."},
    {"_set_resolver", (PyCFunction)SyncClient_set_resolver, METH_O, NULL},
    {"_node_stale", (PyCFunction)SyncClient_node_stale, METH_NOARGS, NULL},
    {"_metrics", (PyCFunction)SyncClient_metrics, METH_NOARGS,
     "_metrics() -> dict | None: the client's counters and latency histograms."},
    {NULL, NULL, 0, NULL},
};

static PyObject *SyncClient_get_connect_failures(SyncClient *self, void *unused)
{
    (void)unused;
    return PyLong_FromLong(self->ready ? self->pool.failures : 0);
}

static PyGetSetDef SyncClient_getset[] = {
    {"closed", (getter)SyncClient_get_closed, NULL, "True once close() was called.", NULL},
    {"_key_prefix", (getter)rc_client_key_prefix, NULL,
     "The bytes put before every key (\"namespace:\").", NULL},
    {"_connect_failures", (getter)SyncClient_get_connect_failures, NULL,
     "Connect attempts that failed in a row (0 once one succeeds).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot SyncClient_slots[] = {
    {Py_tp_new, SyncClient_new},
    {Py_tp_init, SyncClient_init},
    {Py_tp_dealloc, SyncClient_dealloc},
    {Py_tp_finalize, SyncClient_finalize},
    {Py_tp_traverse, SyncClient_traverse},
    {Py_tp_clear, SyncClient_clear},
    {Py_tp_methods, SyncClient_methods},
    {Py_tp_getset, SyncClient_getset},
    {Py_tp_doc, "The blocking cache client's C core; use redis_cache.SyncRedisCache."},
    {0, NULL},
};

PyType_Spec rc_sync_client_spec = {
    .name = "redis_cache._core.SyncClient",
    .basicsize = sizeof(SyncClient),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = SyncClient_slots,
};
