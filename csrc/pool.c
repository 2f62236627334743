/* Blocking connection pool; see pool.h for the locking rule. */
#include "pool.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

/* How often a thread waiting for a connection checks for signals. */
#define RC_POOL_SIGNAL_CHECK_NS 100000000L

struct rc_pool_waiter {
    pthread_cond_t wake;
    rc_conn *conn; /* handed over by a releasing thread */
    int may_open;  /* a slot was freed for this waiter to open a connection */
    rc_pool_waiter *next;
};

int rc_pool_init(rc_pool *p, size_t max_size)
{
    memset(p, 0, sizeof(*p));
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "cannot create the pool mutex");
        return -1;
    }
    p->max_size = max_size;
    p->generation = rc_fork_generation;
    p->jitter_seed = (unsigned int)(uintptr_t)p ^ (unsigned int)time(NULL);
    return 0;
}

/* Takes the lock; returns the saved thread state when the GIL had to be
 * released to wait for it (the caller restores it after unlocking). */
static PyThreadState *lock_pool(rc_pool *p)
{
    PyThreadState *ts;

    if (pthread_mutex_trylock(&p->lock) == 0)
        return NULL;
    ts = PyEval_SaveThread();
    pthread_mutex_lock(&p->lock);
    return ts;
}

static void unlock_pool(rc_pool *p, PyThreadState *ts)
{
    pthread_mutex_unlock(&p->lock);
    if (ts != NULL)
        PyEval_RestoreThread(ts);
}

/* After fork the child has only the forking thread: the connections belong
 * to the parent and the mutex may have been held by a thread that no longer
 * exists. Called with the GIL held, which is enough to serialize this. */
static void free_list(rc_conn *c)
{
    while (c != NULL) {
        rc_conn *next = c->next_idle;
        rc_conn_free(c);
        c = next;
    }
}

static void forget_parent(rc_pool *p)
{
    pthread_mutex_init(&p->lock, NULL);
    free_list(p->idle);
    p->idle = NULL;
    p->lent = NULL; /* the parent's, lent to threads this process lacks */
    p->n_open = 0;
    p->head = p->tail = NULL;
    p->generation = rc_fork_generation;
}

static int wait_until(pthread_cond_t *cond, pthread_mutex_t *lock, const struct timespec *deadline)
{
    return deadline == NULL ? pthread_cond_wait(cond, lock)
                            : pthread_cond_timedwait(cond, lock, deadline);
}

/* Records c as lent to the calling thread. Pool lock held. */
static void lend(rc_pool *p, rc_conn *c)
{
    c->owner = PyThread_get_thread_ident();
    c->lent_prev = NULL;
    c->lent_next = p->lent;
    if (p->lent != NULL)
        p->lent->lent_prev = c;
    p->lent = c;
}

/* Pool lock held. */
static void unlend(rc_pool *p, rc_conn *c)
{
    if (c->lent_prev != NULL)
        c->lent_prev->lent_next = c->lent_next;
    else if (p->lent == c)
        p->lent = c->lent_next;
    if (c->lent_next != NULL)
        c->lent_next->lent_prev = c->lent_prev;
    c->lent_prev = c->lent_next = NULL;
}

/* Non-zero when the calling thread holds every connection the pool may
 * have: then waiting for one can only time out. Pool lock held. */
static int caller_holds_all(rc_pool *p)
{
    unsigned long me = PyThread_get_thread_ident();
    size_t held = 0;
    rc_conn *c;

    for (c = p->lent; c != NULL; c = c->lent_next)
        held += c->owner == me;
    return held >= p->max_size;
}

/* What a thread got from the pool: a connection, or the right to open one,
 * or why it got neither. */
typedef struct grant {
    rc_conn *conn;
    int may_open, closed, timed_out, interrupted, self_deadlock;
} grant;

/* Waits in the FIFO queue until a connection or a free slot is handed over,
 * the pool closes, the deadline passes or a signal handler raises. Pool
 * lock held on entry and exit; *ts is the saved thread state (the GIL is
 * released while waiting). */
