/* JSON encoder; see json.h. */
#include "json.h"
#include "floats.h"

#include <datetime.h>
#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------------ encode */

typedef struct encoder {
    rc_buf *out;
    rc_state *st;
    PyObject *error_type;
    /* Path segments collected while an error unwinds, innermost first. */
    PyObject *path;
    int depth;
    /* Calls into Python code so far (see encode_other). */
    unsigned long hooks;
    int flags; /* RC_JSON_* */
    /* The containers being encoded, outermost first: a container met again
     * among them is a cycle. */
    PyObject *open[RC_JSON_MAX_DEPTH + 1];
} encoder;

static int encode_value(encoder *e, PyObject *obj);

static int out_of_memory(void)
{
    PyErr_NoMemory();
    return -1;
}

static int put(encoder *e, const char *p, size_t n)
{
    return rc_buf_append(e->out, p, n) < 0 ? out_of_memory() : 0;
}

/* Non-zero for ASCII bytes that JSON strings must escape. */
/* clang-format off */
static const unsigned char ascii_escape[128] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};
/* clang-format on */

/* Writes the escape for ASCII character c at p; returns its length. */
static size_t write_escape(char *p, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";

    p[0] = '\\';
    switch (c) {
    case '"':
        p[1] = '"';
        return 2;
    case '\\':
        p[1] = '\\';
        return 2;
    case '\n':
        p[1] = 'n';
        return 2;
    case '\r':
        p[1] = 'r';
        return 2;
    case '\t':
        p[1] = 't';
        return 2;
    case '\b':
        p[1] = 'b';
        return 2;
    case '\f':
        p[1] = 'f';
        return 2;
    default:
        p[1] = 'u';
        p[2] = '0';
        p[3] = '0';
        p[4] = hex[c >> 4];
        p[5] = hex[c & 15];
        return 6;
    }
}

static int encode_ascii(encoder *e, const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0, run;
    rc_buf *out = e->out;

    while (i < n) {
        run = i;
        while (i < n && !ascii_escape[s[i]])
            i++;
        if (i > run && put(e, (const char *)s + run, (size_t)(i - run)) < 0)
            return -1;
        if (i < n) {
            if (rc_buf_reserve(out, 6) < 0)
                return out_of_memory();
            out->len += write_escape(out->data + out->len, s[i]);
            i++;
        }
    }
    return 0;
}

/* Strings that are not pure ASCII are transcoded here rather than through
 * PyUnicode_AsUTF8, which would attach a cached UTF-8 copy to every str. */
static int encode_wide(encoder *e, PyObject *s)
{
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t i, n = PyUnicode_GET_LENGTH(s);
    rc_buf *out = e->out;
    char *p;

    for (i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if ((i & 1023) == 0 && rc_buf_reserve(out, 6 * 1024) < 0)
            return out_of_memory();
        p = out->data + out->len;
        if (c < 0x80) {
            if (ascii_escape[c])
                p += write_escape(p, (unsigned char)c);
            else
                *p++ = (char)c;
        } else if (c < 0x800) {
            *p++ = (char)(0xC0 | (c >> 6));
            *p++ = (char)(0x80 | (c & 0x3F));
        } else if (c >= 0xD800 && c <= 0xDFFF) {
            char code[16];
            snprintf(code, sizeof(code), "U+%04X", (unsigned)c);
            PyErr_Format(e->error_type,
                         "cannot serialize a str holding a lone surrogate (%s at index %zd): "
                         "it has no UTF-8 form; clean the text or store it with serializer=\"raw\"",
                         code, i);
            return -1;
        } else if (c < 0x10000) {
            *p++ = (char)(0xE0 | (c >> 12));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        } else {
            *p++ = (char)(0xF0 | (c >> 18));
            *p++ = (char)(0x80 | ((c >> 12) & 0x3F));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        }
        out->len = (size_t)(p - out->data);
    }
    return 0;
}

static int encode_str(encoder *e, PyObject *s)
{
    if (PyUnicode_IS_ASCII(s)) {
        /* The common case, a short ASCII string with nothing to escape (dict
         * keys, most values): one reserve, one copy. */
        const unsigned char *data = PyUnicode_DATA(s);
        Py_ssize_t i, n = PyUnicode_GET_LENGTH(s);
        for (i = 0; i < n && !ascii_escape[data[i]]; i++)
            ;
        if (i == n) {
            char *p;
            if (rc_buf_reserve(e->out, (size_t)n + 2) < 0)
                return out_of_memory();
            p = e->out->data + e->out->len;
            p[0] = '"';
            memcpy(p + 1, data, (size_t)n);
            p[n + 1] = '"';
            e->out->len += (size_t)n + 2;
            return 0;
        }
    }
    if (put(e, "\"", 1) < 0)
        return -1;
    if (PyUnicode_IS_ASCII(s)) {
        if (encode_ascii(e, PyUnicode_DATA(s), PyUnicode_GET_LENGTH(s)) < 0)
            return -1;
    } else if (encode_wide(e, s) < 0) {
        return -1;
    }
    return put(e, "\"", 1);
}

