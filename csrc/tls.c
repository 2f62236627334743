/* TLS over OpenSSL; see tls.h. */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct rc_tls_context {
    int refs;
    int warned;
    SSL_CTX *ssl_ctx;
    rc_tls_verify verify;
    int check_hostname;
    char *key_password; /* for the passphrase callback; wiped when freed */
};

struct rc_tls {
    SSL *ssl;
    rc_tls_context *ctx;
    char host[256];
    /* Set once any application data came in: a connection the server drops
     * before that, right after the handshake, is most likely one whose
     * client certificate it did not accept (TLS 1.3 checks it after the
     * client's side of the handshake is done). */
    int answered;
};

/* ------------------------------------------------------------ errors */

/* The reason of OpenSSL's last queued error, or fallback. */
static void openssl_reason(char *err, size_t errlen, const char *what, const char *fallback)
{
    unsigned long code = ERR_peek_last_error();
    char text[256];

    if (code == 0) {
        snprintf(err, errlen, "%s: %s", what, fallback);
    } else {
        ERR_error_string_n(code, text, sizeof(text));
        snprintf(err, errlen, "%s: %s", what, text);
    }
    ERR_clear_error();
}

static void wipe(char *s)
{
    if (s != NULL) {
        volatile char *p = s;
        while (*p)
            *p++ = 0;
    }
}

/* ------------------------------------------------------------ context */

static int password_callback(char *buf, int size, int rwflag, void *userdata)
{
    const rc_tls_context *ctx = userdata;
    size_t n;

    (void)rwflag;
    if (ctx->key_password == NULL || size <= 0)
        return 0;
    n = strlen(ctx->key_password);
    if (n > (size_t)size)
        n = (size_t)size;
    memcpy(buf, ctx->key_password, n);
    return (int)n;
}

/* Verification that lets the handshake go on whatever the result, for
 * RC_TLS_VERIFY_OPTIONAL: the result is read afterwards (a warning). */
static int accept_any(int preverify_ok, X509_STORE_CTX *store)
{
    (void)preverify_ok;
    (void)store;
    return 1;
}

/* Adds the certificates of PEM text to the trusted store. */
static int load_ca_data(SSL_CTX *ssl_ctx, const char *pem, char *err, size_t errlen)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ssl_ctx);
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *cert;
    int added = 0, rc = -1;

    if (bio == NULL) {
        openssl_reason(err, errlen, "ssl_ca_data", "out of memory");
        return -1;
    }
    while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        int ok = X509_STORE_add_cert(store, cert);
        X509_free(cert);
        if (!ok) {
            openssl_reason(err, errlen, "ssl_ca_data", "a certificate could not be added");
            goto out;
        }
        added++;
    }
    ERR_clear_error(); /* the end of the text reads as an error */
    if (added == 0) {
        snprintf(err, errlen, "ssl_ca_data holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        goto out;
    }
    rc = 0;
out:
    BIO_free(bio);
    return rc;
}

static int set_min_version(SSL_CTX *ssl_ctx, const char *name, char *err, size_t errlen)
{
    int version;

    if (name == NULL)
        version = TLS1_2_VERSION; /* nothing older is safe */
    else if (strcmp(name, "TLSv1.2") == 0)
        version = TLS1_2_VERSION;
    else if (strcmp(name, "TLSv1.3") == 0)
        version = TLS1_3_VERSION;
    else {
        snprintf(err, errlen, "ssl_min_version must be \"TLSv1.2\" or \"TLSv1.3\", got \"%s\"",
                 name);
        return -1;
    }
    if (!SSL_CTX_set_min_proto_version(ssl_ctx, version)) {
        openssl_reason(err, errlen, "ssl_min_version", "refused");
        return -1;
    }
    return 0;
}

