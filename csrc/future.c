/* The async commands' future; see future.h. */
#include "future.h"

#include <structmember.h>

#include "mux.h"

typedef enum fut_state {
    FUT_PENDING,
    FUT_CANCELLED,
    FUT_FINISHED,
} fut_state;

typedef struct rc_future {
    PyObject_HEAD
    rc_state *state;
    PyObject *loop;
    PyObject *result;
    PyObject *exception;
    PyObject *cancel_msg;
    /* The first callback and its context inline (a task awaiting the future
     * is almost always the only one), the rest as (callback, context)
     * tuples. */
    PyObject *cb0, *ctx0;
    PyObject *more;
    PyObject *weakrefs;
    /* The multiplexer that reads the reply (rc_future_set_source), or NULL. */
    PyObject *source;
    fut_state status;
    int blocking; /* _asyncio_future_blocking */
    /* An exception nobody has looked at yet: reported to the loop's
     * exception handler if the future dies that way, as asyncio does. */
    int log_exception;
} rc_future;

#define AS_FUT(o) ((rc_future *)(o))

/* The exception being raised, taken out (normalized, its traceback
 * attached), and put back: PyErr_GetRaisedException and
 * PyErr_SetRaisedException before Python 3.12. */
static PyObject *take_raised(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL && PyException_SetTraceback(value, tb) < 0)
        PyErr_Clear();
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

static void put_back_raised(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

PyObject *rc_future_new(rc_state *st, PyObject *loop)
{
    rc_future *f = PyObject_GC_New(rc_future, (PyTypeObject *)st->FutureType);

    if (f == NULL)
        return NULL;
    f->state = st;
    f->loop = Py_NewRef(loop);
    f->result = f->exception = f->cancel_msg = NULL;
    f->cb0 = f->ctx0 = f->more = NULL;
    f->weakrefs = NULL;
    f->source = NULL;
    f->status = FUT_PENDING;
    f->blocking = 0;
    f->log_exception = 0;
    PyObject_GC_Track(f);
    return (PyObject *)f;
}

/* ------------------------------------------------------------ callbacks */

/* loop.call_soon(cb, fut, context=ctx). */
static int schedule(rc_future *f, PyObject *cb, PyObject *ctx)
{
    PyObject *args[4] = {f->loop, cb, (PyObject *)f, ctx};
    PyObject *handle = PyObject_VectorcallMethod(f->state->str_call_soon, args,
                                                 3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                                 f->state->context_kwnames);

    if (handle == NULL)
        return -1;
    Py_DECREF(handle);
    return 0;
}

/* Takes the callbacks out of f (so that a callback adding another one, or
 * completing again, sees a clean future): *first and *first_ctx (may be
 * NULL) and *rest (a list or NULL). New references. */
static void take_callbacks(rc_future *f, PyObject **first, PyObject **first_ctx, PyObject **rest)
{
    *first = f->cb0;
    *first_ctx = f->ctx0;
    *rest = f->more;
    f->cb0 = f->ctx0 = f->more = NULL;
}

/* Schedules every callback of f with call_soon. A failure to schedule one
 * (out of memory) is reported to the loop's handler rather than lost
 * silently; the others are still scheduled. */
static void schedule_all(rc_future *f)
{
    PyObject *cb, *ctx, *rest;
    Py_ssize_t i;

    take_callbacks(f, &cb, &ctx, &rest);
    if (cb != NULL && schedule(f, cb, ctx) < 0)
        PyErr_WriteUnraisable((PyObject *)f);
    for (i = 0; rest != NULL && i < PyList_GET_SIZE(rest); i++) {
        PyObject *pair = PyList_GET_ITEM(rest, i);
        if (schedule(f, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1)) < 0)
            PyErr_WriteUnraisable((PyObject *)f);
    }
    Py_XDECREF(cb);
    Py_XDECREF(ctx);
    Py_XDECREF(rest);
}

