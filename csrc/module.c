/* The redis_cache._core extension module: multi-phase init, module state,
 * and the link to the exception classes defined in redis_cache.errors. */
#include <Python.h>

#include <stdarg.h>
#include <hiredis/hiredis.h>

#include "slots.h"
#include "async_client.h"
#include "conn.h"
#include "future.h"
#include "json.h"
#include "dedicated.h"
#include "mux.h"
#include "state.h"
#include "sync_client.h"

static rc_state *get_state(PyObject *module)
{
    return (rc_state *)PyModule_GetState(module);
}

#if PY_VERSION_HEX < 0x030B0000
/* CPython 3.10 has no PyType_GetModuleByDef: the same search, by hand. The
 * first class in type's MRO that a module with this definition made (a heap
 * type whose ht_module is that module) gives the module; borrowed
 * reference, or NULL with TypeError, as 3.11's function does. */
static PyObject *module_by_def(PyTypeObject *type, PyModuleDef *def)
{
    PyObject *mro = type->tp_mro;

    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        PyObject *module;

        if (!PyType_HasFeature(base, Py_TPFLAGS_HEAPTYPE))
            continue;
        module = ((PyHeapTypeObject *)base)->ht_module;
        if (module != NULL && PyModule_Check(module) && PyModule_GetDef(module) == def)
            return module;
    }
    PyErr_Format(PyExc_TypeError, "no superclass of '%s' comes from the module %s",
                 type->tp_name, def->m_name);
    return NULL;
}
#else
#define module_by_def PyType_GetModuleByDef
#endif

rc_state *rc_state_of_type(PyTypeObject *type)
{
    PyObject *module = module_by_def(type, &rc_module_def);
    return module == NULL ? NULL : get_state(module);
}

/* Looks up one class from redis_cache.errors; new reference or NULL. */
static PyObject *error_class(PyObject *errors, const char *name)
{
    PyObject *cls = PyObject_GetAttrString(errors, name);
    if (cls != NULL && !PyExceptionClass_Check(cls)) {
        PyErr_Format(PyExc_ImportError, "redis_cache.errors.%s is not an exception class", name);
        Py_CLEAR(cls);
    }
    return cls;
}

/* asyncio pieces the engine calls on every request, looked up once. */
static int load_asyncio(rc_state *st)
{
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    int rc = -1;

    if (asyncio == NULL)
        return -1;
    st->CancelledError = PyObject_GetAttrString(asyncio, "CancelledError");
    st->InvalidStateError = PyObject_GetAttrString(asyncio, "InvalidStateError");
    st->get_running_loop = PyObject_GetAttrString(asyncio, "get_running_loop");
    st->BaseEventLoop = PyObject_GetAttrString(asyncio, "BaseEventLoop");
    st->context_kwnames = Py_BuildValue("(s)", "context");
    st->str_set_result = PyUnicode_InternFromString("set_result");
    st->str_set_exception = PyUnicode_InternFromString("set_exception");
    st->str_call_soon = PyUnicode_InternFromString("call_soon");
    st->str_cancel = PyUnicode_InternFromString("cancel");
    st->running_loop_key = PyUnicode_InternFromString("__asyncio_running_event_loop__");
    st->str__ready = PyUnicode_InternFromString("_ready");
    st->str__scheduled = PyUnicode_InternFromString("_scheduled");
    st->str__stopping = PyUnicode_InternFromString("_stopping");
    st->str__debug = PyUnicode_InternFromString("_debug");
    st->str__when = PyUnicode_InternFromString("_when");
    st->str__callback = PyUnicode_InternFromString("_callback");
    if (st->CancelledError && st->InvalidStateError && st->get_running_loop && st->BaseEventLoop &&
        st->context_kwnames && st->str_set_result &&
        st->str_set_exception && st->str_call_soon && st->str_cancel && st->running_loop_key &&
        st->str__ready && st->str__scheduled && st->str__stopping && st->str__debug && st->str__when &&
        st->str__callback)
        rc = 0;
    Py_DECREF(asyncio);
    return rc;
}

