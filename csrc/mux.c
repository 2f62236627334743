/* The async engine; see mux.h.
 *
 * Life of a multiplexer: PENDING (created, commands queue while Python
 * connects a socket) -> READY (attach(): handshake sent first, then the
 * queue) -> CLOSED (failed or closed; every request still waiting gets an
 * exception, and the client replaces the multiplexer on its next command).
 *
 * Byte accounting: bytes_queued counts every byte ever encoded, bytes_sent
 * every byte written; a slot remembers the value of bytes_queued where its
 * command ends, which is how at most max_in_flight requests are let out
 * onto the wire while the rest wait in the buffer (backpressure).
 */
#include "mux.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "conn.h"
#include "reply.h"

#define RC_MUX_READ_CHUNK 65536

typedef enum mux_status {
    MUX_PENDING,
    MUX_READY,
    MUX_CLOSED,
} mux_status;

typedef struct rc_slot {
    PyObject *future;      /* NULL for handshake commands */
    PyObject *extra;       /* see rc_result_kind */
    PyObject *codec_owner; /* keeps *codec alive */
    PyObject *replies;     /* collected replies of a pipelined request */
    PyObject *error;       /* first error reply or decode error among them */
    const rc_codec *codec;
    Py_ssize_t remaining;
    uint64_t end;
    long long queued_ms;
    rc_result_kind kind;
} rc_slot;

