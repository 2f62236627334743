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

size_t rc_format_ll(char *p, long long v)
{
    char tmp[24];
    size_t n = 0, i;
    unsigned long long u;

    if (v < 0) {
        *p++ = '-';
        u = 0ULL - (unsigned long long)v;
    } else {
        u = (unsigned long long)v;
    }
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    for (i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n + (v < 0);
}
