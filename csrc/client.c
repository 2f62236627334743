/* The cache methods shared by both clients; see client.h. */
#include "client.h"

#include "args.h"
#include "json.h"

/* ------------------------------------------------------------ encoders */

typedef struct {
    const char *name;
    PyObject *key;
} key_arg;

static int encode_key(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    key_arg *a = arg;
    return rc_cmd_key(ks, b, a->name, a->key);
}

typedef struct {
    PyObject *key, *value;
    long long ms;
} set_arg;

static int encode_set(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    set_arg *a = arg;
    return rc_cmd_set(ks, b, a->key, a->value, a->ms);
}

static int encode_expire(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    set_arg *a = arg;
    return rc_cmd_expire(ks, b, a->key, a->ms);
}

static int encode_incrby(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    set_arg *a = arg;
    return rc_cmd_incrby(ks, b, a->key, a->value);
}

typedef struct {
    const char *name;
    PyObject *keys; /* a fast sequence */
} keys_arg;

static int encode_multikey(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    keys_arg *a = arg;
    return rc_cmd_multikey(ks, b, a->name, a->keys);
}

typedef struct {
    PyObject *batch;
    long long ms;
} batch_arg;

static int encode_set_many(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    batch_arg *a = arg;
    Py_ssize_t count;
    return rc_cmd_set_many(ks, b, a->batch, a->ms, &count);
}

typedef struct {
    PyObject *const *args;
    Py_ssize_t nargs;
} raw_arg;

static int encode_raw(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    raw_arg *a = arg;
    (void)ks;
    return rc_cmd_raw(b, a->args, a->nargs);
}

/* ------------------------------------------------------------ helpers */

static PyObject *send(rc_client *self, rc_encode_fn encode, void *arg, Py_ssize_t replies,
                      rc_result_kind kind, const rc_codec *codec, PyObject *extra)
{
    rc_request request = {encode, arg, replies, kind, codec, extra};
    return self->transport->send(self, &request);
}

/* Writes the bytes of a request encoded beforehand (see send_values). */
static int encode_copy(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    rc_buf *bytes = arg;

    (void)ks;
    if (rc_buf_append(b, bytes->data, bytes->len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* A request's encode function, run with the JSON encoder told to run no
 * Python code (RC_JSON_NO_HOOKS). */
typedef struct without_hooks_arg {
    rc_encode_fn encode;
    void *arg;
} without_hooks_arg;

static int encode_without_hooks(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    const without_hooks_arg *w = arg;
    rc_keyspace strict = *ks;

    strict.codec.json_flags |= RC_JSON_NO_HOOKS;
    return w->encode(&strict, b, w->arg);
}

/* send() for requests that write values. Values are JSON-encoded straight
 * into the transport's outgoing buffer. But the encoder may run Python code
 * (a value's isoformat() or __str__, model_dump(), ...), and that code may
 * use this very cache: it must not run while the transport holds a
 * connection and a half-written command, or the code's own command would
 * land in the middle of this one in the multiplexer's buffer, or wait for
 * the pooled connection held here. So the first attempt refuses to run any;
 * a value that needs it is encoded again into a scratch buffer, with no
 * connection held, and the bytes are copied in. */
static PyObject *send_values(rc_client *self, rc_encode_fn encode, void *arg, Py_ssize_t replies,
                             rc_result_kind kind)
{
    without_hooks_arg direct = {encode, arg};
    rc_buf bytes;
    PyObject *result;

    if (self->ks.codec.kind != RC_CODEC_JSON)
        return send(self, encode, arg, replies, kind, NULL, NULL);
    result = send(self, encode_without_hooks, &direct, replies, kind, NULL, NULL);
    if (result != NULL || !PyErr_ExceptionMatches(self->ks.state->HooksNeeded))
        return result;
    PyErr_Clear();
    rc_buf_init(&bytes);
    if (encode(&self->ks, &bytes, arg) == 0)
        result = send(self, encode_copy, &bytes, replies, kind, NULL, NULL);
    rc_buf_free(&bytes);
    return result;
}

/* `extra` for a read: the plain one, or (plain, model) for a typed read. */
static PyObject *read_extra(PyObject *plain, PyObject *model, rc_result_kind *kind,
                            rc_result_kind typed)
{
    if (model == Py_None)
        return Py_NewRef(plain);
    *kind = typed;
    return rc_result_typed_extra(plain, model);
}

/* A list or tuple of keys; a lone str or bytes is refused, as iterating it
 * would turn one key into one key per character. */
static PyObject *key_list(const char *fname, PyObject *keys)
{
    if (PyUnicode_Check(keys) || PyBytes_Check(keys)) {
        PyErr_Format(PyExc_TypeError, "%s() takes an iterable of keys, not a single %.100s key",
                     fname, Py_TYPE(keys)->tp_name);
        return NULL;
    }
    /* A list is copied: get_many pairs the keys with the MGET reply when it
     * arrives, and the caller (or a model's validation) may change the list
     * before then. */
    if (PyList_CheckExact(keys))
        return PyList_AsTuple(keys);
    return PySequence_Fast(keys, "keys must be an iterable of str or bytes");
}

static Py_ssize_t batch_size(PyObject *batch)
{
    return PyDict_Check(batch) ? PyDict_GET_SIZE(batch) : PyList_GET_SIZE(batch);
}

/* ------------------------------------------------------------ methods */

PyObject *rc_client_get(rc_client *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "default", "model"};
    PyObject *params[3] = {NULL, Py_None, Py_None}, *extra, *result;
    rc_result_kind kind = RC_RESULT_VALUE;
    key_arg arg;

    if (rc_parse_args("get", args, nargs, kwnames, names, 3, 1, params) < 0)
        return NULL;
    extra = read_extra(params[1], params[2], &kind, RC_RESULT_TYPED_VALUE);
    if (extra == NULL)
        return NULL;
    arg.name = "GET";
    arg.key = params[0];
    result = send(self, encode_key, &arg, 1, kind, &self->ks.codec, extra);
    Py_DECREF(extra);
    return result;
}

PyObject *rc_client_set(rc_client *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "value", "ttl"};
    PyObject *params[3] = {NULL, NULL, Py_None}, *result;
    set_arg arg;

    if (rc_parse_args("set", args, nargs, kwnames, names, 3, 2, params) < 0 ||
        rc_ttl_ms(&self->ks, params[2], &arg.ms) < 0)
        return NULL;
    arg.key = params[0];
    arg.value = rc_prepare_value(&self->ks, params[0], params[1]);
    if (arg.value == NULL)
        return NULL;
    result = send_values(self, encode_set, &arg, 1, RC_RESULT_STORED);
    Py_DECREF(arg.value);
    return result;
}

static PyObject *key_command(rc_client *self, const char *name, PyObject *key, rc_result_kind kind)
{
    key_arg arg = {name, key};
    return send(self, encode_key, &arg, 1, kind, NULL, NULL);
}

PyObject *rc_client_delete(rc_client *self, PyObject *key)
{
    return key_command(self, "UNLINK", key, RC_RESULT_POSITIVE);
}

PyObject *rc_client_exists(rc_client *self, PyObject *key)
{
    return key_command(self, "EXISTS", key, RC_RESULT_POSITIVE);
}

PyObject *rc_client_ttl(rc_client *self, PyObject *key)
{
    return key_command(self, "TTL", key, RC_RESULT_RAW);
}

PyObject *rc_client_expire(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"key", "ttl"};
    PyObject *params[2] = {NULL, NULL};
    set_arg arg;

    if (rc_parse_args("expire", args, nargs, kwnames, names, 2, 2, params) < 0 ||
        rc_expire_ms(&self->ks, params[1], &arg.ms) < 0)
        return NULL;
    arg.key = params[0];
    arg.value = NULL;
    return send(self, encode_expire, &arg, 1, RC_RESULT_POSITIVE, NULL, NULL);
}