static int encode_int(encoder *e, PyObject *obj)
{
    int overflow = 0, rc = -1;
    long long v;
    PyObject *text = NULL;
    const char *p;
    Py_ssize_t n;

#if PY_VERSION_HEX < 0x030C0000
    /* Ints of one digit (below 2^30), the usual case, read directly. */
    if (Py_SIZE(obj) >= -1 && Py_SIZE(obj) <= 1) {
        if (rc_buf_reserve(e->out, 24) < 0)
            return out_of_memory();
        v = (long long)((PyLongObject *)obj)->ob_digit[0] * Py_SIZE(obj);
        e->out->len += rc_format_ll(e->out->data + e->out->len, v);
        return 0;
    }
#endif
    v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow) {
        char tmp[24];
        return put(e, tmp, rc_format_ll(tmp, v));
    }
    /* int.__repr__ rather than str(): an IntEnum member's str() is its name. */
    text = PyLong_Type.tp_repr(obj);
    if (text == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            PyErr_Format(e->error_type,
                         "cannot serialize an int with more digits than Python converts "
                         "(sys.get_int_max_str_digits()); store it as a str or raise the limit");
        }
        goto out;
    }
    p = PyUnicode_AsUTF8AndSize(text, &n);
    if (p == NULL)
        goto out;
    rc = put(e, p, (size_t)n);
out:
    Py_XDECREF(text);
    return rc;
}

static int encode_float(encoder *e, PyObject *obj)
{
    double v = PyFloat_AS_DOUBLE(obj);
    char *text;
    int rc;

    if (!isfinite(v)) {
        PyErr_Format(e->error_type,
                     "cannot serialize float %R: JSON has no NaN or infinity; "
                     "store None or a string instead",
                     obj);
        return -1;
    }
    {
        char quick[RC_FLOAT_TEXT_MAX];
        size_t n = rc_float_format(v, quick);
        if (n > 0)
            return put(e, quick, n);
    }
    text = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (text == NULL)
        return -1;
    rc = put(e, text, strlen(text));
    PyMem_Free(text);
    return rc;
}

/* Records where in the value an error happened, as a segment like [3] or
 * ['name'], so the message can point at the culprit. */
static void note_path(encoder *e, PyObject *segment_source, int is_index)
{
    PyObject *exc_type, *exc_value, *exc_tb, *segment;

    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    if (e->path == NULL)
        e->path = PyList_New(0);
    segment = is_index ? PyUnicode_FromFormat("[%S]", segment_source)
                       : PyUnicode_FromFormat("[%R]", segment_source);
    if (segment != NULL && e->path != NULL) {
        if (PyList_Append(e->path, segment) < 0)
            PyErr_Clear();
    } else {
        PyErr_Clear();
    }
    Py_XDECREF(segment);
    PyErr_Restore(exc_type, exc_value, exc_tb);
}

/* A dict key that is not a str, written as the string Python's json module
 * would write (and for the extra types, their JSON string form). */
static int encode_key_as_str(encoder *e, PyObject *key)
{
    size_t start = e->out->len;
    PyObject *text;
    int rc;

    if (key == Py_None || key == Py_True || key == Py_False || PyLong_Check(key) ||
        PyFloat_Check(key)) {
        /* Their JSON form is the wanted text: write it between quotes. */
        if (put(e, "\"", 1) < 0 || encode_value(e, key) < 0 || put(e, "\"", 1) < 0)
            return -1;
        (void)start;
        return 0;
    }
    if (PyObject_IsInstance(key, e->st->EnumType) == 1) {
        PyObject *value = PyObject_GetAttrString(key, "value");
        if (value == NULL)
            return -1;
        rc = PyUnicode_Check(value) ? encode_str(e, value) : encode_key_as_str(e, value);
        Py_DECREF(value);
        return rc;
    }
    if (PyErr_Occurred())
        return -1;
    if (PyDateTime_Check(key) || PyDate_Check(key) || PyTime_Check(key))
        text = PyObject_CallMethodNoArgs(key, e->st->str_isoformat);
    else if (PyObject_IsInstance(key, e->st->UUIDType) == 1 ||
             PyObject_IsInstance(key, e->st->DecimalType) == 1)
        text = PyObject_Str(key);
    else {
        if (!PyErr_Occurred())
            PyErr_Format(e->error_type,
                         "cannot serialize a dict key of type '%.100s' (%R), even with "
                         "stringify_keys: convert the keys with str() first",
                         Py_TYPE(key)->tp_name, key);
        return -1;
    }
    e->hooks++;
    if (text == NULL)
        return -1;
    rc = encode_str(e, text);
    Py_DECREF(text);
    return rc;
}

