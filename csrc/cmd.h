/* The cache's commands, encoded: validates user arguments (keys, values,
 * TTLs) and writes the RESP for them. Shared by the sync and async clients,
 * which differ only in how the bytes travel.
 *
 * Two phases. The rc_prepare_* / rc_ttl_ms functions may run Python code (a
 * custom serializer's dumps(), a timedelta subclass, a mapping's items()),
 * and that code may itself use the cache. So they run first, before the
 * caller picks a buffer; the rc_cmd_* writers that follow run no Python code,
 * so no other command can land in the middle of the one being written.
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

/* Keys longer than this (namespace included) are refused unless the cache
 * is given another max_key_size: far below what a server accepts
 * (proto-max-bulk-len), far above any key a cache should use. */
#define RC_DEFAULT_MAX_KEY_SIZE 65536

/* How a client names keys and stores values. */
typedef struct rc_keyspace {
    char *prefix; /* "namespace:" or empty; PyMem_Raw, owned */
    size_t prefix_len;
    long long default_ttl_ms; /* -1: keys do not expire by default */
    size_t max_key_size;      /* bytes, namespace included */
    rc_codec codec;
    rc_state *state;
} rc_keyspace;

/* Fills ks from the constructor arguments. Returns 0 or -1. */
int rc_keyspace_init(rc_keyspace *ks, PyObject *namespace_, PyObject *default_ttl,
                     PyObject *serializer, const rc_compress_options *compress,
                     Py_ssize_t max_key_size, rc_state *st);
void rc_keyspace_clear(rc_keyspace *ks);

/* Converts a user TTL (seconds as int or float, or a timedelta) to
 * milliseconds; None gives the default (-1: none). Zero, negative, NaN and
 * non-numbers are refused. */
int rc_ttl_ms(const rc_keyspace *ks, PyObject *ttl, long long *ms);
/* The same for expire(), where None is refused. */
int rc_expire_ms(const rc_keyspace *ks, PyObject *ttl, long long *ms);

/* Checks keys before anything is written: each a non-empty str or bytes
 * whose UTF-8 form exists (and is then cached in the str) and, with the
 * namespace, is at most max_key_size bytes. Returns 0, or -1 with TypeError
 * or ValueError set. */
int rc_check_keys(const rc_keyspace *ks, PyObject *const *keys, Py_ssize_t n);

/* The Redis Cluster slot of key with the namespace, the key checked as by
 * rc_check_keys. Returns 0..16383, or -1 with an exception set. */
int rc_key_slot_in(const rc_keyspace *ks, PyObject *key);

/* ASKING, alone: the prefix of a request sent after an ASK redirect. */
int rc_cmd_asking(rc_buf *b);

/* What rc_cmd_set takes as its value: a new reference, or NULL. */
PyObject *rc_prepare_value(const rc_keyspace *ks, PyObject *key, PyObject *value);
/* What rc_cmd_set_many takes: a snapshot of the batch that nobody else can
 * change (a copy of a dict, when nothing needs preparing, else a list of
 * (key, prepared value) pairs), its keys checked. New reference, or NULL. */
PyObject *rc_prepare_batch(const rc_keyspace *ks, PyObject *mapping);

/* NAME key — GET, UNLINK, EXISTS, TTL. */
int rc_cmd_key(const rc_keyspace *ks, rc_buf *b, const char *name, PyObject *key);
/* SET key value [EX s | PX ms]; ms < 0: no expiry. */
int rc_cmd_set(const rc_keyspace *ks, rc_buf *b, PyObject *key, PyObject *prepared, long long ms);
/* PEXPIRE key ms */
int rc_cmd_expire(const rc_keyspace *ks, rc_buf *b, PyObject *key, long long ms);
/* The amount of an incr(): an int that fits 64 bits. Returns 0 or -1. */
int rc_incr_amount(PyObject *amount, long long *v);
/* INCRBY key amount */
int rc_cmd_incrby(const rc_keyspace *ks, rc_buf *b, PyObject *key, long long amount);
/* NAME key1 key2 ... from a list or tuple of keys — MGET, UNLINK. */
int rc_cmd_multikey(const rc_keyspace *ks, rc_buf *b, const char *name, PyObject *keys);
/* One SET per item of a prepared batch, in its order. */
int rc_cmd_set_many(const rc_keyspace *ks, rc_buf *b, PyObject *batch, long long ms);
/* Non-zero for a mapping with no items (no round trip needed); never raises. */
int rc_is_empty_mapping(PyObject *mapping);

/* Any command: each argument bytes, str, int or float; no namespace. */
int rc_cmd_raw(rc_buf *b, PyObject *const *args, Py_ssize_t nargs);

#endif
