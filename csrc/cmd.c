/* Cache commands to RESP; see cmd.h. */
#include "cmd.h"
#include "slots.h"

#include <math.h>

#include "resp.h"
#include "result.h"

static int no_memory(void)
{
    PyErr_NoMemory();
    return -1;
}

int rc_keyspace_init(rc_keyspace *ks, PyObject *namespace_, PyObject *default_ttl,
                     PyObject *serializer, const rc_compress_options *compress,
                     Py_ssize_t max_key_size, rc_state *st)
{
    ks->prefix = NULL;
    ks->prefix_len = 0;
    ks->default_ttl_ms = -1;
    ks->state = st;
    ks->codec.dumps = ks->codec.loads = NULL;
    if (max_key_size < 1) {
        PyErr_Format(st->ConfigurationError, "max_key_size must be at least 1 byte, got %zd",
                     max_key_size);
        return -1;
    }
    ks->max_key_size = (size_t)max_key_size;
    if (rc_codec_init(&ks->codec, serializer, compress, st) < 0)
        return -1;
    if (rc_ttl_ms(ks, default_ttl, &ks->default_ttl_ms) < 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        PyErr_Format(st->ConfigurationError, "default_ttl: %S", value);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        goto fail;
    }
    if (namespace_ != Py_None) {
        Py_ssize_t n;
        const char *p;
        if (!PyUnicode_Check(namespace_)) {
            PyErr_Format(st->ConfigurationError, "namespace must be a str or None, not %.100s",
                         Py_TYPE(namespace_)->tp_name);
            goto fail;
        }
        p = PyUnicode_AsUTF8AndSize(namespace_, &n);
        if (p == NULL)
            goto fail;
        if (n > 0) {
            ks->prefix = PyMem_RawMalloc((size_t)n + 1);
            if (ks->prefix == NULL) {
                no_memory();
                goto fail;
            }
            memcpy(ks->prefix, p, (size_t)n);
            ks->prefix[n] = ':';
            ks->prefix_len = (size_t)n + 1;
        }
    }
    return 0;
fail:
    rc_keyspace_clear(ks);
    return -1;
}

void rc_keyspace_clear(rc_keyspace *ks)
{
    PyMem_RawFree(ks->prefix);
    ks->prefix = NULL;
    ks->prefix_len = 0;
    rc_codec_clear(&ks->codec);
}

static int bad_ttl(PyObject *ttl)
{
    PyErr_Format(PyExc_ValueError,
                 "ttl must be a positive number of seconds or a positive timedelta, "
                 "got %R; use None for the default expiry",
                 ttl);
    return -1;
}

static int seconds_to_ms(PyObject *ttl, double seconds, long long *ms)
{
    double v;

    if (!(seconds > 0) || !isfinite(seconds))
        return bad_ttl(ttl);
    /* Round up to whole milliseconds, but not for binary noise: 2.007 s is
     * 2007.0000000000002 ms in floating point and must stay 2007. */
    v = seconds * 1000.0;
    v = fabs(v - nearbyint(v)) < 1e-6 ? nearbyint(v) : ceil(v);
    if (v < 1)
        v = 1; /* Redis's smallest expiry; 0 would delete the key at once */
    if (v > 9.0e15)
        return bad_ttl(ttl);
    *ms = (long long)v;
    return 0;
}

int rc_ttl_ms(const rc_keyspace *ks, PyObject *ttl, long long *ms)
{
    int overflow = 0;
    long long v;
    double seconds;
    PyObject *total;

    if (ttl == NULL || ttl == Py_None) {
        *ms = ks->default_ttl_ms;
        return 0;
    }
    if (PyBool_Check(ttl)) {
        PyErr_SetString(PyExc_TypeError,
                        "ttl must be seconds (int or float) or a timedelta, not bool");
        return -1;
    }
    if (PyLong_Check(ttl)) {
        v = PyLong_AsLongLongAndOverflow(ttl, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (overflow || v <= 0 || v > 9000000000000LL)
            return bad_ttl(ttl);
        *ms = v * 1000;
        return 0;
    }
    if (PyFloat_Check(ttl))
        return seconds_to_ms(ttl, PyFloat_AS_DOUBLE(ttl), ms);
    /* timedelta, and anything else that knows its length in seconds. */
    total = PyObject_CallMethod(ttl, "total_seconds", NULL);
    if (total == NULL) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "ttl must be seconds (int or float) or a timedelta, not %.100s",
                     Py_TYPE(ttl)->tp_name);
        return -1;
    }
    seconds = PyFloat_AsDouble(total);
    Py_DECREF(total);
    if (seconds == -1.0 && PyErr_Occurred())
        return -1;
    return seconds_to_ms(ttl, seconds, ms);
}

