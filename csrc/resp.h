/* RESP command encoding: arrays of bulk strings written into an rc_buf.
 *
 * Nothing here knows about sockets or Python objects beyond plain bytes; the
 * functions return 0, or -1 when the buffer cannot grow (no exception set).
 */
#ifndef RC_RESP_H
#define RC_RESP_H

#include "buf.h"

/* "$" + up to 10 digits + CRLF: enough for any bulk length Redis accepts. */
#define RC_RESP_BULK_HEADER_MAX 13

int rc_resp_array(rc_buf *b, size_t nargs);
int rc_resp_bulk(rc_buf *b, const char *p, size_t n);
int rc_resp_bulk2(rc_buf *b, const char *p1, size_t n1, const char *p2, size_t n2);
int rc_resp_bulk_ll(rc_buf *b, long long v);

/* A bulk string whose length is known only after its content is written
 * (a value serialized straight into the buffer): rc_resp_bulk_open reserves
 * room for the header and returns the offset to pass to rc_resp_bulk_close,
 * which writes the header and closes the string. */
int rc_resp_bulk_open(rc_buf *b, size_t *mark);
int rc_resp_bulk_close(rc_buf *b, size_t mark);

#endif
