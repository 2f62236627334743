/* Replies to results; see result.h. */
#include "result.h"

static PyObject *mget_dict(rc_state *st, PyObject *reply, PyObject *keys)
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
        if (value != st->missing &&
            PyDict_SetItem(result, PySequence_Fast_GET_ITEM(keys, i), value) < 0) {
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
    case RC_RESULT_VALUE: return Py_NewRef(reply == st->missing ? extra : reply);
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
    case RC_RESULT_MGET: return mget_dict(st, reply, extra);
    case RC_RESULT_RAW:
    case RC_RESULT_HANDSHAKE: break;
    }
    return Py_NewRef(reply);
}