static int load_client_certificate(rc_tls_context *ctx, const rc_tls_options *o, char *err,
                                   size_t errlen)
{
    const char *key = o->key_file != NULL ? o->key_file : o->cert_file;

    if (o->cert_file == NULL) {
        if (o->key_file != NULL) {
            snprintf(err, errlen, "ssl_keyfile needs ssl_certfile (the certificate it goes with)");
            return -1;
        }
        return 0;
    }
    if (o->key_password != NULL) {
        ctx->key_password = strdup(o->key_password);
        if (ctx->key_password == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    SSL_CTX_set_default_passwd_cb(ctx->ssl_ctx, password_callback);
    SSL_CTX_set_default_passwd_cb_userdata(ctx->ssl_ctx, ctx);
    if (SSL_CTX_use_certificate_chain_file(ctx->ssl_ctx, o->cert_file) != 1) {
        openssl_reason(err, errlen, "cannot load ssl_certfile", "unreadable");
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx->ssl_ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            snprintf(err, errlen, "the client key does not match ssl_certfile");
            return -1;
        }
        openssl_reason(err, errlen,
                       o->key_password == NULL
                           ? "cannot load the client key (encrypted? give ssl_password)"
                           : "cannot load the client key",
                       "unreadable");
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx->ssl_ctx) != 1) {
        openssl_reason(err, errlen, "the client key does not match ssl_certfile", "mismatch");
        return -1;
    }
    return 0;
}

rc_tls_context *rc_tls_context_new(const rc_tls_options *o, char *err, size_t errlen)
{
    rc_tls_context *ctx = calloc(1, sizeof(*ctx));

    if (ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ERR_clear_error();
    ctx->refs = 1;
    ctx->verify = o->verify;
    ctx->check_hostname = o->check_hostname && o->verify != RC_TLS_VERIFY_NONE;
    ctx->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (ctx->ssl_ctx == NULL) {
        openssl_reason(err, errlen, "cannot create a TLS context", "out of memory");
        goto fail;
    }
    /* Non-blocking use: a write may complete in part, and be retried from a
     * buffer that moved (the output buffer grows and is compacted). */
    SSL_CTX_set_mode(ctx->ssl_ctx,
                     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (set_min_version(ctx->ssl_ctx, o->min_version, err, errlen) < 0)
        goto fail;
    if (o->ciphers != NULL && SSL_CTX_set_cipher_list(ctx->ssl_ctx, o->ciphers) != 1) {
        openssl_reason(err, errlen, "ssl_ciphers names no cipher OpenSSL knows", "refused");
        goto fail;
    }
    if (o->ca_file != NULL || o->ca_path != NULL) {
        if (SSL_CTX_load_verify_locations(ctx->ssl_ctx, o->ca_file, o->ca_path) != 1) {
            openssl_reason(err, errlen,
                           o->ca_file != NULL ? "cannot load ssl_ca_certs" : "cannot load ssl_ca_path",
                           "unreadable");
            goto fail;
        }
    }
    if (o->ca_data != NULL && load_ca_data(ctx->ssl_ctx, o->ca_data, err, errlen) < 0)
        goto fail;
    if (o->ca_file == NULL && o->ca_path == NULL && o->ca_data == NULL &&
        SSL_CTX_set_default_verify_paths(ctx->ssl_ctx) != 1) {
        openssl_reason(err, errlen, "cannot load the system's CA certificates", "unreadable");
        goto fail;
    }
    if (load_client_certificate(ctx, o, err, errlen) < 0)
        goto fail;
    switch (o->verify) {
    case RC_TLS_VERIFY_REQUIRED:
        SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER, NULL);
        break;
    case RC_TLS_VERIFY_OPTIONAL:
        SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER, accept_any);
        break;
    case RC_TLS_VERIFY_NONE:
        SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_NONE, NULL);
        break;
    }
    return ctx;
fail:
    rc_tls_context_unref(ctx);
    return NULL;
}

rc_tls_context *rc_tls_context_ref(rc_tls_context *ctx)
{
    ctx->refs++;
    return ctx;
}