static void wait_in_queue(rc_pool *p, int timeout_ms, PyThreadState **ts, grant *g)
{
    rc_pool_waiter me;
    struct timespec deadline, *dl = NULL;
    pthread_condattr_t attr;

    /* pthread_cond_timedwait needs the default (realtime) clock for its
     * deadline; the cond uses CLOCK_MONOTONIC so a clock change does not
     * stretch or cut the wait. */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&me.wake, &attr);
    pthread_condattr_destroy(&attr);
    me.conn = NULL;
    me.may_open = 0;
    me.next = NULL;
    if (p->tail != NULL)
        p->tail->next = &me;
    else
        p->head = &me;
    p->tail = &me;
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        dl = &deadline;
    }
    if (*ts == NULL)
        *ts = PyEval_SaveThread();
    while (me.conn == NULL && !me.may_open && !p->closed) {
        /* Wait in slices so Ctrl-C (or any signal handler that raises)
         * reaches a thread queued here: signal handlers run only with the
         * GIL, which is retaken between slices, the pool lock released
         * first. */
        struct timespec slice;
        int is_last;
        clock_gettime(CLOCK_MONOTONIC, &slice);
        slice.tv_nsec += RC_POOL_SIGNAL_CHECK_NS;
        if (slice.tv_nsec >= 1000000000L) {
            slice.tv_sec++;
            slice.tv_nsec -= 1000000000L;
        }
        is_last = dl != NULL && (dl->tv_sec < slice.tv_sec ||
                                 (dl->tv_sec == slice.tv_sec && dl->tv_nsec <= slice.tv_nsec));
        if (wait_until(&me.wake, &p->lock, is_last ? dl : &slice) != ETIMEDOUT)
            continue;
        if (me.conn != NULL || me.may_open || p->closed)
            break;
        if (is_last) {
            g->timed_out = 1;
            break;
        }
        pthread_mutex_unlock(&p->lock);
        PyEval_RestoreThread(*ts);
        g->interrupted = PyErr_CheckSignals() < 0;
        *ts = PyEval_SaveThread();
        pthread_mutex_lock(&p->lock);
        if (g->interrupted)
            break;
    }
    g->conn = me.conn;
    g->may_open = me.may_open;
    g->closed = g->conn == NULL && !g->may_open && p->closed;
    if (g->conn == NULL && !g->may_open) {
        /* Leave the queue (timed out, interrupted or closed). */
        rc_pool_waiter **link = &p->head, *prev = NULL;
        while (*link != &me) {
            prev = *link;
            link = &(*link)->next;
        }
        *link = me.next;
        if (p->tail == &me)
            p->tail = prev;
    }
    pthread_cond_destroy(&me.wake);
}

/* Takes an idle connection, a free slot, or a place in the queue. */
static void take(rc_pool *p, int timeout_ms, grant *g)
{
    PyThreadState *ts = lock_pool(p);

    if (p->closed) {
        g->closed = 1;
    } else if (p->head == NULL && p->idle != NULL) {
        g->conn = p->idle;
        p->idle = g->conn->next_idle;
        g->conn->next_idle = NULL;
    } else if (p->head == NULL && p->n_open < p->max_size) {
        p->n_open++;
        g->may_open = 1;
    } else if (caller_holds_all(p)) {
        g->self_deadlock = 1;
        p->m_timeouts++;
    } else {
        struct timespec start, end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        wait_in_queue(p, timeout_ms, &ts, g);
        clock_gettime(CLOCK_MONOTONIC, &end);
        p->m_waits++;
        p->m_wait_ns += (uint64_t)((end.tv_sec - start.tv_sec) * 1000000000LL +
                                   (end.tv_nsec - start.tv_nsec));
        p->m_timeouts += g->timed_out;
    }
    if (g->conn != NULL)
        lend(p, g->conn);
    unlock_pool(p, ts);
}

static long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The backoff after `failures` failed attempts in a row, `down_for` ms
 * into an outage: doubling from 5 ms, at most 50 ms for the first 5 s (a
 * restart is noticed within 50 ms of the server accepting again), at most
 * 1 s after that; each scaled by a random factor in [0.5, 1) so that many
 * processes do not knock in step. The same rule as redis_cache.cache's
 * _Backoff for the async client. */
static long long backoff_ms(int failures, long long down_for, unsigned int *seed)
{
    long long cap = down_for < 5000 ? 50 : 1000, step = 5;
    int i;

    for (i = 1; i < failures && step < cap; i++)
        step *= 2;
    if (step > cap)
        step = cap;
    return step / 2 + (long long)(rand_r(seed) % (unsigned)(step / 2 + 1));
}

