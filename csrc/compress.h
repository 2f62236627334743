/* Optional compression of stored values (zlib or zstd), self-identifying.
 *
 * A compressed value starts with a two-byte header: RC_COMPRESS_MAGIC (0xC1,
 * a byte that never starts UTF-8 text, hence never JSON) and a letter naming
 * the format: 'z' zlib, 's' zstd, 'n' none (a raw value that happens to start
 * with the magic byte, stored escaped). Plain and compressed values therefore
 * decode side by side, and turning compression on or off needs no migration.
 */
#ifndef RC_COMPRESS_H
#define RC_COMPRESS_H

#include <stddef.h>

#include "buf.h"

#define RC_COMPRESS_MAGIC  ((unsigned char)0xC1)
#define RC_COMPRESS_HEADER 2

typedef enum rc_compress_kind {
    RC_COMPRESS_NONE,
    RC_COMPRESS_ZLIB,
    RC_COMPRESS_ZSTD,
} rc_compress_kind;

/* Appends header + compressed p[0..n) to out. Returns 0, or -1 with a
 * message in err (no Python exception: callable without the GIL). */
int rc_compress(rc_compress_kind kind, int level, const char *p, size_t n, rc_buf *out, char *err,
                size_t errlen);

/* Non-zero when p[0..n) starts with a compression header. */
int rc_is_compressed(const char *p, size_t n);

/* Decodes a value that starts with a header into out (cleared first), never
 * producing more than max_size bytes: a decompression bomb is refused, not
 * expanded. Returns 0, or -1 with a message in err. */
int rc_decompress(const char *p, size_t n, size_t max_size, rc_buf *out, char *err, size_t errlen);

#endif
