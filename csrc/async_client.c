/* The async client type; see async_client.h. */
#include "async_client.h"

#include "args.h"
#include "cmd.h"
#include "conn.h"
#include "mux.h"
#include "state.h"

/* Most multiplexed connections one client may use. */
#define RC_MAX_MUX 64

typedef struct {
    PyObject_HEAD rc_state *state;
    rc_keyspace ks;
    rc_mux *muxes[RC_MAX_MUX];
    size_t n_mux, next;
    int timeout_ms;
    Py_ssize_t max_in_flight;
    int ready, closed;
} AsyncClient;

static int AsyncClient_init(AsyncClient *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {
        "namespace",         "default_ttl",           "serializer",  "socket_timeout",
        "max_in_flight",     "connections",           "compression", "compression_threshold",
        "compression_level", "max_decompressed_size", NULL};
    rc_compress_options compress = RC_COMPRESS_OPTIONS_DEFAULT;
    PyObject *namespace_ = Py_None, *default_ttl = Py_None, *serializer = NULL,
             *socket_timeout = Py_None;
    Py_ssize_t max_in_flight = 4096, connections = 1;
    double seconds;
    int rc;

    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "the cache is already initialized");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOnnOnin:RedisCache", kwlist, &namespace_,
                                     &default_ttl, &serializer, &socket_timeout, &max_in_flight,
                                     &connections, &compress.compression, &compress.threshold,
                                     &compress.level, &compress.max_decompressed))
        return -1;
    if (connections < 1 || connections > RC_MAX_MUX || max_in_flight < 1) {
        PyErr_Format(self->state->ConfigurationError,
                     "connections must be 1-%d and max_in_flight >= 1", RC_MAX_MUX);
        return -1;
    }
    self->timeout_ms = -1;
    if (socket_timeout != Py_None) {
        seconds = PyFloat_AsDouble(socket_timeout);
        if (seconds == -1.0 && PyErr_Occurred())
            return -1;
        if (!(seconds > 0) || seconds > 2.0e6) {
            PyErr_Format(self->state->ConfigurationError,
                         "socket_timeout must be a positive number of seconds or None, got %R",
                         socket_timeout);
            return -1;
        }
        self->timeout_ms = (int)(seconds * 1000.0 + 0.999);
    }
    if (serializer == NULL)
        serializer = PyUnicode_FromString("json");
    else
        Py_INCREF(serializer);
    if (serializer == NULL)
        return -1;
    rc = rc_keyspace_init(&self->ks, namespace_, default_ttl, serializer, &compress, self->state);
    Py_DECREF(serializer);
    if (rc < 0)
        return -1;
    self->n_mux = (size_t)connections;
    self->max_in_flight = max_in_flight;
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
    if (self != NULL)
        self->state = st;
    return (PyObject *)self;
}

static int AsyncClient_traverse(AsyncClient *self, visitproc visit, void *arg)
{
    size_t i;

    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->ks.codec.dumps);
    Py_VISIT(self->ks.codec.loads);
    for (i = 0; i < RC_MAX_MUX; i++)
        Py_VISIT((PyObject *)self->muxes[i]);
    return 0;
}

