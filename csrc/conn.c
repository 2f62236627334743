/* One Redis connection with blocking I/O; see conn.h. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "resp.h"
#include "result.h"

volatile unsigned long rc_fork_generation = 0;

static void on_fork_child(void)
{
    rc_fork_generation++;
}

static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;
static int fork_handler_rc = 0;

static void install_fork_handler(void)
{
    fork_handler_rc = pthread_atfork(NULL, NULL, on_fork_child);
}

int rc_conn_install_fork_handler(void)
{
    /* Once per process, however many interpreters load the module. */
    if (pthread_once(&fork_handler_once, install_fork_handler) != 0 || fork_handler_rc != 0)
        return -1;
    return 0;
}

void rc_conn_describe(const rc_conn_options *o, char *out, size_t size)
{
    if (o->unix_path != NULL)
        snprintf(out, size, "unix socket %s", o->unix_path);
    else if (strchr(o->host, ':') != NULL)
        snprintf(out, size, "[%s]:%d", o->host, o->port);
    else
        snprintf(out, size, "%s:%d", o->host, o->port);
}

static long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Where a connect attempt failed, kept until the GIL is back. */
typedef struct connect_error {
    int err; /* errno, or 0 */
    int timed_out;
    int gai_err; /* getaddrinfo's code, or 0 */
    char tls[RC_TLS_ERROR_MAX]; /* why the TLS handshake failed, or "" */
    char tls_warning[RC_TLS_ERROR_MAX]; /* a failed check tolerated, or "" */
} connect_error;

static int set_blocking(int fd, int blocking)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -1;
    flags = blocking ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK);
    return fcntl(fd, F_SETFL, flags);
}

/* Connects fd to addr within deadline_ms (-1: none). No GIL. */
static int connect_within(int fd, const struct sockaddr *addr, socklen_t len, long long deadline_ms,
                          connect_error *ce)
{
    struct pollfd pfd;
    int rc, soerr = 0;
    socklen_t soerr_len = sizeof(soerr);

    if (set_blocking(fd, 0) < 0)
        goto fail;
    do {
        rc = connect(fd, addr, len);
    } while (rc < 0 && errno == EINTR);
    if (rc == 0)
        return 0;
    if (errno != EINPROGRESS)
        goto fail;
    pfd.fd = fd;
    pfd.events = POLLOUT;
    while (1) {
        int wait_ms = -1;
        if (deadline_ms >= 0) {
            long long left = deadline_ms - monotonic_ms();
            wait_ms = left > 0 ? (int)left : 0;
        }
        rc = poll(&pfd, 1, wait_ms);
        if (rc > 0)
            break;
        if (rc == 0) {
            ce->timed_out = 1;
            return -1;
        }
        if (errno != EINTR)
            goto fail;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &soerr_len) < 0)
        goto fail;
    if (soerr != 0) {
        errno = soerr;
        goto fail;
    }
    return 0;
fail:
    ce->err = errno;
    return -1;
}

/* Socket options for a connected socket: blocking I/O bounded by the
 * socket timeout, no Nagle delay, and keepalive to notice dead peers. */
static int configure_socket(int fd, const rc_conn_options *o, int is_tcp)
{
    int one = 1;

    if (set_blocking(fd, 1) < 0)
        return -1;
    if (o->socket_timeout_ms >= 0) {
        struct timeval tv;
        tv.tv_sec = o->socket_timeout_ms / 1000;
        tv.tv_usec = (o->socket_timeout_ms % 1000) * 1000;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
            return -1;
    }
    if (!is_tcp)
        return 0;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0)
        return -1;
#ifdef TCP_KEEPIDLE
    {
        int idle = 60, interval = 10, count = 3;
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval)) < 0 ||
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count)) < 0)
            return -1;
    }
#endif
    return 0;
}