/* Hands a callback's exception to loop.call_exception_handler, as a Handle
 * does. Returns -1 (error still set) for KeyboardInterrupt and SystemExit,
 * which must propagate. */
static void to_exception_handler(rc_future *f, const char *message, PyObject *exc,
                                 PyObject *cb)
{
    PyObject *context, *r = NULL;

    context = cb != NULL ? Py_BuildValue("{s:s,s:O,s:O,s:O}", "message", message, "exception",
                                         exc, "future", (PyObject *)f, "callback", cb)
                         : Py_BuildValue("{s:s,s:O,s:O}", "message", message, "exception", exc,
                                         "future", (PyObject *)f);
    if (context != NULL)
        r = PyObject_CallMethod(f->loop, "call_exception_handler", "O", context);
    if (r == NULL)
        PyErr_WriteUnraisable((PyObject *)f);
    Py_XDECREF(r);
    Py_XDECREF(context);
}

static int report(rc_future *f, PyObject *cb)
{
    PyObject *exc;

    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
        PyErr_ExceptionMatches(PyExc_SystemExit))
        return -1;
    exc = take_raised();
    to_exception_handler(f, "Exception in a done callback of a redis_cache future", exc, cb);
    Py_XDECREF(exc);
    return 0;
}

/* Runs cb(f) in ctx now. Returns -1 only for an exception that must
 * propagate (see report). A context that cannot be entered (already
 * entered: the callback belongs to code running further up this very
 * stack) gets the callback scheduled instead. */
static int run_now(rc_future *f, PyObject *cb, PyObject *ctx)
{
    PyObject *r;

    if (PyContext_Enter(ctx) < 0) {
        PyErr_Clear();
        if (schedule(f, cb, ctx) < 0)
            PyErr_WriteUnraisable((PyObject *)f);
        return 0;
    }
    r = PyObject_CallOneArg(cb, (PyObject *)f);
    if (PyContext_Exit(ctx) < 0)
        PyErr_WriteUnraisable((PyObject *)f);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    return report(f, cb);
}

/* Runs f's callbacks now; after one that must propagate, schedules the
 * rest and returns -1 with its exception set. */
static int run_all(rc_future *f)
{
    PyObject *cb, *ctx, *rest, *exc = NULL;
    Py_ssize_t i;

    take_callbacks(f, &cb, &ctx, &rest);
    if (cb != NULL && run_now(f, cb, ctx) < 0)
        exc = take_raised();
    for (i = 0; rest != NULL && i < PyList_GET_SIZE(rest); i++) {
        PyObject *pair = PyList_GET_ITEM(rest, i), *c = PyTuple_GET_ITEM(pair, 0),
                 *x = PyTuple_GET_ITEM(pair, 1);
        if (exc != NULL) {
            if (schedule(f, c, x) < 0)
                PyErr_WriteUnraisable((PyObject *)f);
        } else if (run_now(f, c, x) < 0) {
            exc = take_raised();
        }
    }
    Py_XDECREF(cb);
    Py_XDECREF(ctx);
    Py_XDECREF(rest);
    if (exc == NULL)
        return 0;
    put_back_raised(exc);
    return -1;
}

