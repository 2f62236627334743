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
} rc_conn_options;

typedef struct rc_conn {
    int fd;
    /* The value of rc_fork_generation when the socket was opened; a
     * connection from before a fork belongs to the parent. */
    unsigned long generation;
    /* Set once the stream can no longer be trusted (I/O error, timeout,
     * interrupted mid-command); a broken connection is closed, not reused. */
    int broken;
    rc_buf out;
    rc_reader reader;
    /* Bytes received but not yet handed to the reader. */
    char *in;
    size_t in_pos, in_len;
    /* The next idle connection while this one sits in a pool. */
    struct rc_conn *next_idle;
} rc_conn;

/* Incremented in every child process at fork (pthread_atfork). */
extern volatile unsigned long rc_fork_generation;

/* Installs the fork handler once per process. Returns 0 or -1 (errno). */
int rc_conn_install_fork_handler(void);

/* Opens a connection and runs the handshake. Returns the connection, or NULL
 * with ConnectionError, AuthenticationError or TimeoutError set. */
rc_conn *rc_conn_open(const rc_conn_options *o, rc_state *st);

/* Closes the socket and frees the connection (GIL held: the reader owns
 * Python objects). Accepts NULL. */
void rc_conn_free(rc_conn *c);

/* Sends everything in c->out and empties it. Returns 0, or -1 with an
 * exception set and the connection marked broken. */
int rc_conn_flush(rc_conn *c, rc_state *st);

/* Reads the next reply, decoding bulk strings with codec (NULL: bytes).
 * Returns RC_REPLY_READY with *reply set, RC_REPLY_BAD_VALUE (exception set,
 * connection still usable) or RC_REPLY_BROKEN (exception set, connection
 * marked broken). */
rc_reply_status rc_conn_read(rc_conn *c, const rc_codec *codec, PyObject **reply, rc_state *st);

/* Writes a description of the server address ("host:port" or the socket
 * path) for error messages. */
void rc_conn_describe(const rc_conn_options *o, char *out, size_t size);

#endif
