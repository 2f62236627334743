/* What the sync and async clients share: the cache's methods, written once.
 *
 * A method parses its arguments, runs what may run Python code (rc_prepare_*,
 * rc_ttl_ms), and describes the request: how to encode it and how to turn its
 * replies into the result. The client's transport then carries it: the sync
 * one over a pooled blocking connection, returning the result; the async one
 * over a multiplexed connection, returning a future of it.
 */
#ifndef RC_CLIENT_H
#define RC_CLIENT_H

#include <Python.h>

#include "request.h"
#include "state.h"
#include "tls.h"

typedef struct rc_client rc_client;

typedef struct rc_transport {
    /* Carries a request: the result (sync), or a future of it (async). */
    PyObject *(*send)(rc_client *self, const rc_request *request);
    /* A result known without a round trip, in the same form. */
    PyObject *(*done)(rc_client *self, PyObject *result);
    /* Non-zero when requests of many callers share one connection at once
     * (then a blocking command would stall them all). */
    int multiplexed;
} rc_transport;

/* The head of both client structs. */
struct rc_client {
    PyObject_HEAD
    rc_state *state;
    rc_keyspace ks;
    const rc_transport *transport;
    /* Set on a Redis Cluster node's client (redis_cache.cluster routes to
     * it): get_many and delete_many send one command per key, as the keys
     * of one node may sit in different slots. */
    int cluster_node;
    /* Set by _ask_next(): the next request goes after an ASKING. */
    int ask_next;
    /* Counters and latency histograms (metrics.h); NULL with metrics=False. */
    rc_metrics *metrics;
};

/* The cache methods, shared by both types (self is an rc_client). */
PyObject *rc_client_get(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames);
PyObject *rc_client_set(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames);
PyObject *rc_client_delete(rc_client *self, PyObject *key);
PyObject *rc_client_exists(rc_client *self, PyObject *key);
PyObject *rc_client_ttl(rc_client *self, PyObject *key);
PyObject *rc_client_expire(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames);
PyObject *rc_client_incr(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames);
PyObject *rc_client_get_many(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames);
PyObject *rc_client_set_many(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames);
PyObject *rc_client_delete_many(rc_client *self, PyObject *keys);
PyObject *rc_client_ping(rc_client *self, PyObject *unused);
PyObject *rc_client_execute_command(rc_client *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames);
PyObject *rc_client_key_prefix(PyObject *self, void *unused);
PyObject *rc_client_key_slot(rc_client *self, PyObject *key);
PyObject *rc_client_ask_next(rc_client *self, PyObject *unused);
PyObject *rc_client_as_cluster_node(rc_client *self, PyObject *unused);
/* Starts the client's metrics block when enabled (init). 0, or -1 with
 * MemoryError set. */
int rc_client_metrics_init(rc_client *self, int enabled);
/* A value as set() stores it (serializer and compression), as bytes; and
 * stored bytes back into a value. For pub/sub, whose messages carry values
 * in the same encoding. */
PyObject *rc_client_encode_value(rc_client *self, PyObject *value);
PyObject *rc_client_decode_value(rc_client *self, PyObject *data);

/* The TLS context described by `settings` (redis_cache._config.TLSSettings:
 * attributes ca_certs, ca_path, ca_data, certfile, keyfile, password,
 * cert_reqs, check_hostname, min_version, ciphers), or NULL with *none set
 * when settings is None. NULL with ConfigurationError set when OpenSSL
 * refuses the settings (an unreadable CA file, a key that does not match
 * the certificate, ...). */
rc_tls_context *rc_client_tls_context(rc_state *st, PyObject *settings, int *none);

#define RC_FASTCALL_KW(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL | METH_KEYWORDS

/* The entries of the shared methods, for the start of each type's table. */
#define RC_CLIENT_METHOD_DEFS                                                                      \
    {"get", RC_FASTCALL_KW(rc_client_get),                                                         \
     "get(key, default=None, model=None): the stored value, or default when the key is "           \
     "missing; with model, the value made an instance of it (pydantic model, dataclass, ...)."},   \
        {"set", RC_FASTCALL_KW(rc_client_set),                                                     \
         "set(key, value, ttl=None) -> bool: store value; ttl None means default_ttl."},           \
        {"delete", (PyCFunction)rc_client_delete, METH_O,                                          \
         "delete(key) -> bool: remove the key; True if it existed."},                              \
        {"exists", (PyCFunction)rc_client_exists, METH_O, "exists(key) -> bool"},                  \
        {"expire", RC_FASTCALL_KW(rc_client_expire),                                               \
         "expire(key, ttl) -> bool: set a new expiry; False if the key does not exist."},          \
        {"ttl", (PyCFunction)rc_client_ttl, METH_O,                                                \
         "ttl(key) -> int: seconds left; -1 without expiry, -2 when the key does not exist."},     \
        {"incr", RC_FASTCALL_KW(rc_client_incr),                                                   \
         "incr(key, amount=1) -> int: add amount to an integer value and return the result."},     \
        {"get_many", RC_FASTCALL_KW(rc_client_get_many),                                           \
         "get_many(keys, model=None) -> dict: the keys found, with their values (one MGET)."},     \
        {"set_many", RC_FASTCALL_KW(rc_client_set_many),                                           \
         "set_many(mapping, ttl=None) -> bool: store every item in one pipeline."},                \
        {"delete_many", (PyCFunction)rc_client_delete_many, METH_O,                                \
         "delete_many(keys) -> int: remove the keys; the number that existed."},                   \
        {"ping", (PyCFunction)rc_client_ping, METH_NOARGS, "ping() -> bool"},                      \
        {"_key_slot", (PyCFunction)rc_client_key_slot, METH_O, NULL},                              \
        {"_ask_next", (PyCFunction)rc_client_ask_next, METH_NOARGS, NULL},                         \
        {"_as_cluster_node", (PyCFunction)rc_client_as_cluster_node, METH_NOARGS, NULL},           \
        {"_encode_value", (PyCFunction)rc_client_encode_value, METH_O, NULL},                      \
        {"_decode_value", (PyCFunction)rc_client_decode_value, METH_O, NULL},                      \
    {                                                                                              \
        "execute_command", RC_FASTCALL_KW(rc_client_execute_command),                              \
            "execute_command(*args, idempotent=False): any command (no namespace applied); the "   \
            "raw reply. idempotent=True lets it be sent again on a fresh connection when the "     \
            "first turned out dead before any reply came."                                         \
    }

#endif