int rc_tls_context_first_warning(rc_tls_context *ctx)
{
    if (ctx->warned)
        return 0;
    ctx->warned = 1;
    return 1;
}

void rc_tls_context_unref(rc_tls_context *ctx)
{
    if (ctx == NULL || --ctx->refs > 0)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    wipe(ctx->key_password);
    free(ctx->key_password);
    free(ctx);
}

/* ------------------------------------------------------------ sessions */

static int is_ip_literal(const char *host)
{
    unsigned char addr[16];
    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

rc_tls *rc_tls_new(rc_tls_context *ctx, int fd, const char *host, char *err, size_t errlen)
{
    rc_tls *t = calloc(1, sizeof(*t));
    int ip;

    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ERR_clear_error();
    t->ctx = ctx;
    snprintf(t->host, sizeof(t->host), "%s", host != NULL ? host : "");
    t->ssl = SSL_new(ctx->ssl_ctx);
    if (t->ssl == NULL || SSL_set_fd(t->ssl, fd) != 1) {
        openssl_reason(err, errlen, "cannot start TLS", "out of memory");
        goto fail;
    }
    SSL_set_connect_state(t->ssl);
    ip = is_ip_literal(t->host);
    /* SNI carries DNS names only (RFC 6066). */
    if (t->host[0] != '\0' && !ip && SSL_set_tlsext_host_name(t->ssl, t->host) != 1) {
        openssl_reason(err, errlen, "cannot set the server name (SNI)", "refused");
        goto fail;
    }
    if (ctx->check_hostname && t->host[0] != '\0') {
        X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(param, t->host)
                : X509_VERIFY_PARAM_set1_host(param, t->host, 0)) != 1) {
            openssl_reason(err, errlen, "cannot set the name to check", "refused");
            goto fail;
        }
    }
    return t;
fail:
    rc_tls_free(t);
    return NULL;
}

void rc_tls_free(rc_tls *t)
{
    if (t == NULL)
        return;
    /* No close_notify: the socket may belong to a forked parent, and a
     * cache connection has nothing to flush. */
    SSL_free(t->ssl);
    free(t);
}

int rc_tls_pending(const rc_tls *t)
{
    return SSL_pending(t->ssl);
}

int rc_tls_holds_input(const rc_tls *t)
{
    return SSL_has_pending(t->ssl);
}

int rc_tls_looks_like_tls(const char *p, size_t n)
{
    /* A TLS record: content type alert (21) or handshake (22), version 3.x. */
    return n >= 2 && (p[0] == 0x15 || p[0] == 0x16) && p[1] == 0x03;
}

/* Words for a failed certificate check. */
static void verify_failure(const rc_tls *t, long result, char *err, size_t errlen)
{
    switch (result) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        snprintf(err, errlen, "the server's certificate has expired (or the clock is wrong)");
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        snprintf(err, errlen, "the server's certificate is not valid yet (or the clock is wrong)");
        break;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        snprintf(err, errlen,
                 "the server's certificate is not issued for '%s' (hostname mismatch): connect "
                 "with a name the certificate carries, or give ssl_check_hostname=False",
                 t->host);
        break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        snprintf(err, errlen,
                 "the server's certificate is not signed by a CA this client trusts (unknown "
                 "CA): give the CA that issued it with ssl_ca_certs, ssl_ca_path or ssl_ca_data");
        break;
    default:
        snprintf(err, errlen, "the server's certificate failed verification: %s",
                 X509_verify_cert_error_string(result));
        break;
    }
}

