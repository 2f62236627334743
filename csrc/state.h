/* Per-module state: the types and exception classes every file needs.
 *
 * The module keeps no globals; each object reaches this through its type
 * (PyType_GetModuleState) and caches the pointer for its lifetime.
 */
#ifndef RC_STATE_H
#define RC_STATE_H

#include <Python.h>

#include <stdint.h>

/* One slot of the JSON decoder's key cache: a key str and a fingerprint of
 * its bytes (length and two words) that json_decode.c compares without
 * touching the str. str is NULL in an empty slot. */
typedef struct rc_key_entry {
    PyObject *str;
    uint64_t head, tail;
    size_t len;
} rc_key_entry;

/* Slots in the key cache; a power of two. */
#define RC_KEY_CACHE_SIZE 512

typedef struct rc_state {
    PyTypeObject *SyncClientType;
    PyTypeObject *AsyncClientType;
    PyTypeObject *MuxType;
    PyTypeObject *DedicatedType;
    /* The futures async commands return (future.c). */
    PyTypeObject *FutureType;
    PyObject *CancelledError;    /* asyncio's */
    PyObject *InvalidStateError; /* asyncio's */
    PyObject *context_kwnames;   /* ("context",), for call_soon */
    /* asyncio.BaseEventLoop: the loops whose reader callbacks may wake
     * tasks directly (see rc_mux's wake_directly). */
    PyObject *BaseEventLoop;
    PyObject *get_running_loop;
    /* The last running loop seen, and the thread's running-loop holder it
     * came with (see rc_running_loop). */
    PyObject *running_loop_key;
    PyObject *seen_holder;
    PyObject *seen_loop;
    unsigned long seen_generation;
    /* Interned method names used on every request. */
    PyObject *str_set_result;
    PyObject *str_set_exception;
    PyObject *str_call_soon;
    PyObject *str_cancel;
    /* The loop attributes loopwait.c reads. */
    PyObject *str__ready, *str__scheduled, *str__stopping, *str__debug, *str__when;
    PyObject *str__callback;
    /* Commands submitted by async clients so far (see mux_on_readable). */
    uint64_t commands_submitted;
    /* Futures completed by the read under way whose callbacks (tasks'
     * wake-ups) have not run yet: a ready queue the loop cannot see, so no
     * task may wait in place while it is not empty (see rc_future_wake). */
    Py_ssize_t wakes_pending;
    PyObject *ConnectionError;
    PyObject *AuthenticationError;
    PyObject *TimeoutError;
    PyObject *PoolTimeout;
    PyObject *ResponseError;
    PyObject *ProtocolError;
    PyObject *FailoverError;
    PyObject *PartialWriteError;
    PyObject *SerializationError;
    /* Raised and caught inside the module only (see RC_JSON_NO_HOOKS). */
    PyObject *HooksNeeded;
    PyObject *ConfigurationError;
    /* Stands for a nil reply where None is a legitimate value. */
    PyObject *missing;
    /* Classes the JSON encoder recognizes beyond the JSON types. */
    PyObject *EnumType;
    PyObject *UUIDType;
    PyObject *DecimalType;
    PyObject *dataclass_fields; /* dataclasses.fields */
    PyObject *str_isoformat;
    PyObject *str_model_dump;
    PyObject *str_dataclass_fields;
    PyObject *model_dump_kwnames; /* ("mode", "by_alias") */
    PyObject *model_dump_args[2]; /* "json", True */
    /* logging.getLogger("redis_cache"), once something was logged. */
    PyObject *logger;
    /* redis_cache._typed.convert, once a typed read asked for it. */
    PyObject *typed_convert;
    /* Recently decoded JSON object keys (see json_decode.c). */
    rc_key_entry key_cache[RC_KEY_CACHE_SIZE];
    /* Recently decoded short string values. */
    rc_key_entry str_cache[RC_KEY_CACHE_SIZE];
} rc_state;

/* Logs a warning through the "redis_cache" logger (Python's logging). GIL
 * held; never fails (a pending exception is kept, errors are dropped). */
void rc_log_warning(rc_state *st, const char *fmt, ...);

/* The running event loop (new reference), or NULL with RuntimeError. */
PyObject *rc_running_loop(rc_state *st);

/* The module's definition, for finding the state from a (sub)class. */
extern PyModuleDef rc_module_def;

/* The state of the module that defined type (or a base of it). NULL with an
 * exception set if none. */
rc_state *rc_state_of_type(PyTypeObject *type);

#endif
