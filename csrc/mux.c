/* The async engine; see mux.h.
 *
 * THE RE-ENTRANCY RULE. Many callers share one output buffer and one FIFO of
 * request slots, and Python code can run almost anywhere: creating a future
 * or an exception may start a garbage collection, which runs finalizers
 * (__del__, weakref.finalize) that may use this very cache; a repr() or a
 * serializer hook is user code. If any of that ran while a command was
 * half-written, the code's own command would land inside it, or the buffer
 * would be cut back below bytes written since, and replies would reach the
 * wrong callers. So a command is written in a window that runs no Python
 * code at all (rc_mux_submit):
 *
 *   1. everything that may run Python code or allocate Python objects comes
 *      first: the future, the list that collects a batch's replies, room in
 *      the ring; then the multiplexer is checked again (that code may have
 *      closed it);
 *   2. the window opens (m->writing; the GC is held off, so even an
 *      exception created for an encoding error cannot start a collection);
 *      the command is encoded (encoders run no hooks and no user reprs,
 *      request.h) and either recorded with its slot or cut off whole;
 *   3. the window closes; only then may Python code run again (flushing,
 *      scheduling, raising).
 *
 * Every function that touches the buffer or the ring asserts the window is
 * closed (checked in the sanitizer build, which keeps assert()), and a
 * command submitted while it is open is refused rather than let in.
 *
 * Life of a multiplexer: PENDING (created; commands queue while Python
 * connects a socket, each waiting at most connect_wait_ms once an attempt
 * failed) -> [TLS: the TLS handshake, driven by readiness callbacks] ->
 * READY (the connection handshake, AUTH and such, sent first, then the
 * queue) -> CLOSED (failed or closed; every request still waiting gets an
 * exception, and the client replaces the multiplexer on its next command).
 *
 * With TLS, reads and writes go through OpenSSL (tls.c): a read may need the
 * socket writable first and a write readable (read_wants_write,
 * write_wants_read remember which), and a read drains everything OpenSSL
 * decrypted before the socket is polled again.
 *
 * Byte accounting: bytes_queued counts every byte ever encoded, bytes_sent
 * every byte written (or, while PENDING, dropped with a request that gave up
 * waiting); a slot remembers the value of bytes_queued where its command
 * ends, which is how at most max_in_flight requests are let out onto the
 * wire while the rest wait in the buffer (backpressure).
 */
#include "mux.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "conn.h"
#include "future.h"
#include "loopwait.h"
#include "reply.h"

#define RC_MUX_READ_CHUNK 65536

#define assert_window_closed(m) assert(!(m)->writing)

#define TLS_PORT_HINT                                                                              \
    "the server answered in TLS: it is a TLS port, so connect with a rediss:// URL or ssl=True"

typedef enum mux_status {
    MUX_PENDING,
    MUX_TLS_HANDSHAKE,
    MUX_READY,
    MUX_CLOSED,
} mux_status;

typedef struct rc_slot {
    PyObject *future;      /* NULL for handshake commands */
    PyObject *extra;       /* see rc_result_kind; the command name for handshakes */
    PyObject *codec_owner; /* keeps *codec alive */
    /* The reply (one-reply requests), or the list collecting the replies of
     * a batch of SETs (errors included: they become a PartialWriteError). */
    PyObject *result;
    PyObject *error; /* first error reply or decode error (not for batches) */
    const rc_codec *codec;
    const char *command;
    Py_ssize_t total, remaining;
    /* Where the command's bytes begin and end in the stream (bytes_queued
     * counts): the buffer keeps them until the reply came, so a command the
     * node refused as no longer primary can be sent again elsewhere. */
    uint64_t start, end;
    int retry_safe, retried;
    /* The command went after an ASKING (a cluster node's ASK redirect):
     * `skip` while ASKING's own reply is still due, and `asked` for good,
     * as its bytes, ASKING included, must not be sent again elsewhere. */
    int skip, asked;
    long long queued_ms;
    rc_result_kind kind;
    /* For the metrics: when the request was submitted (monotonic ns; kept
     * when it moves to another connection) and its histogram. */
    uint64_t begin_ns;
    rc_op op;
} rc_slot;