PyObject *rc_client_incr(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"key", "amount"};
    PyObject *params[2] = {NULL, NULL}, *one = NULL, *result;
    set_arg arg;

    if (rc_parse_args("incr", args, nargs, kwnames, names, 2, 1, params) < 0)
        return NULL;
    if (params[1] == NULL) {
        one = PyLong_FromLong(1);
        if (one == NULL)
            return NULL;
    }
    arg.key = params[0];
    arg.value = params[1] != NULL ? params[1] : one;
    arg.ms = -1;
    result = send(self, encode_incrby, &arg, 1, RC_RESULT_RAW, NULL, NULL);
    Py_XDECREF(one);
    return result;
}

PyObject *rc_client_get_many(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"keys", "model"};
    PyObject *params[2] = {NULL, Py_None}, *extra = NULL, *result = NULL;
    rc_result_kind kind = RC_RESULT_MGET;
    keys_arg arg = {"MGET", NULL};

    if (rc_parse_args("get_many", args, nargs, kwnames, names, 2, 1, params) < 0)
        return NULL;
    arg.keys = key_list("get_many", params[0]);
    if (arg.keys == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(arg.keys) == 0) {
        PyObject *empty = PyDict_New();
        if (empty != NULL)
            result = self->transport->done(self, empty);
        Py_XDECREF(empty);
        goto out;
    }
    extra = read_extra(arg.keys, params[1], &kind, RC_RESULT_TYPED_MGET);
    if (extra != NULL)
        result = send(self, encode_multikey, &arg, 1, kind, &self->ks.codec, extra);
out:
    Py_XDECREF(extra);
    Py_DECREF(arg.keys);
    return result;
}

PyObject *rc_client_delete_many(rc_client *self, PyObject *keys)
{
    keys_arg arg = {"UNLINK", NULL};
    PyObject *result;

    arg.keys = key_list("delete_many", keys);
    if (arg.keys == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(arg.keys) == 0) {
        PyObject *zero = PyLong_FromLong(0);
        result = zero == NULL ? NULL : self->transport->done(self, zero);
        Py_XDECREF(zero);
    } else {
        result = send(self, encode_multikey, &arg, 1, RC_RESULT_RAW, NULL, NULL);
    }
    Py_DECREF(arg.keys);
    return result;
}

