/* Replies to results; see result.h. */
#include "result.h"

/* value as an instance of model, by redis_cache._typed.convert (imported on
 * first use: most caches never ask for typed reads). */
static PyObject *convert(rc_state *st, PyObject *model, PyObject *value)
{
    if (st->typed_convert == NULL) {
        PyObject *module = PyImport_ImportModule("redis_cache._typed");
        if (module == NULL)
            return NULL;
        st->typed_convert = PyObject_GetAttrString(module, "convert");
        Py_DECREF(module);
        if (st->typed_convert == NULL)
            return NULL;
    }
    return PyObject_CallFunctionObjArgs(st->typed_convert, model, value, NULL);
}

PyObject *rc_none_list(Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    Py_ssize_t i;

    if (list != NULL)
        for (i = 0; i < n; i++)
            PyList_SET_ITEM(list, i, Py_NewRef(Py_None));
    return list;
}

PyObject *rc_result_typed_extra(PyObject *first, PyObject *model)
{
    return PyTuple_Pack(2, first, model);
}

static PyObject *mget_dict(rc_state *st, PyObject *reply, PyObject *keys, PyObject *model)
{
    Py_ssize_t i, n = PySequence_Fast_GET_SIZE(keys);
    PyObject *result;

    if (!PyList_Check(reply) || PyList_GET_SIZE(reply) != n) {
        PyErr_SetString(st->ProtocolError, "MGET returned an unexpected reply");
        return NULL;
    }
    result = PyDict_New();
    if (result == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *value = PyList_GET_ITEM(reply, i);
        int rc;
        if (value == st->missing)
            continue;
        if (model != NULL) {
            value = convert(st, model, value);
            if (value == NULL) {
                Py_DECREF(result);
                return NULL;
            }
        } else {
            Py_INCREF(value);
        }
        rc = PyDict_SetItem(result, PySequence_Fast_GET_ITEM(keys, i), value);
        Py_DECREF(value);
        if (rc < 0) {
            Py_DECREF(result);
            return NULL;
        }
    }
    return result;
}

/* The total of a list of integer replies (delete_many's UNLINKs). */
static PyObject *sum_of(rc_state *st, PyObject *replies)
{
    long long total = 0;
    Py_ssize_t i;

    if (!PyList_Check(replies)) {
        PyErr_SetString(st->ProtocolError, "the replies were not collected");
        return NULL;
    }
    for (i = 0; i < PyList_GET_SIZE(replies); i++) {
        long long n = PyLong_AsLongLong(PyList_GET_ITEM(replies, i));
        if (n == -1 && PyErr_Occurred())
            return NULL;
        total += n;
    }
    return PyLong_FromLongLong(total);
}

/* ------------------------------------------------------------ checking */

#define TYPE_BIT(t) (1u << (t))

static const char *type_name(int type)
{
    switch (type) {
    case REDIS_REPLY_STRING:
        return "a bulk string";
    case REDIS_REPLY_ARRAY:
        return "an array";
    case REDIS_REPLY_INTEGER:
        return "an integer";
    case REDIS_REPLY_NIL:
        return "nil";
    case REDIS_REPLY_STATUS:
        return "a simple string";
    case REDIS_REPLY_ERROR:
        return "an error";
    }
    return "an unknown type";
}

static int protocol_error(rc_state *st, const char *command, const char *got)
{
    PyErr_Format(st->ProtocolError,
                 "redis answered %s with %s, which %s never returns; the connection was "
                 "dropped (is another program using it, or is this not a Redis server?)",
                 command, got, command);
    return -1;
}

/* reply NULL: the reply could not be built (out of memory); only its type
 * is checked. */
static int is_status(PyObject *reply, const char *text)
{
    return reply == NULL ||
           (PyUnicode_Check(reply) && PyUnicode_CompareWithASCIIString(reply, text) == 0);
}