PyObject *rc_running_loop(rc_state *st)
{
    PyObject *loop;
#if PY_VERSION_HEX < 0x030C0000
    /* CPython 3.11's get_running_loop() makes a getpid() syscall on every
     * call. The thread's running-loop holder is a new object each time a loop
     * starts or stops running, so while it is the one seen last time, so is
     * the loop; a fork is caught by the fork generation. */
    PyObject *dict = PyThreadState_GetDict();
    PyObject *holder = dict == NULL ? NULL : PyDict_GetItemWithError(dict, st->running_loop_key);

    if (holder != NULL && holder == st->seen_holder && st->seen_loop != NULL &&
        st->seen_generation == rc_fork_generation)
        return Py_NewRef(st->seen_loop);
    if (PyErr_Occurred())
        return NULL;
#endif
    loop = PyObject_CallNoArgs(st->get_running_loop);
    if (loop == NULL)
        return NULL;
#if PY_VERSION_HEX < 0x030C0000
    if (holder != NULL) {
        Py_XSETREF(st->seen_holder, Py_NewRef(holder));
        Py_XSETREF(st->seen_loop, Py_NewRef(loop));
        st->seen_generation = rc_fork_generation;
    }
#endif
    return loop;
}

void rc_log_warning(rc_state *st, const char *fmt, ...)
{
    PyObject *type, *value, *tb, *message = NULL, *r = NULL;
    va_list va;

    PyErr_Fetch(&type, &value, &tb);
    if (st->logger == NULL) {
        PyObject *logging = PyImport_ImportModule("logging");
        if (logging != NULL) {
            st->logger = PyObject_CallMethod(logging, "getLogger", "s", "redis_cache");
            Py_DECREF(logging);
        }
    }
    va_start(va, fmt);
    message = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    if (st->logger != NULL && message != NULL)
        r = PyObject_CallMethod(st->logger, "warning", "sO", "%s", message);
    Py_XDECREF(r);
    Py_XDECREF(message);
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
}

static int add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **slot)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);
    if (*slot == NULL)
        return -1;
    return PyModule_AddType(module, *slot);
}

static int module_exec(PyObject *module)
{
    rc_state *st = get_state(module);
    PyObject *errors = NULL;
    int rc = -1;

    if (rc_conn_install_fork_handler() < 0) {
        PyErr_SetString(PyExc_ImportError, "cannot install the fork handler");
        goto out;
    }
    errors = PyImport_ImportModule("redis_cache.errors");
    if (errors == NULL)
        goto out;
    if ((st->ConnectionError = error_class(errors, "ConnectionError")) == NULL ||
        (st->AuthenticationError = error_class(errors, "AuthenticationError")) == NULL ||
        (st->TimeoutError = error_class(errors, "TimeoutError")) == NULL ||
        (st->PoolTimeout = error_class(errors, "PoolTimeout")) == NULL ||
        (st->ResponseError = error_class(errors, "ResponseError")) == NULL ||
        (st->ProtocolError = error_class(errors, "ProtocolError")) == NULL ||
        (st->FailoverError = error_class(errors, "FailoverError")) == NULL ||
        (st->PartialWriteError = error_class(errors, "PartialWriteError")) == NULL ||
        (st->SerializationError = error_class(errors, "SerializationError")) == NULL ||
        (st->ConfigurationError = error_class(errors, "ConfigurationError")) == NULL)
        goto out;
    st->HooksNeeded = PyErr_NewException("redis_cache._core._HooksNeeded", NULL, NULL);
    if (st->HooksNeeded == NULL)
        goto out;
    st->missing = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (st->missing == NULL || PyModule_AddObjectRef(module, "MISSING", st->missing) < 0)
        goto out;
    if (load_asyncio(st) < 0 || rc_json_init_types(st) < 0 || rc_json_check_dict_layout() < 0 ||
        add_type(module, &rc_sync_client_spec, &st->SyncClientType) < 0 ||
        add_type(module, &rc_async_client_spec, &st->AsyncClientType) < 0 ||
        add_type(module, &rc_mux_spec, &st->MuxType) < 0 ||
        add_type(module, &rc_dedicated_spec, &st->DedicatedType) < 0 ||
        add_type(module, &rc_future_spec, &st->FutureType) < 0)
        goto out;
    if (PyModule_AddIntConstant(module, "JSON_DICT_WALK_DIRECT", rc_json_dict_walk_direct()) < 0 ||
        PyModule_AddIntConstant(module, "HIREDIS_MAJOR", HIREDIS_MAJOR) < 0 ||
        PyModule_AddIntConstant(module, "HIREDIS_MINOR", HIREDIS_MINOR) < 0)
        goto out;
    rc = 0;
out:
    Py_XDECREF(errors);
    return rc;
}