struct rc_mux {
    PyObject_HEAD
    rc_state *state;
    PyObject *loop;
    /* Bound methods handed to the loop, made once. */
    PyObject *on_readable, *on_writable, *on_flush, *on_timer;
    PyObject *timer;
    int fd;
    rc_tls_context *tls_ctx; /* NULL: plain TCP */
    rc_tls *tls;             /* the session, once attached */
    int read_wants_write, write_wants_read;
    mux_status status;
    int flush_scheduled;
    int writer_registered;
    /* Set while a command is being written: see the rule above. */
    int writing;
    /* Set while replies are being dispatched: a serializer's loads() may
     * call back into the cache, and must not write or free the reader. */
    int dispatching;
    /* The futures completed while dispatching, whose callbacks (their
     * tasks' wake-ups) run once the read is over, still in this loop
     * iteration (wake_waiters; see future.h for why). Empty outside the
     * loop's reader and writer callbacks. */
    PyObject *woken;
    /* Whether the loop is asyncio's own (asyncio.BaseEventLoop), whose
     * reader callbacks run from its ready queue, where resuming a task is
     * what the queue would do next anyway. uvloop runs them inside libuv's
     * poll phase; resuming tasks there, we saw a connection the server
     * killed never reported closed (its requests hung until the timeout:
     * test_connection_killed_by_the_server_is_replaced[uvloop]), so on
     * other loops futures complete the asyncio way. uvloop's iteration is
     * cheap: one caller already gets 93% of redis-benchmark there. */
    int wake_directly;
    /* Where the reader callback may wait for the next reply itself (a loop
     * of asyncio's own on epoll: see loopwait.h). */
    rc_loopwait loopwait;
    /* Set once the node answered READONLY / LOADING / MASTERDOWN: no new
     * command comes here (the client opens another connection); replies
     * still due are read, then the connection closes. */
    int draining;
    /* When the last reply came (monotonic ms), how many came, and whether
     * this connection was opened because another stalled (see
     * rc_mux_stalled). */
    long long last_reply_ms;
    uint64_t replies;
    int rerouted;
    /* A weak reference to the client, whose _on_node_stale(mux) is called
     * when this connection starts draining and returns the connection that
     * takes over (weak: an open connection must not keep a dropped client
     * alive). */
    PyObject *on_stale;
    rc_mux_limits limits;
    unsigned long generation;
    rc_buf out;
    size_t out_off;
    /* Bytes at the front of out that carry the handshake (a password,
     * perhaps): zeroed as soon as they are sent and dropped. */
    size_t secret_len;
    uint64_t bytes_queued, bytes_sent;
    uint64_t bytes_received;
    rc_slot *slots;
    size_t cap, head, count;
    rc_reader reader;
    char *in;
    PyObject *closed_reason; /* the message given to requests after close */
    /* Why connecting failed last (set by Python), for requests that give
     * up waiting for a connection; NULL while none failed. */
    PyObject *down_type, *down_reason;
    /* Where the connection goes ("host:port"), for TLS error messages. */
    PyObject *where;
    /* The client's counters (shared, reference counted), or NULL: metrics
     * off, or a dedicated connection (whose blocking commands would skew
     * the latencies). */
    rc_metrics *metrics;
    /* Subscriber mode (pub/sub): on_push(reply, None) gets every reply that
     * no request waits for, instead of that being a protocol error, and
     * on_push(None, exception) is called once when the connection closes.
     * Commands go out with send(), which records no slot: in RESP2 a
     * subscribed connection's replies do not pair with its commands. */
    PyObject *on_push;
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

/* A request left the connection, answered (failed: with an exception) or
 * failed; now_ns 0: read the clock here. */
static void slot_finished(rc_mux *m, const rc_slot *s, int failed, uint64_t now_ns)
{
    if (m->metrics == NULL || s->future == NULL)
        return;
    if (now_ns == 0)
        now_ns = rc_metrics_now_ns();
    rc_metrics_finish(m->metrics, s->op, now_ns - s->begin_ns, failed);
}

/* Counts a request failed with exc_type (a timeout, a connection error). */
static void slot_failed(rc_mux *m, const rc_slot *s, int timed_out)
{
    if (m->metrics == NULL || s->future == NULL)
        return;
    if (timed_out)
        m->metrics->timeouts++;
    else
        m->metrics->connection_errors++;
    slot_finished(m, s, 1, 0);
}

static void slot_clear(rc_slot *s)
{
    Py_CLEAR(s->codec_owner);
    Py_CLEAR(s->future);
    Py_CLEAR(s->extra);
    Py_CLEAR(s->result);
    Py_CLEAR(s->error);
}

/* Takes the head slot off the ring, returning it (the caller clears it). */
static rc_slot pop_head(rc_mux *m)
{
    rc_slot s = *slot_at(m, 0);

    memset(slot_at(m, 0), 0, sizeof(rc_slot));
    m->head = (m->head + 1) & (m->cap - 1);
    m->count--;
    return s;
}

/* Zeroes the handshake's bytes among the first n of the buffer (sent, and
 * about to be dropped). */
static void wipe_sent_secret(rc_mux *m, size_t n)
{
    size_t wipe = n < m->secret_len ? n : m->secret_len;

    if (wipe > 0) {
        volatile char *p = m->out.data;
        size_t i;
        for (i = 0; i < wipe; i++)
            p[i] = 0;
    }
    m->secret_len -= wipe;
}

/* Where absolute stream position `at` (bytes_queued counts) lies in the
 * buffer; only for positions still held. */
static size_t buffer_offset(rc_mux *m, uint64_t at)
{
    return m->out_off - (size_t)(m->bytes_sent - at);
}

/* Room for `need` more slots; the ring's capacity stays a power of two.
 * Runs no Python code (PyMem allocates no objects). */
static int ring_reserve(rc_mux *m, size_t need)
{
    size_t i, cap;
    rc_slot *slots;

    if (m->cap - m->count >= need)
        return 0;
    cap = m->cap ? m->cap : 64;
    while (cap - m->count < need)
        cap *= 2;
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

/* Opens the window in which a command is written (see the rule above);
 * returns what end_write needs. */
static int begin_write(rc_mux *m)
{
    assert_window_closed(m);
    m->writing = 1;
    return PyGC_Disable();
}

static void end_write(rc_mux *m, int gc_was_enabled)
{
    if (gc_was_enabled)
        PyGC_Enable();
    m->writing = 0;
}

/* ------------------------------------------------------------ completing */

/* Completes a future with a result or an exception. A cancelled future is
 * an abandoned request, whose reply is dropped here. A reply read now wakes
 * its caller once the read is over (m->woken); a failure, a timeout or a
 * close schedules the wake-up as asyncio does. Should completing fail (out
 * of memory), the future is cancelled instead, so that no caller waits
 * forever. */
static void complete(rc_mux *m, PyObject *future, PyObject *result, PyObject *exc)
{
    PyObject *woken = NULL;

    if (m->dispatching && m->wake_directly) {
        if (m->woken == NULL && (m->woken = PyList_New(0)) == NULL)
            PyErr_Clear(); /* then call_soon */
        woken = m->woken;
    }
    if (rc_future_finish(future, result, exc, woken) >= 0)
        return;
    PyErr_Clear();
    rc_future_cancel(future);
}

/* Runs the callbacks of the futures completed by the read just over: the
 * tasks awaiting them resume now, in this loop iteration. -1 (error set)
 * only for KeyboardInterrupt or SystemExit raised by one. */
static int wake_waiters(rc_mux *m)
{
    if (m->woken == NULL || PyList_GET_SIZE(m->woken) == 0)
        return 0;
    return rc_future_wake(m->woken);
}

/* An instance of exc_type(message) for one waiting request (each gets its
 * own: an exception's traceback is per raise), or, when memory runs out,
 * `shared`, or a MemoryError. New reference; NULL only if all of those
 * failed. */
static PyObject *new_error(PyObject *exc_type, PyObject *message, PyObject *shared)
{
    PyObject *exc = PyObject_CallOneArg(exc_type, message), *type, *tb;

    if (exc != NULL)
        return exc;
    PyErr_Clear();
    if (shared != NULL)
        return Py_NewRef(shared);
    PyErr_NoMemory(); /* a preallocated instance when memory is short */
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyErr_Clear();
    return exc;
}

static void fail_slot(rc_mux *m, rc_slot *s, PyObject *exc_type, PyObject *message,
                      PyObject *shared)
{
    PyObject *exc;

    if (s->future == NULL)
        return;
    exc = new_error(exc_type, message, shared);
    if (exc != NULL) {
        complete(m, s->future, NULL, exc);
        Py_DECREF(exc);
    } else {
        rc_future_cancel(s->future);
    }
}

static void cancel_timer(rc_mux *m)
{
    PyObject *r;

    if (m->timer == NULL)
        return;
    r = PyObject_CallMethod(m->timer, "cancel", NULL);
    Py_XDECREF(r);
    PyErr_Clear();
    Py_CLEAR(m->timer);
}

static void stop_watching(rc_mux *m)
{
    PyObject *r;

    if (m->fd >= 0 && m->loop != NULL &&
        (m->status == MUX_READY || m->status == MUX_TLS_HANDSHAKE)) {
        r = PyObject_CallMethod(m->loop, "remove_reader", "i", m->fd);
        Py_XDECREF(r);
        if (m->writer_registered) {
            r = PyObject_CallMethod(m->loop, "remove_writer", "i", m->fd);
            Py_XDECREF(r);
        }
        PyErr_Clear();
    }
    m->writer_registered = 0;
    cancel_timer(m);
}

/* Subscriber mode: calls callback(reply, None), or with reply NULL
 * callback(None, closed). An exception the callback raises is reported as
 * unraisable: the reader must go on. */
static void push(PyObject *callback, PyObject *reply, PyObject *closed)
{
    PyObject *args[2] = {reply != NULL ? reply : Py_None, closed != NULL ? closed : Py_None};
    PyObject *r;

    Py_INCREF(callback); /* the callback may drop the multiplexer's reference */
    r = PyObject_Vectorcall(callback, args, 2, NULL);
    if (r == NULL)
        PyErr_WriteUnraisable(callback);
    Py_XDECREF(r);
    Py_DECREF(callback);
}

/* Subscriber mode: tells on_push, once, that the connection closed. The
 * reference is taken off the multiplexer first, so it is called once even
 * if the call closes the multiplexer again. */
static void notify_push_closed(rc_mux *m, PyObject *exc_type, PyObject *message)
{
    PyObject *callback = m->on_push, *exc;

    if (callback == NULL)
        return;
    m->on_push = NULL;
    exc = new_error(exc_type, message, NULL);
    if (exc != NULL) {
        push(callback, NULL, exc);
        Py_DECREF(exc);
    }
    Py_DECREF(callback);
}

/* Fails every request still waiting and closes the socket. */
static void fail_all(rc_mux *m, PyObject *exc_type, PyObject *message)
{
    PyObject *shared;
    size_t i, count;
    int timed_out;

    assert_window_closed(m);
    if (m->status == MUX_CLOSED)
        return;
    stop_watching(m);
    m->status = MUX_CLOSED;
    Py_XSETREF(m->closed_reason, Py_NewRef(message));
    rc_tls_free(m->tls);
    m->tls = NULL;
    if (m->fd >= 0) {
        close(m->fd);
        m->fd = -1;
    }
    /* Every slot leaves the ring before any future completes: completing
     * may run code that submits (and is refused, as the multiplexer is
     * closed) or closes again (a no-op now). */
    count = m->count;
    shared = PyObject_CallOneArg(exc_type, message);
    if (shared == NULL)
        PyErr_Clear();
    timed_out = PyErr_GivenExceptionMatches(exc_type, m->state->TimeoutError);
    for (i = 0; i < count; i++) {
        rc_slot s = pop_head(m);
        slot_failed(m, &s, timed_out);
        fail_slot(m, &s, exc_type, message, shared);
        slot_clear(&s);
    }
    Py_XDECREF(shared);
    m->head = 0;
    notify_push_closed(m, exc_type, message);
    wipe_sent_secret(m, m->out.len);
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
            message = Py_NewRef(Py_None);
        }
    }
    fail_all(m, exc_type, message);
    Py_DECREF(message);
}