int rc_future_wake(PyObject *woken)
{
    PyObject *exc = NULL;
    Py_ssize_t i, n = PyList_GET_SIZE(woken);
    PyObject *batch;

    if (n == 0)
        return 0;
    /* Out of the list first: a callback may complete more of them. */
    batch = PyList_GetSlice(woken, 0, n);
    if (batch == NULL || PyList_SetSlice(woken, 0, n, NULL) < 0) {
        /* Out of memory: leave the futures' callbacks to call_soon. */
        PyErr_Clear();
        for (i = 0; i < n; i++)
            schedule_all(AS_FUT(PyList_GET_ITEM(woken, i)));
        Py_XDECREF(batch);
        if (PyList_SetSlice(woken, 0, n, NULL) < 0)
            PyErr_Clear();
        return 0;
    }
    for (i = 0; i < n; i++) {
        rc_future *f = AS_FUT(PyList_GET_ITEM(batch, i));
        if (exc != NULL) {
            schedule_all(f);
        } else {
            /* The tasks woken after this one are ready too: while this one
             * runs, none may wait for a reply in place (rc_mux_wait_in_place),
             * or they would wait for it one after the other. */
            Py_ssize_t outer = f->state->wakes_pending;
            int rc;

            f->state->wakes_pending = outer + (n - i - 1);
            rc = run_all(f);
            f->state->wakes_pending = outer;
            if (rc < 0)
                exc = take_raised();
        }
    }
    Py_DECREF(batch);
    if (exc == NULL)
        return 0;
    put_back_raised(exc);
    return -1;
}

/* ------------------------------------------------------------ completing */

int rc_future_finish(PyObject *fut, PyObject *result, PyObject *exc, PyObject *woken)
{
    rc_future *f = AS_FUT(fut);

    if (f->status != FUT_PENDING)
        return 0;
    if (woken != NULL && (f->cb0 != NULL || f->more != NULL) && PyList_Append(woken, fut) < 0)
        return -1;
    if (exc != NULL) {
        f->exception = Py_NewRef(exc);
        f->log_exception = 1;
    } else
        f->result = Py_NewRef(result);
    f->status = FUT_FINISHED;
    if (woken == NULL)
        schedule_all(f);
    return 1;
}

void rc_future_set_source(PyObject *fut, PyObject *source)
{
    PyObject *old = AS_FUT(fut)->source;

    AS_FUT(fut)->source = Py_NewRef(source);
    Py_XDECREF(old); /* a multiplexer the caller holds too: no code runs */
}

int rc_future_cancel(PyObject *fut)
{
    rc_future *f = AS_FUT(fut);

    if (f->status != FUT_PENDING)
        return 0;
    f->status = FUT_CANCELLED;
    schedule_all(f);
    return 1;
}

/* ------------------------------------------------------------ Python API */

static PyObject *cancelled_error(rc_future *f)
{
    return f->cancel_msg != NULL ? PyObject_CallOneArg(f->state->CancelledError, f->cancel_msg)
                                 : PyObject_CallNoArgs(f->state->CancelledError);
}

static int raise_cancelled(rc_future *f)
{
    PyObject *exc = cancelled_error(f);

    if (exc != NULL) {
        PyErr_SetObject(f->state->CancelledError, exc);
        Py_DECREF(exc);
    }
    return -1;
}

static PyObject *fut_result(rc_future *f, PyObject *unused)
{
    (void)unused;
    if (f->status == FUT_PENDING) {
        PyErr_SetString(f->state->InvalidStateError, "Result is not ready.");
        return NULL;
    }
    if (f->status == FUT_CANCELLED) {
        raise_cancelled(f);
        return NULL;
    }
    if (f->exception != NULL) {
        f->log_exception = 0;
        PyErr_SetObject((PyObject *)Py_TYPE(f->exception), f->exception);
        return NULL;
    }
    return Py_NewRef(f->result);
}

static PyObject *fut_exception(rc_future *f, PyObject *unused)
{
    (void)unused;
    if (f->status == FUT_PENDING) {
        PyErr_SetString(f->state->InvalidStateError, "Exception is not set.");
        return NULL;
    }
    if (f->status == FUT_CANCELLED) {
        raise_cancelled(f);
        return NULL;
    }
    f->log_exception = 0;
    return Py_NewRef(f->exception != NULL ? f->exception : Py_None);
}

static PyObject *fut_done(rc_future *f, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(f->status != FUT_PENDING);
}

static PyObject *fut_cancelled(rc_future *f, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(f->status == FUT_CANCELLED);
}

static PyObject *fut_get_loop(rc_future *f, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(f->loop);
}