/* json_dumps(obj) -> bytes: the cache's JSON encoder, for direct use. */
static PyObject *json_dumps(PyObject *module, PyObject *obj)
{
    return rc_json_dumps(obj, get_state(module), 0);
}

/* json_loads(data) -> object: the cache's strict JSON decoder; data is
 * bytes-like (UTF-8) or str. */
static PyObject *json_loads(PyObject *module, PyObject *data)
{
    Py_buffer view;
    PyObject *result;
    Py_ssize_t n;
    const char *p;

    if (PyUnicode_Check(data)) {
        p = PyUnicode_AsUTF8AndSize(data, &n);
        if (p == NULL) {
            PyErr_Clear();
            PyErr_SetString(get_state(module)->SerializationError,
                            "invalid JSON: the str holds a lone surrogate, which has no UTF-8 "
                            "form; decode it from the original bytes instead");
            return NULL;
        }
        return rc_json_decode(p, (size_t)n, get_state(module));
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_CONTIG_RO) < 0)
        return NULL;
    result = rc_json_decode(view.buf, (size_t)view.len, get_state(module));
    PyBuffer_Release(&view);
    return result;
}

/* key_slot(key) -> int: the Redis Cluster slot of a str or bytes key. */
static PyObject *key_slot(PyObject *module, PyObject *key)
{
    const char *p;
    Py_ssize_t n;

    (void)module;
    if (PyUnicode_Check(key)) {
        p = PyUnicode_AsUTF8AndSize(key, &n);
        if (p == NULL)
            return NULL;
    } else if (PyBytes_Check(key)) {
        p = PyBytes_AS_STRING(key);
        n = PyBytes_GET_SIZE(key);
    } else {
        PyErr_Format(PyExc_TypeError, "key_slot() takes a str or bytes key, not %.100s",
                     Py_TYPE(key)->tp_name);
        return NULL;
    }
    return PyLong_FromLong(rc_key_slot("", 0, p, (size_t)n));
}

static PyMethodDef module_methods[] = {
    {"json_dumps", json_dumps, METH_O, "json_dumps(obj) -> bytes: encode obj as compact JSON."},
    {"json_loads", json_loads, METH_O, "json_loads(data) -> object: decode strict JSON."},
    {"key_slot", key_slot, METH_O,
     "key_slot(key) -> int: the Redis Cluster hash slot of key (CLUSTER KEYSLOT)."},
    {NULL, NULL, 0, NULL},
};

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    rc_state *st = get_state(module);
    Py_VISIT(st->SyncClientType);
    Py_VISIT(st->AsyncClientType);
    Py_VISIT(st->MuxType);
    Py_VISIT(st->DedicatedType);
    Py_VISIT(st->FutureType);
    Py_VISIT(st->CancelledError);
    Py_VISIT(st->InvalidStateError);
    Py_VISIT(st->context_kwnames);
    Py_VISIT(st->BaseEventLoop);
    Py_VISIT(st->get_running_loop);
    Py_VISIT(st->seen_loop);
    Py_VISIT(st->seen_holder);
    Py_VISIT(st->running_loop_key);
    Py_VISIT(st->str_set_result);
    Py_VISIT(st->str_set_exception);
    Py_VISIT(st->str_call_soon);
    Py_VISIT(st->str_cancel);
    Py_VISIT(st->str__ready);
    Py_VISIT(st->str__scheduled);
    Py_VISIT(st->str__stopping);
    Py_VISIT(st->str__debug);
    Py_VISIT(st->str__when);
    Py_VISIT(st->str__callback);
    Py_VISIT(st->ConnectionError);
    Py_VISIT(st->AuthenticationError);
    Py_VISIT(st->TimeoutError);
    Py_VISIT(st->PoolTimeout);
    Py_VISIT(st->ResponseError);
    Py_VISIT(st->ProtocolError);
    Py_VISIT(st->FailoverError);
    Py_VISIT(st->PartialWriteError);
    Py_VISIT(st->SerializationError);
    Py_VISIT(st->HooksNeeded);
    Py_VISIT(st->ConfigurationError);
    Py_VISIT(st->missing);
    Py_VISIT(st->typed_convert);
    Py_VISIT(st->logger);
    Py_VISIT(st->EnumType);
    Py_VISIT(st->UUIDType);
    Py_VISIT(st->DecimalType);
    Py_VISIT(st->dataclass_fields);
    Py_VISIT(st->str_isoformat);
    Py_VISIT(st->str_model_dump);
    Py_VISIT(st->str_dataclass_fields);
    Py_VISIT(st->model_dump_kwnames);
    Py_VISIT(st->model_dump_args[0]);
    Py_VISIT(st->model_dump_args[1]);
    return 0;
}