struct rc_mux {
    PyObject_HEAD
    rc_state *state;
    PyObject *loop;
    /* Bound methods handed to the loop, made once at attach. */
    PyObject *on_readable, *on_writable, *on_flush, *on_timer;
    PyObject *timer;
    int fd;
    mux_status status;
    int flush_scheduled;
    int writer_registered;
    /* Set while replies are being dispatched: a serializer's loads() may
     * call back into the cache, and must not write or free the reader. */
    int dispatching;
    int timeout_ms;
    Py_ssize_t max_in_flight;
    unsigned long generation;
    rc_buf out;
    size_t out_off;
    uint64_t bytes_queued, bytes_sent;
    rc_slot *slots;
    size_t cap, head, count;
    rc_reader reader;
    char *in;
    PyObject *closed_reason; /* the message given to requests after close */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static rc_slot *slot_at(rc_mux *m, size_t i)
{
    return &m->slots[(m->head + i) & (m->cap - 1)];
}

static void slot_clear(rc_slot *s)
{
    Py_CLEAR(s->codec_owner);
    Py_CLEAR(s->future);
    Py_CLEAR(s->extra);
    Py_CLEAR(s->replies);
    Py_CLEAR(s->error);
}

/* Room for one more slot; the ring's capacity stays a power of two. */
static int ring_reserve(rc_mux *m)
{
    size_t i, cap;
    rc_slot *slots;

    if (m->count < m->cap)
        return 0;
    cap = m->cap ? m->cap * 2 : 64;
    slots = PyMem_Calloc(cap, sizeof(rc_slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < m->count; i++)
        slots[i] = *slot_at(m, i);
    PyMem_Free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->head = 0;
    return 0;
}

/* ------------------------------------------------------------ completing */

static void complete(rc_mux *m, PyObject *future, PyObject *result, PyObject *exc)
{
    PyObject *args[2] = {future, exc != NULL ? exc : result};
    PyObject *name = exc != NULL ? m->state->str_set_exception : m->state->str_set_result;
    PyObject *r = PyObject_VectorcallMethod(name, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);

    /* A cancelled future refuses its result (InvalidStateError): that is
     * the abandoned request whose reply is dropped here. */
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
}

/* Fails every request still waiting, with a fresh exception each (an
 * exception's traceback is per raise), and closes the socket. */
static void fail_all(rc_mux *m, PyObject *exc_type, PyObject *message)
{
    PyObject *r;
    size_t i;

    if (m->status == MUX_CLOSED)
        return;
    m->status = MUX_CLOSED;
    Py_XSETREF(m->closed_reason, Py_NewRef(message));
    if (m->fd >= 0 && m->loop != NULL) {
        r = PyObject_CallMethod(m->loop, "remove_reader", "i", m->fd);
        Py_XDECREF(r);
        if (m->writer_registered) {
            r = PyObject_CallMethod(m->loop, "remove_writer", "i", m->fd);
            Py_XDECREF(r);
        }
        PyErr_Clear();
    }
    m->writer_registered = 0;
    if (m->timer != NULL) {
        r = PyObject_CallMethod(m->timer, "cancel", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
        Py_CLEAR(m->timer);
    }
    if (m->fd >= 0) {
        close(m->fd);
        m->fd = -1;
    }
    for (i = 0; i < m->count; i++) {
        rc_slot *s = slot_at(m, i);
        if (s->future != NULL) {
            PyObject *exc = PyObject_CallOneArg(exc_type, message);
            if (exc == NULL) {
                PyErr_Clear();
            } else {
                complete(m, s->future, NULL, exc);
                Py_DECREF(exc);
            }
        }
        slot_clear(s);
    }
    m->count = 0;
    m->head = 0;
    m->out.len = 0;
    m->out_off = 0;
    /* Drop the bound methods: they are what kept this object alive while
     * the loop held them. */
    Py_CLEAR(m->on_readable);
    Py_CLEAR(m->on_writable);
    Py_CLEAR(m->on_flush);
    Py_CLEAR(m->on_timer);
}

static void fail_format(rc_mux *m, PyObject *exc_type, const char *fmt, ...)
{
    va_list va;
    PyObject *message;

    va_start(va, fmt);
    message = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    if (message == NULL) {
        PyErr_Clear();
        message = PyUnicode_FromString("redis connection failed");
        if (message == NULL) {
            PyErr_Clear();
            return;
        }
    }
    fail_all(m, exc_type, message);
    Py_DECREF(message);
}

/* The pending exception fails the connection (protocol error and such). */
static void fail_with_pending(rc_mux *m)
{
    PyObject *type, *value, *tb, *text;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    text = value != NULL ? PyObject_Str(value) : NULL;
    if (text == NULL) {
        PyErr_Clear();
        fail_format(m, m->state->ConnectionError, "redis connection failed");
    } else {
        fail_all(m, m->state->ConnectionError, text);
    }
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* A handshake reply: any error fails the connection. */
static void check_handshake(rc_mux *m, rc_slot *s)
{
    int is_auth;

    if (s->error == NULL)
        return;
    is_auth = PyUnicode_Check(s->extra) && PyUnicode_CompareWithASCIIString(s->extra, "AUTH") == 0;
    fail_format(m, is_auth ? m->state->AuthenticationError : m->state->ConnectionError,
                "redis refused %S: %S", s->extra, s->error);
}

/* The head request got all its replies: complete its future. */
static void finish_head(rc_mux *m)
{
    rc_slot s = *slot_at(m, 0);
    PyObject *result;

    /* Popped before completing, so a callback that queues a command sees a
     * consistent ring. */
    memset(slot_at(m, 0), 0, sizeof(rc_slot));
    m->head = (m->head + 1) & (m->cap - 1);
    m->count--;
    if (s.kind == RC_RESULT_HANDSHAKE) {
        check_handshake(m, &s);
    } else if (s.error != NULL) {
        complete(m, s.future, NULL, s.error);
    } else {
        result = rc_result_build(m->state, s.kind, s.replies, s.extra);
        if (result == NULL) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            if (value != NULL)
                complete(m, s.future, NULL, value);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        } else {
            complete(m, s.future, result, NULL);
            Py_DECREF(result);
        }
    }
    slot_clear(&s);
}

/* Records one reply (or error) for the head request. */
static void take_reply(rc_mux *m, PyObject *reply, PyObject *error)
{
    rc_slot *s = slot_at(m, 0);

    if (error != NULL) {
        if (s->error == NULL)
            s->error = Py_NewRef(error);
    } else if (rc_is_error_reply(m->state, reply)) {
        if (s->error == NULL)
            s->error = Py_NewRef(reply);
    } else if (s->kind == RC_RESULT_STORED) {
        /* Pipelined SETs: only whether any came back nil matters. */
        if (reply == Py_None || s->replies == NULL)
            Py_XSETREF(s->replies, Py_NewRef(reply));
    } else {
        Py_XSETREF(s->replies, Py_NewRef(reply));
    }
    if (--s->remaining == 0)
        finish_head(m);
}

/* Feeds the bytes read and completes every reply they hold. */
static void dispatch(rc_mux *m, const char *p, size_t n)
{
    size_t fed = 0;

    m->dispatching = 1;
    while (m->status == MUX_READY) {
        PyObject *reply = NULL;
        rc_reply_status status;

        if (m->count == 0) {
            /* Nothing is waiting: any complete reply, fed now or earlier,
             * was asked for by nobody (a MONITOR or SUBSCRIBE sent on the
             * shared connection). Giving it to the next request would hand
             * that caller someone else's answer. */
            status = rc_reader_next(&m->reader, NULL, &reply);
            Py_XDECREF(reply);
            if (status == RC_REPLY_PENDING && fed < n) {
                size_t slice = n - fed < RC_READER_FEED_MAX ? n - fed : RC_READER_FEED_MAX;
                if (rc_reader_feed(&m->reader, p + fed, slice) < 0)
                    fail_with_pending(m);
                fed += slice;
                continue;
            }
            if (status != RC_REPLY_PENDING) {
                PyErr_Clear();
                fail_format(m, m->state->ConnectionError,
                            "redis sent a reply nobody asked for; the connection was dropped");
            }
            break;
        }
        status = rc_reader_next(&m->reader, slot_at(m, 0)->codec, &reply);
        if (m->status != MUX_READY) {
            /* Decoding ran Python code (a serializer's loads()) that closed
             * the connection: every request has failed and the ring is
             * empty, so there is no slot left for this reply. */
            Py_XDECREF(reply);
            if (status == RC_REPLY_BAD_VALUE || status == RC_REPLY_BROKEN)
                PyErr_Clear();
            break;
        }
        if (status == RC_REPLY_READY) {
            take_reply(m, reply, NULL);
            Py_DECREF(reply);
        } else if (status == RC_REPLY_BAD_VALUE) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            take_reply(m, NULL, value);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        } else if (status == RC_REPLY_BROKEN) {
            fail_with_pending(m);
        } else if (fed < n) {
            size_t slice = n - fed < RC_READER_FEED_MAX ? n - fed : RC_READER_FEED_MAX;
            if (rc_reader_feed(&m->reader, p + fed, slice) < 0)
                fail_with_pending(m);
            fed += slice;
        } else {
            break;
        }
    }
    m->dispatching = 0;
}

/* ------------------------------------------------------------ writing */

static int set_writer(rc_mux *m, int on)
{
    PyObject *r;

    if (on == m->writer_registered)
        return 0;
    r = on ? PyObject_CallMethod(m->loop, "add_writer", "iO", m->fd, m->on_writable)
           : PyObject_CallMethod(m->loop, "remove_writer", "i", m->fd);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    m->writer_registered = on;
    return 0;
}

/* Writes what may go out now: everything queued, or up to the end of the
 * max_in_flight-th request waiting for a reply. */
static void flush(rc_mux *m)
{
    uint64_t limit = m->bytes_queued;
    size_t want;
    ssize_t n;

    if (m->status != MUX_READY)
        return;
    if ((Py_ssize_t)m->count > m->max_in_flight)
        limit = slot_at(m, (size_t)m->max_in_flight - 1)->end;
    while (m->bytes_sent < limit) {
        want = (size_t)(limit - m->bytes_sent);
        n = send(m->fd, m->out.data + m->out_off, want, MSG_NOSIGNAL);
        if (n > 0) {
            m->out_off += (size_t)n;
            m->bytes_sent += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (set_writer(m, 1) < 0)
                fail_with_pending(m);
            return;
        }
        fail_format(m, m->state->ConnectionError, "connection to redis failed while sending: %s",
                    strerror(errno));
        return;
    }
    if (m->out_off == m->out.len) {
        m->out_off = 0;
        rc_buf_reset(&m->out);
    } else if (m->out_off > m->out.len / 2) {
        memmove(m->out.data, m->out.data + m->out_off, m->out.len - m->out_off);
        m->out.len -= m->out_off;
        m->out_off = 0;
    }
    if (set_writer(m, 0) < 0)
        fail_with_pending(m);
}

static int schedule_flush(rc_mux *m)
{
    PyObject *handle;

    if (m->flush_scheduled)
        return 0;
    handle = PyObject_CallMethodOneArg(m->loop, m->state->str_call_soon, m->on_flush);
    if (handle == NULL)
        return -1;
    Py_DECREF(handle);
    m->flush_scheduled = 1;
    return 0;
}

/* ------------------------------------------------------------ timing out */

static int arm_timer(rc_mux *m, long long delay_ms)
{
    PyObject *delay, *handle;

    delay = PyFloat_FromDouble((double)(delay_ms < 1 ? 1 : delay_ms) / 1000.0);
    if (delay == NULL)
        return -1;
    handle = PyObject_CallMethod(m->loop, "call_later", "OO", delay, m->on_timer);
    Py_DECREF(delay);
    if (handle == NULL)
        return -1;
    Py_XSETREF(m->timer, handle);
    return 0;
}

/* ------------------------------------------------------------ the type */

rc_mux *rc_mux_new(rc_state *st, PyObject *loop, int timeout_ms, Py_ssize_t max_in_flight)
{
    rc_mux *m = PyObject_GC_New(rc_mux, st->MuxType);

    if (m == NULL)
        return NULL;
    memset((char *)m + sizeof(PyObject), 0, sizeof(rc_mux) - sizeof(PyObject));
    m->state = st;
    m->fd = -1;
    m->status = MUX_PENDING;
    m->timeout_ms = timeout_ms;
    m->max_in_flight = max_in_flight < 1 ? 1 : max_in_flight;
    m->generation = rc_fork_generation;
    m->loop = Py_NewRef(loop);
    rc_buf_init(&m->out);
    m->in = PyMem_Malloc(RC_MUX_READ_CHUNK);
    if (m->in == NULL || rc_reader_init(&m->reader, st) < 0) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        PyObject_GC_Track(m);
        Py_DECREF(m);
        return NULL;
    }
    PyObject_GC_Track(m);
    return m;
}

int rc_mux_is_closed(rc_mux *m)
{
    return m->status == MUX_CLOSED || m->generation != rc_fork_generation;
}

PyObject *rc_mux_loop(rc_mux *m)
{
    return m->loop;
}

rc_buf *rc_mux_out(rc_mux *m)
{
    return &m->out;
}

void rc_mux_discard(rc_mux *m, size_t mark)
{
    m->out.len = mark;
}

PyObject *rc_mux_submit(rc_mux *m, size_t mark, Py_ssize_t replies, rc_result_kind kind,
                        const rc_codec *codec, PyObject *codec_owner, PyObject *extra)
{
    PyObject *future = NULL, *args[1];
    rc_slot *s;
    int was_idle = m->count == 0;

    if (m->status == MUX_CLOSED) {
        rc_mux_discard(m, mark);
        PyErr_SetObject(m->state->ConnectionError, m->closed_reason);
        return NULL;
    }
    if (kind != RC_RESULT_HANDSHAKE) {
        args[0] = m->loop;
        future = PyObject_Vectorcall(m->state->FutureType, args, 0, m->state->loop_kwnames);
        if (future == NULL)
            goto error;
    }
    if (ring_reserve(m) < 0)
        goto error;
    s = slot_at(m, m->count);
    m->bytes_queued += m->out.len - mark;
    s->future = future == NULL ? NULL : Py_NewRef(future);
    s->extra = Py_XNewRef(extra);
    s->codec_owner = Py_XNewRef(codec_owner);
    s->replies = NULL;
    s->error = NULL;
    s->codec = codec;
    s->remaining = replies;
    s->end = m->bytes_queued;
    s->queued_ms = now_ms();
    s->kind = kind;
    m->count++;

    if (m->status != MUX_READY)
        return future; /* attach() sends it */
    if (m->timer == NULL && m->timeout_ms >= 0 && arm_timer(m, m->timeout_ms) < 0) {
        fail_with_pending(m);
        return future;
    }
    /* Nothing in flight: write at once, the latency-optimal choice. Otherwise
     * the rest of this loop iteration's commands join this one in a single
     * write. */
    if (was_idle && !m->dispatching && !m->flush_scheduled)
        flush(m);
    else if (schedule_flush(m) < 0)
        fail_with_pending(m);
    return future;
error:
    Py_XDECREF(future);
    rc_mux_discard(m, mark);
    return NULL;
}

/* Python-visible methods, called by the event loop or by redis_cache. */

static PyObject *mux_on_readable(rc_mux *m, PyObject *unused)
{
    ssize_t n;
    int rounds = 0;

    (void)unused;
    Py_INCREF(m); /* completing futures must not free us mid-read */
    while (m->status == MUX_READY && rounds++ < 16) {
        n = recv(m->fd, m->in, RC_MUX_READ_CHUNK, 0);
        if (n > 0) {
            dispatch(m, m->in, (size_t)n);
            if (n < RC_MUX_READ_CHUNK)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n == 0)
            fail_format(m, m->state->ConnectionError,
                        "redis closed the connection (server restarted or killed?)");
        else
            fail_format(m, m->state->ConnectionError, "connection to redis failed: %s",
                        strerror(errno));
        break;
    }
    /* Requests held back by backpressure may go now. */
    if (m->status == MUX_READY && m->bytes_sent < m->bytes_queued)
        flush(m);
    Py_DECREF(m);
    Py_RETURN_NONE;
}

static PyObject *mux_on_writable(rc_mux *m, PyObject *unused)
{
    (void)unused;
    flush(m);
    Py_RETURN_NONE;
}

static PyObject *mux_on_flush(rc_mux *m, PyObject *unused)
{
    (void)unused;
    m->flush_scheduled = 0;
    flush(m);
    Py_RETURN_NONE;
}

static PyObject *mux_on_timer(rc_mux *m, PyObject *unused)
{
    long long due;

    (void)unused;
    Py_CLEAR(m->timer);
    if (m->status != MUX_READY || m->count == 0)
        Py_RETURN_NONE;
    due = slot_at(m, 0)->queued_ms + m->timeout_ms - now_ms();
    if (due <= 0)
        fail_format(m, m->state->TimeoutError,
                    "redis did not answer within %d ms; the %zu requests waiting on this "
                    "connection failed and it will be replaced",
                    m->timeout_ms, m->count);
    else if (arm_timer(m, due) < 0)
        fail_with_pending(m);
    Py_RETURN_NONE;
}

/* attach(fd, handshake): takes ownership of a connected non-blocking socket,
 * sends the handshake commands (tuples of arguments) ahead of everything
 * queued so far, and starts reading. */
static PyObject *mux_attach(rc_mux *m, PyObject *const *args, Py_ssize_t nargs)
{
    rc_buf prelude;
    PyObject *fast = NULL, *r;
    uint64_t *ends = NULL;
    Py_ssize_t i, n = 0;
    long fd_long;
    int fd = -1;
    size_t j;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "attach(fd, handshake)");
        return NULL;
    }
    fd_long = PyLong_AsLong(args[0]);
    if (fd_long == -1 && PyErr_Occurred())
        return NULL;
    if (fd_long < 0 || fd_long > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "attach(): bad file descriptor");
        return NULL;
    }
    fd = (int)fd_long;
    rc_buf_init(&prelude);
    if (m->status != MUX_PENDING) {
        PyErr_SetString(m->state->ConnectionError, "attach(): the connection is already closed");
        goto error;
    }
    fast = PySequence_Fast(args[1], "handshake must be a sequence of command tuples");
    if (fast == NULL)
        goto error;
    n = PySequence_Fast_GET_SIZE(fast);
    ends = PyMem_Calloc((size_t)n + 1, sizeof(uint64_t));
    if (ends == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    for (i = 0; i < n; i++) {
        PyObject *cmd = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyTuple_Check(cmd) || PyTuple_GET_SIZE(cmd) == 0) {
            PyErr_SetString(PyExc_TypeError, "each handshake command must be a non-empty tuple");
            goto error;
        }
        if (rc_cmd_raw(&prelude, &PyTuple_GET_ITEM(cmd, 0), PyTuple_GET_SIZE(cmd)) < 0)
            goto error;
        ends[i] = prelude.len;
    }
    /* The handshake goes ahead of the commands queued while connecting:
     * its bytes at the front of the buffer, its slots at the front of the
     * ring. */
    if (rc_buf_reserve(&m->out, prelude.len) < 0) {
        PyErr_NoMemory();
        goto error;
    }
    if (prelude.len) {
        memmove(m->out.data + prelude.len, m->out.data, m->out.len);
        memcpy(m->out.data, prelude.data, prelude.len);
    }
    m->out.len += prelude.len;
    m->bytes_queued += prelude.len;
    for (j = 0; j < m->count; j++)
        slot_at(m, j)->end += prelude.len;
    for (i = n - 1; i >= 0; i--) {
        rc_slot *s;
        if (ring_reserve(m) < 0)
            goto error;
        m->head = (m->head + m->cap - 1) & (m->cap - 1);
        m->count++;
        s = slot_at(m, 0);
        memset(s, 0, sizeof(*s));
        s->extra = Py_NewRef(PyTuple_GET_ITEM(PySequence_Fast_GET_ITEM(fast, i), 0));
        s->remaining = 1;
        s->kind = RC_RESULT_HANDSHAKE;
        s->end = ends[i];
        s->queued_ms = now_ms();
    }
    m->fd = fd;
    fd = -1;
    m->on_readable = PyObject_GetAttrString((PyObject *)m, "_on_readable");
    m->on_writable = PyObject_GetAttrString((PyObject *)m, "_on_writable");
    m->on_flush = PyObject_GetAttrString((PyObject *)m, "_on_flush");
    m->on_timer = PyObject_GetAttrString((PyObject *)m, "_on_timer");
    if (!m->on_readable || !m->on_writable || !m->on_flush || !m->on_timer)
        goto error;
    r = PyObject_CallMethod(m->loop, "add_reader", "iO", m->fd, m->on_readable);
    if (r == NULL)
        goto error;
    Py_DECREF(r);
    m->status = MUX_READY;
    if (m->count > 0 && m->timeout_ms >= 0 && arm_timer(m, m->timeout_ms) < 0)
        goto error;
    flush(m);
    rc_buf_free(&prelude);
    PyMem_Free(ends);
    Py_DECREF(fast);
    Py_RETURN_NONE;
