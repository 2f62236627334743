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

typedef struct {
    PyObject *key;
    long long amount;
} incr_arg;

static int encode_incrby(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    incr_arg *a = arg;
    return rc_cmd_incrby(ks, b, a->key, a->amount);
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

/* NAME key, once per key: get_many / delete_many on a cluster node. */
static int encode_each(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    keys_arg *a = arg;
    Py_ssize_t i;

    for (i = 0; i < PyTuple_GET_SIZE(a->keys); i++)
        if (rc_cmd_key(ks, b, a->name, PyTuple_GET_ITEM(a->keys, i)) < 0)
            return -1;
    return 0;
}

typedef struct {
    PyObject *batch;
    long long ms;
} batch_arg;

static int encode_set_many(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    batch_arg *a = arg;
    return rc_cmd_set_many(ks, b, a->batch, a->ms);
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

static PyObject *send(rc_client *self, const rc_request *request)
{
    rc_request asked;

    if (!self->ask_next)
        return self->transport->send(self, request);
    self->ask_next = 0;
    asked = *request;
    asked.asking = 1;
    return self->transport->send(self, &asked);
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
 * the pooled connection held here. So the first attempt refuses to run any
 * (and builds no error message that could: a value it cannot write at all
 * is refused the same way); such a value is encoded again into a scratch
 * buffer, with no connection held, where hooks run and errors are told, and
 * the bytes are copied in. */
static PyObject *send_values(rc_client *self, const rc_request *request)
{
    without_hooks_arg direct = {request->encode, request->arg};
    rc_request attempt = *request;
    rc_buf bytes;
    PyObject *result;

    if (self->ks.codec.kind != RC_CODEC_JSON)
        return send(self, request);
    /* Both attempts carry the ASKING, if one is due. */
    attempt.asking |= self->ask_next;
    self->ask_next = 0;
    attempt.encode = encode_without_hooks;
    attempt.arg = &direct;
    result = send(self, &attempt);
    if (result != NULL || !PyErr_ExceptionMatches(self->ks.state->HooksNeeded))
        return result;
    PyErr_Clear();
    rc_buf_init(&bytes);
    if (request->encode(&self->ks, &bytes, request->arg) == 0) {
        attempt.encode = encode_copy;
        attempt.arg = &bytes;
        result = send(self, &attempt);
    }
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

/* A tuple of keys, checked (see rc_check_keys); a lone str or bytes is
 * refused, as iterating it would turn one key into one key per character.
 * A copy, so that the caller (or a model's validation) changing its list
 * before get_many's reply arrives cannot change which key a value is paired
 * with. */
static PyObject *key_list(rc_client *self, const char *fname, PyObject *keys)
{
    PyObject *tuple;

    if (PyUnicode_Check(keys) || PyBytes_Check(keys)) {
        PyErr_Format(PyExc_TypeError, "%s() takes an iterable of keys, not a single %.100s key",
                     fname, Py_TYPE(keys)->tp_name);
        return NULL;
    }
    tuple = PySequence_Tuple(keys);
    if (tuple == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s() takes an iterable of str or bytes keys, not %.100s",
                         fname, Py_TYPE(keys)->tp_name);
        }
        return NULL;
    }
    if (rc_check_keys(&self->ks, &PyTuple_GET_ITEM(tuple, 0), PyTuple_GET_SIZE(tuple)) < 0)
        Py_CLEAR(tuple);
    return tuple;
}

static Py_ssize_t batch_size(PyObject *batch)
{
    return PyDict_Check(batch) ? PyDict_GET_SIZE(batch) : PyList_GET_SIZE(batch);
}

/* ------------------------------------------------------------ methods */

PyObject *rc_client_get(rc_client *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "default", "model"};
    PyObject *params[3] = {NULL, Py_None, Py_None}, *result;
    key_arg arg = {"GET", NULL};
    rc_request request = {"GET", encode_key, &arg, 1, RC_RESULT_VALUE, &self->ks.codec, NULL, 1};

    if (rc_parse_args("get", args, nargs, kwnames, names, 3, 1, params) < 0 ||
        rc_check_keys(&self->ks, params, 1) < 0)
        return NULL;
    request.extra = read_extra(params[1], params[2], &request.kind, RC_RESULT_TYPED_VALUE);
    if (request.extra == NULL)
        return NULL;
    arg.key = params[0];
    request.op = RC_OP_GET;
    result = send(self, &request);
    Py_DECREF(request.extra);
    return result;
}

PyObject *rc_client_set(rc_client *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "value", "ttl", "tags"};
    PyObject *params[4] = {NULL, NULL, Py_None, Py_None}, *result;
    set_arg arg;
    rc_request request = {"SET", encode_set, &arg, 1, RC_RESULT_STORED, NULL, NULL, 1};

    if (nargs > 3) { /* tags is keyword-only */
        PyErr_Format(PyExc_TypeError,
                     "set() takes at most 3 positional arguments (%zd given); pass tags= by name",
                     nargs);
        return NULL;
    }
    if (rc_parse_args("set", args, nargs, kwnames, names, 4, 2, params) < 0)
        return NULL;
    /* A tagged entry is written by the Python layer (redis_cache/tags.py):
     * it reads the tags' tokens first. */
    if (params[3] != Py_None)
        return PyObject_CallMethod((PyObject *)self, "set_tagged", "OOOO", params[0], params[1],
                                   params[3], params[2]);
    if (rc_check_keys(&self->ks, params, 1) < 0 || rc_ttl_ms(&self->ks, params[2], &arg.ms) < 0)
        return NULL;
    arg.key = params[0];
    request.op = RC_OP_SET;
    arg.value = rc_prepare_value(&self->ks, params[0], params[1]);
    if (arg.value == NULL)
        return NULL;
    result = send_values(self, &request);
    Py_DECREF(arg.value);
    return result;
}

