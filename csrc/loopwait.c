/* Waiting for a reply in the event loop's place; see loopwait.h. */
#include "loopwait.h"

#include <limits.h>
#include <math.h>
#include <time.h>

#ifdef __linux__
#include <sys/epoll.h>
#endif

/* With no timer scheduled the loop would sleep until an event; here the
 * callback returns to the loop after this long, and the loop sleeps on. */
#define RC_LOOPWAIT_MAX_MS 100

/* Events read per wait: more than this ready means some are not ours. */
#define RC_LOOPWAIT_EVENTS 8

#ifdef __linux__
/* Whether loop's class still has BaseEventLoop's own `name`. */
static int inherited(PyObject *loop, PyObject *base, const char *name)
{
    PyObject *mine = PyObject_GetAttrString((PyObject *)Py_TYPE(loop), name);
    PyObject *theirs = PyObject_GetAttrString(base, name);
    int same = mine != NULL && mine == theirs;

    Py_XDECREF(mine);
    Py_XDECREF(theirs);
    return same;
}

/* The loop's epoll descriptor, or -1 when its selector is not exactly
 * selectors.EpollSelector; *fd_to_key gets the selector's map of
 * registrations. */
static int epoll_fd(PyObject *loop, PyObject **fd_to_key)
{
    PyObject *selectors = NULL, *epoll_selector = NULL, *selector = NULL, *epoll = NULL;
    PyObject *fileno = NULL;
    long fd = -1;

    selectors = PyImport_ImportModule("selectors");
    if (selectors == NULL)
        goto out;
    epoll_selector = PyObject_GetAttrString(selectors, "EpollSelector");
    selector = PyObject_GetAttrString(loop, "_selector");
    if (epoll_selector == NULL || selector == NULL ||
        (PyObject *)Py_TYPE(selector) != epoll_selector)
        goto out;
    epoll = PyObject_GetAttrString(selector, "_selector");
    if (epoll == NULL)
        goto out;
    *fd_to_key = PyObject_GetAttrString(selector, "_fd_to_key");
    if (*fd_to_key == NULL || !PyDict_CheckExact(*fd_to_key)) {
        Py_CLEAR(*fd_to_key);
        goto out;
    }
    fileno = PyObject_CallMethod(epoll, "fileno", NULL);
    if (fileno != NULL)
        fd = PyLong_AsLong(fileno);
    if (fd < 0 || fd > INT_MAX)
        Py_CLEAR(*fd_to_key);
out:
    Py_XDECREF(fileno);
    Py_XDECREF(epoll);
    Py_XDECREF(selector);
    Py_XDECREF(epoll_selector);
    Py_XDECREF(selectors);
    return fd >= 0 && fd <= INT_MAX ? (int)fd : -1;
}
#endif

void rc_loopwait_open(rc_loopwait *w, rc_state *st, PyObject *loop)
{
    w->epfd = -1;
    w->loop_dict = NULL;
    w->fd_to_key = NULL;
#ifdef __linux__
    {
        PyObject *dict = NULL, *fd_to_key = NULL;
        int fd;

        if (PyObject_IsInstance(loop, st->BaseEventLoop) != 1 ||
            !inherited(loop, st->BaseEventLoop, "_run_once") ||
            !inherited(loop, st->BaseEventLoop, "time"))
            goto out;
        fd = epoll_fd(loop, &fd_to_key);
        if (fd < 0)
            goto out;
        dict = PyObject_GenericGetDict(loop, NULL);
        if (dict == NULL || !PyDict_Check(dict) ||
            PyDict_GetItemWithError(dict, st->str__ready) == NULL ||
            PyDict_GetItemWithError(dict, st->str__scheduled) == NULL ||
            PyDict_GetItemWithError(dict, st->str__stopping) == NULL ||
            PyDict_GetItemWithError(dict, st->str__debug) == NULL)
            goto out;
        w->epfd = fd;
        w->loop_dict = dict;
        w->fd_to_key = fd_to_key;
        dict = fd_to_key = NULL;
    out:
        Py_XDECREF(dict);
        Py_XDECREF(fd_to_key);
        PyErr_Clear();
    }
#else
    (void)st;
    (void)loop;
#endif
}

void rc_loopwait_close(rc_loopwait *w)
{
    w->epfd = -1;
    Py_CLEAR(w->loop_dict);
    Py_CLEAR(w->fd_to_key);
}