/* Opens a connected socket. No GIL. Returns the fd or -1 with ce filled. */
static int open_socket(const rc_conn_options *o, long long deadline, connect_error *ce)
{
    struct addrinfo hints, *list = NULL, *ai;
    char port[16];
    int fd = -1;

    if (o->unix_path != NULL) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        if (strlen(o->unix_path) >= sizeof(sa.sun_path)) {
            ce->err = ENAMETOOLONG;
            return -1;
        }
        strcpy(sa.sun_path, o->unix_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            ce->err = errno;
            return -1;
        }
        if (connect_within(fd, (struct sockaddr *)&sa, sizeof(sa), deadline, ce) < 0 ||
            configure_socket(fd, o, 0) < 0) {
            if (!ce->err && !ce->timed_out)
                ce->err = errno;
            close(fd);
            return -1;
        }
        return fd;
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", o->port);
    ce->gai_err = getaddrinfo(o->host, port, &hints, &list);
    if (ce->gai_err != 0) {
        if (ce->gai_err == EAI_SYSTEM)
            ce->err = errno;
        return -1;
    }
    /* Try each address in turn (::1 then 127.0.0.1 for "localhost", say),
     * all within one connect deadline. */
    for (ai = list; ai != NULL; ai = ai->ai_next) {
        connect_error attempt = {0, 0, 0, "", ""};
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            ce->err = errno;
            continue;
        }
        if (connect_within(fd, ai->ai_addr, ai->ai_addrlen, deadline, &attempt) == 0 &&
            configure_socket(fd, o, 1) == 0)
            break;
        if (!attempt.err && !attempt.timed_out)
            attempt.err = errno;
        *ce = attempt;
        close(fd);
        fd = -1;
        if (attempt.timed_out)
            break;
    }
    freeaddrinfo(list);
    if (fd >= 0)
        memset(ce, 0, sizeof(*ce));
    return fd;
}

/* The TLS handshake on a connected blocking socket, within the connect
 * deadline (the socket is made non-blocking for it and polled). No GIL.
 * Returns the session, or NULL with ce filled. */
static rc_tls *start_tls(const rc_conn_options *o, int fd, long long deadline, connect_error *ce)
{
    rc_tls *t = rc_tls_new(o->tls, fd, o->host, ce->tls, sizeof(ce->tls));
    rc_tls_status status = RC_TLS_WANT_WRITE;
    struct pollfd pfd;
    int rc;

    if (t == NULL || set_blocking(fd, 0) < 0)
        goto fail;
    pfd.fd = fd;
    while ((status = rc_tls_handshake(t, ce->tls, sizeof(ce->tls), ce->tls_warning,
                                      sizeof(ce->tls_warning))) == RC_TLS_WANT_READ ||
           status == RC_TLS_WANT_WRITE) {
        int wait_ms = -1;
        if (deadline >= 0) {
            long long left = deadline - monotonic_ms();
            wait_ms = left > 0 ? (int)left : 0;
        }
        pfd.events = status == RC_TLS_WANT_READ ? POLLIN : POLLOUT;
        do {
            rc = poll(&pfd, 1, wait_ms);
        } while (rc < 0 && errno == EINTR);
        if (rc == 0) {
            ce->timed_out = 1;
            snprintf(ce->tls, sizeof(ce->tls),
                     "the TLS handshake got no answer within socket_connect_timeout (%d ms): a "
                     "plain, non-TLS port behind a rediss:// URL or ssl=True?",
                     o->connect_timeout_ms);
            goto fail;
        }
        if (rc < 0) {
            ce->err = errno;
            goto fail;
        }
    }
    if (status != RC_TLS_DONE) {
        if (status == RC_TLS_CLOSED)
            snprintf(ce->tls, sizeof(ce->tls), "the server closed the connection during the "
                                               "TLS handshake");
        goto fail;
    }
    if (set_blocking(fd, 1) < 0) {
        ce->err = errno;
        goto fail;
    }
    return t;
fail:
    if (ce->tls[0] == '\0' && !ce->timed_out && ce->err == 0)
        snprintf(ce->tls, sizeof(ce->tls), "TLS could not start");
    rc_tls_free(t);
    return NULL;
}