static PyObject *key_command(rc_client *self, const char *name, PyObject *key, rc_result_kind kind,
                             rc_op op)
{
    key_arg arg = {name, key};
    rc_request request = {name, encode_key, &arg, 1, kind, NULL, NULL, 1, 0, op};

    if (rc_check_keys(&self->ks, &key, 1) < 0)
        return NULL;
    return send(self, &request);
}

PyObject *rc_client_delete(rc_client *self, PyObject *key)
{
    return key_command(self, "UNLINK", key, RC_RESULT_POSITIVE, RC_OP_DELETE);
}

PyObject *rc_client_exists(rc_client *self, PyObject *key)
{
    return key_command(self, "EXISTS", key, RC_RESULT_POSITIVE, RC_OP_EXISTS);
}

PyObject *rc_client_ttl(rc_client *self, PyObject *key)
{
    return key_command(self, "TTL", key, RC_RESULT_INTEGER, RC_OP_TTL);
}

PyObject *rc_client_expire(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"key", "ttl"};
    PyObject *params[2] = {NULL, NULL};
    set_arg arg;
    rc_request request = {"PEXPIRE", encode_expire, &arg,        1,
                          RC_RESULT_POSITIVE, NULL,  NULL, 1, 0, RC_OP_EXPIRE};

    if (rc_parse_args("expire", args, nargs, kwnames, names, 2, 2, params) < 0 ||
        rc_check_keys(&self->ks, params, 1) < 0 || rc_expire_ms(&self->ks, params[1], &arg.ms) < 0)
        return NULL;
    arg.key = params[0];
    arg.value = NULL;
    return send(self, &request);
}

PyObject *rc_client_incr(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"key", "amount"};
    PyObject *params[2] = {NULL, NULL};
    incr_arg arg = {NULL, 1};
    /* Not retry_safe: sent twice, it would add twice. */
    rc_request request = {"INCRBY", encode_incrby, &arg, 1, RC_RESULT_INTEGER,
                          NULL,     NULL,          0,    0, RC_OP_INCR};

    if (rc_parse_args("incr", args, nargs, kwnames, names, 2, 1, params) < 0 ||
        rc_check_keys(&self->ks, params, 1) < 0 ||
        (params[1] != NULL && rc_incr_amount(params[1], &arg.amount) < 0))
        return NULL;
    arg.key = params[0];
    return send(self, &request);
}

PyObject *rc_client_get_many(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"keys", "model"};
    PyObject *params[2] = {NULL, Py_None}, *result = NULL;
    keys_arg arg = {"MGET", NULL};
    rc_request request = {"MGET", encode_multikey, &arg,           1,
                          RC_RESULT_MGET, &self->ks.codec, NULL, 1, 0, RC_OP_GET_MANY};

    if (rc_parse_args("get_many", args, nargs, kwnames, names, 2, 1, params) < 0)
        return NULL;
    arg.keys = key_list(self, "get_many", params[0]);
    if (arg.keys == NULL)
        return NULL;
    if (PyTuple_GET_SIZE(arg.keys) == 0) {
        PyObject *empty = PyDict_New();
        if (empty != NULL)
            result = self->transport->done(self, empty);
        Py_XDECREF(empty);
        goto out;
    }
    if (self->cluster_node) {
        arg.name = "GET";
        request.encode = encode_each;
        request.replies = PyTuple_GET_SIZE(arg.keys);
        request.kind = RC_RESULT_VALUES;
    }
    request.extra = read_extra(arg.keys, params[1], &request.kind,
                               self->cluster_node ? RC_RESULT_TYPED_VALUES : RC_RESULT_TYPED_MGET);
    if (request.extra != NULL)
        result = send(self, &request);