error:
    if (fd >= 0)
        close(fd);
    rc_buf_free(&prelude);
    PyMem_Free(ends);
    Py_XDECREF(fast);
    {
        /* Everyone waiting learns why; the caller gets the exception too. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (value != NULL) {
            PyObject *text = PyObject_Str(value);
            if (text != NULL) {
                fail_all(m, m->state->ConnectionError, text);
                Py_DECREF(text);
            }
        }
        PyErr_Restore(type, value, tb);
    }
    return NULL;
}

/* fail(exc_type, message): fails every waiting request (connect failed). */
static PyObject *mux_fail(rc_mux *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyExceptionClass_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "fail(exception_type, message)");
        return NULL;
    }
    fail_all(m, args[0], args[1]);
    Py_RETURN_NONE;
}

static PyObject *mux_close(rc_mux *m, PyObject *unused)
{
    (void)unused;
    /* In a forked child the loop is the parent's: leave it alone. */
    if (m->generation != rc_fork_generation)
        Py_CLEAR(m->loop);
    fail_format(m, m->state->ConnectionError, "the cache was closed while this request waited");
    Py_RETURN_NONE;
}

/* Forgets the socket without touching the loop: for a loop that is closed
 * or a process that forked. */
static PyObject *mux_abandon(rc_mux *m, PyObject *unused)
{
    (void)unused;
    Py_CLEAR(m->loop);
    fail_format(m, m->state->ConnectionError, "the connection was abandoned");
    Py_RETURN_NONE;
}

