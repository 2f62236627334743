/* A growable byte buffer for outgoing commands and scratch space.
 *
 * Memory comes from PyMem_Raw*, so a buffer may be grown, written and freed
 * without holding the GIL. A buffer owns its memory; rc_buf_free releases it.
 */
#ifndef RC_BUF_H
#define RC_BUF_H

#include <stddef.h>
#include <stdint.h>
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

/* Overwrites everything the buffer holds and held (up to its capacity) with
 * zeros, in a way the compiler cannot drop: for buffers that carried a
 * password. Empties it. */
void rc_buf_wipe(rc_buf *b);

static inline int rc_buf_reserve(rc_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    return rc_buf_grow(b, extra);
}

static inline int rc_buf_append(rc_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0; /* data and p may both be NULL: memcpy must not see them */
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


/* "00" "01" ... "99": numbers are written two digits per division. */
extern const char rc_digit_pairs[201];

extern const unsigned long long rc_pow10_u64[20];

/* How many decimal digits u has: log10 estimated from its bit length
 * (1233 / 4096 ~ log10(2)), then corrected by one comparison; u | 1 makes
 * 0 one digit and moves no other value across a power of ten. */
static inline size_t rc_decimal_digits(unsigned long long u)
{
    int bits = 64 - __builtin_clzll(u | 1);
    int guess = (bits * 1233) >> 12;

    return (size_t)guess + ((u | 1) >= rc_pow10_u64[guess]);
}

/* Writes n < 10^8 as exactly 8 digits. On little-endian machines all eight
 * are computed side by side in one 64-bit word (split into 4-digit halves,
 * each into 2-digit pairs, each into digits, by multiplying with scaled
 * reciprocals exact in these ranges: checked for every n below 10^8) and
 * stored at once; elsewhere two digits at a time from the table. */
static inline void rc_format_8_digits(char *p, uint32_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t halves = (uint64_t)(n / 10000) | (uint64_t)(n % 10000) << 32;
    uint64_t high_pairs = ((halves * 10486) >> 20) & 0x0000007F0000007FULL; /* / 100 */
    uint64_t pairs = high_pairs | (halves - high_pairs * 100) << 16;
    uint64_t tens = ((pairs * 103) >> 10) & 0x000F000F000F000FULL; /* / 10 */
    uint64_t digits = (tens | (pairs - tens * 10) << 8) + 0x3030303030303030ULL;

    memcpy(p, &digits, 8);
#else
    uint32_t hi = n / 10000, lo = n % 10000;

    memcpy(p, rc_digit_pairs + 2 * (hi / 100), 2);
    memcpy(p + 2, rc_digit_pairs + 2 * (hi % 100), 2);
    memcpy(p + 4, rc_digit_pairs + 2 * (lo / 100), 2);
    memcpy(p + 6, rc_digit_pairs + 2 * (lo % 100), 2);
#endif
}

static inline size_t rc_format_u32(char *p, uint32_t u)
{
    size_t n = rc_decimal_digits(u);
    char *q = p + n;

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

/* n < 10^8: eight digits take the parallel path, fewer the short loop. */
static inline size_t rc_format_below_1e8(char *p, uint32_t n)
{
    if (n >= 10000000) {
        rc_format_8_digits(p, n);
        return 8;
    }
    return rc_format_u32(p, n);
}

/* Writes the decimal form of u at p (room for 20 characters needed) and
 * returns its length; inline, as the JSON encoder writes every int and float
 * through it. Long numbers go in 8-digit pieces of
 * 32-bit arithmetic rather than a chain of 64-bit divisions. */
static inline size_t rc_format_ull(char *p, unsigned long long u)
{
    unsigned long long high;
    size_t n;

    if (u < 100000000ULL)
        return rc_format_below_1e8(p, (uint32_t)u);
    high = u / 100000000ULL;
    if (high < 100000000ULL) {
        n = rc_format_below_1e8(p, (uint32_t)high);
    } else {
        n = rc_format_u32(p, (uint32_t)(high / 100000000ULL)); /* at most 4 digits */
        rc_format_8_digits(p + n, (uint32_t)(high % 100000000ULL));
        n += 8;
    }
    rc_format_8_digits(p + n, (uint32_t)(u % 100000000ULL));
    return n + 8;
}

/* The same for a signed value (room for 20 characters needed). */
static inline size_t rc_format_ll(char *p, long long v)
{
    if (v >= 0)
        return rc_format_ull(p, (unsigned long long)v);
    *p = '-';
    return 1 + rc_format_ull(p + 1, 0ULL - (unsigned long long)v);
}

#endif