#ifdef __linux__
/* How long the loop would sleep now, in ms (rounded up, as selectors does),
 * or -1 when it would not sleep: a callback is ready, it is stopping or in
 * debug mode (which times every callback), or a timer is due. */
static int loop_idle_ms(rc_loopwait *w, rc_state *st)
{
    PyObject *d = w->loop_dict, *ready, *scheduled, *when_obj;
    struct timespec ts;
    double when, delay;

    ready = PyDict_GetItemWithError(d, st->str__ready);
    if (ready == NULL || PyObject_Length(ready) != 0)
        return -1;
    if (PyDict_GetItemWithError(d, st->str__stopping) != Py_False ||
        PyDict_GetItemWithError(d, st->str__debug) != Py_False)
        return -1;
    scheduled = PyDict_GetItemWithError(d, st->str__scheduled);
    if (scheduled == NULL || !PyList_CheckExact(scheduled))
        return -1;
    if (PyList_GET_SIZE(scheduled) == 0)
        return RC_LOOPWAIT_MAX_MS;
    /* The heap's head: the earliest timer (perhaps cancelled, which only
     * makes the wait shorter). A slot read, no Python code. */
    when_obj = PyObject_GetAttr(PyList_GET_ITEM(scheduled, 0), st->str__when);
    if (when_obj == NULL)
        return -1;
    when = PyFloat_AsDouble(when_obj);
    Py_DECREF(when_obj);
    if (when == -1.0 && PyErr_Occurred())
        return -1;
    /* BaseEventLoop.time() is time.monotonic(): CLOCK_MONOTONIC. */
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return -1;
    delay = when - ((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
    if (!(delay > 0))
        return -1;
    delay = ceil(delay * 1e3);
    return delay < RC_LOOPWAIT_MAX_MS ? (int)delay : RC_LOOPWAIT_MAX_MS;
}
#endif

#ifdef __linux__
/* The callback of fd's reader, borrowed, when fd is watched for reading
 * only; else NULL. Reads the selector's
 * SelectorKey(fileobj, fd, events, (reader, writer)): tuples and a
 * Handle's slots, no Python code. */
static PyObject *reader_of(rc_loopwait *w, rc_state *st, int fd)
{
    PyObject *number = PyLong_FromLong(fd), *key, *data, *handle, *attr;
    PyObject *callback = NULL;

    if (number == NULL)
        return NULL;
    key = PyDict_GetItemWithError(w->fd_to_key, number);
    Py_DECREF(number);
    if (key == NULL || !PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 4)
        return NULL;
    if (PyLong_AsLong(PyTuple_GET_ITEM(key, 2)) != 1) /* selectors.EVENT_READ alone */
        return NULL;
    data = PyTuple_GET_ITEM(key, 3);
    if (!PyTuple_Check(data) || PyTuple_GET_SIZE(data) != 2 || PyTuple_GET_ITEM(data, 1) != Py_None)
        return NULL;
    /* No need to ask whether the handle was cancelled: remove_reader() and
     * add_reader() take a handle they cancel out of the key. */
    handle = PyTuple_GET_ITEM(data, 0);
    attr = PyObject_GetAttr(handle, st->str__callback);
    if (attr == NULL)
        return NULL;
    callback = attr;
    Py_DECREF(attr); /* the handle keeps it */
    return callback;
}
#endif

int rc_loopwait_ready(rc_loopwait *w, rc_state *st, int (*is_ours)(PyObject *callback),
                      PyObject **readers)
{
#ifdef __linux__
    struct epoll_event events[RC_LOOPWAIT_MAX_READY];
    int timeout_ms, n, i;

    if (w->epfd < 0)
        return 0;
    timeout_ms = loop_idle_ms(w, st);
    if (timeout_ms < 0) {
        PyErr_Clear();
        return 0;
    }
    Py_BEGIN_ALLOW_THREADS
    n = epoll_wait(w->epfd, events, RC_LOOPWAIT_MAX_READY, timeout_ms);
    Py_END_ALLOW_THREADS
    if (n <= 0)
        return 0; /* timed out (a timer is due), EINTR (a signal), or an error */
    for (i = 0; i < n; i++) {
        readers[i] = reader_of(w, st, events[i].data.fd);
        if (readers[i] == NULL || !is_ours(readers[i])) {
            PyErr_Clear();
            return 0;
        }
    }
    return n;
#else
    (void)w;
    (void)st;
    (void)is_ours;
    (void)readers;
    return 0;
#endif
}