static void raise_connect_error(const rc_conn_options *o, const connect_error *ce, rc_state *st)
{
    char where[320];

    rc_conn_describe(o, where, sizeof(where));
    if (ce->tls[0] != '\0')
        PyErr_Format(ce->timed_out ? st->TimeoutError : st->ConnectionError,
                     "TLS with redis at %s failed: %s", where, ce->tls);
    else if (ce->timed_out)
        PyErr_Format(st->TimeoutError, "connecting to redis at %s timed out after %d ms", where,
                     o->connect_timeout_ms);
    else if (ce->gai_err != 0 && ce->gai_err != EAI_SYSTEM)
        PyErr_Format(st->ConnectionError, "cannot resolve redis host %s: %s", where,
                     gai_strerror(ce->gai_err));
    else
        PyErr_Format(st->ConnectionError, "cannot connect to redis at %s: %s", where,
                     strerror(ce->err));
}

/* Sends AUTH / SELECT / CLIENT SETNAME in one write and checks each reply.
 * The password is never part of an error message. */
static int handshake(rc_conn *c, const rc_conn_options *o, rc_state *st)
{
    int n = 0, i, rc = -1;
    const char *what[3];
    PyObject *reply = NULL, *err_type = NULL, *err_value = NULL, *err_tb = NULL;

    if (o->password != NULL) {
        int with_user = o->username != NULL;
        if (rc_resp_array(&c->out, with_user ? 3 : 2) < 0 || rc_resp_bulk(&c->out, "AUTH", 4) < 0 ||
            (with_user && rc_resp_bulk(&c->out, o->username, strlen(o->username)) < 0) ||
            rc_resp_bulk(&c->out, o->password, strlen(o->password)) < 0)
            goto nomem;
        what[n++] = "AUTH";
    }
    if (o->db != 0) {
        if (rc_resp_array(&c->out, 2) < 0 || rc_resp_bulk(&c->out, "SELECT", 6) < 0 ||
            rc_resp_bulk_ll(&c->out, o->db) < 0)
            goto nomem;
        what[n++] = "SELECT";
    }
    if (o->client_name != NULL) {
        if (rc_resp_array(&c->out, 3) < 0 || rc_resp_bulk(&c->out, "CLIENT", 6) < 0 ||
            rc_resp_bulk(&c->out, "SETNAME", 7) < 0 ||
            rc_resp_bulk(&c->out, o->client_name, strlen(o->client_name)) < 0)
            goto nomem;
        what[n++] = "CLIENT SETNAME";
    }
    if (n == 0)
        return 0;
    rc_conn_begin(c);
    rc = rc_conn_flush(c, st);
    rc_buf_wipe(&c->out); /* it held the password */
    if (rc < 0)
        goto out;
    /* Every reply is read, even after a failure, so none is left behind;
     * the first failure is raised once they all are. */
    for (i = 0; i < n; i++) {
        if (rc_conn_read(c, NULL, &reply, st) != RC_REPLY_READY) {
            rc = -1;
            goto out;
        }
        if (rc_result_check(st, RC_RESULT_HANDSHAKE, rc_reader_shape(&c->reader), reply, NULL,
                            what[i]) < 0) {
            c->broken = 1; /* out of step: none of the rest can be trusted */
            rc = -1;
            goto out;
        }
        if (rc == 0 && rc_is_error_reply(st, reply)) {
            PyObject *exc_type =
                i == 0 && o->password != NULL ? st->AuthenticationError : st->ConnectionError;
            if (o->username != NULL && i == 0 && o->password != NULL)
                PyErr_Format(exc_type, "redis refused %s for user '%s': %S", what[i], o->username,
                             reply);
            else
                PyErr_Format(exc_type, "redis refused %s: %S", what[i], reply);
            PyErr_Fetch(&err_type, &err_value, &err_tb);
            rc = -1;
        }
        Py_CLEAR(reply);
    }
    if (err_type != NULL) {
        PyErr_Restore(err_type, err_value, err_tb);
        err_type = err_value = err_tb = NULL;
    }
    goto out;
nomem:
    PyErr_NoMemory();
out:
    Py_XDECREF(reply);
    Py_XDECREF(err_type);
    Py_XDECREF(err_value);
    Py_XDECREF(err_tb);
    return rc;
}