/* Words for a failed TLS operation (SSL_get_error's result e). */
static rc_tls_status failure(rc_tls *t, int e, int saved_errno, int handshaking, char *err,
                             size_t errlen)
{
    unsigned long code = ERR_peek_last_error();
    int reason = ERR_GET_REASON(code);
    long verified;

    if (e == SSL_ERROR_WANT_READ)
        return RC_TLS_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE)
        return RC_TLS_WANT_WRITE;
    if (!handshaking && !t->answered &&
        (e == SSL_ERROR_ZERO_RETURN ||
         (e == SSL_ERROR_SYSCALL && code == 0 &&
          (saved_errno == 0 || saved_errno == ECONNRESET || saved_errno == EPIPE)))) {
        snprintf(err, errlen,
                 "the server dropped the connection right after the TLS handshake: it may "
                 "require a client certificate (tls-auth-clients) it did not get or accept; "
                 "give ssl_certfile and ssl_keyfile");
        ERR_clear_error();
        return RC_TLS_ERROR;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return RC_TLS_CLOSED;
    if (e == SSL_ERROR_SYSCALL && code == 0) {
        if (saved_errno == 0) {
            if (!handshaking)
                return RC_TLS_CLOSED;
            snprintf(err, errlen,
                     "the server closed the connection during the TLS handshake (a plain, "
                     "non-TLS port behind a rediss:// URL or ssl=True?)");
        } else {
            snprintf(err, errlen, "TLS connection failed: %s", strerror(saved_errno));
        }
        ERR_clear_error();
        return RC_TLS_ERROR;
    }
    verified = SSL_get_verify_result(t->ssl);
    if (handshaking && verified != X509_V_OK && t->ctx->verify == RC_TLS_VERIFY_REQUIRED) {
        verify_failure(t, verified, err, errlen);
    } else if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
               reason == SSL_R_UNKNOWN_PROTOCOL || reason == SSL_R_RECORD_LENGTH_MISMATCH) {
        snprintf(err, errlen,
                 "the server did not answer in TLS (a plain, non-TLS port behind a rediss:// "
                 "URL or ssl=True? use redis://)");
    } else if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED ||
               reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE ||
               reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        snprintf(err, errlen,
                 "the server requires a client certificate (tls-auth-clients): give "
                 "ssl_certfile and ssl_keyfile");
    } else if (reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
               reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN ||
               reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA) {
        snprintf(err, errlen,
                 "the server refused the client certificate (not signed by a CA it trusts, "
                 "or expired)");
    } else {
        openssl_reason(err, errlen, "TLS failed", "unknown error");
        return RC_TLS_ERROR;
    }
    ERR_clear_error();
    return RC_TLS_ERROR;
}

rc_tls_status rc_tls_handshake(rc_tls *t, char *err, size_t errlen, char *warning,
                               size_t warnlen)
{
    int rc, e, saved_errno;
    long verified;

    if (warnlen > 0)
        warning[0] = '\0';
    ERR_clear_error();
    errno = 0;
    rc = SSL_connect(t->ssl);
    saved_errno = errno;
    if (rc == 1) {
        verified = SSL_get_verify_result(t->ssl);
        if (verified != X509_V_OK && t->ctx->verify == RC_TLS_VERIFY_OPTIONAL)
            verify_failure(t, verified, warning, warnlen);
        return RC_TLS_DONE;
    }
    e = SSL_get_error(t->ssl, rc);
    return failure(t, e, saved_errno, 1, err, errlen);
}

rc_tls_status rc_tls_read(rc_tls *t, char *buf, size_t n, size_t *got, char *err, size_t errlen)
{
    int e, saved_errno;

    ERR_clear_error();
    errno = 0;
    if (SSL_read_ex(t->ssl, buf, n, got) == 1) {
        t->answered = 1;
        return RC_TLS_DONE;
    }
    saved_errno = errno;
    e = SSL_get_error(t->ssl, 0);
    return failure(t, e, saved_errno, 0, err, errlen);
}

rc_tls_status rc_tls_write(rc_tls *t, const char *buf, size_t n, size_t *put, char *err,
                           size_t errlen)
{
    int e, saved_errno;

    ERR_clear_error();
    errno = 0;
    if (SSL_write_ex(t->ssl, buf, n, put) == 1)
        return RC_TLS_DONE;
    saved_errno = errno;
    e = SSL_get_error(t->ssl, 0);
    return failure(t, e, saved_errno, 0, err, errlen);
}