/* The bytes of a key, or -1 with TypeError (not str or bytes) or
 * ValueError (no UTF-8 form) set. */
static int key_bytes(PyObject *key, const char **p, Py_ssize_t *n)
{
    if (PyUnicode_Check(key)) {
        *p = PyUnicode_AsUTF8AndSize(key, n);
        if (*p == NULL) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError,
                            "a cache key holds a lone surrogate, which has no UTF-8 form; "
                            "clean the text or use a bytes key");
            return -1;
        }
        return 0;
    }
    if (PyBytes_Check(key)) {
        *p = PyBytes_AS_STRING(key);
        *n = PyBytes_GET_SIZE(key);
        return 0;
    }
    PyErr_Format(PyExc_TypeError,
                 "cache keys must be str or bytes, not %.100s; "
                 "convert the key first (for example with str())",
                 Py_TYPE(key)->tp_name);
    return -1;
}

int rc_check_keys(const rc_keyspace *ks, PyObject *const *keys, Py_ssize_t n)
{
    Py_ssize_t i, len;
    const char *p;

    for (i = 0; i < n; i++) {
        if (key_bytes(keys[i], &p, &len) < 0)
            return -1;
        if (len == 0) {
            PyErr_SetString(PyExc_ValueError,
                            "cache keys must not be empty: an empty key would name the bare "
                            "namespace");
            return -1;
        }
        if ((size_t)len > ks->max_key_size - ks->prefix_len || ks->prefix_len >= ks->max_key_size) {
            PyErr_Format(PyExc_ValueError,
                         "a cache key of %zd bytes (%zu with the namespace) is longer than "
                         "max_key_size=%zu; hash long keys (e.g. with hashlib) or raise "
                         "max_key_size",
                         len, (size_t)len + ks->prefix_len, ks->max_key_size);
            return -1;
        }
    }
    return 0;
}

int rc_key_slot_in(const rc_keyspace *ks, PyObject *key)
{
    const char *p;
    Py_ssize_t n;

    if (rc_check_keys(ks, &key, 1) < 0 || key_bytes(key, &p, &n) < 0)
        return -1;
    return rc_key_slot(ks->prefix, ks->prefix_len, p, (size_t)n);
}

int rc_cmd_asking(rc_buf *b)
{
    static const char asking[] = "*1\r\n$6\r\nASKING\r\n";

    if (rc_buf_append(b, asking, sizeof(asking) - 1) < 0)
        return no_memory();
    return 0;
}

static int put_key(const rc_keyspace *ks, rc_buf *b, PyObject *key)
{
    const char *p;
    Py_ssize_t n;

    /* Checked beforehand (rc_check_keys): this cannot fail but for memory. */
    if (key_bytes(key, &p, &n) < 0)
        return -1;
    if (rc_resp_bulk2(b, ks->prefix, ks->prefix_len, p, (size_t)n) < 0)
        return no_memory();
    return 0;
}

static int put_word(rc_buf *b, const char *word)
{
    return rc_resp_bulk(b, word, strlen(word)) < 0 ? no_memory() : 0;
}

static int put_array(rc_buf *b, size_t n)
{
    return rc_resp_array(b, n) < 0 ? no_memory() : 0;
}

int rc_cmd_key(const rc_keyspace *ks, rc_buf *b, const char *name, PyObject *key)
{
    if (put_array(b, 2) < 0 || put_word(b, name) < 0)
        return -1;
    return put_key(ks, b, key);
}