rc_conn *rc_conn_open(const rc_conn_options *o, rc_state *st, int *unreachable)
{
    long long deadline = o->connect_timeout_ms >= 0 ? monotonic_ms() + o->connect_timeout_ms : -1;
    connect_error ce = {0, 0, 0, "", ""};
    rc_tls *tls = NULL;
    rc_conn *c;
    int fd;

    *unreachable = 1;
    Py_BEGIN_ALLOW_THREADS fd = open_socket(o, deadline, &ce);
    if (fd >= 0 && o->tls != NULL) {
        tls = start_tls(o, fd, deadline, &ce);
        if (tls == NULL) {
            close(fd);
            fd = -1;
        }
    }
    Py_END_ALLOW_THREADS if (fd < 0)
    {
        /* A certificate the client refuses will not mend by retrying. */
        *unreachable = ce.tls[0] == '\0';
        raise_connect_error(o, &ce, st);
        return NULL;
    }
    if (ce.tls_warning[0] != '\0' && rc_tls_context_first_warning(o->tls))
        rc_log_warning(st, "TLS certificate not verified (ssl_cert_reqs=\"optional\"): %s",
                       ce.tls_warning);
    c = PyMem_RawCalloc(1, sizeof(*c));
    if (c == NULL) {
        rc_tls_free(tls);
        close(fd);
        *unreachable = 0;
        PyErr_NoMemory();
        return NULL;
    }
    c->fd = fd;
    c->tls = tls;
    c->generation = rc_fork_generation;
    c->socket_timeout_ms = o->socket_timeout_ms;
    c->timeout_set_ms = o->socket_timeout_ms; /* configure_socket set it */
    c->deadline_ms = -1;
    rc_buf_init(&c->out);
    c->in = PyMem_RawMalloc(RC_CONN_READ_CHUNK);
    if (c->in == NULL) {
        *unreachable = 0;
        PyErr_NoMemory();
        goto fail;
    }
    if (rc_reader_init(&c->reader, st) < 0)
        goto fail;
    if (handshake(c, o, st) < 0) {
        *unreachable = c->broken; /* an I/O failure, not a refusal */
        goto fail;
    }
    *unreachable = 0;
    return c;
fail:
    rc_conn_free(c);
    return NULL;
}

void rc_conn_free(rc_conn *c)
{
    if (c == NULL)
        return;
    /* close() only: in a forked child this must not disturb the parent's
     * session, and a polite QUIT would do exactly that. */
    rc_tls_free(c->tls);
    if (c->fd >= 0)
        close(c->fd);
    rc_reader_free(&c->reader);
    rc_buf_free(&c->out);
    PyMem_RawFree(c->in);
    PyMem_RawFree(c);
}

/* Turns an I/O failure into an exception and breaks the connection. */
static int fail_io(rc_conn *c, int err, const char *doing, rc_state *st)
{
    c->broken = 1;
    if (c->closing)
        PyErr_Format(st->ConnectionError, "the cache was closed while this call was %s", doing);
    else if (err == EAGAIN || err == EWOULDBLOCK)
        PyErr_Format(st->TimeoutError,
                     "redis did not answer within socket_timeout (%d ms) while %s",
                     c->socket_timeout_ms, doing);
    else if (c->tls == NULL && c->requests == 0 && c->received == 0 &&
             (err == 0 || err == ECONNRESET))
        PyErr_Format(st->ConnectionError,
                     "redis closed the connection while %s, before any reply (a TLS port "
                     "behind a redis:// URL? then use rediss:// or ssl=True)",
                     doing);
    else if (err == 0)
        PyErr_Format(st->ConnectionError, "redis closed the connection while %s", doing);
    else
        PyErr_Format(st->ConnectionError, "connection to redis failed while %s: %s", doing,
                     strerror(err));
    return -1;
}

/* An interrupted syscall: run Python's signal handlers; if one raised
 * (KeyboardInterrupt), the command is abandoned mid-stream and the
 * connection can no longer be trusted. */