/* Sleeps ms with the GIL released, in slices so that a signal handler that
 * raises (Ctrl-C) stops it. Returns 0, or -1 with that exception set. */
static int sleep_ms(long long ms)
{
    while (ms > 0) {
        long long slice = ms < 100 ? ms : 100;
        struct timespec ts = {(time_t)(slice / 1000), (long)(slice % 1000) * 1000000L};
        Py_BEGIN_ALLOW_THREADS nanosleep(&ts, NULL);
        Py_END_ALLOW_THREADS if (PyErr_CheckSignals() < 0) return -1;
        ms -= slice;
    }
    return 0;
}

/* Notes a failed attempt (its exception is pending) for the calls after.
 * Threads that tried at the same time count as one failed attempt, so that
 * N threads do not push the backoff up N steps at once. */
static void note_failure(rc_pool *p, rc_state *st, long long attempt_started)
{
    PyObject *type, *value, *tb, *text;
    const char *message = NULL;
    PyThreadState *ts;
    long long now = monotonic_ms();
    int timed_out;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    timed_out = type != NULL && PyErr_GivenExceptionMatches(type, st->TimeoutError);
    text = value != NULL ? PyObject_Str(value) : NULL;
    if (text != NULL)
        message = PyUnicode_AsUTF8(text);
    if (message == NULL)
        PyErr_Clear();
    /* Only C data under the lock: it may be held without the GIL. */
    ts = lock_pool(p);
    if (p->failures == 0 || attempt_started > p->last_failure_ms) {
        if (p->failures++ == 0)
            p->down_since_ms = now;
        p->retry_at_ms = now + backoff_ms(p->failures, now - p->down_since_ms, &p->jitter_seed);
    }
    p->last_failure_ms = now;
    p->m_connect_failures++;
    snprintf(p->last_error, sizeof(p->last_error), "%s",
             message != NULL ? message : "cannot connect to redis");
    p->last_error_timed_out = timed_out;
    unlock_pool(p, ts);
    Py_XDECREF(text);
    PyErr_Restore(type, value, tb);
}

/* Where the next connection goes: the options' address, or the node
 * discovered (looked up now when it is unknown or stale). Fills local (a
 * copy of o whose host points into host) and *generation. Returns 0, or -1
 * with the discovery's exception set. */
static int next_address(rc_pool *p, const rc_conn_options *o, rc_conn_options *local, char *host,
                        size_t hostlen, unsigned long *generation)
{
    PyThreadState *ts;
    int port = 0, found, lookup;

    *local = *o;
    ts = lock_pool(p);
    found = p->has_found;
    lookup = p->discover != NULL && (!found || p->needs_discovery);
    if (found) {
        snprintf(host, hostlen, "%s", p->found_host);
        port = p->found_port;
    }
    *generation = p->address_generation;
    unlock_pool(p, ts);
    if (p->discover == NULL)
        return 0;
    if (lookup) {
        if (p->discover(p->discover_owner, host, hostlen, &port) < 0)
            return -1;
        ts = lock_pool(p);
        snprintf(p->found_host, sizeof(p->found_host), "%s", host);
        p->found_port = port;
        p->has_found = 1;
        p->needs_discovery = 0;
        *generation = p->address_generation;
        unlock_pool(p, ts);
    }
    local->host = host;
    local->port = port;
    local->unix_path = NULL;
    return 0;
}

/* Opens a connection for a slot the caller holds, retrying failed attempts
 * with backoff (above) within the caller's connect_wait. Returns the
 * connection, or NULL with the last attempt's error set. */