PyObject *rc_client_set_many(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"mapping", "ttl"};
    PyObject *params[2] = {NULL, Py_None}, *result;
    batch_arg arg;

    if (rc_parse_args("set_many", args, nargs, kwnames, names, 2, 1, params) < 0 ||
        rc_ttl_ms(&self->ks, params[1], &arg.ms) < 0)
        return NULL;
    /* An empty batch needs no connection (nor a working server). */
    if (rc_is_empty_mapping(params[0]))
        return self->transport->done(self, Py_True);
    arg.batch = rc_prepare_batch(&self->ks, params[0]);
    if (arg.batch == NULL)
        return NULL;
    if (batch_size(arg.batch) == 0)
        result = self->transport->done(self, Py_True);
    else
        result = send_values(self, encode_set_many, &arg, batch_size(arg.batch), RC_RESULT_STORED);
    Py_DECREF(arg.batch);
    return result;
}

PyObject *rc_client_ping(rc_client *self, PyObject *unused)
{
    PyObject *word = PyUnicode_FromString("PING"), *result;
    raw_arg arg = {NULL, 1};

    (void)unused;
    if (word == NULL)
        return NULL;
    arg.args = &word;
    result = send(self, encode_raw, &arg, 1, RC_RESULT_PONG, NULL, NULL);
    Py_DECREF(word);
    return result;
}

/* Commands that leave state on the connection (a transaction, a
 * subscription, another database) would leak it to whoever uses the pooled or
 * shared connection next; blocking ones would stall everyone sharing a
 * multiplexed connection. Both belong on a connection of one's own. */
static const char *const stateful_commands[] = {
    "MULTI",        "EXEC",       "DISCARD",    "WATCH",       "UNWATCH",
    "SUBSCRIBE",    "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE",
    "SUNSUBSCRIBE", "MONITOR",    "SELECT",     "QUIT",        "RESET",
    "AUTH",         "HELLO",      "SYNC",       "PSYNC",       NULL,
};
static const char *const blocking_commands[] = {
    "BLPOP",    "BRPOP",  "BLMOVE", "BRPOPLPUSH", "BZPOPMIN",
    "BZPOPMAX", "BLMPOP", "BZMPOP", "WAIT",       NULL,
};

static int is_word(PyObject *arg, const char *word)
{
    const char *p;
    Py_ssize_t n;

    if (PyUnicode_Check(arg)) {
        p = PyUnicode_AsUTF8AndSize(arg, &n);
        if (p == NULL) {
            PyErr_Clear();
            return 0;
        }
    } else if (PyBytes_Check(arg)) {
        p = PyBytes_AS_STRING(arg);
        n = PyBytes_GET_SIZE(arg);
    } else {
        return 0;
    }
    return (size_t)n == strlen(word) && PyOS_strnicmp(p, word, (Py_ssize_t)n) == 0;
}

static int in_list(PyObject *arg, const char *const *words)
{
    for (; *words != NULL; words++)
        if (is_word(arg, *words))
            return 1;
    return 0;
}

/* Refuses a command that must not ride this client's connections. */
static int check_command(rc_client *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t i;
    int blocking;

    if (nargs == 0)
        return 0;
    if (in_list(args[0], stateful_commands)) {
        PyErr_Format(PyExc_ValueError,
                     "%R leaves state on the connection, which other callers share; %s", args[0],
                     self->transport->multiplexed
                         ? "run it on a connection of your own: "
                           "'async with cache.dedicated() as conn'"
                         : "SyncRedisCache lends its connections one command at a time, so "
                           "use RedisCache.dedicated() or a client of your own for it");
        return -1;
    }
    if (!self->transport->multiplexed)
        return 0;
    blocking = in_list(args[0], blocking_commands);
    if (!blocking && (is_word(args[0], "XREAD") || is_word(args[0], "XREADGROUP")))
        for (i = 1; i < nargs && !blocking; i++)
            blocking = is_word(args[i], "BLOCK");
    if (blocking) {
        PyErr_Format(PyExc_ValueError,
                     "%R blocks, and would stall every request sharing the connection; run it "
                     "on a connection of your own: 'async with cache.dedicated() as conn'",
                     args[0]);
        return -1;
    }
    return 0;
}

PyObject *rc_client_execute_command(rc_client *self, PyObject *const *args, Py_ssize_t nargs)
{
    raw_arg arg = {args, nargs};

    if (check_command(self, args, nargs) < 0)
        return NULL;
    return send(self, encode_raw, &arg, 1, RC_RESULT_RAW, NULL, NULL);
}

PyObject *rc_client_key_prefix(PyObject *self, void *unused)
{
    rc_client *c = (rc_client *)self;
    (void)unused;
    return PyBytes_FromStringAndSize(c->ks.prefix ? c->ks.prefix : "",
                                     (Py_ssize_t)c->ks.prefix_len);
}