static int module_clear(PyObject *module)
{
    rc_state *st = get_state(module);
    Py_CLEAR(st->SyncClientType);
    Py_CLEAR(st->AsyncClientType);
    Py_CLEAR(st->MuxType);
    Py_CLEAR(st->DedicatedType);
    Py_CLEAR(st->FutureType);
    Py_CLEAR(st->CancelledError);
    Py_CLEAR(st->InvalidStateError);
    Py_CLEAR(st->context_kwnames);
    Py_CLEAR(st->BaseEventLoop);
    Py_CLEAR(st->get_running_loop);
    Py_CLEAR(st->seen_loop);
    Py_CLEAR(st->seen_holder);
    Py_CLEAR(st->running_loop_key);
    Py_CLEAR(st->str_set_result);
    Py_CLEAR(st->str_set_exception);
    Py_CLEAR(st->str_call_soon);
    Py_CLEAR(st->str_cancel);
    Py_CLEAR(st->str__ready);
    Py_CLEAR(st->str__scheduled);
    Py_CLEAR(st->str__stopping);
    Py_CLEAR(st->str__debug);
    Py_CLEAR(st->str__when);
    Py_CLEAR(st->str__callback);
    Py_CLEAR(st->ConnectionError);
    Py_CLEAR(st->AuthenticationError);
    Py_CLEAR(st->TimeoutError);
    Py_CLEAR(st->PoolTimeout);
    Py_CLEAR(st->ResponseError);
    Py_CLEAR(st->ProtocolError);
    Py_CLEAR(st->FailoverError);
    Py_CLEAR(st->PartialWriteError);
    Py_CLEAR(st->SerializationError);
    Py_CLEAR(st->HooksNeeded);
    Py_CLEAR(st->ConfigurationError);
    Py_CLEAR(st->missing);
    Py_CLEAR(st->typed_convert);
    Py_CLEAR(st->logger);
    Py_CLEAR(st->EnumType);
    Py_CLEAR(st->UUIDType);
    Py_CLEAR(st->DecimalType);
    Py_CLEAR(st->dataclass_fields);
    Py_CLEAR(st->str_isoformat);
    Py_CLEAR(st->str_model_dump);
    Py_CLEAR(st->str_dataclass_fields);
    Py_CLEAR(st->model_dump_kwnames);
    Py_CLEAR(st->model_dump_args[0]);
    Py_CLEAR(st->model_dump_args[1]);
    for (size_t i = 0; i < RC_KEY_CACHE_SIZE; i++)
    {
        Py_CLEAR(st->key_cache[i].str);
        Py_CLEAR(st->str_cache[i].str);
    }
    return 0;
}

static void module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

PyModuleDef rc_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "redis_cache._core",
    .m_doc = "The C core of redis_cache: connections, pool, RESP, serialization.",
    .m_size = sizeof(rc_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&rc_module_def);
}