static PyObject *fut_make_cancelled_error(rc_future *f, PyObject *unused)
{
    (void)unused;
    return cancelled_error(f);
}

static PyObject *fut_cancel(rc_future *f, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"msg", NULL};
    PyObject *msg = Py_None;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:cancel", names, &msg))
        return NULL;
    if (f->status != FUT_PENDING)
        Py_RETURN_FALSE;
    if (msg != Py_None)
        Py_XSETREF(f->cancel_msg, Py_NewRef(msg));
    rc_future_cancel((PyObject *)f);
    Py_RETURN_TRUE;
}

/* add_done_callback(fn, *, context=None), parsed by hand: a task calls it
 * on every await. */
static PyObject *fut_add_done_callback(rc_future *f, PyObject *const *args, Py_ssize_t nargs,
                                       PyObject *kwnames)
{
    PyObject *fn, *ctx = Py_None, *pair = NULL, *r = NULL;
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;

    if (nargs != 1 || nkw > 1 ||
        (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "context") != 0)) {
        PyErr_SetString(PyExc_TypeError, "add_done_callback(fn, *, context=None)");
        return NULL;
    }
    fn = args[0];
    if (nkw == 1)
        ctx = args[1];
    if (ctx == Py_None) {
        ctx = PyContext_CopyCurrent();
        if (ctx == NULL)
            return NULL;
    } else {
        Py_INCREF(ctx);
    }
    if (f->status != FUT_PENDING) {
        if (schedule(f, fn, ctx) == 0)
            r = Py_NewRef(Py_None);
    } else if (f->cb0 == NULL) {
        f->cb0 = Py_NewRef(fn);
        f->ctx0 = Py_NewRef(ctx);
        r = Py_NewRef(Py_None);
    } else {
        if (f->more == NULL)
            f->more = PyList_New(0);
        pair = PyTuple_Pack(2, fn, ctx);
        if (f->more != NULL && pair != NULL && PyList_Append(f->more, pair) == 0)
            r = Py_NewRef(Py_None);
    }
    Py_XDECREF(pair);
    Py_DECREF(ctx);
    return r;
}

static PyObject *fut_remove_done_callback(rc_future *f, PyObject *fn)
{
    Py_ssize_t removed = 0, i;
    int eq;

    if (f->cb0 != NULL) {
        eq = PyObject_RichCompareBool(f->cb0, fn, Py_EQ);
        if (eq < 0)
            return NULL;
        if (eq) {
            Py_CLEAR(f->cb0);
            Py_CLEAR(f->ctx0);
            removed++;
        }
    }
    for (i = f->more != NULL ? PyList_GET_SIZE(f->more) - 1 : -1; i >= 0; i--) {
        PyObject *item = Py_NewRef(PyList_GET_ITEM(f->more, i));
        eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(item, 0), fn, Py_EQ);
        Py_DECREF(item);
        if (eq < 0)
            return NULL;
        if (eq && f->more != NULL && i < PyList_GET_SIZE(f->more)) {
            if (PySequence_DelItem(f->more, i) < 0)
                return NULL;
            removed++;
        }
    }
    return PyLong_FromSsize_t(removed);
}

static int set_outcome(rc_future *f, PyObject *result, PyObject *exc)
{
    if (f->status != FUT_PENDING) {
        PyErr_SetString(f->state->InvalidStateError, "invalid state");
        return -1;
    }
    return rc_future_finish((PyObject *)f, result, exc, NULL) < 0 ? -1 : 0;
}

