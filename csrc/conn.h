/* One connection to a Redis server: connect (TCP over IPv4 or IPv6, or a unix
 * socket), handshake (AUTH, SELECT, CLIENT SETNAME), and blocking I/O with
 * timeouts for the sync API.
 *
 * Locking rule: every function here is called with the GIL held and releases
 * it only around syscalls (getaddrinfo, connect, poll, send, recv). A
 * connection is used by one thread at a time: the pool hands it out.
 */
#ifndef RC_CONN_H
#define RC_CONN_H

#include <Python.h>

#include "buf.h"
#include "codec.h"
#include "reply.h"
#include "state.h"
#include "tls.h"

/* Bytes read from the socket per recv(). */
#define RC_CONN_READ_CHUNK 65536

/* Where and how to connect. Strings are owned by whoever owns the options
 * (the client), and outlive every connection made from them. */
typedef struct rc_conn_options {
    const char *host; /* NULL when unix_path is set */
    int port;
    const char *unix_path;  /* NULL for TCP */
    int connect_timeout_ms; /* -1: wait as long as the OS does */
    int socket_timeout_ms;  /* -1: no timeout on reads and writes */
    const char *username;   /* NULL: AUTH with the password alone */
    const char *password;   /* NULL: no AUTH */
    long db;
    const char *client_name; /* NULL: no CLIENT SETNAME */
    /* How long a call waits for a connection once an attempt to connect has
     * failed, retrying with backoff (-1: no limit; 0: fail at once). Used by
     * the pool (rc_pool_acquire). */
    int connect_wait_ms;
    /* TLS towards the server (the certificate checked against host), or
     * NULL for plain TCP. */
    rc_tls_context *tls;
} rc_conn_options;

typedef struct rc_conn {
    int fd;
    rc_tls *tls; /* NULL: plain TCP or unix socket */
    /* The value of rc_fork_generation when the socket was opened; a
     * connection from before a fork belongs to the parent. */
    unsigned long generation;
    /* Set once the stream can no longer be trusted (I/O error, timeout,
     * interrupted mid-command, a reply of the wrong type); a broken
     * connection is closed, not reused. */
    int broken;
    /* Set (by another thread, under the pool's lock) when the cache is
     * closed while this connection is lent out; its socket is shut down. */
    volatile int closing;
    rc_buf out;
    rc_reader reader;
    /* Bytes received but not yet handed to the reader. */
    char *in;
    size_t in_pos, in_len;
    /* Requests completed on this connection, and bytes ever received: a
     * request that failed before any byte came back on a connection that
     * had served others may have met a connection the server had dropped. */
    unsigned long requests;
    unsigned long long received;
    /* The pool's address_generation when it was opened. */
    unsigned long address_generation;
    /* The whole request's deadline (monotonic ms; -1: none), and the receive
     * and send timeouts currently set on the socket. */
    int socket_timeout_ms;
    long long deadline_ms;
    int timeout_set_ms;
    /* The pool's lists: idle connections (next_idle), and connections lent
     * out (lent_prev/lent_next) with the thread that holds each. */
    struct rc_conn *next_idle;
    struct rc_conn *lent_prev, *lent_next;
    unsigned long owner;
} rc_conn;

/* Incremented in every child process at fork (pthread_atfork). */
extern volatile unsigned long rc_fork_generation;

/* Installs the fork handler once per process. Returns 0 or -1 (errno). */
int rc_conn_install_fork_handler(void);

/* Opens a connection and runs the handshake. Returns the connection, or NULL
 * with ConnectionError, AuthenticationError or TimeoutError set, and
 * *unreachable set when the server could not be reached (no connection, or
 * it broke during the handshake), as opposed to refusing the handshake. */
rc_conn *rc_conn_open(const rc_conn_options *o, rc_state *st, int *unreachable);

/* Closes the socket and frees the connection (GIL held: the reader owns
 * Python objects). Accepts NULL. */
void rc_conn_free(rc_conn *c);

/* Starts a request: its deadline is socket_timeout from now, for sending it
 * and reading every reply. */
void rc_conn_begin(rc_conn *c);

/* Sends everything in c->out and empties it. Returns 0, or -1 with an
 * exception set and the connection marked broken. */
int rc_conn_flush(rc_conn *c, rc_state *st);

/* Non-zero when an idle connection may be used: the server has not closed
 * or reset it, and has sent nothing nobody asked for (one non-blocking
 * peek, no round trip). */
int rc_conn_is_usable(rc_conn *c);

/* Non-zero when bytes were received beyond the replies read: whoever uses
 * the connection next would read them as its own reply. */
int rc_conn_has_unread(const rc_conn *c);

/* Reads the next reply, decoding bulk strings with codec (NULL: bytes).
 * Returns RC_REPLY_READY with *reply set, RC_REPLY_BAD_VALUE (exception set,
 * connection still usable) or RC_REPLY_BROKEN (exception set, connection
 * marked broken). */
rc_reply_status rc_conn_read(rc_conn *c, const rc_codec *codec, PyObject **reply, rc_state *st);

/* Waits up to timeout_ms (-1: no limit) for a reply to begin: returns 1
 * when bytes are there to read (received or buffered), 0 when the time ran
 * out with none, -1 with an exception set (the socket failed, or a signal
 * handler raised). For a subscriber's connection, which has no request
 * whose deadline would bound the wait. */
int rc_conn_wait_readable(rc_conn *c, int timeout_ms, rc_state *st);

/* Writes a description of the server address ("host:port" or the socket
 * path) for error messages. */
void rc_conn_describe(const rc_conn_options *o, char *out, size_t size);

#endif
