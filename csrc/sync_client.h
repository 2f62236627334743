/* SyncClient: the blocking cache client, a heap type that the Python class
 * SyncRedisCache subclasses. Its methods (client.c) encode a command (cmd.c),
 * borrow a connection from the pool (pool.c), send, and read the reply (conn.c). */
#ifndef RC_SYNC_CLIENT_H
#define RC_SYNC_CLIENT_H

#include <Python.h>

extern PyType_Spec rc_sync_client_spec;

#endif
