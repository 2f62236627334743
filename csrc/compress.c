/* Value compression; see compress.h. */
#include "compress.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

/* Output grows by at most this much per step while inflating, so the size
 * cap is checked long before memory is at risk. */
#define INFLATE_STEP 65536

static int fail(char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "%s", what);
    return -1;
}

static int put_header(rc_buf *out, char letter)
{
    char header[RC_COMPRESS_HEADER] = {(char)RC_COMPRESS_MAGIC, letter};
    return rc_buf_append(out, header, sizeof(header));
}

static int deflate_into(int level, const char *p, size_t n, rc_buf *out, char *err, size_t errlen)
{
    z_stream zs;
    uLong bound;
    int rc;

    memset(&zs, 0, sizeof(zs));
    if (deflateInit(&zs, level < 0 ? Z_DEFAULT_COMPRESSION : level) != Z_OK)
        return fail(err, errlen, "zlib: cannot start compressing");
    bound = deflateBound(&zs, (uLong)n);
    if (rc_buf_reserve(out, bound) < 0) {
        deflateEnd(&zs);
        return fail(err, errlen, "out of memory");
    }
    zs.next_in = (Bytef *)p;
    zs.avail_in = (uInt)n;
    zs.next_out = (Bytef *)(out->data + out->len);
    zs.avail_out = (uInt)bound;
    rc = deflate(&zs, Z_FINISH);
    if (rc == Z_STREAM_END)
        out->len += zs.total_out;
    deflateEnd(&zs);
    return rc == Z_STREAM_END ? 0 : fail(err, errlen, "zlib: compression failed");
}

static int zstd_into(int level, const char *p, size_t n, rc_buf *out, char *err, size_t errlen)
{
    size_t bound = ZSTD_compressBound(n), written;

    if (rc_buf_reserve(out, bound) < 0)
        return fail(err, errlen, "out of memory");
    written = ZSTD_compress(out->data + out->len, bound, p, n, level < 0 ? 3 : level);
    if (ZSTD_isError(written))
        return fail(err, errlen, ZSTD_getErrorName(written));
    out->len += written;
    return 0;
}

int rc_compress(rc_compress_kind kind, int level, const char *p, size_t n, rc_buf *out, char *err,
                size_t errlen)
{
    if (n > (size_t)UINT32_MAX)
        return fail(err, errlen, "value too large to compress");
    switch (kind) {
    case RC_COMPRESS_ZLIB:
        if (put_header(out, 'z') < 0)
            return fail(err, errlen, "out of memory");
        return deflate_into(level, p, n, out, err, errlen);
    case RC_COMPRESS_ZSTD:
        if (put_header(out, 's') < 0)
            return fail(err, errlen, "out of memory");
        return zstd_into(level, p, n, out, err, errlen);
    case RC_COMPRESS_NONE:
        break;
    }
    return fail(err, errlen, "no compression chosen");
}

int rc_is_compressed(const char *p, size_t n)
{
    return n >= RC_COMPRESS_HEADER && (unsigned char)p[0] == RC_COMPRESS_MAGIC;
}

static int inflate_into(const char *p, size_t n, size_t max_size, rc_buf *out, char *err,
                        size_t errlen)
{
    z_stream zs;
    int rc = Z_OK;

    memset(&zs, 0, sizeof(zs));
    if (inflateInit(&zs) != Z_OK)
        return fail(err, errlen, "zlib: cannot start decompressing");
    zs.next_in = (Bytef *)p;
    zs.avail_in = (uInt)n;
    while (rc != Z_STREAM_END) {
        size_t room;
        if (out->len >= max_size) {
            inflateEnd(&zs);
            return fail(err, errlen, "decompressed value exceeds max_decompressed_size");
        }
        room = max_size - out->len < INFLATE_STEP ? max_size - out->len : INFLATE_STEP;
        if (rc_buf_reserve(out, room) < 0) {
            inflateEnd(&zs);
            return fail(err, errlen, "out of memory");
        }
        zs.next_out = (Bytef *)(out->data + out->len);
        zs.avail_out = (uInt)room;
        rc = inflate(&zs, Z_NO_FLUSH);
        out->len += room - zs.avail_out;
        if (rc != Z_OK && rc != Z_STREAM_END) {
            inflateEnd(&zs);
            return fail(err, errlen, "zlib: corrupt compressed value");
        }
        if (rc == Z_OK && zs.avail_in == 0 && zs.avail_out != 0) {
            inflateEnd(&zs);
            return fail(err, errlen, "zlib: truncated compressed value");
        }
    }
    inflateEnd(&zs);
    return zs.avail_in == 0 ? 0 : fail(err, errlen, "zlib: trailing data after the value");
}

static int unzstd_into(const char *p, size_t n, size_t max_size, rc_buf *out, char *err,
                       size_t errlen)
{
    unsigned long long size = ZSTD_getFrameContentSize(p, n);
    size_t got;

    if (size == ZSTD_CONTENTSIZE_ERROR)
        return fail(err, errlen, "zstd: corrupt compressed value");
    /* Our own frames always record their size; a frame that does not is
     * not ours, and expanding it blindly is how bombs work. */
    if (size == ZSTD_CONTENTSIZE_UNKNOWN)
        return fail(err, errlen, "zstd: frame without a content size");
    if (size > max_size)
        return fail(err, errlen, "decompressed value exceeds max_decompressed_size");
    if (rc_buf_reserve(out, (size_t)size + 1) < 0)
        return fail(err, errlen, "out of memory");
    got = ZSTD_decompress(out->data, (size_t)size, p, n);
    if (ZSTD_isError(got) || got != size)
        return fail(err, errlen, "zstd: corrupt compressed value");
    out->len = got;
    return 0;
}

int rc_decompress(const char *p, size_t n, size_t max_size, rc_buf *out, char *err, size_t errlen)
{
    out->len = 0;
    if (!rc_is_compressed(p, n))
        return fail(err, errlen, "not a compressed value");
    switch (p[1]) {
    case 'z':
        return inflate_into(p + RC_COMPRESS_HEADER, n - RC_COMPRESS_HEADER, max_size, out, err,
                            errlen);
    case 's':
        return unzstd_into(p + RC_COMPRESS_HEADER, n - RC_COMPRESS_HEADER, max_size, out, err,
                           errlen);
    case 'n':
        return rc_buf_append(out, p + RC_COMPRESS_HEADER, n - RC_COMPRESS_HEADER) < 0
                   ? fail(err, errlen, "out of memory")
                   : 0;
    default:
        return fail(err, errlen, "unknown compression format");
    }
}
