/* RESP replies to Python objects: hiredis's redisReader with object
 * functions that build Python objects directly, so a reply is parsed once
 * and a stored value is decoded where it lies in the reader's buffer.
 *
 * Everything here needs the GIL.
 */
#ifndef RC_REPLY_H
#define RC_REPLY_H

#include <Python.h>
#include <hiredis/read.h>

#include "codec.h"
#include "state.h"

/* hiredis shifts its buffer after every reply; feeding it slices of this
 * size keeps that work proportional to the slice, not to the whole read. */
#define RC_READER_FEED_MAX 8192

typedef enum rc_reply_status {
    RC_REPLY_PENDING = 0,   /* more bytes are needed */
    RC_REPLY_READY = 1,     /* *reply holds a new reference */
    RC_REPLY_BAD_VALUE = 2, /* the reply was consumed but could not be built;
                               an exception is set; the stream is still in sync */
    RC_REPLY_BROKEN = -1,   /* protocol error; exception set; drop the connection */
} rc_reply_status;

/* Arrays announcing more elements than this start empty and grow as their
 * elements arrive: a hostile "*2147483647" costs what is actually sent, not
 * a 16 GiB allocation up front. */
#define RC_READER_PREALLOC_MAX 1024

/* The RESP types of the last complete reply (hiredis's REDIS_REPLY_* values),
 * which the Python objects alone cannot tell: a bulk string holding the JSON
 * text 5 and the integer reply :5 both decode to 5. */
typedef struct rc_reply_shape {
    int type;              /* of the reply itself */
    unsigned element_types; /* bit (1 << type) for each element of an array reply */
} rc_reply_shape;

typedef struct rc_reader {
    redisReader *reader;
    rc_state *state;
    /* The shape of the reply being read; complete when it is returned. */
    rc_reply_shape shape;
    /* The codec for bulk strings of the reply being read, NULL for plain
     * bytes; and the first exception raised while building it. */
    const rc_codec *codec;
    PyObject *error;
    /* Children of an array that could not be built, kept alive until the
     * reply is complete (see attach in reply.c). */
    PyObject *orphans;
} rc_reader;

/* Returns 0, or -1 with MemoryError set. */
int rc_reader_init(rc_reader *r, rc_state *st);
void rc_reader_free(rc_reader *r);

/* Returns 0, or -1 with an exception set. */
int rc_reader_feed(rc_reader *r, const char *p, size_t n);

/* Non-zero when bytes fed to the reader have not been consumed as replies. */
int rc_reader_has_unread(const rc_reader *r);

/* Takes the next complete reply, if any. Bulk strings become values through
 * codec (NULL: bytes); nil is state->missing with a codec, None without.
 * Status replies become str, error replies ResponseError instances, which
 * the caller raises when they stand for the whole reply. */
rc_reply_status rc_reader_next(rc_reader *r, const rc_codec *codec, PyObject **reply);

/* The shape of the reply rc_reader_next returned last (READY or BAD_VALUE). */
#define rc_reader_shape(r) (&(r)->shape)

#endif