static int AsyncClient_clear(AsyncClient *self)
{
    size_t i;

    rc_codec_clear(&self->ks.codec);
    for (i = 0; i < RC_MAX_MUX; i++)
        Py_CLEAR(self->muxes[i]);
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
    rc_keyspace_clear(&self->ks);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------ dispatch */

/* The connection for the next command: round robin over the multiplexers,
 * asking Python (_open_multiplexer) for a new one when the slot is empty,
 * closed, or bound to another event loop. Borrowed reference or NULL. */
static rc_mux *pick(AsyncClient *self)
{
    PyObject *loop, *fresh;
    size_t i;
    rc_mux *m;

    if (!self->ready || self->closed) {
        PyErr_SetString(self->state->ConnectionError,
                        self->ready ? "the cache is closed; create a new one"
                                    : "the cache was not initialized (__init__ not called)");
        return NULL;
    }
    loop = PyObject_CallNoArgs(self->state->get_running_loop);
    if (loop == NULL)
        return NULL;
    i = self->next++ % self->n_mux;
    m = self->muxes[i];
    if (m != NULL && rc_mux_loop(m) == loop && !rc_mux_is_closed(m)) {
        Py_DECREF(loop);
        return m;
    }
    fresh = PyObject_CallMethod((PyObject *)self, "_open_multiplexer", "OO", loop,
                                m != NULL ? (PyObject *)m : Py_None);
    Py_DECREF(loop);
    if (fresh == NULL)
        return NULL;
    if (!Py_IS_TYPE(fresh, self->state->MuxType)) {
        Py_DECREF(fresh);
        PyErr_SetString(PyExc_TypeError, "_open_multiplexer() must return a Multiplexer");
        return NULL;
    }
    Py_XSETREF(self->muxes[i], (rc_mux *)fresh);
    return (rc_mux *)fresh;
}

/* An already-completed future, for requests that need no round trip. */
static PyObject *done_future(AsyncClient *self, PyObject *result)
{
    PyObject *loop, *future, *args[2], *r;

    loop = PyObject_CallNoArgs(self->state->get_running_loop);
    if (loop == NULL)
        return NULL;
    args[0] = loop;
    future = PyObject_Vectorcall(self->state->FutureType, args, 0, self->state->loop_kwnames);
    Py_DECREF(loop);
    if (future == NULL)
        return NULL;
    args[0] = future;
    args[1] = result;
    r = PyObject_VectorcallMethod(self->state->str_set_result, args,
                                  2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) {
        Py_DECREF(future);
        return NULL;
    }
    Py_DECREF(r);
    return future;
}

/* The common tail of every method: m's buffer holds the command encoded
 * since mark (or encoding failed: ok == 0). A codec, when given, is this
 * client's. */
static PyObject *submit(AsyncClient *self, rc_mux *m, size_t mark, int ok, Py_ssize_t replies,
                        rc_result_kind kind, const rc_codec *codec, PyObject *extra)
{
    if (!ok) {
        rc_mux_discard(m, mark);
        return NULL;
    }
    return rc_mux_submit(m, mark, replies, kind, codec, codec ? (PyObject *)self : NULL, extra);
}

#define BEGIN(self, m, mark)                                                                       \
    rc_mux *m = pick(self);                                                                        \
    size_t mark;                                                                                   \
    if (m == NULL)                                                                                 \
        return NULL;                                                                               \
    mark = rc_mux_out(m)->len

/* ------------------------------------------------------------ methods */

static PyObject *AsyncClient_get(AsyncClient *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"key", "default", "model"};
    PyObject *params[3] = {NULL, Py_None, Py_None}, *extra, *result = NULL;
    rc_result_kind kind = RC_RESULT_VALUE;
    rc_mux *m;

    if (rc_parse_args("get", args, nargs, kwnames, names, 3, 1, params) < 0)
        return NULL;
    if (params[2] != Py_None) {
        kind = RC_RESULT_TYPED_VALUE;
        extra = rc_result_typed_extra(params[1], params[2]);
        if (extra == NULL)
            return NULL;
    } else {
        extra = Py_NewRef(params[1]);
    }
    m = pick(self);
    if (m != NULL) {
        size_t mark = rc_mux_out(m)->len;
        result = submit(self, m, mark, rc_cmd_key(&self->ks, rc_mux_out(m), "GET", params[0]) == 0,
                        1, kind, &self->ks.codec, extra);
    }
    Py_DECREF(extra);
    return result;
}

