/* AsyncClient: the async cache client's C core, a heap type that the Python
 * class RedisCache subclasses. Each method (client.c) encodes its command
 * into a multiplexed connection (mux.c) and returns the asyncio.Future of the
 * result; connecting and reconnecting are left to Python (cache.py), which
 * is asked for a connection through the _open_multiplexer() hook. */
#ifndef RC_ASYNC_CLIENT_H
#define RC_ASYNC_CLIENT_H

#include <Python.h>

extern PyType_Spec rc_async_client_spec;

#endif
