/* Client metrics; see metrics.h. */
#include "metrics.h"

static const char *const op_names[RC_OP_COUNT] = {
    "other",       "get",      "set",      "delete",      "exists", "ttl", "expire",
    "incr",        "get_many", "set_many", "delete_many", "ping",   "execute_command",
};

rc_metrics *rc_metrics_new(void)
{
    rc_metrics *m = PyMem_Calloc(1, sizeof(rc_metrics));

    if (m == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    m->refcnt = 1;
    return m;
}

rc_metrics *rc_metrics_ref(rc_metrics *m)
{
    if (m != NULL)
        m->refcnt++;
    return m;
}

void rc_metrics_unref(rc_metrics *m)
{
    if (m != NULL && --m->refcnt == 0)
        PyMem_Free(m);
}

/* d[name] = value (an unsigned count); -1 with an exception set on failure. */
static int put_u64(PyObject *d, const char *name, uint64_t value)
{
    PyObject *v = PyLong_FromUnsignedLongLong(value);
    int rc;

    if (v == NULL)
        return -1;
    rc = PyDict_SetItemString(d, name, v);
    Py_DECREF(v);
    return rc;
}

static int put_i64(PyObject *d, const char *name, int64_t value)
{
    PyObject *v = PyLong_FromLongLong(value);
    int rc;

    if (v == NULL)
        return -1;
    rc = PyDict_SetItemString(d, name, v);
    Py_DECREF(v);
    return rc;
}

static int put_seconds(PyObject *d, const char *name, uint64_t ns)
{
    PyObject *v = PyFloat_FromDouble((double)ns / 1e9);
    int rc;

    if (v == NULL)
        return -1;
    rc = PyDict_SetItemString(d, name, v);
    Py_DECREF(v);
    return rc;
}

/* {"calls", "errors", "sum_seconds", "buckets": [counts]}: bucket i counts
 * requests of at most 2^i us, the last one the rest (see the bounds in
 * the snapshot's "latency_bounds_us"). */
static PyObject *op_snapshot(const rc_op_metrics *o)
{
    PyObject *d = PyDict_New(), *buckets = NULL;
    Py_ssize_t i;

    if (d == NULL)
        return NULL;
    buckets = PyList_New(RC_METRICS_BUCKETS);
    if (buckets == NULL)
        goto error;
    for (i = 0; i < RC_METRICS_BUCKETS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(o->buckets[i]);
        if (v == NULL)
            goto error;
        PyList_SET_ITEM(buckets, i, v);
    }
    if (put_u64(d, "calls", o->calls) < 0 || put_u64(d, "errors", o->errors) < 0 ||
        put_seconds(d, "sum_seconds", o->sum_ns) < 0 ||
        PyDict_SetItemString(d, "buckets", buckets) < 0)
        goto error;
    Py_DECREF(buckets);
    return d;
error:
    Py_XDECREF(buckets);
    Py_DECREF(d);
    return NULL;
}

PyObject *rc_metrics_snapshot(const rc_metrics *m, const rc_pool_metrics *pool)
{
    PyObject *d = PyDict_New(), *ops = NULL, *bounds = NULL, *one = NULL;
    Py_ssize_t i;

    if (d == NULL)
        return NULL;
    if (put_u64(d, "requests", m->requests) < 0 || put_u64(d, "commands", m->commands) < 0 ||
        put_u64(d, "replies", m->replies) < 0 ||
        put_u64(d, "error_replies", m->error_replies) < 0 ||
        put_u64(d, "timeouts", m->timeouts) < 0 ||
        put_u64(d, "connection_errors", m->connection_errors) < 0 ||
        put_i64(d, "in_flight", m->in_flight) < 0)
        goto error;
    if (pool != NULL) {
        if (put_u64(d, "connects", pool->connects) < 0 ||
            put_u64(d, "connect_failures", pool->connect_failures) < 0 ||
            put_u64(d, "pool_waits", pool->waits) < 0 ||
            put_seconds(d, "pool_wait_seconds", pool->wait_ns) < 0 ||
            put_u64(d, "pool_timeouts", pool->timeouts) < 0 ||
            put_i64(d, "pool_open", pool->open) < 0 || put_i64(d, "pool_idle", pool->idle) < 0 ||
            put_i64(d, "pool_max_size", pool->max_size) < 0)
            goto error;
    } else if (put_u64(d, "connects", m->connects) < 0 ||
               put_u64(d, "connect_failures", m->connect_failures) < 0) {
        goto error;
    }
    bounds = PyList_New(RC_METRICS_BOUNDS);
    if (bounds == NULL)
        goto error;
    for (i = 0; i < RC_METRICS_BOUNDS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(1ull << i);
        if (v == NULL)
            goto error;
        PyList_SET_ITEM(bounds, i, v);
    }
    if (PyDict_SetItemString(d, "latency_bounds_us", bounds) < 0)
        goto error;
    ops = PyDict_New();
    if (ops == NULL || PyDict_SetItemString(d, "operations", ops) < 0)
        goto error;
    for (i = 0; i < RC_OP_COUNT; i++) {
        if (m->ops[i].calls == 0)
            continue;
        one = op_snapshot(&m->ops[i]);
        if (one == NULL || PyDict_SetItemString(ops, op_names[i], one) < 0)
            goto error;
        Py_CLEAR(one);
    }
    Py_DECREF(ops);
    Py_DECREF(bounds);
    return d;
error:
    Py_XDECREF(one);
    Py_XDECREF(ops);
    Py_XDECREF(bounds);
    Py_DECREF(d);
    return NULL;
}