static PyObject *mux_execute_command(rc_mux *m, PyObject *const *args, Py_ssize_t nargs)
{
    size_t mark = m->out.len;

    if (rc_cmd_raw(&m->out, args, nargs) < 0) {
        rc_mux_discard(m, mark);
        return NULL;
    }
    return rc_mux_submit(m, mark, 1, RC_RESULT_RAW, NULL, NULL, NULL);
}

static PyObject *mux_get_closed(rc_mux *m, void *unused)
{
    (void)unused;
    return PyBool_FromLong(rc_mux_is_closed(m));
}

static PyObject *mux_get_attached(rc_mux *m, void *unused)
{
    (void)unused;
    return PyBool_FromLong(m->status == MUX_READY);
}

static PyObject *mux_get_in_flight(rc_mux *m, void *unused)
{
    (void)unused;
    return PyLong_FromSize_t(m->count);
}

static PyObject *mux_get_loop(rc_mux *m, void *unused)
{
    (void)unused;
    return Py_NewRef(m->loop ? m->loop : Py_None);
}

static int mux_traverse(rc_mux *m, visitproc visit, void *arg)
{
    size_t i;

    Py_VISIT(Py_TYPE(m));
    Py_VISIT(m->loop);
    Py_VISIT(m->on_readable);
    Py_VISIT(m->on_writable);
    Py_VISIT(m->on_flush);
    Py_VISIT(m->on_timer);
    Py_VISIT(m->timer);
    Py_VISIT(m->closed_reason);
    for (i = 0; i < m->count; i++) {
        rc_slot *s = slot_at(m, i);
        Py_VISIT(s->future);
        Py_VISIT(s->extra);
        Py_VISIT(s->codec_owner);
        Py_VISIT(s->replies);
        Py_VISIT(s->error);
    }
    return 0;
}