static int check_mget(rc_state *st, const rc_reply_shape *shape, PyObject *reply, PyObject *keys,
                      const char *command)
{
    char got[96];

    if (shape->type != REDIS_REPLY_ARRAY)
        return protocol_error(st, command, type_name(shape->type));
    if (shape->element_types & ~(TYPE_BIT(REDIS_REPLY_STRING) | TYPE_BIT(REDIS_REPLY_NIL)))
        return protocol_error(st, command,
                              shape->element_types & TYPE_BIT(REDIS_REPLY_ERROR)
                                  ? "an array holding an error"
                                  : "an array holding something other than values");
    if (reply != NULL &&
        (!PyList_Check(reply) || PyList_GET_SIZE(reply) != PySequence_Fast_GET_SIZE(keys))) {
        PyOS_snprintf(got, sizeof(got), "an array of %zd values for %zd keys",
                      PyList_Check(reply) ? PyList_GET_SIZE(reply) : (Py_ssize_t)-1,
                      PySequence_Fast_GET_SIZE(keys));
        return protocol_error(st, command, got);
    }
    return 0;
}

int rc_result_check(rc_state *st, rc_result_kind kind, const rc_reply_shape *shape,
                    PyObject *reply, PyObject *extra, const char *command)
{
    unsigned allowed;

    if (shape->type == REDIS_REPLY_ERROR)
        return 0;
    switch (kind) {
    case RC_RESULT_RAW:
        return 0;
    case RC_RESULT_VALUE:
    case RC_RESULT_TYPED_VALUE:
    case RC_RESULT_VALUES:
    case RC_RESULT_TYPED_VALUES:
        allowed = TYPE_BIT(REDIS_REPLY_STRING) | TYPE_BIT(REDIS_REPLY_NIL);
        break;
    case RC_RESULT_POSITIVE:
    case RC_RESULT_INTEGER:
    case RC_RESULT_SUM:
        allowed = TYPE_BIT(REDIS_REPLY_INTEGER);
        break;
    case RC_RESULT_STORED:
    case RC_RESULT_STORED_MANY:
        if (shape->type == REDIS_REPLY_NIL || (shape->type == REDIS_REPLY_STATUS && is_status(reply, "OK")))
            return 0;
        return protocol_error(st, command, shape->type == REDIS_REPLY_STATUS
                                               ? "a simple string other than OK"
                                               : type_name(shape->type));
    case RC_RESULT_PONG:
        if (shape->type == REDIS_REPLY_STATUS && is_status(reply, "PONG"))
            return 0;
        return protocol_error(st, command, shape->type == REDIS_REPLY_STATUS
                                               ? "a simple string other than PONG"
                                               : type_name(shape->type));
    case RC_RESULT_MGET:
        return check_mget(st, shape, reply, extra, command);
    case RC_RESULT_TYPED_MGET:
        return check_mget(st, shape, reply, PyTuple_GET_ITEM(extra, 0), command);
    case RC_RESULT_HANDSHAKE:
        allowed = TYPE_BIT(REDIS_REPLY_STATUS);
        break;
    default:
        return 0;
    }
    if (allowed & TYPE_BIT(shape->type))
        return 0;
    return protocol_error(st, command, type_name(shape->type));
}

/* ------------------------------------------------------------ building */

/* The keys of a set_many batch, in the order their SETs were written: a
 * dict's own order, or that of a list of (key, value) pairs. */
static PyObject *batch_keys(PyObject *batch)
{
    Py_ssize_t i, n;
    PyObject *keys;

    if (PyDict_Check(batch))
        return PyDict_Keys(batch);
    n = PyList_GET_SIZE(batch);
    keys = PyList_New(n);
    if (keys == NULL)
        return NULL;
    for (i = 0; i < n; i++)
        PyList_SET_ITEM(keys, i, Py_NewRef(PyTuple_GET_ITEM(PyList_GET_ITEM(batch, i), 0)));
    return keys;
}

/* The error for a pipelined batch of SETs some of which the server refused:
 * which keys were written, which were not and why. */
