/* Client metrics: plain counters and fixed-bucket latency histograms kept
 * in C, read as a dict snapshot by _metrics().
 *
 * The hot path pays a few integer increments and one clock read per request
 * (the async engine reads the clock there anyway): no lock (every update
 * happens with the GIL held, or, for the pool's counters, under the pool's
 * own mutex), no Python object. A block is shared by a client and its
 * multiplexed connections, which may outlive it (a loop holding a
 * connection with requests in flight), so it is reference counted; all of
 * that happens with the GIL held too.
 */
#ifndef RC_METRICS_H
#define RC_METRICS_H

#include <Python.h>

#include <stdint.h>
#include <time.h>

/* What kind of call a request came from: each has its own histogram. */
typedef enum rc_op {
    RC_OP_OTHER = 0, /* requests that name none (new methods default here) */
    RC_OP_GET,
    RC_OP_SET,
    RC_OP_DELETE,
    RC_OP_EXISTS,
    RC_OP_TTL,
    RC_OP_EXPIRE,
    RC_OP_INCR,
    RC_OP_GET_MANY,
    RC_OP_SET_MANY,
    RC_OP_DELETE_MANY,
    RC_OP_PING,
    RC_OP_EXECUTE_COMMAND,
    RC_OP_COUNT
} rc_op;

/* Latency buckets: bucket i holds requests that took at most 2^i
 * microseconds (1 us .. 2^24 us, about 16.8 s); the last one, the rest. */
#define RC_METRICS_BOUNDS 25
#define RC_METRICS_BUCKETS (RC_METRICS_BOUNDS + 1)

typedef struct rc_op_metrics {
    uint64_t calls;  /* requests finished (whatever the outcome) */
    uint64_t errors; /* ... that ended in an exception */
    uint64_t sum_ns;
    uint64_t buckets[RC_METRICS_BUCKETS];
} rc_op_metrics;

typedef struct rc_metrics {
    Py_ssize_t refcnt;
    uint64_t requests;          /* requests started */
    uint64_t commands;          /* commands they carried (a batch has many) */
    uint64_t replies;           /* replies read */
    uint64_t error_replies;     /* of which the server's error replies */
    uint64_t timeouts;          /* requests failed with TimeoutError */
    uint64_t connection_errors; /* requests failed with ConnectionError */
    uint64_t connects;          /* connections opened (async; sync: the pool's) */
    uint64_t connect_failures;  /* attempts that failed (async; sync: the pool's) */
    int64_t in_flight;          /* started, not finished */
    rc_op_metrics ops[RC_OP_COUNT];
} rc_metrics;

/* A new block (refcount 1), or NULL with MemoryError set. GIL held. */
rc_metrics *rc_metrics_new(void);
rc_metrics *rc_metrics_ref(rc_metrics *m);
void rc_metrics_unref(rc_metrics *m);

static inline uint64_t rc_metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void rc_metrics_start(rc_metrics *m, Py_ssize_t commands)
{
    m->requests++;
    m->commands += (uint64_t)commands;
    m->in_flight++;
}

/* A request finished after elapsed_ns; failed: it raised. */
static inline void rc_metrics_finish(rc_metrics *m, rc_op op, uint64_t elapsed_ns, int failed)
{
    rc_op_metrics *o = &m->ops[(unsigned)op < RC_OP_COUNT ? op : RC_OP_OTHER];
    uint64_t us = elapsed_ns / 1000u;
    unsigned i = us <= 1 ? 0 : 64u - (unsigned)__builtin_clzll(us - 1);

    o->calls++;
    o->errors += failed != 0;
    o->sum_ns += elapsed_ns;
    o->buckets[i < RC_METRICS_BOUNDS ? i : RC_METRICS_BOUNDS]++;
    m->in_flight--;
}

/* The snapshot as a dict; pool_* (NULL: none) are the sync pool's numbers.
 * New reference, or NULL with an exception set. */
typedef struct rc_pool_metrics {
    uint64_t waits, wait_ns, timeouts, connects, connect_failures;
    int64_t open, idle, max_size;
} rc_pool_metrics;

PyObject *rc_metrics_snapshot(const rc_metrics *m, const rc_pool_metrics *pool);

#endif