out:
    Py_XDECREF(request.extra);
    Py_DECREF(arg.keys);
    return result;
}

PyObject *rc_client_delete_many(rc_client *self, PyObject *keys)
{
    keys_arg arg = {"UNLINK", NULL};
    rc_request request = {"UNLINK", encode_multikey, &arg, 1, RC_RESULT_INTEGER,
                          NULL,     NULL,            1,    0, RC_OP_DELETE_MANY};
    PyObject *result;

    arg.keys = key_list(self, "delete_many", keys);
    if (arg.keys == NULL)
        return NULL;
    if (PyTuple_GET_SIZE(arg.keys) == 0) {
        PyObject *zero = PyLong_FromLong(0);
        result = zero == NULL ? NULL : self->transport->done(self, zero);
        Py_XDECREF(zero);
    } else {
        if (self->cluster_node) {
            request.encode = encode_each;
            request.replies = PyTuple_GET_SIZE(arg.keys);
            request.kind = RC_RESULT_SUM;
        }
        result = send(self, &request);
    }
    Py_DECREF(arg.keys);
    return result;
}

PyObject *rc_client_key_slot(rc_client *self, PyObject *key)
{
    int slot = rc_key_slot_in(&self->ks, key);

    return slot < 0 ? NULL : PyLong_FromLong(slot);
}

PyObject *rc_client_ask_next(rc_client *self, PyObject *unused)
{
    (void)unused;
    self->ask_next = 1;
    Py_RETURN_NONE;
}

PyObject *rc_client_encode_value(rc_client *self, PyObject *value)
{
    const rc_codec *codec = &self->ks.codec;
    PyObject *prepared, *result = NULL;
    const char *body;
    rc_buf b;

    prepared = rc_codec_needs_prepare(codec) ? rc_codec_prepare(codec, value, self->state)
                                             : Py_NewRef(value);
    if (prepared == NULL)
        return NULL;
    rc_buf_init(&b);
    if (rc_codec_write(codec, &b, prepared, self->state) < 0)
        goto out;
    /* The bulk string "$<len>\r\n<bytes>\r\n": its bytes. */
    body = b.len >= 5 ? memchr(b.data, '\n', b.len) : NULL;
    if (body == NULL || b.data[0] != '$') {
        PyErr_SetString(PyExc_SystemError, "redis_cache: the codec wrote no bulk string");
        goto out;
    }
    body++;
    result = PyBytes_FromStringAndSize(body, (Py_ssize_t)(b.data + b.len - 2 - body));
out:
    rc_buf_free(&b);
    Py_DECREF(prepared);
    return result;
}

PyObject *rc_client_decode_value(rc_client *self, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "_decode_value() takes bytes, not %.100s",
                     Py_TYPE(data)->tp_name);
        return NULL;
    }
    return rc_codec_decode(&self->ks.codec, PyBytes_AS_STRING(data),
                           (size_t)PyBytes_GET_SIZE(data), self->state);
}

PyObject *rc_client_as_cluster_node(rc_client *self, PyObject *unused)
{
    (void)unused;
    self->cluster_node = 1;
    Py_RETURN_NONE;
}

int rc_client_metrics_init(rc_client *self, int enabled)
{
    rc_metrics_unref(self->metrics);
    self->metrics = NULL;
    if (!enabled)
        return 0;
    self->metrics = rc_metrics_new();
    return self->metrics == NULL ? -1 : 0;
}

PyObject *rc_client_set_many(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"mapping", "ttl"};
    PyObject *params[2] = {NULL, Py_None}, *result;
    batch_arg arg;
    rc_request request = {"SET", encode_set_many, &arg, 0, RC_RESULT_STORED_MANY,
                          NULL,  NULL,            1,    0, RC_OP_SET_MANY};

    if (rc_parse_args("set_many", args, nargs, kwnames, names, 2, 1, params) < 0 ||
        rc_ttl_ms(&self->ks, params[1], &arg.ms) < 0)
        return NULL;
    /* An empty batch needs no connection (nor a working server). */
    if (rc_is_empty_mapping(params[0]))
        return self->transport->done(self, Py_True);
    /* A snapshot of the items: waiting for a connection may let other
     * threads run, and the batch written must be the one counted. */
    arg.batch = rc_prepare_batch(&self->ks, params[0]);
    if (arg.batch == NULL)
        return NULL;
    request.replies = batch_size(arg.batch);
    request.extra = arg.batch;
    if (request.replies == 0)
        result = self->transport->done(self, Py_True);
    else
        result = send_values(self, &request);
    Py_DECREF(arg.batch);
    return result;
}