static PyObject *fut_set_result(rc_future *f, PyObject *result)
{
    return set_outcome(f, result, NULL) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *fut_set_exception(rc_future *f, PyObject *exc)
{
    PyObject *instance;
    int rc;

    if (PyExceptionClass_Check(exc))
        instance = PyObject_CallNoArgs(exc);
    else
        instance = Py_NewRef(exc);
    if (instance == NULL)
        return NULL;
    if (!PyExceptionInstance_Check(instance)) {
        PyErr_Format(PyExc_TypeError, "invalid exception object %R", exc);
        Py_DECREF(instance);
        return NULL;
    }
    if (PyErr_GivenExceptionMatches(instance, PyExc_StopIteration)) {
        PyErr_SetString(PyExc_TypeError,
                        "StopIteration interacts badly with generators and cannot be raised into "
                        "a Future");
        Py_DECREF(instance);
        return NULL;
    }
    rc = set_outcome(f, NULL, instance);
    Py_DECREF(instance);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

/* await: yields the future itself to the task until it is done (the task
 * then waits for its callback), then returns its result. Before yielding,
 * the multiplexer that reads the reply may wait for it right here, which
 * spares the task's trip through the loop (rc_mux_wait_in_place). Not with
 * callbacks already added: completing the future would run them inside
 * this task's step, where asyncio would have run them in their own. */
static PySendResult fut_send(rc_future *f, PyObject *arg, PyObject **out)
{
    (void)arg;
    if (f->source != NULL) {
        PyObject *source = f->source;
        int rc = 0;

        f->source = NULL; /* once per await: a task that comes back waits as usual */
        if (f->status == FUT_PENDING && f->cb0 == NULL && f->more == NULL)
            rc = rc_mux_wait_in_place((rc_mux *)source, (PyObject *)f);
        Py_DECREF(source);
        if (rc < 0) {
            *out = NULL;
            return PYGEN_ERROR;
        }
    }
    if (f->status == FUT_PENDING) {
        f->blocking = 1;
        *out = Py_NewRef((PyObject *)f);
        return PYGEN_NEXT;
    }
    *out = fut_result(f, NULL);
    return *out != NULL ? PYGEN_RETURN : PYGEN_ERROR;
}

static PyObject *fut_iternext(rc_future *f)
{
    PyObject *out, *stop;

    switch (fut_send(f, Py_None, &out)) {
    case PYGEN_NEXT:
        return out;
    case PYGEN_ERROR:
        return NULL;
    default:
        break;
    }
    /* Done: StopIteration carrying the result (made explicitly, since a
     * tuple would otherwise be taken for its arguments). */
    if (out == Py_None) {
        Py_DECREF(out);
        return NULL;
    }
    stop = PyObject_CallOneArg(PyExc_StopIteration, out);
    Py_DECREF(out);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

static PyObject *fut_await(rc_future *f)
{
    return Py_NewRef((PyObject *)f);
}

static PyObject *fut_get_blocking(rc_future *f, void *unused)
{
    (void)unused;
    return PyBool_FromLong(f->blocking);
}

static int fut_set_blocking(rc_future *f, PyObject *value, void *unused)
{
    int truth;

    (void)unused;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _asyncio_future_blocking");
        return -1;
    }
    truth = PyObject_IsTrue(value);
    if (truth < 0)
        return -1;
    f->blocking = truth;
    return 0;
}

static PyObject *fut_get_cancel_message(rc_future *f, void *unused)
{
    (void)unused;
    return Py_NewRef(f->cancel_msg != NULL ? f->cancel_msg : Py_None);
}

static PyObject *fut_repr(rc_future *f)
{
    static const char *names[] = {"pending", "cancelled", "finished"};

    return PyUnicode_FromFormat("<redis_cache future %s>", names[f->status]);
}

/* Like asyncio: an exception nobody retrieved is not lost silently. */
static void fut_finalize(rc_future *f)
{
    PyObject *saved, *closed;

    if (!f->log_exception || f->exception == NULL || f->loop == NULL)
        return;
    f->log_exception = 0;
    saved = take_raised();
    closed = PyObject_CallMethod(f->loop, "is_closed", NULL);
    if (closed == NULL)
        PyErr_Clear();
    else if (closed == Py_False)
        to_exception_handler(f, "Future exception was never retrieved", f->exception, NULL);
    Py_XDECREF(closed);
    if (saved != NULL)
        put_back_raised(saved);
}

static int fut_traverse(rc_future *f, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(f));
    Py_VISIT(f->loop);
    Py_VISIT(f->result);
    Py_VISIT(f->exception);
    Py_VISIT(f->cancel_msg);
    Py_VISIT(f->cb0);
    Py_VISIT(f->ctx0);
    Py_VISIT(f->more);
    Py_VISIT(f->source);
    return 0;
}

static int fut_clear(rc_future *f)
{
    Py_CLEAR(f->loop);
    Py_CLEAR(f->result);
    Py_CLEAR(f->exception);
    Py_CLEAR(f->cancel_msg);
    Py_CLEAR(f->cb0);
    Py_CLEAR(f->ctx0);
    Py_CLEAR(f->more);
    Py_CLEAR(f->source);
    return 0;
}

static void fut_dealloc(rc_future *f)
{
    PyTypeObject *type = Py_TYPE(f);

    if (PyObject_CallFinalizerFromDealloc((PyObject *)f) < 0)
        return; /* resurrected */
    PyObject_GC_UnTrack(f);
    if (f->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)f);
    fut_clear(f);
    PyObject_GC_Del(f);
    Py_DECREF(type);
}