static PyObject *partial_write(rc_state *st, PyObject *replies, PyObject *batch)
{
    PyObject *keys = NULL, *written = NULL, *failed = NULL, *first = NULL, *exc = NULL,
             *message = NULL;
    Py_ssize_t i, n = PyList_GET_SIZE(replies);

    keys = batch_keys(batch);
    written = PyList_New(0);
    failed = PyDict_New();
    if (keys == NULL || written == NULL || failed == NULL)
        goto out;
    if (PyList_GET_SIZE(keys) != n) {
        PyErr_SetString(st->ProtocolError, "set_many: the replies do not match the batch");
        goto out;
    }
    for (i = 0; i < n; i++) {
        PyObject *reply = PyList_GET_ITEM(replies, i), *key = PyList_GET_ITEM(keys, i);
        int rc;
        if (rc_is_error_reply(st, reply)) {
            if (first == NULL)
                first = reply;
            rc = PyDict_SetItem(failed, key, reply);
        } else {
            rc = reply == Py_None ? 0 : PyList_Append(written, key);
        }
        if (rc < 0)
            goto out;
    }
    message = PyUnicode_FromFormat("set_many: redis refused %zd of the %zd keys and stored %zd "
                                   "(first refusal: %S); the error's .failed and .written say "
                                   "which",
                                   PyDict_GET_SIZE(failed), n, PyList_GET_SIZE(written), first);
    if (message != NULL)
        exc = PyObject_CallFunctionObjArgs(st->PartialWriteError, message, written, failed, NULL);
out:
    Py_XDECREF(message);
    Py_XDECREF(keys);
    Py_XDECREF(written);
    Py_XDECREF(failed);
    return exc;
}

PyObject *rc_result_build(rc_state *st, rc_result_kind kind, PyObject *reply, PyObject *extra)
{
    Py_ssize_t i;

    switch (kind) {
    case RC_RESULT_VALUE:
        return Py_NewRef(reply == st->missing ? extra : reply);
    case RC_RESULT_STORED_MANY:
        if (PyList_Check(reply)) {
            int stored = 1;
            for (i = 0; i < PyList_GET_SIZE(reply); i++) {
                PyObject *item = PyList_GET_ITEM(reply, i);
                if (rc_is_error_reply(st, item)) {
                    PyObject *exc = partial_write(st, reply, extra);
                    if (exc != NULL) {
                        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                        Py_DECREF(exc);
                    }
                    return NULL;
                }
                stored &= item != Py_None;
            }
            return PyBool_FromLong(stored);
        }
        PyErr_SetString(st->ProtocolError, "set_many: the replies were not collected");
        return NULL;
    case RC_RESULT_STORED:
        return PyBool_FromLong(reply != Py_None);
    case RC_RESULT_POSITIVE:
        return PyBool_FromLong(PyLong_Check(reply) && PyLong_AsLong(reply) > 0);
    case RC_RESULT_PONG:
        return PyBool_FromLong(PyUnicode_Check(reply) &&
                               PyUnicode_CompareWithASCIIString(reply, "PONG") == 0);
    case RC_RESULT_MGET:
        return mget_dict(st, reply, extra, NULL);
    case RC_RESULT_TYPED_MGET:
        return mget_dict(st, reply, PyTuple_GET_ITEM(extra, 0), PyTuple_GET_ITEM(extra, 1));
    case RC_RESULT_VALUES:
        return mget_dict(st, reply, extra, NULL);
    case RC_RESULT_TYPED_VALUES:
        return mget_dict(st, reply, PyTuple_GET_ITEM(extra, 0), PyTuple_GET_ITEM(extra, 1));
    case RC_RESULT_SUM:
        return sum_of(st, reply);
    case RC_RESULT_TYPED_VALUE:
        if (reply == st->missing)
            return Py_NewRef(PyTuple_GET_ITEM(extra, 0));
        return convert(st, PyTuple_GET_ITEM(extra, 1), reply);
    case RC_RESULT_RAW:
    case RC_RESULT_INTEGER:
    case RC_RESULT_HANDSHAKE:
        break;
    }
    return Py_NewRef(reply);
}