/* Adds which key a value belonged to, for errors in a batch. */
static void name_the_key(const rc_keyspace *ks, PyObject *key)
{
    PyObject *type, *value, *tb, *shown;
    PyObject *renamed_type, *renamed, *renamed_tb, *cause;

    if (!PyErr_ExceptionMatches(ks->state->SerializationError))
        return;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    /* The key is a str or bytes (checked); shown by its base type's repr,
     * as a subclass's __repr__ is user code, which may not run while a
     * command is being written. */
    shown = PyUnicode_Check(key) ? PyUnicode_Type.tp_repr(key) : PyBytes_Type.tp_repr(key);
    if (shown == NULL) {
        PyErr_Clear();
        shown = PyUnicode_FromString("?");
    }
    PyErr_Format(ks->state->SerializationError, "the value for key %S: %S", shown, value);
    Py_XDECREF(shown);
    /* Keep the original cause (a custom dumps()'s own exception). */
    PyErr_Fetch(&renamed_type, &renamed, &renamed_tb);
    PyErr_NormalizeException(&renamed_type, &renamed, &renamed_tb);
    cause = value != NULL ? PyException_GetCause(value) : NULL;
    if (cause != NULL && renamed != NULL)
        PyException_SetCause(renamed, cause);
    else
        Py_XDECREF(cause);
    PyErr_Restore(renamed_type, renamed, renamed_tb);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* SET with its expiry; ms from rc_ttl_ms; the value already prepared. */
static int put_set(const rc_keyspace *ks, rc_buf *b, PyObject *key, PyObject *prepared,
                   long long ms)
{
    if (put_array(b, ms < 0 ? 3 : 5) < 0 || put_word(b, "SET") < 0 || put_key(ks, b, key) < 0)
        return -1;
    if (rc_codec_write(&ks->codec, b, prepared, ks->state) < 0) {
        name_the_key(ks, key);
        return -1;
    }
    if (ms < 0)
        return 0;
    /* Whole seconds go as EX: what redis-cli users expect to see in MONITOR. */
    if (ms % 1000 == 0) {
        if (put_word(b, "EX") < 0 || rc_resp_bulk_ll(b, ms / 1000) < 0)
            return no_memory();
    } else if (put_word(b, "PX") < 0 || rc_resp_bulk_ll(b, ms) < 0) {
        return no_memory();
    }
    return 0;
}

PyObject *rc_prepare_value(const rc_keyspace *ks, PyObject *key, PyObject *value)
{
    PyObject *prepared = rc_codec_prepare(&ks->codec, value, ks->state);

    if (prepared == NULL)
        name_the_key(ks, key);
    return prepared;
}

int rc_cmd_set(const rc_keyspace *ks, rc_buf *b, PyObject *key, PyObject *prepared, long long ms)
{
    return put_set(ks, b, key, prepared, ms);
}

int rc_expire_ms(const rc_keyspace *ks, PyObject *ttl, long long *ms)
{
    if (ttl == Py_None) {
        PyErr_SetString(PyExc_ValueError, "expire() needs a ttl (seconds or a timedelta)");
        return -1;
    }
    return rc_ttl_ms(ks, ttl, ms);
}

int rc_cmd_expire(const rc_keyspace *ks, rc_buf *b, PyObject *key, long long ms)
{
    if (put_array(b, 3) < 0 || put_word(b, "PEXPIRE") < 0 || put_key(ks, b, key) < 0)
        return -1;
    return rc_resp_bulk_ll(b, ms) < 0 ? no_memory() : 0;
}

int rc_incr_amount(PyObject *amount, long long *v)
{
    int overflow = 0;

    if (!PyLong_Check(amount) || PyBool_Check(amount)) {
        PyErr_Format(PyExc_TypeError, "incr() amount must be an int, not %.100s",
                     Py_TYPE(amount)->tp_name);
        return -1;
    }
    *v = PyLong_AsLongLongAndOverflow(amount, &overflow);
    if (*v == -1 && PyErr_Occurred())
        return -1;
    if (overflow) {
        PyErr_SetString(PyExc_ValueError, "incr() amount must fit in a signed 64-bit integer");
        return -1;
    }
    return 0;
}

int rc_cmd_incrby(const rc_keyspace *ks, rc_buf *b, PyObject *key, long long amount)
{
    if (put_array(b, 3) < 0 || put_word(b, "INCRBY") < 0 || put_key(ks, b, key) < 0)
        return -1;
    return rc_resp_bulk_ll(b, amount) < 0 ? no_memory() : 0;
}

int rc_cmd_multikey(const rc_keyspace *ks, rc_buf *b, const char *name, PyObject *keys)
{
    Py_ssize_t i, n = PySequence_Fast_GET_SIZE(keys);
    PyObject **items = PySequence_Fast_ITEMS(keys);

    if (put_array(b, (size_t)n + 1) < 0 || put_word(b, name) < 0)
        return -1;
    for (i = 0; i < n; i++)
        if (put_key(ks, b, items[i]) < 0)
            return -1;
    return 0;
}

/* The (key, value) pairs of a mapping as a list of 2-tuples: a snapshot, so
 * that no Python code (a mapping's items(), a serializer's dumps()) runs
 * while commands are being written. */
static PyObject *mapping_items(PyObject *mapping)
{
    PyObject *items, *list;
    Py_ssize_t i;

    items = PyMapping_Items(mapping);
    if (items == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError) ||
            PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "set_many() takes a mapping of keys to values, not %.100s",
                         Py_TYPE(mapping)->tp_name);
        }
        return NULL;
    }
    list = PySequence_List(items);
    Py_DECREF(items);
    if (list == NULL)
        return NULL;
    for (i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *pair = PyList_GET_ITEM(list, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "set_many(): items() must give (key, value) pairs");
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

/* Checks the keys of a dict snapshot. */
static int check_dict_keys(const rc_keyspace *ks, PyObject *dict)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;

    while (PyDict_Next(dict, &pos, &key, &value))
        if (rc_check_keys(ks, &key, 1) < 0)
            return -1;
    return 0;
}