static PyMethodDef fut_methods[] = {
    {"result", (PyCFunction)fut_result, METH_NOARGS, "The result, or raises the exception."},
    {"exception", (PyCFunction)fut_exception, METH_NOARGS, "The exception, or None."},
    {"done", (PyCFunction)fut_done, METH_NOARGS, "True once completed or cancelled."},
    {"cancelled", (PyCFunction)fut_cancelled, METH_NOARGS, "True once cancelled."},
    {"cancel", (PyCFunction)(void (*)(void))fut_cancel, METH_VARARGS | METH_KEYWORDS,
     "Cancels it (its reply, when it comes, is dropped)."},
    {"add_done_callback", (PyCFunction)(void (*)(void))fut_add_done_callback,
     METH_FASTCALL | METH_KEYWORDS, "fn(future) once done, in context (default: the current one)."},
    {"remove_done_callback", (PyCFunction)fut_remove_done_callback, METH_O,
     "Removes every registration of fn; returns how many."},
    {"set_result", (PyCFunction)fut_set_result, METH_O, "Completes it with a result."},
    {"set_exception", (PyCFunction)fut_set_exception, METH_O, "Completes it with an exception."},
    {"get_loop", (PyCFunction)fut_get_loop, METH_NOARGS, "The event loop it belongs to."},
    {"_make_cancelled_error", (PyCFunction)fut_make_cancelled_error, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fut_getset[] = {
    {"_asyncio_future_blocking", (getter)fut_get_blocking, (setter)fut_set_blocking, NULL, NULL},
    {"_cancel_message", (getter)fut_get_cancel_message, NULL, NULL, NULL},
    {"_loop", (getter)fut_get_loop, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef fut_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(rc_future, weakrefs), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot fut_slots[] = {
    {Py_tp_doc, "The future an async command returns (asyncio's Future protocol)."},
    {Py_tp_methods, fut_methods},
    {Py_tp_getset, fut_getset},
    {Py_tp_members, fut_members},
    {Py_tp_repr, (void *)fut_repr},
    {Py_tp_iter, (void *)fut_await},
    {Py_tp_iternext, (void *)fut_iternext},
    {Py_am_await, (void *)fut_await},
    {Py_am_send, (void *)fut_send},
    {Py_tp_finalize, (void *)fut_finalize},
    {Py_tp_traverse, (void *)fut_traverse},
    {Py_tp_clear, (void *)fut_clear},
    {Py_tp_dealloc, (void *)fut_dealloc},
    {0, NULL},
};

PyType_Spec rc_future_spec = {
    .name = "redis_cache._core.Future",
    .basicsize = sizeof(rc_future),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = fut_slots,
};