PyObject *rc_client_ping(rc_client *self, PyObject *unused)
{
    PyObject *word = PyUnicode_FromString("PING"), *result;
    raw_arg arg = {NULL, 1};
    rc_request request = {"PING", encode_raw, &arg, 1, RC_RESULT_PONG,
                          NULL,   NULL,       1,    0, RC_OP_PING};

    (void)unused;
    if (word == NULL)
        return NULL;
    arg.args = &word;
    result = send(self, &request);
    Py_DECREF(word);
    return result;
}

/* Commands that change the connection's state or its stream of replies
 * would leak that state to whoever uses the pooled or shared connection next,
 * or hand later callers replies meant for others (CLIENT REPLY OFF: the next
 * caller gets nothing, the one after gets its reply); blocking ones would
 * stall everyone sharing a multiplexed connection. All of them belong on a
 * connection of one's own. */
static const char *const stateful_commands[] = {
    "MULTI",       "EXEC",         "DISCARD",      "WATCH",    "UNWATCH",  "SUBSCRIBE",
    "PSUBSCRIBE",  "SSUBSCRIBE",   "UNSUBSCRIBE",  "PUNSUBSCRIBE", "SUNSUBSCRIBE",
    "MONITOR",     "SELECT",       "QUIT",         "RESET",    "AUTH",     "HELLO",
    "SYNC",        "PSYNC",        "REPLCONF",     "READONLY", "READWRITE", "ASKING",
    NULL,
};
/* The stateful commands that cache.subscribe() does properly. */
static const char *const pubsub_commands[] = {
    "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE", NULL,
};
/* CLIENT subcommands that change this connection (the others, such as LIST,
 * ID, INFO, KILL or PAUSE, only read or act on the server). */
static const char *const stateful_client_subcommands[] = {
    "REPLY", "TRACKING", "CACHING", "SETNAME", "SETINFO", "NO-EVICT", "NO-TOUCH", NULL,
};
static const char *const blocking_commands[] = {
    "BLPOP",    "BRPOP",  "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX",
    "BLMPOP",   "BZMPOP", "WAIT",   "WAITAOF",    NULL,
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

/* Appends arg (a command word), upper-cased and cut short, to out. */
static void append_word(char *out, size_t size, PyObject *arg)
{
    size_t len = strlen(out), i;
    const char *p = NULL;
    Py_ssize_t n = 0;

    if (PyUnicode_Check(arg)) {
        p = PyUnicode_AsUTF8AndSize(arg, &n);
        if (p == NULL)
            PyErr_Clear();
    } else if (PyBytes_Check(arg)) {
        p = PyBytes_AS_STRING(arg);
        n = PyBytes_GET_SIZE(arg);
    }
    if (p == NULL) {
        p = "?";
        n = 1;
    }
    if (len > 0 && len + 1 < size)
        out[len++] = ' ';
    for (i = 0; i < (size_t)n && len + 1 < size && i < 32; i++)
        out[len++] = (char)Py_TOUPPER((unsigned char)p[i]);
    out[len] = '\0';
}

static int in_list(PyObject *arg, const char *const *words)
{
    for (; *words != NULL; words++)
        if (is_word(arg, *words))
            return 1;
    return 0;
}

/* Refuses a command that must not ride this client's connections. The
 * name is shown with the str/bytes type's own repr (a subclass's __repr__
 * is user code, and none runs here). */
static int check_command(rc_client *self, PyObject *const *args, Py_ssize_t nargs)
{
    const char *where = self->transport->multiplexed
                            ? "run it on a connection of your own: "
                              "'async with cache.dedicated() as conn'"
                            : "SyncRedisCache lends its connections one command at a time, "
                              "so use RedisCache.dedicated() or a client of your own for it";
    char name[80] = "";
    Py_ssize_t i;
    int blocking, stateful;

    if (nargs == 0)
        return 0;
    append_word(name, sizeof(name), args[0]);
    stateful = in_list(args[0], stateful_commands);
    if (!stateful && nargs > 1 && is_word(args[0], "CLIENT") &&
        in_list(args[1], stateful_client_subcommands)) {
        append_word(name, sizeof(name), args[1]);
        stateful = 1;
    }
    if (stateful) {
        PyErr_Format(PyExc_ValueError,
                     "%s changes the connection or the replies on it, and other callers share "
                     "the connection; %s%s",
                     name, where, in_list(args[0], pubsub_commands)
                         ? " (for pub/sub: 'cache.subscribe(channel, ...)', which has "
                           "connections of its own)"
                         : "");
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
                     "%s blocks, and would stall every request sharing the connection; run it "
                     "on a connection of your own: 'async with cache.dedicated() as conn'",
                     name);
        return -1;
    }
    return 0;
}