static int mux_clear(rc_mux *m)
{
    size_t i;

    for (i = 0; i < m->count; i++)
        slot_clear(slot_at(m, i));
    m->count = 0;
    Py_CLEAR(m->loop);
    Py_CLEAR(m->on_readable);
    Py_CLEAR(m->on_writable);
    Py_CLEAR(m->on_flush);
    Py_CLEAR(m->on_timer);
    Py_CLEAR(m->timer);
    Py_CLEAR(m->closed_reason);
    return 0;
}

static void mux_dealloc(rc_mux *m)
{
    PyTypeObject *tp = Py_TYPE(m);

    PyObject_GC_UnTrack(m);
    /* No I/O here: the socket is closed, never written to. */
    if (m->fd >= 0)
        close(m->fd);
    mux_clear(m);
    rc_reader_free(&m->reader);
    rc_buf_free(&m->out);
    PyMem_Free(m->slots);
    PyMem_Free(m->in);
    tp->tp_free((PyObject *)m);
    Py_DECREF(tp);
}

static PyMethodDef mux_methods[] = {
    {"_on_readable", (PyCFunction)mux_on_readable, METH_NOARGS, NULL},
    {"_on_writable", (PyCFunction)mux_on_writable, METH_NOARGS, NULL},
    {"_on_flush", (PyCFunction)mux_on_flush, METH_NOARGS, NULL},
    {"_on_timer", (PyCFunction)mux_on_timer, METH_NOARGS, NULL},
    {"attach", (PyCFunction)(void (*)(void))mux_attach, METH_FASTCALL,
     "attach(fd, handshake): start using a connected socket."},
    {"fail", (PyCFunction)(void (*)(void))mux_fail, METH_FASTCALL,
     "fail(exc_type, message): fail every waiting request and close."},
    {"close", (PyCFunction)mux_close, METH_NOARGS, "Close, failing requests still waiting."},
    {"abandon", (PyCFunction)mux_abandon, METH_NOARGS,
     "Close without touching the event loop (it is closed, or this is a forked child)."},
    {"execute_command", (PyCFunction)(void (*)(void))mux_execute_command, METH_FASTCALL,
     "execute_command(*args) -> Future of the raw reply."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mux_getset[] = {
    {"closed", (getter)mux_get_closed, NULL, NULL, NULL},
    {"attached", (getter)mux_get_attached, NULL, NULL, NULL},
    {"in_flight", (getter)mux_get_in_flight, NULL, NULL, NULL},
    {"loop", (getter)mux_get_loop, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot mux_slots[] = {
    {Py_tp_dealloc, mux_dealloc},
    {Py_tp_traverse, mux_traverse},
    {Py_tp_clear, mux_clear},
    {Py_tp_methods, mux_methods},
    {Py_tp_getset, mux_getset},
    {Py_tp_doc, "One multiplexed connection of the async engine (internal)."},
    {0, NULL},
};

PyType_Spec rc_mux_spec = {
    .name = "redis_cache._core.Multiplexer",
    .basicsize = sizeof(rc_mux),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = mux_slots,
};