/* Non-zero when a dict is no longer as it was when its encoding started:
 * Python code run by a hook (model_dump(), a dataclass property) may have
 * changed it, and going on would write a mix of old and new items. */
static int dict_changed(PyObject *dict, Py_ssize_t size, uint64_t version)
{
#if PY_VERSION_HEX < 0x030C0000
    return PyDict_GET_SIZE(dict) != size || ((PyDictObject *)dict)->ma_version_tag != version;
#else
    (void)version; /* deprecated from 3.12; the size still tells most changes */
    return PyDict_GET_SIZE(dict) != size;
#endif
}

static int encode_dict(encoder *e, PyObject *obj)
{
    Py_ssize_t pos = 0, size = PyDict_GET_SIZE(obj);
    PyObject *key, *value;
    int first = 1;
#if PY_VERSION_HEX < 0x030C0000
    uint64_t version = ((PyDictObject *)obj)->ma_version_tag;
#else
    uint64_t version = 0;
#endif

    if (put(e, "{", 1) < 0)
        return -1;
    while (PyDict_Next(obj, &pos, &key, &value)) {
        unsigned long hooks = e->hooks;
        if (!first && put(e, ",", 1) < 0)
            return -1;
        first = 0;
        if (!PyUnicode_Check(key)) {
            if (!(e->flags & RC_JSON_STRINGIFY_KEYS)) {
                PyErr_Format(e->error_type,
                             "cannot serialize a dict key of type '%.100s' (%R): JSON object "
                             "keys are strings; convert the keys with str() first, or give the "
                             "cache stringify_keys=True",
                             Py_TYPE(key)->tp_name, key);
                return -1;
            }
            if (encode_key_as_str(e, key) < 0 || put(e, ":", 1) < 0)
                return -1;
        } else if (encode_str(e, key) < 0 || put(e, ":", 1) < 0) {
            return -1;
        }
        Py_INCREF(key);
        Py_INCREF(value);
        if (encode_value(e, value) < 0) {
            note_path(e, key, 0);
            Py_DECREF(key);
            Py_DECREF(value);
            return -1;
        }
        Py_DECREF(key);
        Py_DECREF(value);
        if (e->hooks != hooks && dict_changed(obj, size, version)) {
            PyErr_SetString(e->error_type, "a dict changed while it was being serialized "
                                           "(by a hook such as model_dump() or a property)");
            return -1;
        }
    }
    return put(e, "}", 1);
}

static int encode_sequence(encoder *e, PyObject *obj)
{
    Py_ssize_t i;
    int is_list = PyList_Check(obj);

    if (put(e, "[", 1) < 0)
        return -1;
    for (i = 0; i < (is_list ? PyList_GET_SIZE(obj) : PyTuple_GET_SIZE(obj)); i++) {
        PyObject *item = is_list ? PyList_GET_ITEM(obj, i) : PyTuple_GET_ITEM(obj, i);
        int rc;

        if (i > 0 && put(e, ",", 1) < 0)
            return -1;
        Py_INCREF(item);
        rc = encode_value(e, item);
        if (rc < 0) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index != NULL) {
                note_path(e, index, 1);
                Py_DECREF(index);
            }
        }
        Py_DECREF(item);
        if (rc < 0)
            return -1;
    }
    return put(e, "]", 1);
}

/* Steps into a container (or an object encoded as one): refuses cycles and
 * nesting past the limit. Every enter() is paired with a leave(). */
static int enter(encoder *e, PyObject *obj)
{
    int i;

    for (i = 0; i < e->depth; i++) {
        if (e->open[i] == obj) {
            PyErr_Format(e->error_type,
                         "cannot serialize a %.100s that contains itself (circular reference)",
                         Py_TYPE(obj)->tp_name);
            return -1;
        }
    }
    if (e->depth >= RC_JSON_MAX_DEPTH) {
        PyErr_Format(e->error_type, "cannot serialize a value nested deeper than %d levels",
                     RC_JSON_MAX_DEPTH);
        return -1;
    }
    if (Py_EnterRecursiveCall(" while serializing a value to JSON"))
        return -1;
    e->open[e->depth++] = obj;
    return 0;
}

