/* CRC16/XMODEM (polynomial 0x1021, initial value 0) modulo 16384: the hash
 * Redis Cluster uses to place keys. */
#include "slots.h"

#include <stdint.h>
#include <string.h>

static uint16_t crc_table[256];
static int crc_table_ready;

static void fill_crc_table(void)
{
    for (unsigned byte = 0; byte < 256; byte++) {
        uint16_t crc = (uint16_t)(byte << 8);
        for (int bit = 0; bit < 8; bit++)
            crc = (uint16_t)((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
        crc_table[byte] = crc;
    }
    crc_table_ready = 1;
}

static uint16_t crc16(uint16_t crc, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        crc = (uint16_t)((crc << 8) ^ crc_table[((crc >> 8) ^ (unsigned char)p[i]) & 0xff]);
    return crc;
}

/* The key is prefix + key without being copied: a '{' may sit in either
 * part, and the tag may span both. */
int rc_key_slot(const char *prefix, size_t prefix_len, const char *key, size_t key_len)
{
    size_t n = prefix_len + key_len, open = n, close = n, i;
    uint16_t crc = 0;

    if (!crc_table_ready)
        fill_crc_table(); /* idempotent; runs under the GIL */
#define AT(i) ((i) < prefix_len ? prefix[(i)] : key[(i) - prefix_len])
    for (i = 0; i < n; i++)
        if (AT(i) == '{') {
            open = i;
            break;
        }
    for (i = open + 1; i < n; i++)
        if (AT(i) == '}') {
            close = i;
            break;
        }
    if (open < n && close < n && close > open + 1) {
        /* hash only the tag, between the braces */
        size_t from = open + 1, to = close;
        if (from < prefix_len)
            crc = crc16(crc, prefix + from, (to < prefix_len ? to : prefix_len) - from);
        if (to > prefix_len) {
            size_t start = from > prefix_len ? from - prefix_len : 0;
            crc = crc16(crc, key + start, to - prefix_len - start);
        }
    } else {
        crc = crc16(crc, prefix, prefix_len);
        crc = crc16(crc, key, key_len);
    }
#undef AT
    return crc & (RC_CLUSTER_SLOTS - 1);
}