static rc_conn *open_connection(rc_pool *p, const rc_conn_options *o, rc_state *st)
{
    rc_conn_options local;
    char host[256];
    unsigned long generation;
    long long start = monotonic_ms(), now, retry_at, attempt_started;
    char last_error[sizeof(p->last_error)];
    PyThreadState *ts;
    rc_conn *c;
    int failed = 0, unreachable, timed_out, closed;

    for (;;) {
        ts = lock_pool(p);
        retry_at = p->retry_at_ms;
        memcpy(last_error, p->last_error, sizeof(last_error));
        timed_out = p->last_error_timed_out;
        closed = p->closed;
        unlock_pool(p, ts);
        if (closed) {
            if (failed)
                PyErr_Clear();
            PyErr_SetString(st->ConnectionError, "the cache was closed while this call connected");
            return NULL;
        }
        now = monotonic_ms();
        if (retry_at > now) {
            /* An attempt failed lately: wait for the next one, if the wait
             * fits in connect_wait (counted from this call's start). */
            if (o->connect_wait_ms >= 0 && retry_at - start > o->connect_wait_ms) {
                if (!failed)
                    PyErr_Format(timed_out ? st->TimeoutError : st->ConnectionError,
                                 "%s (the next attempt is in %lld ms, later than connect_wait "
                                 "allows)",
                                 last_error, retry_at - now);
                return NULL;
            }
            if (failed)
                PyErr_Clear();
            failed = 0;
            if (sleep_ms(retry_at - now) < 0)
                return NULL;
        } else if (failed) {
            PyErr_Clear();
        }
        attempt_started = monotonic_ms();
        if (next_address(p, o, &local, host, sizeof(host), &generation) < 0) {
            /* No Sentinel answered, say: worth trying again; anything else
             * (an unknown service name) is not. */
            if (!(PyErr_ExceptionMatches(st->ConnectionError) ||
                  PyErr_ExceptionMatches(st->TimeoutError)))
                return NULL;
            note_failure(p, st, attempt_started);
            failed = 1;
            continue;
        }
        c = rc_conn_open(&local, st, &unreachable);
        if (c != NULL) {
            c->address_generation = generation;
            ts = lock_pool(p);
            p->failures = 0;
            p->retry_at_ms = 0;
            p->m_connects++;
            unlock_pool(p, ts);
            return c;
        }
        if (unreachable && p->discover != NULL) {
            /* The node found may be gone (failed over): look again. */
            ts = lock_pool(p);
            p->needs_discovery = 1;
            unlock_pool(p, ts);
        }
        /* Wrong credentials or a refused handshake do not mend by waiting. */
        if (!unreachable) {
            ts = lock_pool(p);
            p->m_connect_failures++;
            unlock_pool(p, ts);
            return NULL;
        }
        note_failure(p, st, attempt_started);
        failed = 1;
    }
}

/* Drops a lent connection the server closed; its slot stays taken, for a
 * fresh connection to fill. */
static void drop_lent(rc_pool *p, rc_conn *c)
{
    PyThreadState *ts = lock_pool(p);
    unlend(p, c);
    unlock_pool(p, ts);
    rc_conn_free(c);
}

rc_conn *rc_pool_acquire(rc_pool *p, int timeout_ms, const rc_conn_options *o, rc_state *st,
                         int fresh)
{
    grant g = {NULL, 0, 0, 0, 0, 0};
    rc_conn *c;
    PyThreadState *ts;
    int closed;

    if (p->generation != rc_fork_generation)
        forget_parent(p);
    take(p, timeout_ms, &g);
    if (g.interrupted) {
        /* The signal handler's exception is pending; hand back what may
         * have arrived in the meantime. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (g.conn != NULL || g.may_open)
            rc_pool_release(p, g.conn);
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    if (g.conn != NULL) {
        if (!fresh && rc_conn_is_usable(g.conn))
            return g.conn;
        /* Dropped by the server while idle (restart, idle timeout, CLIENT
         * KILL...), or a fresh one is wanted: replace it rather than fail
         * the caller's command. */
        drop_lent(p, g.conn);
        g.conn = NULL;
        g.may_open = 1;
    }
    if (g.may_open) {
        c = open_connection(p, o, st);
        if (c == NULL) {
            rc_pool_release(p, NULL);
            return NULL;
        }
        ts = lock_pool(p);
        closed = p->closed;
        if (!closed)
            lend(p, c);
        unlock_pool(p, ts);
        if (!closed)
            return c;
        /* The cache was closed while this call connected. */
        rc_conn_free(c);
        rc_pool_release(p, NULL);
        g.closed = 1;
    }
    if (g.closed)
        PyErr_SetString(st->ConnectionError, "the cache is closed; create a new one");
    else if (g.self_deadlock)
        PyErr_Format(st->PoolTimeout,
                     "this thread already holds all %zu connections of the pool, so waiting for "
                     "one could only time out; is the cache used from a finalizer, __del__ or "
                     "hook that runs during one of its own calls? Raise max_connections",
                     p->max_size);
    else if (g.timed_out)
        PyErr_Format(st->PoolTimeout,
                     "all %zu connections stayed busy for %d ms; raise max_connections or "
                     "pool_timeout, or hold connections for less time",
                     p->max_size, timeout_ms);
    return NULL;
}