static PyObject *AsyncClient_set(AsyncClient *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"key", "value", "ttl"};
    PyObject *params[3] = {NULL, NULL, Py_None}, *prepared, *result = NULL;
    long long ms;
    rc_mux *m;

    if (rc_parse_args("set", args, nargs, kwnames, names, 3, 2, params) < 0 ||
        rc_ttl_ms(&self->ks, params[2], &ms) < 0)
        return NULL;
    prepared = rc_prepare_value(&self->ks, params[0], params[1]);
    if (prepared == NULL)
        return NULL;
    m = pick(self);
    if (m != NULL) {
        size_t mark = rc_mux_out(m)->len;
        result = submit(self, m, mark,
                        rc_cmd_set(&self->ks, rc_mux_out(m), params[0], prepared, ms) == 0, 1,
                        RC_RESULT_STORED, NULL, NULL);
    }
    Py_DECREF(prepared);
    return result;
}

static PyObject *key_command(AsyncClient *self, const char *name, PyObject *key,
                             rc_result_kind kind)
{
    BEGIN(self, m, mark);
    return submit(self, m, mark, rc_cmd_key(&self->ks, rc_mux_out(m), name, key) == 0, 1, kind,
                  NULL, NULL);
}

static PyObject *AsyncClient_delete(AsyncClient *self, PyObject *key)
{
    return key_command(self, "UNLINK", key, RC_RESULT_POSITIVE);
}

static PyObject *AsyncClient_exists(AsyncClient *self, PyObject *key)
{
    return key_command(self, "EXISTS", key, RC_RESULT_POSITIVE);
}

static PyObject *AsyncClient_ttl(AsyncClient *self, PyObject *key)
{
    return key_command(self, "TTL", key, RC_RESULT_RAW);
}

static PyObject *AsyncClient_expire(AsyncClient *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    static const char *const names[] = {"key", "ttl"};
    PyObject *params[2] = {NULL, NULL};
    long long ms;

    if (rc_parse_args("expire", args, nargs, kwnames, names, 2, 2, params) < 0 ||
        rc_expire_ms(&self->ks, params[1], &ms) < 0)
        return NULL;
    {
        BEGIN(self, m, mark);
        return submit(self, m, mark, rc_cmd_expire(&self->ks, rc_mux_out(m), params[0], ms) == 0, 1,
                      RC_RESULT_POSITIVE, NULL, NULL);
    }
}

static PyObject *AsyncClient_incr(AsyncClient *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static const char *const names[] = {"key", "amount"};
    PyObject *params[2] = {NULL, NULL}, *one, *result;

    if (rc_parse_args("incr", args, nargs, kwnames, names, 2, 1, params) < 0)
        return NULL;
    one = PyLong_FromLong(1);
    if (one == NULL)
        return NULL;
    {
        rc_mux *m = pick(self);
        size_t mark;
        if (m == NULL) {
            Py_DECREF(one);
            return NULL;
        }
        mark = rc_mux_out(m)->len;
        result = submit(
            self, m, mark,
            rc_cmd_incrby(&self->ks, rc_mux_out(m), params[0], params[1] ? params[1] : one) == 0, 1,
            RC_RESULT_RAW, NULL, NULL);
    }
    Py_DECREF(one);
    return result;
}

static PyObject *key_list(const char *fname, PyObject *keys)
{
    if (PyUnicode_Check(keys) || PyBytes_Check(keys)) {
        PyErr_Format(PyExc_TypeError, "%s() takes an iterable of keys, not a single %.100s key",
                     fname, Py_TYPE(keys)->tp_name);
        return NULL;
    }
    return PySequence_Fast(keys, "keys must be an iterable of str or bytes");
}

