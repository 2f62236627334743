/* RESP command encoding; see resp.h. */
#include "resp.h"

static int put_header(rc_buf *b, char kind, long long n)
{
    char *p;

    if (rc_buf_reserve(b, 24) < 0)
        return -1;
    p = b->data + b->len;
    *p++ = kind;
    p += rc_format_ll(p, n);
    *p++ = '\r';
    *p++ = '\n';
    b->len = (size_t)(p - b->data);
    return 0;
}

int rc_resp_array(rc_buf *b, size_t nargs)
{
    return put_header(b, '*', (long long)nargs);
}

int rc_resp_bulk(rc_buf *b, const char *p, size_t n)
{
    return rc_resp_bulk2(b, p, n, NULL, 0);
}

int rc_resp_bulk2(rc_buf *b, const char *p1, size_t n1, const char *p2, size_t n2)
{
    if (put_header(b, '$', (long long)(n1 + n2)) < 0 || rc_buf_reserve(b, n1 + n2 + 2) < 0)
        return -1;
    if (n1)
        memcpy(b->data + b->len, p1, n1);
    if (n2)
        memcpy(b->data + b->len + n1, p2, n2);
    b->len += n1 + n2;
    b->data[b->len++] = '\r';
    b->data[b->len++] = '\n';
    return 0;
}

int rc_resp_bulk_ll(rc_buf *b, long long v)
{
    char tmp[24];
    return rc_resp_bulk(b, tmp, rc_format_ll(tmp, v));
}

int rc_resp_bulk_open(rc_buf *b, size_t *mark)
{
    if (rc_buf_reserve(b, RC_RESP_BULK_HEADER_MAX) < 0)
        return -1;
    *mark = b->len;
    b->len += RC_RESP_BULK_HEADER_MAX;
    return 0;
}

int rc_resp_bulk_close(rc_buf *b, size_t mark)
{
    char header[RC_RESP_BULK_HEADER_MAX + 12];
    size_t body = mark + RC_RESP_BULK_HEADER_MAX;
    size_t n = b->len - body, hlen;

    /* Redis refuses zero-padded lengths, so the body moves back to sit right
     * after the real header: one memmove, no second copy of the value. */
    header[0] = '$';
    hlen = 1 + rc_format_ll(header + 1, (long long)n);
    header[hlen++] = '\r';
    header[hlen++] = '\n';
    if (hlen > RC_RESP_BULK_HEADER_MAX)
        return -1;
    memcpy(b->data + mark, header, hlen);
    memmove(b->data + mark + hlen, b->data + body, n);
    b->len = mark + hlen + n;
    return rc_buf_append(b, "\r\n", 2);
}
