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

PyObject *rc_result_typed_extra(PyObject *first, PyObject *model)
{
    return PyTuple_Pack(2, first, model);
}

static PyObject *mget_dict(rc_state *st, PyObject *reply, PyObject *keys, PyObject *model)
{
    Py_ssize_t i, n = PySequence_Fast_GET_SIZE(keys);
    PyObject *result;

    if (!PyList_Check(reply) || PyList_GET_SIZE(reply) != n) {
        PyErr_SetString(st->ConnectionError, "MGET returned an unexpected reply");
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

PyObject *rc_result_build(rc_state *st, rc_result_kind kind, PyObject *reply, PyObject *extra)
{
    Py_ssize_t i;

    switch (kind) {
    case RC_RESULT_VALUE:
        return Py_NewRef(reply == st->missing ? extra : reply);
    case RC_RESULT_STORED:
        if (PyList_Check(reply)) {
            for (i = 0; i < PyList_GET_SIZE(reply); i++)
                if (PyList_GET_ITEM(reply, i) == Py_None)
                    Py_RETURN_FALSE;
            Py_RETURN_TRUE;
        }
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
    case RC_RESULT_TYPED_VALUE:
        if (reply == st->missing)
            return Py_NewRef(PyTuple_GET_ITEM(extra, 0));
        return convert(st, PyTuple_GET_ITEM(extra, 1), reply);
    case RC_RESULT_RAW:
    case RC_RESULT_HANDSHAKE:
        break;
    }
    return Py_NewRef(reply);
}