/* MGET / UNLINK of a list of keys; model, when given, makes MGET typed. */
static PyObject *multikey(AsyncClient *self, const char *fname, const char *command,
                          PyObject *keys_arg, rc_result_kind kind, const rc_codec *codec,
                          PyObject *empty_result, PyObject *model)
{
    PyObject *keys, *extra = NULL, *result = NULL;
    rc_mux *m;

    keys = key_list(fname, keys_arg);
    if (keys == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(keys) == 0) {
        result = done_future(self, empty_result);
        goto out;
    }
    if (model != NULL) {
        kind = RC_RESULT_TYPED_MGET;
        extra = rc_result_typed_extra(keys, model);
        if (extra == NULL)
            goto out;
    } else {
        extra = Py_NewRef(keys);
    }
    m = pick(self);
    if (m != NULL) {
        size_t mark = rc_mux_out(m)->len;
        result =
            submit(self, m, mark, rc_cmd_multikey(&self->ks, rc_mux_out(m), command, keys) == 0, 1,
                   kind, codec, extra);
    }
out:
    Py_XDECREF(extra);
    Py_DECREF(keys);
    return result;
}

static PyObject *AsyncClient_get_many(AsyncClient *self, PyObject *const *args, Py_ssize_t nargs,
                                      PyObject *kwnames)
{
    static const char *const names[] = {"keys", "model"};
    PyObject *params[2] = {NULL, Py_None}, *empty, *result;

    if (rc_parse_args("get_many", args, nargs, kwnames, names, 2, 1, params) < 0)
        return NULL;
    empty = PyDict_New();
    if (empty == NULL)
        return NULL;
    result = multikey(self, "get_many", "MGET", params[0], RC_RESULT_MGET, &self->ks.codec, empty,
                      params[1] != Py_None ? params[1] : NULL);
    Py_DECREF(empty);
    return result;
}

static PyObject *AsyncClient_delete_many(AsyncClient *self, PyObject *keys)
{
    PyObject *zero = PyLong_FromLong(0), *result;

    if (zero == NULL)
        return NULL;
    result = multikey(self, "delete_many", "UNLINK", keys, RC_RESULT_RAW, NULL, zero, NULL);
    Py_DECREF(zero);
    return result;
}

static PyObject *AsyncClient_set_many(AsyncClient *self, PyObject *const *args, Py_ssize_t nargs,
                                      PyObject *kwnames)
{
    static const char *const names[] = {"mapping", "ttl"};
    PyObject *params[2] = {NULL, Py_None}, *batch, *result = NULL;
    Py_ssize_t count = 0;
    long long ms;
    rc_mux *m;
    int ok;

    if (rc_parse_args("set_many", args, nargs, kwnames, names, 2, 1, params) < 0 ||
        rc_ttl_ms(&self->ks, params[1], &ms) < 0)
        return NULL;
    if (rc_is_empty_mapping(params[0]))
        return done_future(self, Py_True);
    batch = rc_prepare_batch(&self->ks, params[0]);
    if (batch == NULL)
        return NULL;
    m = pick(self);
    if (m != NULL) {
        size_t mark = rc_mux_out(m)->len;
        ok = rc_cmd_set_many(&self->ks, rc_mux_out(m), batch, ms, &count) == 0;
        if (ok && count == 0) {
            rc_mux_discard(m, mark);
            result = done_future(self, Py_True);
        } else {
            result = submit(self, m, mark, ok, count, RC_RESULT_STORED, NULL, NULL);
        }
    }
    Py_DECREF(batch);
    return result;
}

static PyObject *AsyncClient_ping(AsyncClient *self, PyObject *unused)
{
    PyObject *word = PyUnicode_FromString("PING"), *result = NULL;

    (void)unused;
    if (word == NULL)
        return NULL;
    {
        rc_mux *m = pick(self);
        if (m != NULL) {
            size_t mark = rc_mux_out(m)->len;
            result = submit(self, m, mark, rc_cmd_raw(rc_mux_out(m), &word, 1) == 0, 1,
                            RC_RESULT_PONG, NULL, NULL);
        }
    }
    Py_DECREF(word);
    return result;
}

