/* Redis Cluster key slots: which of the 16384 slots a key lives in. */
#ifndef RC_SLOTS_H
#define RC_SLOTS_H

#include <stddef.h>

#define RC_CLUSTER_SLOTS 16384

/* The slot of the key `prefix` + `key` (the cache's namespace, then the
 * user's key), as CLUSTER KEYSLOT computes it for the whole key: only the
 * part between the first '{' and the first '}' after it is hashed, when
 * that part is not empty. */
int rc_key_slot(const char *prefix, size_t prefix_len, const char *key, size_t key_len);

#endif
