/* A thread-safe pool of blocking connections for the sync API.
 *
 * At most max_size connections exist at once. A thread that finds none free
 * waits in a FIFO queue, for at most the pool timeout; a connection given back
 * goes straight to the longest waiter. Broken connections are dropped and
 * their slot handed on, so a waiter opens a fresh one.
 *
 * Locking rule: the pool mutex guards only C data and is never held while
 * connecting or while touching Python objects. It is taken with the GIL held
 * only through trylock; when that fails, or to wait, the GIL is released
 * first, so a thread holding the mutex never waits for the GIL while another
 * thread holding the GIL waits for the mutex.
 */
#ifndef RC_POOL_H
#define RC_POOL_H

#include <pthread.h>

#include "conn.h"
#include "metrics.h"

typedef struct rc_pool_waiter rc_pool_waiter;

/* Finds the node connections should go to (Sentinel's current primary):
 * writes its host (NUL-terminated, at most hostlen bytes) and port. GIL
 * held; may run Python code. Returns 0, or -1 with an exception set
 * (ConnectionError or TimeoutError: worth another try later). */
typedef int (*rc_pool_discover_fn)(void *owner, char *host, size_t hostlen, int *port);

typedef struct rc_pool {
    pthread_mutex_t lock;
    rc_conn *idle; /* a stack: the most recently used is the warmest */
    rc_conn *lent; /* connections lent out, so close() can interrupt them */
    size_t n_open; /* idle + lent out + being opened */
    size_t max_size;
    rc_pool_waiter *head, *tail;
    unsigned long generation; /* rc_fork_generation the pool state belongs to */
    int closed;
    /* Connecting after failures (see open_connection in pool.c): how many
     * attempts in a row failed, since when, when the next may start
     * (monotonic ms), and the last one's error. */
    int failures;
    long long down_since_ms, retry_at_ms, last_failure_ms;
    char last_error[320];
    int last_error_timed_out;
    unsigned int jitter_seed;
    /* Where new connections go when the node is discovered (Sentinel): the
     * address found last, and whether it must be looked up again. */
    rc_pool_discover_fn discover;
    void *discover_owner;
    char found_host[256];
    int found_port, has_found, needs_discovery;
    /* Bumped when the node connections went to may no longer be the
     * primary: connections from before are closed rather than reused. */
    unsigned long address_generation;
    /* Metrics (under the lock): waits in the queue and their total time,
     * those that timed out, connections opened and attempts that failed. */
    uint64_t m_waits, m_wait_ns, m_timeouts, m_connects, m_connect_failures;
} rc_pool;

/* Returns 0, or -1 with MemoryError set. GIL held. */
int rc_pool_init(rc_pool *p, size_t max_size);

/* Non-zero once rc_pool_init succeeded (and until rc_pool_free). */
#define rc_pool_ready(p) ((p)->max_size != 0)

/* Closes idle connections and refuses further use; connections lent out
 * have their sockets shut down (a call blocked on one returns at once with
 * ConnectionError) and are closed when given back. GIL held. Safe to call
 * twice. */
void rc_pool_close(rc_pool *p);

/* Frees the pool's memory after rc_pool_close. GIL held. */
void rc_pool_free(rc_pool *p);

/* Lends a connection (a newly opened one when `fresh`), opening one when
 * the pool has room, waiting up to timeout_ms (-1: forever) otherwise. Connecting is retried with a short
 * backoff, while the call has waited less than o->connect_wait_ms since its
 * first failed attempt (attempts are shared: a call that finds the last one
 * failed waits for the next). An idle connection is checked first
 * (rc_conn_is_usable) and replaced by a new one if the server dropped it.
 * Returns the connection, or NULL with PoolTimeout, a connect error, or
 * ConnectionError (pool closed) set. A thread that already holds every
 * connection (a finalizer or hook using the cache during a call) gets
 * PoolTimeout at once rather than wait for itself. */
rc_conn *rc_pool_acquire(rc_pool *p, int timeout_ms, const rc_conn_options *o, rc_state *st,
                         int fresh);

/* Connections go where discover(owner) says (looked up before the first
 * connection and again after rc_pool_node_stale or a failed connect),
 * instead of the options' address. GIL held, before any use. */
void rc_pool_set_discovery(rc_pool *p, rc_pool_discover_fn discover, void *owner);

/* The node answered READONLY / LOADING / MASTERDOWN, or failed: connections
 * to it are closed (idle ones now, lent ones when given back), and the
 * next connection looks the node up again. GIL held. */
void rc_pool_node_stale(rc_pool *p);

/* Copies the pool's metrics into *out. GIL held. */
void rc_pool_read_metrics(rc_pool *p, rc_pool_metrics *out);

/* Gives a connection back; a broken one, one holding bytes nobody read, or
 * one to a node that went stale, is closed and its slot freed. */
void rc_pool_release(rc_pool *p, rc_conn *c);

#endif
