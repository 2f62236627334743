/* The cache's commands, encoded: validates user arguments (keys, values,
 * TTLs) and writes the RESP for them. Shared by the sync and async clients,
 * which differ only in how the bytes travel.
 *
 * Every function needs the GIL and returns 0, or -1 with an exception set
 * (TypeError / ValueError / SerializationError for bad input, MemoryError).
 * On failure the buffer may hold a partial command: callers remember its
 * length beforehand and cut it back, so nothing half-written is ever sent.
 */
#ifndef RC_CMD_H
#define RC_CMD_H

#include <Python.h>

#include "buf.h"
#include "codec.h"
#include "state.h"

/* How a client names keys and stores values. */
typedef struct rc_keyspace {
    char *prefix;             /* "namespace:" or empty; PyMem_Raw, owned */
    size_t prefix_len;
    long long default_ttl_ms; /* -1: keys do not expire by default */
    rc_codec codec;
    rc_state *state;
} rc_keyspace;

/* Fills ks from the constructor arguments. Returns 0 or -1. */
int rc_keyspace_init(rc_keyspace *ks, PyObject *namespace_, PyObject *default_ttl,
                     PyObject *serializer, rc_state *st);
void rc_keyspace_clear(rc_keyspace *ks);

/* Converts a user TTL (seconds as int or float, or a timedelta) to
 * milliseconds; None gives the default (-1: none). Zero, negative, NaN and
 * non-numbers are refused. */
int rc_ttl_ms(const rc_keyspace *ks, PyObject *ttl, long long *ms);

/* NAME key — GET, UNLINK, EXISTS, TTL. */
int rc_cmd_key(const rc_keyspace *ks, rc_buf *b, const char *name, PyObject *key);
/* SET key value [EX s | PX ms] */
int rc_cmd_set(const rc_keyspace *ks, rc_buf *b, PyObject *key, PyObject *value, PyObject *ttl);
/* PEXPIRE key ms (ttl must not be None) */
int rc_cmd_expire(const rc_keyspace *ks, rc_buf *b, PyObject *key, PyObject *ttl);
/* INCRBY key amount */
int rc_cmd_incrby(const rc_keyspace *ks, rc_buf *b, PyObject *key, PyObject *amount);
/* NAME key1 key2 ... from a list or tuple of keys — MGET, UNLINK. */
int rc_cmd_multikey(const rc_keyspace *ks, rc_buf *b, const char *name, PyObject *keys);
/* One SET per item of a mapping; *count receives the number of commands. */
int rc_cmd_set_many(const rc_keyspace *ks, rc_buf *b, PyObject *mapping, PyObject *ttl,
                    Py_ssize_t *count);
/* Non-zero for a mapping with no items (no round trip needed); never raises. */
int rc_is_empty_mapping(PyObject *mapping);

/* Any command: each argument bytes, str, int or float; no namespace. */
int rc_cmd_raw(rc_buf *b, PyObject *const *args, Py_ssize_t nargs);

#endif