PyObject *rc_prepare_batch(const rc_keyspace *ks, PyObject *mapping)
{
    PyObject *items, *pairs = NULL, *copy;
    Py_ssize_t i, n;

    /* The common case: a copy of the dict (a C-level copy of its table). */
    if (PyDict_CheckExact(mapping) && !rc_codec_needs_prepare(&ks->codec)) {
        copy = PyDict_Copy(mapping);
        if (copy != NULL && check_dict_keys(ks, copy) < 0)
            Py_CLEAR(copy);
        return copy;
    }
    items = mapping_items(mapping);
    if (items == NULL)
        return NULL;
    n = PyList_GET_SIZE(items);
    pairs = rc_none_list(n); /* a custom dumps() runs while it fills */
    if (pairs == NULL)
        goto fail;
    for (i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(items, i), *key = PyTuple_GET_ITEM(pair, 0);
        PyObject *value, *prepared;
        if (rc_check_keys(ks, &key, 1) < 0)
            goto fail;
        value = rc_prepare_value(ks, key, PyTuple_GET_ITEM(pair, 1));
        if (value == NULL)
            goto fail;
        prepared = PyTuple_Pack(2, key, value);
        Py_DECREF(value);
        if (prepared == NULL || PyList_SetItem(pairs, i, prepared) < 0)
            goto fail;
    }
    Py_DECREF(items);
    return pairs;
fail:
    Py_XDECREF(pairs);
    Py_DECREF(items);
    return NULL;
}

int rc_cmd_set_many(const rc_keyspace *ks, rc_buf *b, PyObject *batch, long long ms)
{
    Py_ssize_t i, pos = 0;
    PyObject *key, *value;

    /* The batch is a private snapshot (rc_prepare_batch): nothing the
     * encoder runs can change it. */
    if (PyDict_Check(batch)) {
        while (PyDict_Next(batch, &pos, &key, &value))
            if (put_set(ks, b, key, value, ms) < 0)
                return -1;
        return 0;
    }
    for (i = 0; i < PyList_GET_SIZE(batch); i++) {
        PyObject *pair = PyList_GET_ITEM(batch, i);
        if (put_set(ks, b, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), ms) < 0)
            return -1;
    }
    return 0;
}

static int put_raw_arg(rc_buf *b, PyObject *arg)
{
    const char *p;
    Py_ssize_t n;
    PyObject *text = NULL;
    int rc = -1;

    if (PyBytes_Check(arg)) {
        p = PyBytes_AS_STRING(arg);
        n = PyBytes_GET_SIZE(arg);
    } else if (PyUnicode_Check(arg)) {
        p = PyUnicode_AsUTF8AndSize(arg, &n);
        if (p == NULL)
            return -1;
    } else if ((PyLong_Check(arg) && !PyBool_Check(arg)) || PyFloat_Check(arg)) {
        text = PyLong_Check(arg) ? PyLong_Type.tp_repr(arg) : PyFloat_Type.tp_repr(arg);
        if (text == NULL)
            return -1;
        p = PyUnicode_AsUTF8AndSize(text, &n);
        if (p == NULL)
            goto out;
    } else {
        PyErr_Format(PyExc_TypeError,
                     "command arguments must be bytes, str, int or float, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    rc = rc_resp_bulk(b, p, (size_t)n) < 0 ? no_memory() : 0;
out:
    Py_XDECREF(text);
    return rc;
}

int rc_cmd_raw(rc_buf *b, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t i;

    if (nargs == 0) {
        PyErr_SetString(PyExc_TypeError, "execute_command() needs at least the command name");
        return -1;
    }
    if (put_array(b, (size_t)nargs) < 0)
        return -1;
    for (i = 0; i < nargs; i++)
        if (put_raw_arg(b, args[i]) < 0)
            return -1;
    return 0;
}

int rc_is_empty_mapping(PyObject *mapping)
{
    Py_ssize_t n;

    if (PyDict_Check(mapping))
        return PyDict_GET_SIZE(mapping) == 0;
    if (!PyMapping_Check(mapping))
        return 0;
    n = PyObject_Size(mapping);
    if (n < 0)
        PyErr_Clear();
    return n == 0;
}