/* The pending exception fails the connection: its class when it is a
 * connection or timeout error (ProtocolError, say), ConnectionError else. */
static void fail_with_pending(rc_mux *m)
{
    PyObject *type, *value, *tb, *text, *as;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    as = type != NULL && (PyErr_GivenExceptionMatches(type, m->state->ConnectionError) ||
                          PyErr_GivenExceptionMatches(type, m->state->TimeoutError))
             ? type
             : m->state->ConnectionError;
    text = value != NULL ? PyObject_Str(value) : NULL;
    if (text == NULL) {
        PyErr_Clear();
        fail_format(m, as, "redis connection failed");
    } else {
        fail_all(m, as, text);
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

/* The head request got all its replies (the last at now_ns): complete its
 * future. */
static void finish_head(rc_mux *m, uint64_t now_ns)
{
    /* Popped before completing, so a callback that queues a command sees a
     * consistent ring. */
    rc_slot s = pop_head(m);
    PyObject *result;

    if (s.kind == RC_RESULT_HANDSHAKE) {
        check_handshake(m, &s);
    } else if (s.error != NULL) {
        slot_finished(m, &s, 1, now_ns);
        complete(m, s.future, NULL, s.error);
    } else {
        result = rc_result_build(m->state, s.kind, s.result, s.extra);
        slot_finished(m, &s, result == NULL, now_ns);
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

/* Records one reply (or the error of one that could not be decoded) for the
 * head request. */
static void take_reply(rc_mux *m, PyObject *reply, PyObject *error)
{
    rc_slot *s = slot_at(m, 0);
    uint64_t now_ns = rc_metrics_now_ns();

    m->replies++;
    m->last_reply_ms = (long long)(now_ns / 1000000u);
    if (m->metrics != NULL && s->future != NULL && !s->skip) {
        /* (ASKING's +OK is not one of the request's commands' replies.) */
        m->metrics->replies++;
        m->metrics->error_replies += reply != NULL && rc_is_error_reply(m->state, reply);
    }

    if (s->skip) {
        /* ASKING's reply: only an error matters (it fails the request). */
        s->skip = 0;
        if (s->error == NULL && error != NULL)
            s->error = Py_NewRef(error);
        else if (s->error == NULL && reply != NULL && rc_is_error_reply(m->state, reply))
            s->error = Py_NewRef(reply);
        return;
    }
    if (error != NULL) {
        if (s->error == NULL)
            s->error = Py_NewRef(error);
    } else if (s->kind == RC_RESULT_STORED_MANY ||
               (rc_result_collects(s->kind) && !rc_is_error_reply(m->state, reply))) {
        PyObject *old = PyList_GET_ITEM(s->result, s->total - s->remaining);
        PyList_SET_ITEM(s->result, s->total - s->remaining, Py_NewRef(reply));
        Py_DECREF(old);
    } else if (rc_is_error_reply(m->state, reply)) {
        if (s->error == NULL)
            s->error = Py_NewRef(reply);
    } else {
        Py_XSETREF(s->result, Py_NewRef(reply));
    }
    if (--s->remaining == 0)
        finish_head(m, now_ns);
}

static int adopt(rc_mux *m, rc_mux *from, const rc_buf *bytes, rc_slot *s);

/* The node answered the head request READONLY / LOADING / MASTERDOWN: this
 * connection drains (nothing new comes here), and a lone, safe command not
 * yet retried is sent again on the connection that takes over, which
 * finds the primary first. Otherwise the reply completes it (FailoverError).
 * Returns non-zero when the reply was taken care of here. */
static int node_stepped_down(rc_mux *m, PyObject *reply)
{
    rc_slot *head = slot_at(m, 0), s;
    PyObject *target = NULL, *client;
    rc_buf bytes;
    int adopted = 0;

    m->draining = 1;
    if (m->on_stale == NULL || head->total != 1 || !head->retry_safe || head->retried ||
        head->asked)
        return 0;
    /* The command's bytes (kept until its reply) and its slot, out first:
     * the hook below runs Python code. */
    rc_buf_init(&bytes);
    if (rc_buf_append(&bytes, m->out.data + buffer_offset(m, head->start),
                      (size_t)(head->end - head->start)) < 0) {
        rc_buf_free(&bytes);
        return 0;
    }
    s = pop_head(m);
#if PY_VERSION_HEX >= 0x030D0000
    if (PyWeakref_GetRef(m->on_stale, &client) < 0)
        PyErr_Clear();
#else
    client = Py_XNewRef(PyWeakref_GetObject(m->on_stale));
#endif
    if (client != NULL && client != Py_None)
        target = PyObject_CallMethod(client, "_on_node_stale", "O", (PyObject *)m);
    Py_XDECREF(client);
    if (target != NULL && Py_IS_TYPE(target, m->state->MuxType) && target != (PyObject *)m)
        adopted = adopt((rc_mux *)target, m, &bytes, &s) == 0;
    if (!adopted) {
        PyErr_Clear();
        if (m->metrics != NULL && s.future != NULL) {
            m->metrics->replies++;
            m->metrics->error_replies++;
        }
        slot_finished(m, &s, 1, 0);
        complete(m, s.future, NULL, reply);
        slot_clear(&s);
    }
    Py_XDECREF(target);
    rc_buf_free(&bytes);
    return 1;
}

/* Feeds the reader at most one slice of the bytes read. */
static int feed_slice(rc_mux *m, const char *p, size_t n, size_t *fed)
{
    size_t slice = n - *fed < RC_READER_FEED_MAX ? n - *fed : RC_READER_FEED_MAX;

    if (rc_reader_feed(&m->reader, p + *fed, slice) < 0) {
        fail_with_pending(m);
        return -1;
    }
    *fed += slice;
    return 0;
}

/* Feeds the bytes read and completes every reply they hold. */
static void dispatch(rc_mux *m, const char *p, size_t n)
{
    size_t fed = 0;

    assert_window_closed(m);
    m->dispatching = 1;
    while (m->status == MUX_READY) {
        PyObject *reply = NULL;
        rc_reply_status status;
        rc_slot *s;

        if (m->count == 0 && m->on_push != NULL) {
            /* Subscriber mode: every reply past the handshake is the
             * subscriber's (messages, confirmations, pongs, errors). */
            status = rc_reader_next(&m->reader, NULL, &reply);
            if (status == RC_REPLY_READY) {
                m->replies++;
                m->last_reply_ms = now_ms();
                push(m->on_push, reply, NULL);
                Py_DECREF(reply);
            } else if (status == RC_REPLY_PENDING && fed < n) {
                if (feed_slice(m, p, n, &fed) < 0)
                    break;
            } else if (status != RC_REPLY_PENDING) {
                Py_XDECREF(reply);
                fail_with_pending(m);
            } else {
                break;
            }
            continue;
        }
        if (m->count == 0) {
            /* Nothing is waiting: any complete reply, fed now or earlier,
             * was asked for by nobody. Giving it to the next request would
             * hand that caller someone else's answer. */
            status = rc_reader_next(&m->reader, NULL, &reply);
            Py_XDECREF(reply);
            if (status == RC_REPLY_PENDING && fed < n) {
                if (feed_slice(m, p, n, &fed) < 0)
                    break;
                continue;
            }
            if (status != RC_REPLY_PENDING) {
                PyErr_Clear();
                fail_format(m, m->state->ProtocolError,
                            "redis sent a reply nobody asked for; the connection was dropped");
            }
            break;
        }
        s = slot_at(m, 0);
        status = rc_reader_next(&m->reader, s->codec, &reply);
        if (m->status != MUX_READY) {
            /* Decoding ran Python code (a serializer's loads()) that closed
             * the connection: every request has failed and the ring is
             * empty, so there is no slot left for this reply. */
            Py_XDECREF(reply);
            if (status == RC_REPLY_BAD_VALUE || status == RC_REPLY_BROKEN)
                PyErr_Clear();
            break;
        }
        /* Decoding may have run Python code that queued commands: the ring
         * may have moved. */
        s = slot_at(m, 0);
        if (status == RC_REPLY_READY || status == RC_REPLY_BAD_VALUE) {
            PyObject *type = NULL, *value = NULL, *tb = NULL;
            if (status == RC_REPLY_BAD_VALUE) {
                PyErr_Fetch(&type, &value, &tb);
                PyErr_NormalizeException(&type, &value, &tb);
            }
            if (s->skip && status == RC_REPLY_READY)
                take_reply(m, reply, NULL); /* ASKING's +OK, or its error */
            else if (rc_result_check(m->state, s->kind, rc_reader_shape(&m->reader), reply,
                                     s->extra, s->command) < 0)
                fail_with_pending(m);
            else if (!(rc_is_failover_reply(m->state, reply) && node_stepped_down(m, reply)))
                take_reply(m, reply, value);
            Py_XDECREF(reply);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        } else if (status == RC_REPLY_BROKEN) {
            fail_with_pending(m);
        } else if (fed < n) {
            if (feed_slice(m, p, n, &fed) < 0)
                break;
        } else {
            break;
        }
    }
    m->dispatching = 0;
    if (m->draining && m->count == 0 && m->status == MUX_READY)
        fail_format(m, m->state->ConnectionError, "the node stepped down; the connection closed");
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

/* Drops the bytes no longer needed (sent, and not the command of a request
 * still waiting for its reply) once they are a large part of the buffer. */
static void compact(rc_mux *m)
{
    size_t keep = m->out_off;

    if (m->count > 0) {
        uint64_t start = slot_at(m, 0)->start;
        if (start < m->bytes_sent && buffer_offset(m, start) < keep)
            keep = buffer_offset(m, start);
    }
    if (keep == 0)
        return;
    if (keep == m->out.len) {
        wipe_sent_secret(m, keep);
        m->out_off = 0;
        rc_buf_reset(&m->out);
    } else if (keep > m->out.len / 2) {
        wipe_sent_secret(m, keep);
        memmove(m->out.data, m->out.data + keep, m->out.len - keep);
        m->out.len -= keep;
        m->out_off -= keep;
    }
}

/* Writes what may go out now: everything queued, or up to the end of the
 * max_in_flight-th request waiting for a reply. */
static void flush(rc_mux *m)
{
    uint64_t limit = m->bytes_queued;
    size_t want;
    ssize_t n;

    assert_window_closed(m);
    if (m->status != MUX_READY)
        return;
    if ((Py_ssize_t)m->count > m->limits.max_in_flight)
        limit = slot_at(m, (size_t)m->limits.max_in_flight - 1)->end;
    while (m->bytes_sent < limit) {
        want = (size_t)(limit - m->bytes_sent);
        if (m->tls != NULL) {
            char err[RC_TLS_ERROR_MAX];
            size_t put = 0;
            rc_tls_status status = rc_tls_write(m->tls, m->out.data + m->out_off, want, &put, err,
                                                sizeof(err));
            if (status == RC_TLS_DONE) {
                m->out_off += put;
                m->bytes_sent += put;
                continue;
            }
            if (status == RC_TLS_WANT_WRITE) {
                if (set_writer(m, 1) < 0)
                    fail_with_pending(m);
            } else if (status == RC_TLS_WANT_READ) {
                m->write_wants_read = 1; /* the reader calls flush() again */
            } else {
                fail_format(m, m->state->ConnectionError,
                            "TLS connection to redis failed while sending: %s",
                            status == RC_TLS_CLOSED ? "the server closed it" : err);
            }
            return;
        }
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
    compact(m);
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

    if (m->on_timer == NULL) {
        m->on_timer = PyObject_GetAttrString((PyObject *)m, "_on_timer");
        if (m->on_timer == NULL)
            return -1;
    }
    delay = PyFloat_FromDouble((double)(delay_ms < 1 ? 1 : delay_ms) / 1000.0);
    if (delay == NULL)
        return -1;
    handle = PyObject_CallMethod(m->loop, "call_later", "OO", delay, m->on_timer);
    Py_DECREF(delay);
    if (handle == NULL)
        return -1;
    cancel_timer(m);
    m->timer = handle;
    return 0;
}

/* How long the head request may wait, in ms (-1: no limit): for its reply
 * when connected; for a connection once an attempt to connect has failed
 * (until then requests wait for the attempt under way, which Python bounds
 * with socket_connect_timeout). */
static int head_wait_limit(rc_mux *m)
{
    if (m->status == MUX_READY || m->status == MUX_TLS_HANDSHAKE)
        return m->limits.timeout_ms;
    return m->down_reason != NULL ? m->limits.connect_wait_ms : -1;
}

/* While no connection is up, after a failed attempt: fails the requests
 * that waited for one longer than connect_wait_ms, dropping their commands
 * from the buffer unsent (nothing was sent yet, so the ones behind them stay
 * whole). */
static void expire_unconnected(rc_mux *m, long long now)
{
    PyObject *message;

    assert_window_closed(m);
    if (m->down_reason == NULL || m->limits.connect_wait_ms < 0)
        return;
    while (m->status == MUX_PENDING && m->count > 0 &&
           slot_at(m, 0)->queued_ms + m->limits.connect_wait_ms <= now) {
        rc_slot s = pop_head(m);
        size_t size = (size_t)(s.end - m->bytes_sent);

        m->out_off += size;
        m->bytes_sent = s.end;
        PyObject *type = Py_NewRef(m->down_type), *reason = Py_NewRef(m->down_reason);
        message = PyUnicode_FromFormat("%S (the request waited connect_wait=%d ms for a "
                                       "connection)",
                                       reason, m->limits.connect_wait_ms);
        if (message == NULL)
            PyErr_Clear();
        slot_failed(m, &s, PyErr_GivenExceptionMatches(type, m->state->TimeoutError));
        fail_slot(m, &s, type, message != NULL ? message : reason, NULL);
        Py_XDECREF(message);
        Py_DECREF(type);
        Py_DECREF(reason);
        slot_clear(&s);
    }
    compact(m);
}

/* ------------------------------------------------------------ the type */

rc_mux *rc_mux_new(rc_state *st, PyObject *loop, const rc_mux_limits *limits,
                   rc_tls_context *tls, PyObject *on_stale, rc_metrics *metrics)
{
    rc_mux *m = PyObject_GC_New(rc_mux, st->MuxType);

    if (m == NULL)
        return NULL;
    memset((char *)m + sizeof(PyObject), 0, sizeof(rc_mux) - sizeof(PyObject));
    m->state = st;
    m->fd = -1;
    m->status = MUX_PENDING;
    m->limits = *limits;
    if (m->limits.max_in_flight < 1)
        m->limits.max_in_flight = 1;
    m->generation = rc_fork_generation;
    m->loop = Py_NewRef(loop);
    m->wake_directly = PyObject_IsInstance(loop, st->BaseEventLoop);
    if (m->wake_directly < 0) {
        PyErr_Clear();
        m->wake_directly = 0;
    }
    if (m->wake_directly)
        rc_loopwait_open(&m->loopwait, st, loop);
    else
        m->loopwait.epfd = -1;
    m->tls_ctx = tls != NULL ? rc_tls_context_ref(tls) : NULL;
    m->on_stale = Py_XNewRef(on_stale);
    m->metrics = rc_metrics_ref(metrics);
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

int rc_mux_takes_commands(rc_mux *m)
{
    return !rc_mux_is_closed(m) && !m->draining;
}

int rc_mux_stalled(rc_mux *m, int stall_ms)
{
    long long since;

    if (stall_ms < 0 || m->status != MUX_READY || m->count == 0)
        return 0;
    /* A connection opened to get around a stall that has not answered
     * anything yet is not given up in turn: the server is stuck, not one
     * of its connections, and more connections would not help. */
    if (m->rerouted && m->replies == 0)
        return 0;
    since = slot_at(m, 0)->queued_ms;
    if (m->last_reply_ms > since)
        since = m->last_reply_ms;
    return now_ms() - since >= stall_ms;
}

void rc_mux_mark_rerouted(rc_mux *m)
{
    m->rerouted = 1;
}

void rc_mux_drain(rc_mux *m)
{
    if (m->status == MUX_CLOSED)
        return;
    m->draining = 1;
    if (m->count == 0)
        fail_format(m, m->state->ConnectionError, "the node changed; the connection closed");
}

PyObject *rc_mux_loop(rc_mux *m)
{
    return m->loop;
}

static PyObject *closed_error(rc_mux *m)
{
    PyErr_SetObject(m->state->ConnectionError, m->closed_reason);
    return NULL;
}

PyObject *rc_mux_submit(rc_mux *m, const rc_request *r, const rc_keyspace *ks,
                        PyObject *codec_owner)
{
    PyObject *future = NULL, *batch = NULL;
    size_t mark;
    rc_slot *s;
    int gc, rc, was_idle;

    if (m->writing) {
        /* Cannot happen while the rule holds; refused rather than let a
         * command land inside another. */
        assert(!"a command was submitted while another was being written");
        PyErr_SetString(PyExc_RuntimeError,
                        "redis_cache: a command was submitted while another was being written "
                        "(re-entrant use from inside the encoder); this is a bug, please report "
                        "it");
        return NULL;
    }
    if (m->status == MUX_CLOSED)
        return closed_error(m);
    if (m->on_push != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a subscriber connection takes commands through send(), not requests");
        return NULL;
    }
    /* 1. What may run Python code. */
    future = rc_future_new(m->state, m->loop);
    if (future == NULL)
        return NULL;
    if (rc_result_collects(r->kind)) {
        batch = rc_none_list(r->replies);
        if (batch == NULL)
            goto error;
    }
    if (ring_reserve(m, 1) < 0)
        goto error;
    if (m->status == MUX_CLOSED) {
        closed_error(m);
        goto error;
    }
    /* 2. The window: no Python code runs until the slot is recorded or the
     * command cut off. */
    gc = begin_write(m);
    was_idle = m->count == 0;
    mark = m->out.len;
    rc = r->asking ? rc_cmd_asking(&m->out) : 0;
    if (rc == 0)
        rc = r->encode(ks, &m->out, r->arg);
    if (rc < 0) {
        m->out.len = mark;
    } else {
        s = slot_at(m, m->count);
        s->start = m->bytes_queued;
        m->bytes_queued += m->out.len - mark;
        s->future = future; /* the slot takes our reference; one more is returned */
        Py_INCREF(future);
        rc_future_set_source(future, (PyObject *)m);
        s->extra = Py_XNewRef(r->extra);
        s->codec_owner = Py_XNewRef(codec_owner);
        s->result = batch;
        batch = NULL;
        s->error = NULL;
        s->codec = r->codec;
        s->command = r->command;
        s->total = s->remaining = r->replies;
        s->end = m->bytes_queued;
        s->begin_ns = rc_metrics_now_ns();
        s->queued_ms = (long long)(s->begin_ns / 1000000u);
        s->op = r->op;
        if (m->metrics != NULL)
            rc_metrics_start(m->metrics, r->replies);
        s->kind = r->kind;
        s->retry_safe = r->retry_safe;
        s->retried = 0;
        s->skip = s->asked = r->asking;
        m->count++;
        m->state->commands_submitted++;
    }
    end_write(m, gc);
    if (rc < 0)
        goto error;

    /* 3. Out of the window. */
    if (m->timer == NULL && head_wait_limit(m) >= 0 && arm_timer(m, head_wait_limit(m)) < 0) {
        fail_with_pending(m);
        return future;
    }
    if (m->status != MUX_READY)
        return future; /* attach() sends it */
    /* Nothing in flight: write at once, the latency-optimal choice. Otherwise
     * the rest of this loop iteration's commands join this one in a single
     * write. */
    if (was_idle && !m->dispatching && !m->flush_scheduled)
        flush(m);
    else if (schedule_flush(m) < 0)
        fail_with_pending(m);
    return future;
error:
    Py_XDECREF(batch);
    Py_XDECREF(future);
    return NULL;
}

/* Takes over a request another connection could not carry (its slot, and
 * the bytes of its command), as if it had been submitted here. The same
 * window as rc_mux_submit: room first, then no Python code until the slot
 * is recorded. On failure the slot is left to the caller. */
static int adopt(rc_mux *m, rc_mux *from, const rc_buf *bytes, rc_slot *s)
{
    rc_slot *slot;
    int gc;

    /* Only between connections that count into the same metrics (the
     * request is counted in flight there). */
    if (m->status == MUX_CLOSED || m->writing || m->metrics != from->metrics ||
        ring_reserve(m, 1) < 0 || m->status == MUX_CLOSED)
        return -1;
    gc = begin_write(m);
    if (rc_buf_append(&m->out, bytes->data, bytes->len) < 0) {
        end_write(m, gc);
        return -1;
    }
    slot = slot_at(m, m->count);
    *slot = *s;
    memset(s, 0, sizeof(*s));
    slot->start = m->bytes_queued;
    m->bytes_queued += bytes->len;
    slot->end = m->bytes_queued;
    slot->queued_ms = now_ms();
    slot->retried = 1;
    m->count++;
    end_write(m, gc);
    if (slot->future != NULL) /* `from` stays alive (the caller holds it): no code runs */
        rc_future_set_source(slot->future, (PyObject *)m);
    if (m->timer == NULL && head_wait_limit(m) >= 0 && arm_timer(m, head_wait_limit(m)) < 0)
        fail_with_pending(m);
    else if (m->status == MUX_READY && schedule_flush(m) < 0)
        fail_with_pending(m);
    return 0;
}

/* Python-visible methods, called by the event loop or by redis_cache. */

static void drive_tls_handshake(rc_mux *m);

/* Reads through TLS until OpenSSL holds nothing more: what it buffered
 * would not make the socket readable again. Once it holds nothing, the rest
 * is in the socket, which stays readable (the loop polls level-triggered):
 * stopping there spares the read that would only say "would block". */
static void read_tls(rc_mux *m)
{
    char err[RC_TLS_ERROR_MAX];
    rc_tls_status status;
    size_t got;

    while (m->status == MUX_READY) {
        status = rc_tls_read(m->tls, m->in, RC_MUX_READ_CHUNK, &got, err, sizeof(err));
        if (status == RC_TLS_DONE) {
            dispatch(m, m->in, got);
            if (!rc_tls_holds_input(m->tls))
                break;
            continue;
        }
        if (status == RC_TLS_WANT_READ)
            break;
        if (status == RC_TLS_WANT_WRITE) {
            m->read_wants_write = 1;
            if (set_writer(m, 1) < 0)
                fail_with_pending(m);
        } else if (status == RC_TLS_CLOSED) {
            fail_format(m, m->state->ConnectionError,
                        "redis closed the connection (server restarted or killed?)");
        } else {
            fail_format(m, m->state->ConnectionError, "TLS connection to redis failed: %s", err);
        }
        break;
    }
}

/* The end of a loop callback that may have read replies: wakes their
 * callers, then drops the reference the callback held. */
static PyObject *woke_and_done(rc_mux *m)
{
    int rc = wake_waiters(m);

    Py_DECREF(m);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Reads what the socket has (without TLS) and dispatches it. */
static void read_plain(rc_mux *m)
{
    ssize_t n;
    int rounds = 0;

    while (m->status == MUX_READY && rounds++ < 16) {
        n = recv(m->fd, m->in, RC_MUX_READ_CHUNK, 0);
        if (n > 0) {
            if (m->bytes_received == 0 && rc_tls_looks_like_tls(m->in, (size_t)n)) {
                fail_format(m, m->state->ProtocolError, "%s", TLS_PORT_HINT);
                break;
            }
            m->bytes_received += (uint64_t)n;
            dispatch(m, m->in, (size_t)n);
            if (n < RC_MUX_READ_CHUNK)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (m->bytes_received == 0 && (n == 0 || errno == ECONNRESET))
            fail_format(m, m->state->ConnectionError,
                        "redis closed the connection before any reply (%s)",
                        n == 0 ? "a TLS port behind a redis:// URL? then use rediss:// or ssl=True"
                               : "reset; a TLS port behind a redis:// URL? then use rediss:// "
                                 "or ssl=True");
        else if (n == 0)
            fail_format(m, m->state->ConnectionError,
                        "redis closed the connection (server restarted or killed?)");
        else
            fail_format(m, m->state->ConnectionError, "connection to redis failed: %s",
                        strerror(errno));
        break;
    }
}

/* Reads what the connection has and dispatches it. */
static void read_available(rc_mux *m)
{
    if (m->tls == NULL) {
        read_plain(m);
        return;
    }
    read_tls(m);
    if (m->write_wants_read && m->status == MUX_READY) {
        m->write_wants_read = 0;
        flush(m);
    }
}

/* What the loop does when the connection is readable: read, send what
 * backpressure held back, resume the callers (whose next commands go out).
 * -1 only for KeyboardInterrupt or SystemExit raised by a callback. */
static int serve_readable(rc_mux *m)
{
    int rc;

    Py_INCREF(m); /* completing futures must not free us mid-read */
    if (m->status == MUX_TLS_HANDSHAKE) {
        drive_tls_handshake(m);
    } else {
        read_available(m);
        if (m->status == MUX_READY && m->bytes_sent < m->bytes_queued)
            flush(m);
    }
    rc = wake_waiters(m);
    Py_DECREF(m);
    return rc;
}

static PyObject *mux_on_readable(rc_mux *m, PyObject *unused);

/* Whether a loop callback is a connection's reader that this module may
 * run in the loop's place: not a subscriber's, whose pushes go to Python
 * code that would then run in the wrong callback's context. */
static int is_plain_reader(PyObject *callback)
{
    PyObject *self;

    if (!PyCFunction_Check(callback) ||
        PyCFunction_GET_FUNCTION(callback) != (PyCFunction)(void (*)(void))mux_on_readable)
        return 0;
    self = PyCFunction_GET_SELF(callback);
    return self != NULL && ((rc_mux *)self)->on_push == NULL;
}

/* The reader callback. Once it has resumed the callers, if one of them sent
 * a command (to this connection or another: a cluster's next key may live
 * elsewhere) or this connection still awaits replies, the loop's next step
 * is most likely a reply. rc_loopwait_ready() then waits for it in the
 * loop's place and hands back the readers that became ready, when nothing
 * else did; they are served here, as the loop would have (see loopwait.h). */
static PyObject *mux_on_readable(rc_mux *m, PyObject *unused)
{
    rc_state *st = m->state;
    PyObject *readers[RC_LOOPWAIT_MAX_READY];
    rc_mux *ready[RC_LOOPWAIT_MAX_READY];
    uint64_t submitted = st->commands_submitted;
    int i, n, rc = 0;

    (void)unused;
    Py_INCREF(m); /* its loopwait is used below */
    if (serve_readable(m) < 0)
        goto fail;
    while (m->loopwait.epfd >= 0 && (st->commands_submitted != submitted || m->count > 0)) {
        submitted = st->commands_submitted;
        n = rc_loopwait_ready(&m->loopwait, st, is_plain_reader, readers);
        if (n == 0)
            break;
        /* References first: serving one runs Python code. */
        for (i = 0; i < n; i++)
            ready[i] = (rc_mux *)Py_NewRef(PyCFunction_GET_SELF(readers[i]));
        for (i = 0; i < n; i++) {
            if (rc == 0 && serve_readable(ready[i]) < 0)
                rc = -1; /* the others stay readable: the loop serves them */
            Py_DECREF(ready[i]);
        }
        if (rc < 0)
            goto fail;
    }
    Py_DECREF(m);
    Py_RETURN_NONE;
fail:
    Py_DECREF(m);
    return NULL;
}

int rc_mux_wait_in_place(rc_mux *m, PyObject *fut)
{
    PyObject *readers[RC_LOOPWAIT_MAX_READY], *running;
    int rc = 0;

    if (m->loopwait.epfd < 0 || m->state->wakes_pending > 0)
        return 0;
    /* Only under the connection's own loop, running in this thread: a
     * future awaited from another thread or another loop (against asyncio's
     * rules), or after its loop closed (its epoll descriptor with it), is
     * yielded as usual and meets the task's own check of the future's loop. */
    running = rc_running_loop(m->state);
    if (running == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(running); /* compared only; m holds its loop */
    if (running != m->loop)
        return 0;
    Py_INCREF(m);
    /* Only while fut's request is all this connection waits for, all sent:
     * reading can then complete nothing but fut, and fut has no callbacks
     * (see fut_send), so no other task runs inside this one's step. */
    while (m->loopwait.epfd >= 0 && m->status == MUX_READY && m->count == 1 &&
           slot_at(m, 0)->future == fut && m->bytes_sent == m->bytes_queued &&
           !m->dispatching) {
        if (rc_loopwait_ready(&m->loopwait, m->state, is_plain_reader, readers) != 1 ||
            PyCFunction_GET_SELF(readers[0]) != (PyObject *)m)
            break; /* something else to do, or due: the loop does it */
        if (serve_readable(m) < 0) {
            rc = -1;
            break;
        }
    }
    Py_DECREF(m);
    return rc;
}

static PyObject *mux_on_writable(rc_mux *m, PyObject *unused)
{
    (void)unused;
    Py_INCREF(m);
    if (m->status == MUX_TLS_HANDSHAKE) {
        drive_tls_handshake(m);
    } else if (m->read_wants_write) {
        m->read_wants_write = 0;
        read_tls(m);
        if (m->status == MUX_READY && set_writer(m, 0) < 0)
            fail_with_pending(m);
    }
    flush(m);
    return woke_and_done(m);
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
    long long now = now_ms(), due;
    int limit;

    (void)unused;
    Py_CLEAR(m->timer);
    Py_INCREF(m);
    if (m->status == MUX_PENDING)
        expire_unconnected(m, now);
    limit = head_wait_limit(m);
    if (m->status == MUX_CLOSED || m->count == 0 || limit < 0)
        goto out;
    due = slot_at(m, 0)->queued_ms + limit - now;
    if (due <= 0 && m->status == MUX_TLS_HANDSHAKE)
        fail_format(m, m->state->TimeoutError,
                    "TLS with redis at %S failed: the TLS handshake got no answer within %d ms "
                    "(a plain, non-TLS port behind a rediss:// URL or ssl=True?)",
                    m->where != NULL ? m->where : Py_None, m->limits.timeout_ms);
    else if (due <= 0)
        fail_format(m, m->state->TimeoutError,
                    "redis did not answer within %d ms; the %zu requests waiting on this "
                    "connection failed and it will be replaced",
                    m->limits.timeout_ms, m->count);
    else if (arm_timer(m, due) < 0)
        fail_with_pending(m);
out:
    Py_DECREF(m);
    Py_RETURN_NONE;
}

/* The handshake commands (tuples of arguments) in RESP, in prelude; ends[i]
 * receives where the i-th ends. */
static int encode_handshake(PyObject *fast, rc_buf *prelude, uint64_t *ends)
{
    Py_ssize_t i, n = PySequence_Fast_GET_SIZE(fast);

    for (i = 0; i < n; i++) {
        PyObject *cmd = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyTuple_Check(cmd) || PyTuple_GET_SIZE(cmd) == 0) {
            PyErr_SetString(PyExc_TypeError, "each handshake command must be a non-empty tuple");
            return -1;
        }
        if (rc_cmd_raw(prelude, &PyTuple_GET_ITEM(cmd, 0), PyTuple_GET_SIZE(cmd)) < 0)
            return -1;
        ends[i] = prelude->len;
    }
    return 0;
}

/* Puts the handshake ahead of the commands queued while connecting: its
 * bytes at the front of the unsent part of the buffer, its slots at the
 * front of the ring. Runs no Python code. */
static int queue_handshake(rc_mux *m, PyObject *fast, const rc_buf *prelude, const uint64_t *ends)
{
    Py_ssize_t i, n = PySequence_Fast_GET_SIZE(fast);
    long long now = now_ms();
    size_t j;

    if (m->out_off > 0) {
        memmove(m->out.data, m->out.data + m->out_off, m->out.len - m->out_off);
        m->out.len -= m->out_off;
        m->out_off = 0;
    }
    if (rc_buf_reserve(&m->out, prelude->len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (ring_reserve(m, (size_t)n) < 0)
        return -1;
    if (prelude->len) {
        memmove(m->out.data + prelude->len, m->out.data, m->out.len);
        memcpy(m->out.data, prelude->data, prelude->len);
    }
    m->out.len += prelude->len;
    m->bytes_queued += prelude->len;
    m->secret_len = prelude->len;
    /* A request's reply timeout counts from now, when it can go out. */
    for (j = 0; j < m->count; j++) {
        slot_at(m, j)->start += prelude->len;
        slot_at(m, j)->end += prelude->len;
        slot_at(m, j)->queued_ms = now;
    }
    for (i = n - 1; i >= 0; i--) {
        rc_slot *s;
        m->head = (m->head + m->cap - 1) & (m->cap - 1);
        m->count++;
        s = slot_at(m, 0);
        memset(s, 0, sizeof(*s));
        s->extra = Py_NewRef(PyTuple_GET_ITEM(PySequence_Fast_GET_ITEM(fast, i), 0));
        s->command = "the connection handshake";
        s->total = s->remaining = 1;
        s->kind = RC_RESULT_HANDSHAKE;
        s->start = m->bytes_sent + (i > 0 ? ends[i - 1] : 0);
        s->end = m->bytes_sent + ends[i];
        s->queued_ms = now;
    }
    return 0;
}

/* Ready to carry commands: the timer now watches replies, and what queued
 * while connecting goes out. */
static void become_ready(rc_mux *m)
{
    m->status = MUX_READY;
    cancel_timer(m);
    if (m->count > 0 && m->limits.timeout_ms >= 0 && arm_timer(m, m->limits.timeout_ms) < 0) {
        fail_with_pending(m);
        return;
    }
    flush(m);
}

/* One step of the TLS handshake, on attach and then on each readiness. */
static void drive_tls_handshake(rc_mux *m)
{
    char err[RC_TLS_ERROR_MAX], warning[RC_TLS_ERROR_MAX];
    rc_tls_status status = rc_tls_handshake(m->tls, err, sizeof(err), warning, sizeof(warning));

    if (status == RC_TLS_WANT_READ || status == RC_TLS_WANT_WRITE) {
        if (set_writer(m, status == RC_TLS_WANT_WRITE) < 0)
            fail_with_pending(m);
        return;
    }
    if (status != RC_TLS_DONE) {
        fail_format(m, m->state->ConnectionError, "TLS with redis at %S failed: %s",
                    m->where != NULL ? m->where : Py_None,
                    status == RC_TLS_CLOSED
                        ? "the server closed the connection during the TLS handshake (a "
                          "plain, non-TLS port behind a rediss:// URL or ssl=True?)"
                        : err);
        return;
    }
    if (warning[0] != '\0' && rc_tls_context_first_warning(m->tls_ctx))
        rc_log_warning(m->state, "TLS certificate not verified (ssl_cert_reqs=\"optional\"): %s",
                       warning);
    if (set_writer(m, 0) < 0) {
        fail_with_pending(m);
        return;
    }
    become_ready(m);
}

/* attach(fd, handshake, server_host=None, where=None): takes ownership of a
 * connected non-blocking socket, runs the TLS handshake when the client uses
 * TLS (server_host: the name the certificate must carry; where: the
 * address, for messages), sends the handshake commands (tuples of
 * arguments) ahead of everything queued so far, and starts reading. */
static PyObject *mux_attach(rc_mux *m, PyObject *const *args, Py_ssize_t nargs)
{
    rc_buf prelude;
    PyObject *fast = NULL, *r;
    uint64_t *ends = NULL;
    const char *server_host = NULL;
    char err[RC_TLS_ERROR_MAX];
    long fd_long;
    int fd = -1;

    assert_window_closed(m);
    if (nargs < 2 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "attach(fd, handshake, server_host=None, where=None)");
        return NULL;
    }
    if (nargs >= 3 && args[2] != Py_None) {
        server_host = PyUnicode_AsUTF8(args[2]);
        if (server_host == NULL)
            return NULL;
    }
    if (nargs == 4)
        Py_XSETREF(m->where, Py_NewRef(args[3]));
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
    ends = PyMem_Calloc((size_t)PySequence_Fast_GET_SIZE(fast) + 1, sizeof(uint64_t));
    if (ends == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    if (encode_handshake(fast, &prelude, ends) < 0)
        goto error;
    m->on_readable = PyObject_GetAttrString((PyObject *)m, "_on_readable");
    m->on_writable = PyObject_GetAttrString((PyObject *)m, "_on_writable");
    m->on_flush = PyObject_GetAttrString((PyObject *)m, "_on_flush");
    if (m->on_timer == NULL)
        m->on_timer = PyObject_GetAttrString((PyObject *)m, "_on_timer");
    if (!m->on_readable || !m->on_writable || !m->on_flush || !m->on_timer)
        goto error;
    if (m->status != MUX_PENDING) {
        /* Closed by code that ran above. */
        PyErr_SetString(m->state->ConnectionError, "attach(): the connection is already closed");
        goto error;
    }
    if (queue_handshake(m, fast, &prelude, ends) < 0)
        goto error;
    if (m->tls_ctx != NULL) {
        m->tls = rc_tls_new(m->tls_ctx, fd, server_host, err, sizeof(err));
        if (m->tls == NULL) {
            PyErr_Format(m->state->ConnectionError, "TLS with redis at %S failed: %s",
                         m->where != NULL ? m->where : Py_None, err);
            goto error;
        }
    }
    m->fd = fd;
    fd = -1;
    r = PyObject_CallMethod(m->loop, "add_reader", "iO", m->fd, m->on_readable);
    if (r == NULL)
        goto error;
    Py_DECREF(r);
    if (m->tls != NULL) {
        /* Commands wait for the handshake; a stalled one times out. */
        m->status = MUX_TLS_HANDSHAKE;
        cancel_timer(m);
        if (m->limits.timeout_ms >= 0) {
            long long now = now_ms();
            size_t j;
            for (j = 0; j < m->count; j++)
                slot_at(m, j)->queued_ms = now;
            if (m->count > 0 && arm_timer(m, m->limits.timeout_ms) < 0)
                goto error;
        }
        drive_tls_handshake(m);
    } else {
        become_ready(m);
    }
    if (m->metrics != NULL)
        m->metrics->connects++;
    rc_buf_wipe(&prelude); /* it may hold a password */
    rc_buf_free(&prelude);
    PyMem_Free(ends);
    Py_DECREF(fast);
    Py_RETURN_NONE;
error:
    if (fd >= 0)
        close(fd);
    rc_buf_wipe(&prelude);
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
            PyErr_Clear();
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

/* connect_failed(exc_type, message) -> int: a connect attempt failed; the
 * requests that waited longer than connect_wait_ms fail with exc_type and
 * the message (so will those that reach it later, unless an attempt
 * succeeds first). Returns how many still wait. */
static PyObject *mux_connect_failed(rc_mux *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyExceptionClass_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "connect_failed(exception_type, message: str)");
        return NULL;
    }
    Py_XSETREF(m->down_type, Py_NewRef(args[0]));
    Py_XSETREF(m->down_reason, Py_NewRef(args[1]));
    if (m->metrics != NULL)
        m->metrics->connect_failures++;
    if (m->status != MUX_PENDING)
        return PyLong_FromLong(0);
    expire_unconnected(m, now_ms());
    /* The rest give up when their wait ends, unless an attempt succeeds. */
    if (m->count > 0 && m->timer == NULL && m->limits.connect_wait_ms >= 0 &&
        arm_timer(m, slot_at(m, 0)->queued_ms + m->limits.connect_wait_ms - now_ms()) < 0)
        return NULL;
    return PyLong_FromSize_t(m->count);
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

typedef struct {
    PyObject *const *args;
    Py_ssize_t nargs;
} raw_command;

static int encode_raw_command(const rc_keyspace *ks, rc_buf *b, void *arg)
{
    raw_command *c = arg;
    (void)ks;
    return rc_cmd_raw(b, c->args, c->nargs);
}

static PyObject *mux_execute_command(rc_mux *m, PyObject *const *args, Py_ssize_t nargs)
{
    raw_command command = {args, nargs};
    rc_request request = {"the command", encode_raw_command, &command, 1, RC_RESULT_RAW,
                          NULL,          NULL,               0};

    return rc_mux_submit(m, &request, NULL, NULL);
}

/* _set_push(callback): subscriber mode (see on_push). Only on a fresh
 * multiplexer with nothing queued: a request slot would then wait for a
 * reply that the callback takes. */
static PyObject *mux_set_push(rc_mux *m, PyObject *callback)
{
    if (!PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "_set_push(callback): callback must be callable");
        return NULL;
    }
    if (m->status != MUX_PENDING || m->count != 0 || m->bytes_queued != 0 || m->on_push != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "_set_push(): only a fresh multiplexer can become a subscriber");
        return NULL;
    }
    m->on_push = Py_NewRef(callback);
    Py_RETURN_NONE;
}

/* send(*args): queues a raw command with no request slot (subscriber mode
 * only: its replies go to on_push). Written in the same window as
 * rc_mux_submit; while connecting it waits in the buffer, behind the
 * handshake attach() puts in front. */
static PyObject *mux_send(rc_mux *m, PyObject *const *args, Py_ssize_t nargs)
{
    size_t mark;
    int gc, rc;

    if (m->on_push == NULL) {
        if (m->status == MUX_CLOSED)
            return closed_error(m);
        PyErr_SetString(PyExc_RuntimeError, "send() is for subscriber multiplexers (_set_push)");
        return NULL;
    }
    if (m->writing) {
        PyErr_SetString(PyExc_RuntimeError,
                        "redis_cache: a command was submitted while another was being written");
        return NULL;
    }
    if (m->status == MUX_CLOSED)
        return closed_error(m);
    if (m->generation != rc_fork_generation) {
        PyErr_SetString(m->state->ConnectionError,
                        "this subscriber's connection belongs to the parent process; subscribe "
                        "again in the child");
        return NULL;
    }
    gc = begin_write(m);
    mark = m->out.len;
    rc = rc_cmd_raw(&m->out, args, nargs);
    if (rc < 0)
        m->out.len = mark;
    else
        m->bytes_queued += m->out.len - mark;
    end_write(m, gc);
    if (rc < 0)
        return NULL;
    if (m->status == MUX_READY && schedule_flush(m) < 0) {
        fail_with_pending(m);
        return closed_error(m);
    }
    Py_RETURN_NONE;
}

static PyObject *mux_get_closed(rc_mux *m, void *unused)
{
    (void)unused;
    return PyBool_FromLong(rc_mux_is_closed(m));
}

static PyObject *mux_get_draining(rc_mux *m, void *unused)
{
    (void)unused;
    return PyBool_FromLong(m->draining);
}

/* drain(): stop taking commands; close once the replies due are in. */
static PyObject *mux_drain(rc_mux *m, PyObject *unused)
{
    (void)unused;
    rc_mux_drain(m);
    Py_RETURN_NONE;
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
    Py_VISIT(m->down_type);
    Py_VISIT(m->down_reason);
    Py_VISIT(m->where);
    Py_VISIT(m->on_stale);
    Py_VISIT(m->on_push);
    Py_VISIT(m->woken);
    Py_VISIT(m->loopwait.loop_dict);
    Py_VISIT(m->loopwait.fd_to_key);
    for (i = 0; i < m->count; i++) {
        rc_slot *s = slot_at(m, i);
        Py_VISIT(s->future);
        Py_VISIT(s->extra);
        Py_VISIT(s->codec_owner);
        Py_VISIT(s->result);
        Py_VISIT(s->error);
    }
    return 0;
}

static int mux_clear(rc_mux *m)
{
    size_t i;

    for (i = 0; i < m->count; i++) {
        /* Never answered (the connection is being collected): not in
         * flight any more. */
        if (m->metrics != NULL && slot_at(m, i)->future != NULL)
            m->metrics->in_flight--;
        slot_clear(slot_at(m, i));
    }
    m->count = 0;
    Py_CLEAR(m->loop);
    Py_CLEAR(m->on_readable);
    Py_CLEAR(m->on_writable);
    Py_CLEAR(m->on_flush);
    Py_CLEAR(m->on_timer);
    Py_CLEAR(m->timer);
    Py_CLEAR(m->closed_reason);
    Py_CLEAR(m->down_type);
    Py_CLEAR(m->down_reason);
    Py_CLEAR(m->where);
    Py_CLEAR(m->on_stale);
    Py_CLEAR(m->on_push);
    Py_CLEAR(m->woken);
    rc_loopwait_close(&m->loopwait);
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
    rc_buf_wipe(&m->out);
    rc_buf_free(&m->out);
    PyMem_Free(m->slots);
    PyMem_Free(m->in);
    rc_tls_free(m->tls);
    rc_tls_context_unref(m->tls_ctx);
    rc_metrics_unref(m->metrics);
    tp->tp_free((PyObject *)m);
    Py_DECREF(tp);
}

static PyMethodDef mux_methods[] = {
    {"_on_readable", (PyCFunction)mux_on_readable, METH_NOARGS, NULL},
    {"_on_writable", (PyCFunction)mux_on_writable, METH_NOARGS, NULL},
    {"_on_flush", (PyCFunction)mux_on_flush, METH_NOARGS, NULL},
    {"_on_timer", (PyCFunction)mux_on_timer, METH_NOARGS, NULL},
    {"attach", (PyCFunction)(void (*)(void))mux_attach, METH_FASTCALL,
     "attach(fd, handshake, server_host=None): start using a connected socket (TLS first "
     "when the client uses it, checking the certificate against server_host)."},
    {"fail", (PyCFunction)(void (*)(void))mux_fail, METH_FASTCALL,
     "fail(exc_type, message): fail every waiting request and close."},
    {"connect_failed", (PyCFunction)(void (*)(void))mux_connect_failed, METH_FASTCALL,
     "connect_failed(exc_type, message) -> int: note a failed connect attempt; fail the "
     "requests that waited longer than connect_wait; return how many still wait."},
    {"close", (PyCFunction)mux_close, METH_NOARGS, "Close, failing requests still waiting."},
    {"drain", (PyCFunction)mux_drain, METH_NOARGS,
     "Take no more commands; close once the replies still due have come."},
    {"abandon", (PyCFunction)mux_abandon, METH_NOARGS,
     "Close without touching the event loop (it is closed, or this is a forked child)."},
    {"execute_command", (PyCFunction)(void (*)(void))mux_execute_command, METH_FASTCALL,
     "execute_command(*args) -> Future of the raw reply."},
    {"_set_push", (PyCFunction)mux_set_push, METH_O,
     "_set_push(callback): subscriber mode; callback(reply, None) per reply, "
     "callback(None, exc) once on close."},
    {"send", (PyCFunction)(void (*)(void))mux_send, METH_FASTCALL,
     "send(*args): queue a command whose replies go to the push callback."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mux_getset[] = {
    {"closed", (getter)mux_get_closed, NULL, NULL, NULL},
    {"draining", (getter)mux_get_draining, NULL, NULL, NULL},
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
