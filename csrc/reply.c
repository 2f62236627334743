/* hiredis reader glue; see reply.h.
 *
 * hiredis 0.14.1 rules these callbacks follow: never return NULL (the reader
 * would enter a sticky out-of-memory state), so a failed conversion returns a
 * None placeholder and parks the exception in rc_reader.error; a child object
 * is owned by its parent list once stored; only the root is ever handed to
 * freeObject.
 */
#include "reply.h"

#include "result.h"

static rc_reader *reader_of(const redisReadTask *task)
{
    return (rc_reader *)task->privdata;
}

/* Parks the pending exception (the first one wins) and returns the
 * placeholder that stands in for the object that could not be built. */
static void *placeholder(rc_reader *r)
{
    if (r->error == NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (value != NULL && tb != NULL)
            PyException_SetTraceback(value, tb);
        r->error = value;
        Py_XDECREF(type);
        Py_XDECREF(tb);
    } else {
        PyErr_Clear();
    }
    return Py_NewRef(Py_None);
}

/* Stores obj in its parent array, if any, and returns it to hiredis. type
 * is its RESP type (a nil is read as a bulk string or an array of length
 * -1: task->type says which, type says NIL). */
static void *attach(const redisReadTask *task, PyObject *obj, int type)
{
    rc_reader *r = reader_of(task);
    PyObject *parent;

    if (obj == NULL)
        obj = placeholder(r);
    if (task->parent == NULL) {
        /* The root comes first (an array before its elements). */
        r->shape.type = type;
        r->shape.element_types = 0;
        return obj;
    }
    if (task->parent->parent == NULL)
        r->shape.element_types |= 1u << type;
    parent = (PyObject *)task->parent->obj;
    if (PyList_Check(parent)) {
        /* Elements arrive in order; an array too long to preallocate grows
         * one element at a time (see create_array). */
        if (task->idx < PyList_GET_SIZE(parent)) {
            PyObject *old = PyList_GET_ITEM(parent, task->idx);
            PyList_SET_ITEM(parent, task->idx, obj);
            Py_DECREF(old);
            return obj;
        }
        if (PyList_Append(parent, obj) == 0) {
            Py_DECREF(obj); /* the list holds it */
            return obj;
        }
        /* Out of memory: the reply fails with the parked error, and the
         * element is kept with the orphans below. */
        Py_DECREF(placeholder(r));
    }
    /* The parent array could not be built (its placeholder stands in): the
     * child must still outlive the reply, as hiredis may attach children to
     * it. Keep it with the reader until the reply is done (the reply fails
     * with the parked error anyway); if even that fails, leak it rather than
     * free what hiredis still points at. */
    if (r->orphans == NULL)
        r->orphans = PyList_New(0);
    if (r->orphans == NULL || PyList_Append(r->orphans, obj) < 0)
        PyErr_Clear();
    else
        Py_DECREF(obj);
    return obj;
}

static int starts_with(const char *p, size_t n, const char *word)
{
    size_t len = strlen(word);
    return n >= len && memcmp(p, word, len) == 0 && (n == len || p[len] == ' ');
}

/* Errors that are not the command's fault get classes of their own:
 * credentials ("wrong password", not "wrong type"), and a node that is not
 * a working primary (a failover: the client must look for the new one). */
static PyObject *error_class(rc_state *st, const char *p, size_t n)
{
    if (starts_with(p, n, "NOAUTH") || starts_with(p, n, "WRONGPASS"))
        return st->AuthenticationError;
    if (starts_with(p, n, "READONLY") || starts_with(p, n, "LOADING") ||
        starts_with(p, n, "MASTERDOWN"))
        return st->FailoverError;
    return st->ResponseError;
}

static void *create_string(const redisReadTask *task, char *p, size_t n)
{
    rc_reader *r = reader_of(task);
    PyObject *obj, *msg;

    switch (task->type) {
    case REDIS_REPLY_ERROR:
        msg = PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "replace");
        obj = msg == NULL ? NULL : PyObject_CallOneArg(error_class(r->state, p, n), msg);
        Py_XDECREF(msg);
        break;
    case REDIS_REPLY_STATUS:
        obj = PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "replace");
        break;
    default:
        obj = r->codec == NULL ? PyBytes_FromStringAndSize(p, (Py_ssize_t)n)
                               : rc_codec_decode(r->codec, p, n, r->state);
        break;
    }
    return attach(task, obj, task->type);
}

static void *create_array(const redisReadTask *task, int elements)
{
    /* Filled with None: until its elements arrive the array may be reached
     * by gc.get_objects() (and, in the blocking client, by other threads
     * while this one waits in recv() without the GIL). */
    return attach(task, rc_none_list(elements <= RC_READER_PREALLOC_MAX ? elements : 0),
                  REDIS_REPLY_ARRAY);
}

static void *create_integer(const redisReadTask *task, long long v)
{
    return attach(task, PyLong_FromLongLong(v), REDIS_REPLY_INTEGER);
}

static void *create_nil(const redisReadTask *task)
{
    rc_reader *r = reader_of(task);
    return attach(task, Py_NewRef(r->codec == NULL ? Py_None : r->state->missing),
                  REDIS_REPLY_NIL);
}

static void free_object(void *obj)
{
    Py_XDECREF((PyObject *)obj);
}

static redisReplyObjectFunctions object_functions = {
    create_string, create_array, create_integer, create_nil, free_object,
};

int rc_reader_init(rc_reader *r, rc_state *st)
{
    r->state = st;
    r->codec = NULL;
    r->error = NULL;
    r->orphans = NULL;
    r->reader = redisReaderCreateWithFunctions(&object_functions);
    if (r->reader == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    r->reader->privdata = r;
    return 0;
}

void rc_reader_free(rc_reader *r)
{
    if (r->reader != NULL) {
        redisReaderFree(r->reader);
        r->reader = NULL;
    }
    Py_CLEAR(r->error);
    Py_CLEAR(r->orphans);
}

int rc_reader_feed(rc_reader *r, const char *p, size_t n)
{
    if (redisReaderFeed(r->reader, p, n) != REDIS_OK) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

int rc_reader_has_unread(const rc_reader *r)
{
    return r->reader->pos < r->reader->len;
}

rc_reply_status rc_reader_next(rc_reader *r, const rc_codec *codec, PyObject **reply)
{
    void *obj = NULL;

    *reply = NULL;
    r->codec = codec;
    if (redisReaderGetReply(r->reader, &obj) != REDIS_OK) {
        PyErr_Format(r->state->ConnectionError, "protocol error in the reply stream: %s",
                     r->reader->errstr);
        return RC_REPLY_BROKEN;
    }
    if (obj == NULL)
        return RC_REPLY_PENDING;
    Py_CLEAR(r->orphans);
    if (r->error != NULL) {
        Py_DECREF((PyObject *)obj);
        PyErr_SetObject((PyObject *)Py_TYPE(r->error), r->error);
        Py_CLEAR(r->error);
        return RC_REPLY_BAD_VALUE;
    }
    *reply = (PyObject *)obj;
    return RC_REPLY_READY;
}