void rc_pool_read_metrics(rc_pool *p, rc_pool_metrics *out)
{
    PyThreadState *ts;
    rc_conn *c;

    if (p->generation != rc_fork_generation)
        forget_parent(p);
    ts = lock_pool(p);

    out->waits = p->m_waits;
    out->wait_ns = p->m_wait_ns;
    out->timeouts = p->m_timeouts;
    out->connects = p->m_connects;
    out->connect_failures = p->m_connect_failures;
    out->open = (int64_t)p->n_open;
    out->max_size = (int64_t)p->max_size;
    out->idle = 0;
    for (c = p->idle; c != NULL; c = c->next_idle)
        out->idle++;
    unlock_pool(p, ts);
}

/* Gives c back, or (c NULL or broken) frees its slot. */
void rc_pool_release(rc_pool *p, rc_conn *c)
{
    PyThreadState *ts;
    rc_conn *discard = NULL;

    if (c != NULL && c->generation != rc_fork_generation) {
        /* Lent out before a fork and given back in the child. */
        rc_conn_free(c);
        return;
    }
    /* Bytes nobody read would be the next caller's "reply". */
    if (c != NULL && rc_conn_has_unread(c))
        c->broken = 1;
    ts = lock_pool(p);
    if (c != NULL) {
        unlend(p, c);
        if (c->address_generation != p->address_generation)
            c->broken = 1; /* to a node that went stale */
    }
    if (c == NULL || c->broken || p->closed) {
        discard = c;
        if (p->head != NULL && !p->closed) {
            rc_pool_waiter *w = p->head;
            p->head = w->next;
            if (p->head == NULL)
                p->tail = NULL;
            w->may_open = 1;
            pthread_cond_signal(&w->wake);
        } else {
            p->n_open--;
        }
    } else if (p->head != NULL) {
        rc_pool_waiter *w = p->head;
        p->head = w->next;
        if (p->head == NULL)
            p->tail = NULL;
        w->conn = c;
        pthread_cond_signal(&w->wake);
    } else {
        c->next_idle = p->idle;
        p->idle = c;
    }
    unlock_pool(p, ts);
    rc_conn_free(discard);
}

void rc_pool_set_discovery(rc_pool *p, rc_pool_discover_fn discover, void *owner)
{
    p->discover = discover;
    p->discover_owner = owner;
    p->needs_discovery = 1;
}

void rc_pool_node_stale(rc_pool *p)
{
    PyThreadState *ts;
    rc_conn *idle, *c;

    if (!rc_pool_ready(p) || p->generation != rc_fork_generation)
        return;
    ts = lock_pool(p);
    p->address_generation++;
    p->needs_discovery = p->discover != NULL;
    idle = p->idle;
    p->idle = NULL;
    for (c = idle; c != NULL; c = c->next_idle)
        p->n_open--;
    unlock_pool(p, ts);
    free_list(idle);
}

void rc_pool_close(rc_pool *p)
{
    PyThreadState *ts;
    rc_conn *idle, *c;
    rc_pool_waiter *w;

    if (!rc_pool_ready(p))
        return;
    if (p->generation != rc_fork_generation)
        forget_parent(p);
    ts = lock_pool(p);
    p->closed = 1;
    idle = p->idle;
    p->idle = NULL;
    for (c = idle; c != NULL; c = c->next_idle)
        p->n_open--;
    /* A thread blocked on a lent connection (socket_timeout=None) returns
     * at once; the socket stays open until the connection is given back,
     * so its descriptor cannot be reused under that thread. */
    for (c = p->lent; c != NULL; c = c->lent_next) {
        c->closing = 1;
        shutdown(c->fd, SHUT_RDWR);
    }
    for (w = p->head; w != NULL; w = w->next)
        pthread_cond_signal(&w->wake);
    unlock_pool(p, ts);
    /* Freed outside the lock: freeing may run arbitrary Python code. */
    free_list(idle);
}

void rc_pool_free(rc_pool *p)
{
    if (!rc_pool_ready(p))
        return;
    pthread_mutex_destroy(&p->lock);
    p->max_size = 0;
}
