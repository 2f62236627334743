/* A growable byte buffer for outgoing commands and scratch space.
 *
 * Memory comes from PyMem_Raw*, so a buffer may be grown, written and freed
 * without holding the GIL. A buffer owns its memory; rc_buf_free releases it.
 */
#ifndef RC_BUF_H
#define RC_BUF_H

#include <stddef.h>
#include <string.h>

/* Buffers shrink back to this size after a large command went out, so one
 * 10 MB value does not pin 10 MB per connection for its lifetime. */
#define RC_BUF_KEEP 65536

typedef struct rc_buf {
    char *data;
    size_t len;
    size_t cap;
} rc_buf;

void rc_buf_init(rc_buf *b);
void rc_buf_free(rc_buf *b);

/* Make room for at least `extra` more bytes. Returns 0, or -1 when out of
 * memory (no Python exception is set: the caller may not hold the GIL). */
int rc_buf_grow(rc_buf *b, size_t extra);

/* Empty the buffer, giving back memory above RC_BUF_KEEP. */
void rc_buf_reset(rc_buf *b);

static inline int rc_buf_reserve(rc_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    return rc_buf_grow(b, extra);
}

static inline int rc_buf_append(rc_buf *b, const void *p, size_t n)
{
    if (rc_buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static inline int rc_buf_putc(rc_buf *b, char c)
{
    if (rc_buf_reserve(b, 1) < 0)
        return -1;
    b->data[b->len++] = c;
    return 0;
}

/* Write the decimal form of v at p (room for 20 characters needed); returns
 * the number of characters written. */
size_t rc_format_ll(char *p, long long v);

/* "00" "01" ... "99": numbers are written two digits per division. */
extern const char rc_digit_pairs[201];

/* As rc_format_ll for an unsigned value; inline, as the JSON encoder writes
 * every int through it. */
static inline size_t rc_format_ull(char *p, unsigned long long u)
{
    size_t n = 1;
    unsigned long long rest = u;
    char *q;

    while (rest >= 10000) {
        rest /= 10000;
        n += 4;
    }
    n += (rest >= 10) + (rest >= 100) + (rest >= 1000);
    q = p + n;
    while (u >= 100) {
        q -= 2;
        memcpy(q, rc_digit_pairs + (u % 100) * 2, 2);
        u /= 100;
    }
    if (u >= 10)
        memcpy(q - 2, rc_digit_pairs + u * 2, 2);
    else
        q[-1] = (char)('0' + u);
    return n;
}

static inline size_t rc_format_ll_inline(char *p, long long v)
{
    if (v >= 0)
        return rc_format_ull(p, (unsigned long long)v);
    *p = '-';
    return 1 + rc_format_ull(p + 1, 0ULL - (unsigned long long)v);
}

#endif