static int interrupted(rc_conn *c)
{
    if (PyErr_CheckSignals() < 0) {
        c->broken = 1;
        return -1;
    }
    return 0;
}

static int set_socket_timeout(int fd, int ms)
{
    struct timeval tv;

    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
        return -1;
    return 0;
}

void rc_conn_begin(rc_conn *c)
{
    c->deadline_ms = c->socket_timeout_ms < 0 ? -1 : monotonic_ms() + c->socket_timeout_ms;
}

/* Before a send() or recv(): the socket's timeout cut to what is left of
 * the request's deadline, so that a server answering a byte at a time
 * cannot stretch a request past socket_timeout (SO_RCVTIMEO bounds each
 * recv() alone). The first syscall of a request finds the full timeout set
 * and costs no setsockopt. Returns 0, or -1 (deadline passed, or the
 * timeout could not be set) with an exception set. */
static int before_syscall(rc_conn *c, const char *doing, rc_state *st)
{
    long long left;
    int want;

    if (c->socket_timeout_ms < 0)
        return 0;
    left = c->deadline_ms - monotonic_ms();
    if (left <= 0)
        return fail_io(c, EAGAIN, doing, st);
    want = left < c->socket_timeout_ms ? (int)left : c->socket_timeout_ms;
    if (want != c->timeout_set_ms) {
        if (set_socket_timeout(c->fd, want) < 0)
            return fail_io(c, errno, doing, st);
        c->timeout_set_ms = want;
    }
    return 0;
}

/* The blocking socket's send() and recv(), or their TLS forms: -1 with
 * *err (EAGAIN: the socket's timeout passed; EPROTO: a TLS failure, told in
 * tls_err) or the count; 0 from receive is the end of the stream. No GIL. */
static ssize_t transmit(rc_conn *c, const char *p, size_t n, int *err, char *tls_err)
{
    rc_tls_status status;
    size_t put = 0;
    ssize_t r;

    if (c->tls == NULL) {
        r = send(c->fd, p, n, MSG_NOSIGNAL);
        *err = errno;
        return r;
    }
    status = rc_tls_write(c->tls, p, n, &put, tls_err, RC_TLS_ERROR_MAX);
    if (status == RC_TLS_DONE)
        return (ssize_t)put;
    /* On a blocking socket, "try again" means its timeout passed. */
    *err = status == RC_TLS_CLOSED ? EPIPE : status == RC_TLS_ERROR ? EPROTO : EAGAIN;
    return -1;
}

static ssize_t receive(rc_conn *c, char *p, size_t n, int *err, char *tls_err)
{
    rc_tls_status status;
    size_t got = 0;
    ssize_t r;

    if (c->tls == NULL) {
        r = recv(c->fd, p, n, 0);
        *err = errno;
        return r;
    }
    status = rc_tls_read(c->tls, p, n, &got, tls_err, RC_TLS_ERROR_MAX);
    if (status == RC_TLS_DONE)
        return (ssize_t)got;
    if (status == RC_TLS_CLOSED)
        return 0;
    *err = status == RC_TLS_ERROR ? EPROTO : EAGAIN;
    return -1;
}

/* fail_io for a failure of transmit() or receive(). */
static int fail_transfer(rc_conn *c, int err, const char *tls_err, const char *doing, rc_state *st)
{
    if (err != EPROTO || c->tls == NULL)
        return fail_io(c, err, doing, st);
    c->broken = 1;
    PyErr_Format(st->ConnectionError, "TLS connection to redis failed while %s: %s", doing,
                 tls_err);
    return -1;
}

int rc_conn_flush(rc_conn *c, rc_state *st)
{
    char tls_err[RC_TLS_ERROR_MAX] = "";
    size_t sent = 0;
    ssize_t n;
    int err = 0;

    while (sent < c->out.len) {
        if (before_syscall(c, "sending a command", st) < 0) {
            rc_buf_reset(&c->out);
            return -1;
        }
        Py_BEGIN_ALLOW_THREADS n = transmit(c, c->out.data + sent, c->out.len - sent, &err, tls_err);
        Py_END_ALLOW_THREADS if (n >= 0)
        {
            sent += (size_t)n;
            continue;
        }
        if (err == EINTR) {
            if (interrupted(c) < 0)
                return -1;
            continue;
        }
        rc_buf_reset(&c->out);
        return fail_transfer(c, err, tls_err, "sending a command", st);
    }
    rc_buf_reset(&c->out);
    return 0;
}

