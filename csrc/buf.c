/* Growable byte buffer; see buf.h. */
#include "buf.h"

#include <Python.h>

void rc_buf_init(rc_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void rc_buf_free(rc_buf *b)
{
    PyMem_RawFree(b->data);
    rc_buf_init(b);
}

int rc_buf_grow(rc_buf *b, size_t extra)
{
    size_t need, cap;
    char *data;

    if (extra > (size_t)PY_SSIZE_T_MAX - b->len)
        return -1;
    need = b->len + extra;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > (size_t)PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    data = PyMem_RawRealloc(b->data, cap);
    if (data == NULL)
        return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

void rc_buf_reset(rc_buf *b)
{
    b->len = 0;
    if (b->cap > RC_BUF_KEEP) {
        char *data = PyMem_RawRealloc(b->data, RC_BUF_KEEP);
        if (data != NULL) {
            b->data = data;
            b->cap = RC_BUF_KEEP;
        }
    }
}

void rc_buf_wipe(rc_buf *b)
{
    if (b->data != NULL) {
        /* Through a volatile pointer, so the stores are not optimized out
         * as dead before a free. */
        volatile char *p = b->data;
        size_t i;
        for (i = 0; i < b->cap; i++)
            p[i] = 0;
    }
    b->len = 0;
}

/* "00" "01" ... "99" (and the terminating NUL of the literal). */
const char rc_digit_pairs[201] =
    "00010203040506070809"
    "10111213141516171819"
    "20212223242526272829"
    "30313233343536373839"
    "40414243444546474849"
    "50515253545556575859"
    "60616263646566676869"
    "70717273747576777879"
    "80818283848586878889"
    "90919293949596979899";

const unsigned long long rc_pow10_u64[20] = {
    1ULL,
    10ULL,
    100ULL,
    1000ULL,
    10000ULL,
    100000ULL,
    1000000ULL,
    10000000ULL,
    100000000ULL,
    1000000000ULL,
    10000000000ULL,
    100000000000ULL,
    1000000000000ULL,
    10000000000000ULL,
    100000000000000ULL,
    1000000000000000ULL,
    10000000000000000ULL,
    100000000000000000ULL,
    1000000000000000000ULL,
    10000000000000000000ULL,
};