PyObject *rc_client_execute_command(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    raw_arg arg = {args, nargs};
    rc_request request = {"the command", encode_raw, &arg, 1, RC_RESULT_RAW, NULL,
                          NULL,          0,          0,    RC_OP_EXECUTE_COMMAND};
    Py_ssize_t i;

    for (i = 0; kwnames != NULL && i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (!PyUnicode_Check(name) || PyUnicode_CompareWithASCIIString(name, "idempotent") != 0) {
            PyErr_Format(PyExc_TypeError,
                         "execute_command() got an unexpected keyword argument %R; the only "
                         "one it takes is idempotent=",
                         name);
            return NULL;
        }
        request.retry_safe = PyObject_IsTrue(args[nargs + i]);
        if (request.retry_safe < 0)
            return NULL;
    }
    if (check_command(self, args, nargs) < 0)
        return NULL;
    return send(self, &request);
}

PyObject *rc_client_key_prefix(PyObject *self, void *unused)
{
    rc_client *c = (rc_client *)self;
    (void)unused;
    return PyBytes_FromStringAndSize(c->ks.prefix ? c->ks.prefix : "",
                                     (Py_ssize_t)c->ks.prefix_len);
}

/* ------------------------------------------------------------ TLS settings */

/* settings.<name> as a C string (NULL when None), kept alive by *holder. */
static int tls_string(PyObject *settings, const char *name, const char **out, PyObject **holder)
{
    PyObject *value = PyObject_GetAttrString(settings, name);

    *out = NULL;
    *holder = value;
    if (value == NULL)
        return -1;
    if (value == Py_None)
        return 0;
    if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "TLS setting %s must be a str or None, not %.100s", name,
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    *out = PyUnicode_AsUTF8(value);
    return *out == NULL ? -1 : 0;
}

rc_tls_context *rc_client_tls_context(rc_state *st, PyObject *settings, int *none)
{
    static const char *const names[] = {"ca_certs", "ca_path",     "ca_data",
                                        "certfile", "keyfile",     "password",
                                        "cert_reqs", "min_version", "ciphers"};
    enum { N = sizeof(names) / sizeof(names[0]) };
    PyObject *holders[N] = {NULL}, *check = NULL;
    const char *values[N];
    char err[RC_TLS_ERROR_MAX];
    rc_tls_options o;
    rc_tls_context *ctx = NULL;
    size_t i;
    int check_hostname;

    *none = settings == Py_None;
    if (*none)
        return NULL;
    for (i = 0; i < N; i++)
        if (tls_string(settings, names[i], &values[i], &holders[i]) < 0)
            goto out;
    check = PyObject_GetAttrString(settings, "check_hostname");
    if (check == NULL || (check_hostname = PyObject_IsTrue(check)) < 0)
        goto out;
    memset(&o, 0, sizeof(o));
    o.ca_file = values[0];
    o.ca_path = values[1];
    o.ca_data = values[2];
    o.cert_file = values[3];
    o.key_file = values[4];
    o.key_password = values[5];
    o.verify = values[6] == NULL || strcmp(values[6], "required") == 0 ? RC_TLS_VERIFY_REQUIRED
               : strcmp(values[6], "optional") == 0                    ? RC_TLS_VERIFY_OPTIONAL
                                                                       : RC_TLS_VERIFY_NONE;
    o.min_version = values[7];
    o.ciphers = values[8];
    o.check_hostname = check_hostname;
    ctx = rc_tls_context_new(&o, err, sizeof(err));
    if (ctx == NULL)
        PyErr_Format(st->ConfigurationError, "TLS settings refused: %s", err);
out:
    for (i = 0; i < N; i++)
        Py_XDECREF(holders[i]);
    Py_XDECREF(check);
    return ctx;
}