static PyObject *AsyncClient_execute_command(AsyncClient *self, PyObject *const *args,
                                             Py_ssize_t nargs)
{
    BEGIN(self, m, mark);
    return submit(self, m, mark, rc_cmd_raw(rc_mux_out(m), args, nargs) == 0, 1, RC_RESULT_RAW,
                  NULL, NULL);
}

/* _new_multiplexer(loop, dedicated=False): a fresh, not yet attached
 * connection object with this client's limits. A dedicated one (for
 * blocking commands and transactions) has no request timeout: a BLPOP may
 * rightly wait longer than socket_timeout. */
static PyObject *AsyncClient_new_multiplexer(AsyncClient *self, PyObject *const *args,
                                             Py_ssize_t nargs)
{
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
    return (PyObject *)rc_mux_new(self->state, args[0], dedicated ? -1 : self->timeout_ms,
                                  self->max_in_flight);
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
    Py_RETURN_NONE;
}

static PyObject *AsyncClient_get_closed(AsyncClient *self, void *unused)
{
    (void)unused;
    return PyBool_FromLong(!self->ready || self->closed);
}

static PyObject *AsyncClient_get_key_prefix(AsyncClient *self, void *unused)
{
    (void)unused;
    return PyBytes_FromStringAndSize(self->ks.prefix ? self->ks.prefix : "",
                                     (Py_ssize_t)self->ks.prefix_len);
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

static PyMethodDef AsyncClient_methods[] = {
    {"get", (PyCFunction)(void (*)(void))AsyncClient_get, METH_FASTCALL | METH_KEYWORDS,
     "get(key, default=None, model=None): await the stored value, or default when the key "
     "is missing; with model, the value made an instance of it."},
    {"set", (PyCFunction)(void (*)(void))AsyncClient_set, METH_FASTCALL | METH_KEYWORDS,
     "set(key, value, ttl=None) -> bool"},
    {"delete", (PyCFunction)AsyncClient_delete, METH_O, "delete(key) -> bool"},
    {"exists", (PyCFunction)AsyncClient_exists, METH_O, "exists(key) -> bool"},
    {"expire", (PyCFunction)(void (*)(void))AsyncClient_expire, METH_FASTCALL | METH_KEYWORDS,
     "expire(key, ttl) -> bool"},
    {"ttl", (PyCFunction)AsyncClient_ttl, METH_O, "ttl(key) -> int"},
    {"incr", (PyCFunction)(void (*)(void))AsyncClient_incr, METH_FASTCALL | METH_KEYWORDS,
     "incr(key, amount=1) -> int"},
    {"get_many", (PyCFunction)(void (*)(void))AsyncClient_get_many, METH_FASTCALL | METH_KEYWORDS,
     "get_many(keys, model=None) -> dict"},
    {"set_many", (PyCFunction)(void (*)(void))AsyncClient_set_many, METH_FASTCALL | METH_KEYWORDS,
     "set_many(mapping, ttl=None) -> bool"},
    {"delete_many", (PyCFunction)AsyncClient_delete_many, METH_O, "delete_many(keys) -> int"},
    {"ping", (PyCFunction)AsyncClient_ping, METH_NOARGS, "ping() -> bool"},
    {"execute_command", (PyCFunction)(void (*)(void))AsyncClient_execute_command, METH_FASTCALL,
     "execute_command(*args): any command (no namespace applied); the raw reply."},
    {"_new_multiplexer", (PyCFunction)(void (*)(void))AsyncClient_new_multiplexer, METH_FASTCALL,
     NULL},
    {"_close_connections", (PyCFunction)AsyncClient_close_connections, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef AsyncClient_getset[] = {
    {"closed", (getter)AsyncClient_get_closed, NULL, "True once close() was called.", NULL},
    {"_key_prefix", (getter)AsyncClient_get_key_prefix, NULL, NULL, NULL},
    {"_multiplexers", (getter)AsyncClient_get_multiplexers, NULL, NULL, NULL},
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