/* A reply that does not parse: if the connection's first bytes were a TLS
 * record, the URL is plain but the port speaks TLS; say so. */
static void explain_protocol_error(rc_conn *c, rc_state *st)
{
    if (c->tls == NULL && c->received == c->in_len && rc_tls_looks_like_tls(c->in, c->in_len)) {
        PyErr_SetString(st->ProtocolError,
                        "the server answered in TLS: it is a TLS port, so connect with a "
                        "rediss:// URL or ssl=True");
    }
}

rc_reply_status rc_conn_read(rc_conn *c, const rc_codec *codec, PyObject **reply, rc_state *st)
{
    char tls_err[RC_TLS_ERROR_MAX] = "";
    rc_reply_status status;
    ssize_t n;
    int err = 0;

    while (1) {
        status = rc_reader_next(&c->reader, codec, reply);
        if (status != RC_REPLY_PENDING) {
            if (status == RC_REPLY_BROKEN) {
                c->broken = 1;
                explain_protocol_error(c, st);
            }
            return status;
        }
        if (c->in_pos < c->in_len) {
            size_t slice = c->in_len - c->in_pos;
            if (slice > RC_READER_FEED_MAX)
                slice = RC_READER_FEED_MAX;
            if (rc_reader_feed(&c->reader, c->in + c->in_pos, slice) < 0) {
                c->broken = 1;
                return RC_REPLY_BROKEN;
            }
            c->in_pos += slice;
            continue;
        }
        if (before_syscall(c, "reading a reply", st) < 0)
            return RC_REPLY_BROKEN;
        Py_BEGIN_ALLOW_THREADS n = receive(c, c->in, RC_CONN_READ_CHUNK, &err, tls_err);
        Py_END_ALLOW_THREADS if (n > 0)
        {
            c->in_pos = 0;
            c->in_len = (size_t)n;
            c->received += (unsigned long long)n;
            continue;
        }
        if (n < 0 && err == EINTR) {
            if (interrupted(c) < 0)
                return RC_REPLY_BROKEN;
            continue;
        }
        fail_transfer(c, n == 0 ? 0 : err, tls_err, "reading a reply", st);
        return RC_REPLY_BROKEN;
    }
}

int rc_conn_is_usable(rc_conn *c)
{
    char byte;
    ssize_t n;

    if (c->broken || rc_conn_has_unread(c))
        return 0;
    do {
        n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    /* Nothing to read is the healthy state; end of stream (0), bytes nobody
     * asked for (> 0) or a reset mean the connection must go. */
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

int rc_conn_has_unread(const rc_conn *c)
{
    return c->in_pos < c->in_len || rc_reader_has_unread(&c->reader) ||
           (c->tls != NULL && rc_tls_pending(c->tls) > 0);
}

int rc_conn_wait_readable(rc_conn *c, int timeout_ms, rc_state *st)
{
    long long deadline = timeout_ms < 0 ? -1 : monotonic_ms() + timeout_ms;
    struct pollfd pfd;
    int n, err = 0, wait;

    if (rc_conn_has_unread(c))
        return 1;
    while (1) {
        wait = -1;
        if (deadline >= 0) {
            long long left = deadline - monotonic_ms();
            wait = left <= 0 ? 0 : (left > INT_MAX ? INT_MAX : (int)left);
        }
        pfd.fd = c->fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        Py_BEGIN_ALLOW_THREADS
        n = poll(&pfd, 1, wait);
        err = errno;
        Py_END_ALLOW_THREADS
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (err != EINTR)
            return fail_io(c, err, "waiting for a message", st);
        /* A signal: its handler may raise (KeyboardInterrupt). Nothing was
         * read, so the connection stays usable. */
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}
