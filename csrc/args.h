/* Argument parsing for METH_FASTCALL | METH_KEYWORDS methods, without the
 * private _PyArg_Parser machinery. */
#ifndef RC_ARGS_H
#define RC_ARGS_H

#include <Python.h>

/* Fills out[0..nnames) from positional args and keywords, matching names in
 * order; the first `required` are mandatory, the rest stay as they were set
 * (defaults) when not given. Returns 0, or -1 with TypeError set. */
int rc_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  const char *const *names, Py_ssize_t nnames, Py_ssize_t required, PyObject **out);

#endif
