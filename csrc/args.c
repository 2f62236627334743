/* Argument parsing for fast-call methods; see args.h. */
#include "args.h"

int rc_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  const char *const *names, Py_ssize_t nnames, Py_ssize_t required, PyObject **out)
{
    Py_ssize_t i, j, nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    unsigned long given = 0;

    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)", fname, nnames,
                     nargs);
        return -1;
    }
    for (i = 0; i < nargs; i++) {
        out[i] = args[i];
        given |= 1UL << i;
    }
    for (i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        for (j = 0; j < nnames; j++)
            if (PyUnicode_CompareWithASCIIString(name, names[j]) == 0)
                break;
        if (j == nnames) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                         name);
            return -1;
        }
        if (given & (1UL << j)) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[j]);
            return -1;
        }
        out[j] = args[nargs + i];
        given |= 1UL << j;
    }
    for (i = 0; i < required; i++) {
        if (!(given & (1UL << i))) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return -1;
        }
    }
    return 0;
}