static void leave(encoder *e)
{
    e->depth--;
    Py_LeaveRecursiveCall();
}

static int encode_container(encoder *e, PyObject *obj)
{
    int rc;

    if (enter(e, obj) < 0)
        return -1;
    rc = PyDict_Check(obj) ? encode_dict(e, obj) : encode_sequence(e, obj);
    leave(e);
    return rc;
}

/* Encodes what a method call returns in obj's place (isoformat(), str(),
 * model_dump(), ...). */
static int encode_converted(encoder *e, PyObject *converted)
{
    int rc;

    if (converted == NULL)
        return -1;
    rc = encode_value(e, converted);
    Py_DECREF(converted);
    return rc;
}

/* A dataclass instance as an object of its fields (dataclasses.fields(),
 * which leaves out ClassVar and InitVar pseudo-fields). */
static int encode_dataclass(encoder *e, PyObject *obj)
{
    PyObject *fields, *dict = NULL, *name = NULL, *value = NULL;
    Py_ssize_t i;
    int rc = -1;

    fields = PyObject_CallOneArg(e->st->dataclass_fields, obj);
    if (fields == NULL || !PyTuple_Check(fields))
        goto out;
    dict = PyDict_New();
    if (dict == NULL)
        goto out;
    for (i = 0; i < PyTuple_GET_SIZE(fields); i++) {
        name = PyObject_GetAttrString(PyTuple_GET_ITEM(fields, i), "name");
        if (name == NULL)
            goto out;
        value = PyObject_GetAttr(obj, name);
        if (value == NULL || PyDict_SetItem(dict, name, value) < 0)
            goto out;
        Py_CLEAR(name);
        Py_CLEAR(value);
    }
    rc = encode_dict(e, dict);
out:
    Py_XDECREF(name);
    Py_XDECREF(value);
    Py_XDECREF(dict);
    Py_XDECREF(fields);
    return rc;
}

/* An object written as the container it converts to (a set as an array, a
 * model as an object): entered as itself, so cycles through such objects
 * are caught and each level counts once. */
static int encode_as_container(encoder *e, PyObject *obj, PyObject *converted)
{
    int rc;

    if (converted == NULL)
        return -1;
    if (enter(e, obj) < 0) {
        Py_DECREF(converted);
        return -1;
    }
    if (PyDict_Check(converted))
        rc = encode_dict(e, converted);
    else if (PyList_Check(converted) || PyTuple_Check(converted))
        rc = encode_sequence(e, converted);
    else
        rc = encode_value(e, converted);
    leave(e);
    Py_DECREF(converted);
    return rc;
}

/* Types beyond JSON's own; -2 when obj is none of them (no error set).
 * These may run Python code (isoformat(), model_dump(), ...): hooks counts
 * such calls so encode_dict can notice a dict changed under it. */
static int encode_other(encoder *e, PyObject *obj)
{
    rc_state *st = e->st;
    PyObject *attr;

    e->hooks++;
    if (PyAnySet_Check(obj))
        return encode_as_container(e, obj, PySequence_List(obj));
    if (PyDateTime_Check(obj) || PyDate_Check(obj) || PyTime_Check(obj))
        return encode_converted(e, PyObject_CallMethodNoArgs(obj, st->str_isoformat));
    if (PyObject_IsInstance(obj, st->EnumType) == 1)
        return encode_converted(e, PyObject_GetAttrString(obj, "value"));
    if (PyObject_IsInstance(obj, st->UUIDType) == 1 ||
        PyObject_IsInstance(obj, st->DecimalType) == 1)
        return encode_converted(e, PyObject_Str(obj));
    if (PyErr_Occurred())
        return -1;
    /* dataclasses and pydantic models are recognized by their class
     * attributes, so neither library has to be imported. */
    attr = PyObject_GetAttr((PyObject *)Py_TYPE(obj), st->str_dataclass_fields);
    if (attr != NULL) {
        int rc;
        Py_DECREF(attr);
        if (enter(e, obj) < 0)
            return -1;
        rc = encode_dataclass(e, obj);
        leave(e);
        return rc;
    }
    PyErr_Clear();
    if (PyObject_HasAttrString((PyObject *)Py_TYPE(obj), "__pydantic_fields__")) {
        PyObject *method = PyObject_GetAttr(obj, st->str_model_dump);
        PyObject *dumped;
        if (method == NULL)
            return -1;
        dumped = PyObject_Vectorcall(method, st->model_dump_args, 0, st->model_dump_kwnames);
        Py_DECREF(method);
        return encode_as_container(e, obj, dumped);
    }
    return -2;
}

