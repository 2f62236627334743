/* TLS over OpenSSL: a context built from the user's options (one per
 * client, shared by its connections), and per-connection sessions whose
 * handshake, reads and writes report "try again when the socket is readable
 * (writable)" instead of blocking, so the blocking client (conn.c) and the
 * async engine (mux.c) drive the same code.
 *
 * Nothing here touches Python objects: every function may run without the
 * GIL. Errors come back as a message written into the caller's buffer.
 */
#ifndef RC_TLS_H
#define RC_TLS_H

#include <stddef.h>
#include <sys/types.h>

/* Certificate checking. */
typedef enum rc_tls_verify {
    RC_TLS_VERIFY_REQUIRED, /* the chain must check out, or no connection */
    RC_TLS_VERIFY_OPTIONAL, /* checked; a failure is reported, not fatal */
    RC_TLS_VERIFY_NONE,     /* not checked at all */
} rc_tls_verify;

/* The user's TLS settings; strings are NULL when not given. */
typedef struct rc_tls_options {
    const char *ca_file;    /* PEM file of trusted CAs */
    const char *ca_path;    /* directory of hashed CA certificates */
    const char *ca_data;    /* PEM text of trusted CAs */
    const char *cert_file;  /* client certificate (chain), PEM */
    const char *key_file;   /* its private key, PEM (cert_file when NULL) */
    const char *key_password;
    rc_tls_verify verify;
    int check_hostname;     /* the certificate must name the host connected to */
    const char *min_version; /* "TLSv1.2", "TLSv1.3"; NULL: OpenSSL's default */
    const char *ciphers;    /* TLS 1.2 cipher list; NULL: OpenSSL's default */
} rc_tls_options;

typedef struct rc_tls_context rc_tls_context;
typedef struct rc_tls rc_tls;

/* What an operation needs to go on. */
typedef enum rc_tls_status {
    RC_TLS_DONE = 0,
    RC_TLS_WANT_READ = 1,  /* call again once the socket is readable */
    RC_TLS_WANT_WRITE = 2, /* call again once the socket is writable */
    RC_TLS_CLOSED = 3,     /* the peer closed the connection */
    RC_TLS_ERROR = -1,     /* failed: the message says why */
} rc_tls_status;

/* Longest message an error is written as. */
#define RC_TLS_ERROR_MAX 512

/* Builds a context: the trusted CAs (the given ones, or the system's when
 * none is given), the client certificate, the verification mode, versions
 * and ciphers. Returns NULL with the reason in err. The context is counted:
 * whoever keeps it (a client, each of its async connections) holds a
 * reference, taken and dropped with the GIL held. */
rc_tls_context *rc_tls_context_new(const rc_tls_options *o, char *err, size_t errlen);
rc_tls_context *rc_tls_context_ref(rc_tls_context *ctx);
void rc_tls_context_unref(rc_tls_context *ctx); /* accepts NULL */

/* Non-zero (once per context) when a verification failure tolerated by
 * RC_TLS_VERIFY_OPTIONAL should be logged: the first time only. */
int rc_tls_context_first_warning(rc_tls_context *ctx);

/* A session on connected socket fd towards host (the name the user gave:
 * sent as SNI when it is a DNS name, and checked against the certificate
 * when check_hostname). NULL with the reason in err. */
rc_tls *rc_tls_new(rc_tls_context *ctx, int fd, const char *host, char *err, size_t errlen);
void rc_tls_free(rc_tls *t);

/* One step of the client handshake. On RC_TLS_ERROR, err says what failed
 * in words a user can act on (unknown CA, expired, name mismatch, a plain
 * server behind rediss://, ...). *warning receives a message to log when
 * verification failed but verify is OPTIONAL (else it is left empty). */
rc_tls_status rc_tls_handshake(rc_tls *t, char *err, size_t errlen, char *warning,
                               size_t warnlen);

/* Reads up to n bytes: RC_TLS_DONE with *got > 0, or another status. */
rc_tls_status rc_tls_read(rc_tls *t, char *buf, size_t n, size_t *got, char *err, size_t errlen);

/* Writes up to n bytes (partial writes allowed; the buffer may move between
 * calls): RC_TLS_DONE with *put > 0, or another status. */
rc_tls_status rc_tls_write(rc_tls *t, const char *buf, size_t n, size_t *put, char *err,
                           size_t errlen);

/* Bytes decrypted and waiting inside OpenSSL: readable without the socket. */
int rc_tls_pending(const rc_tls *t);

/* Whether OpenSSL holds bytes read from the socket that no read has
 * returned yet (decrypted or not): when it does not, everything still to
 * come is in the socket, where polling sees it. */
int rc_tls_holds_input(const rc_tls *t);

/* Non-zero when the socket's first bytes look like TLS records: for telling
 * a user they connected with redis:// to a TLS port. */
int rc_tls_looks_like_tls(const char *p, size_t n);

#endif