static int encode_value(encoder *e, PyObject *obj)
{
    if (PyUnicode_Check(obj))
        return encode_str(e, obj);
    if (obj == Py_None)
        return put(e, "null", 4);
    if (obj == Py_True)
        return put(e, "true", 4);
    if (obj == Py_False)
        return put(e, "false", 5);
    if (PyLong_Check(obj))
        return encode_int(e, obj);
    if (PyFloat_Check(obj))
        return encode_float(e, obj);
    if (PyDict_Check(obj) || PyList_Check(obj) || PyTuple_Check(obj))
        return encode_container(e, obj);
    {
        int rc = encode_other(e, obj);
        if (rc != -2)
            return rc;
    }
    PyErr_Format(e->error_type,
                 "cannot serialize a value of type '%.100s' to JSON; store JSON types, "
                 "datetimes, UUIDs, Decimals, enums, sets, dataclasses or pydantic models, "
                 "convert it first, or choose another serializer",
                 Py_TYPE(obj)->tp_name);
    return -1;
}

/* Rewrites the pending error's message to end with the path collected. */
static void attach_path(encoder *e)
{
    PyObject *exc_type, *exc_value, *exc_tb, *joined = NULL, *sep = NULL, *msg = NULL;

    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    PyErr_NormalizeException(&exc_type, &exc_value, &exc_tb);
    if (exc_type != e->error_type || e->path == NULL || PyList_GET_SIZE(e->path) == 0 ||
        PyList_Reverse(e->path) < 0)
        goto out;
    sep = PyUnicode_FromStringAndSize(NULL, 0);
    if (sep == NULL)
        goto out;
    joined = PyUnicode_Join(sep, e->path);
    if (joined == NULL)
        goto out;
    msg = PyUnicode_FromFormat("%S (at value%U)", exc_value, joined);
    if (msg == NULL)
        goto out;
    Py_SETREF(exc_value, msg);
out:
    if (PyErr_Occurred())
        PyErr_Clear();
    Py_XDECREF(sep);
    Py_XDECREF(joined);
    PyErr_Restore(exc_type, exc_value, exc_tb);
}

int rc_json_encode(rc_buf *out, PyObject *obj, rc_state *st, int flags)
{
    encoder e;
    int rc;

    e.out = out;
    e.st = st;
    e.error_type = st->SerializationError;
    e.depth = 0;
    e.hooks = 0;
    e.flags = flags;
    e.path = NULL;
    rc = encode_value(&e, obj);
    if (rc < 0)
        attach_path(&e);
    Py_XDECREF(e.path);
    return rc;
}

/* ------------------------------------------------------------------ decode */

int rc_json_init_types(rc_state *st)
{
    PyObject *module;

    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return -1;
    module = PyImport_ImportModule("enum");
    if (module == NULL)
        return -1;
    st->EnumType = PyObject_GetAttrString(module, "Enum");
    Py_DECREF(module);
    module = PyImport_ImportModule("uuid");
    if (module == NULL)
        return -1;
    st->UUIDType = PyObject_GetAttrString(module, "UUID");
    Py_DECREF(module);
    module = PyImport_ImportModule("decimal");
    if (module == NULL)
        return -1;
    st->DecimalType = PyObject_GetAttrString(module, "Decimal");
    Py_DECREF(module);
    module = PyImport_ImportModule("dataclasses");
    if (module == NULL)
        return -1;
    st->dataclass_fields = PyObject_GetAttrString(module, "fields");
    Py_DECREF(module);
    st->str_isoformat = PyUnicode_InternFromString("isoformat");
    st->str_model_dump = PyUnicode_InternFromString("model_dump");
    st->str_dataclass_fields = PyUnicode_InternFromString("__dataclass_fields__");
    st->model_dump_kwnames = Py_BuildValue("(ss)", "mode", "by_alias");
    st->model_dump_args[0] = PyUnicode_InternFromString("json");
    st->model_dump_args[1] = Py_NewRef(Py_True);
    if (!st->EnumType || !st->UUIDType || !st->DecimalType || !st->dataclass_fields ||
        !st->str_isoformat || !st->str_model_dump || !st->str_dataclass_fields ||
        !st->model_dump_kwnames || !st->model_dump_args[0])
        return -1;
    return 0;
}
