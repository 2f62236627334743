/* JSON codec; see json.h. */
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

typedef struct decoder {
    const unsigned char *start, *p, *end;
    rc_state *st;
    PyObject *error_type;
    int depth;
} decoder;

static PyObject *decode_value(decoder *d);

static PyObject *syntax_error(decoder *d, const char *what)
{
    PyErr_Format(d->error_type, "invalid JSON at byte %zd: %s", (Py_ssize_t)(d->p - d->start),
                 what);
    return NULL;
}

static void skip_space(decoder *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static PyObject *decode_literal(decoder *d, const char *word, size_t n, PyObject *value)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return syntax_error(d, "expected a JSON value");
    d->p += n;
    return Py_NewRef(value);
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Scans digits at *pp, adding them to the significand (past 19 digits
 * only their count matters: the fast paths stop at 15). */
static void scan_digits(const unsigned char **pp, const unsigned char *end, uint64_t *digits,
                        int *significant, int *count)
{
    const unsigned char *p = *pp;

    while (p < end && *p >= '0' && *p <= '9') {
        if (*significant > 0 || *p != '0') {
            if (*significant < 19)
                *digits = *digits * 10 + (uint64_t)(*p - '0');
            (*significant)++;
        }
        (*count)++;
        p++;
    }
    *pp = p;
}

static PyObject *decode_number(decoder *d)
{
    const unsigned char *begin = d->p, *p = d->p;
    int is_float = 0, negative = 0, significant = 0, int_count = 0, frac_count = 0;
    long exponent = 0;
    uint64_t digits = 0;
    char small[64], *text = small;
    size_t n;
    PyObject *result = NULL;

    if (p < d->end && *p == '-') {
        negative = 1;
        p++;
    }
    if (p >= d->end || !is_digit(*p)) {
        d->p = p;
        return syntax_error(d, "expected a digit");
    }
    if (*p == '0') {
        p++;
        int_count = 1;
    } else {
        scan_digits(&p, d->end, &digits, &significant, &int_count);
    }
    if (p < d->end && *p == '.') {
        is_float = 1;
        p++;
        if (p >= d->end || !is_digit(*p)) {
            d->p = p;
            return syntax_error(d, "expected a digit after the decimal point");
        }
        scan_digits(&p, d->end, &digits, &significant, &frac_count);
    }
    if (p < d->end && (*p == 'e' || *p == 'E')) {
        int exp_negative = 0, exp_digits = 0;
        is_float = 1;
        p++;
        if (p < d->end && (*p == '+' || *p == '-'))
            exp_negative = *p++ == '-';
        if (p >= d->end || !is_digit(*p)) {
            d->p = p;
            return syntax_error(d, "expected a digit in the exponent");
        }
        while (p < d->end && is_digit(*p)) {
            if (exponent < 100000)
                exponent = exponent * 10 + (*p - '0');
            exp_digits++;
            p++;
        }
        (void)exp_digits;
        if (exp_negative)
            exponent = -exponent;
    }
    n = (size_t)(p - begin);
    d->p = p;

    if (!is_float && int_count <= 18) {
        long long v = (long long)digits;
        return PyLong_FromLongLong(negative ? -v : v);
    }
    if (is_float && significant <= 19) {
        double v;
        int q = (int)(exponent - frac_count);
        if (significant == 0)
            return PyFloat_FromDouble(negative ? -0.0 : 0.0);
        if ((significant <= 15 && rc_float_from_decimal(digits, q, negative, &v)) ||
            rc_float_from_digits(digits, q, negative, &v))
            return PyFloat_FromDouble(v);
    }
    /* The rest need a NUL-terminated copy for CPython's own conversions,
     * which round floats correctly and build ints of any size. */
    if (n >= sizeof(small)) {
        text = PyMem_Malloc(n + 1);
        if (text == NULL)
            return PyErr_NoMemory();
    }
    memcpy(text, begin, n);
    text[n] = '\0';
    if (is_float) {
        double v = PyOS_string_to_double(text, NULL, NULL);
        if (!(v == -1.0 && PyErr_Occurred()))
            result = PyFloat_FromDouble(v);
    } else {
        result = PyLong_FromString(text, NULL, 10);
    }
    if (result == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        d->p = begin;
        syntax_error(d, "number cannot be converted (too many digits for an int?)");
    }
    if (text != small)
        PyMem_Free(text);
    return result;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits after "\u" at d->p; -1 when malformed. */
static long read_hex4(decoder *d)
{
    long v = 0;
    int i;

    if (d->end - d->p < 4)
        return -1;
    for (i = 0; i < 4; i++) {
        int h = hex_value(d->p[i]);
        if (h < 0)
            return -1;
        v = (v << 4) | h;
    }
    d->p += 4;
    return v;
}

/* Length of the valid UTF-8 sequence starting at p, or 0 when it is not one
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_sequence(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t n, i;
    uint32_t cp;

    if (c < 0xC2)
        return 0;
    if (c < 0xE0) {
        n = 2;
        cp = c & 0x1F;
    } else if (c < 0xF0) {
        n = 3;
        cp = c & 0x0F;
    } else if (c < 0xF5) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n)
        return 0;
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

static void put_utf8(rc_buf *b, uint32_t cp)
{
    char *p = b->data + b->len;

    if (cp < 0x80) {
        *p++ = (char)cp;
    } else if (cp < 0x800) {
        *p++ = (char)(0xC0 | (cp >> 6));
        *p++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *p++ = (char)(0xE0 | (cp >> 12));
        *p++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *p++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *p++ = (char)(0xF0 | (cp >> 18));
        *p++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *p++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *p++ = (char)(0x80 | (cp & 0x3F));
    }
    b->len = (size_t)(p - b->data);
}

/* Decodes a string holding escapes, from the opening quote's successor. The
 * UTF-8 is rebuilt in a scratch buffer; lone surrogate escapes, which Python's
 * json module accepts, pass through "surrogatepass". */
static PyObject *decode_escaped_string(decoder *d)
{
    rc_buf scratch;
    PyObject *result = NULL;

    rc_buf_init(&scratch);
    while (1) {
        const unsigned char *run = d->p;
        while (d->p < d->end && *d->p != '"' && *d->p != '\\' && *d->p >= 0x20 && *d->p < 0x80)
            d->p++;
        if (d->p > run && rc_buf_append(&scratch, run, (size_t)(d->p - run)) < 0) {
            PyErr_NoMemory();
            goto out;
        }
        if (d->p >= d->end) {
            syntax_error(d, "unterminated string");
            goto out;
        }
        if (*d->p == '"') {
            d->p++;
            break;
        }
        if (*d->p < 0x20) {
            syntax_error(d, "control character in string (escape it)");
            goto out;
        }
        if (*d->p >= 0x80) {
            size_t n = utf8_sequence(d->p, d->end);
            if (n == 0) {
                syntax_error(d, "invalid UTF-8 in string");
                goto out;
            }
            if (rc_buf_append(&scratch, d->p, n) < 0) {
                PyErr_NoMemory();
                goto out;
            }
            d->p += n;
            continue;
        }
        /* A backslash escape. */
        if (d->end - d->p < 2) {
            syntax_error(d, "unterminated escape");
            goto out;
        }
        if (rc_buf_reserve(&scratch, 4) < 0) {
            PyErr_NoMemory();
            goto out;
        }
        d->p++;
        switch (*d->p++) {
        case '"':
            put_utf8(&scratch, '"');
            break;
        case '\\':
            put_utf8(&scratch, '\\');
            break;
        case '/':
            put_utf8(&scratch, '/');
            break;
        case 'b':
            put_utf8(&scratch, '\b');
            break;
        case 'f':
            put_utf8(&scratch, '\f');
            break;
        case 'n':
            put_utf8(&scratch, '\n');
            break;
        case 'r':
            put_utf8(&scratch, '\r');
            break;
        case 't':
            put_utf8(&scratch, '\t');
            break;
        case 'u': {
            long cp = read_hex4(d);
            if (cp < 0) {
                syntax_error(d, "invalid \\u escape (expected 4 hex digits)");
                goto out;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF && d->end - d->p >= 6 && d->p[0] == '\\' &&
                d->p[1] == 'u') {
                const unsigned char *save = d->p;
                long low;
                d->p += 2;
                low = read_hex4(d);
                if (low >= 0xDC00 && low <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                else
                    d->p = save;
            }
            put_utf8(&scratch, (uint32_t)cp);
            break;
        }
        default:
            d->p--;
            syntax_error(d, "invalid escape in string");
            goto out;
        }
    }
    result = PyUnicode_DecodeUTF8(scratch.data ? scratch.data : "", (Py_ssize_t)scratch.len,
                                  "surrogatepass");
out:
    rc_buf_free(&scratch);
    return result;
}

static PyObject *decode_string(decoder *d)
{
    const unsigned char *begin;
    int ascii = 1;
    PyObject *s;

    d->p++; /* the opening quote */
    begin = d->p;
    while (d->p < d->end) {
        unsigned char c = *d->p;
        if (c == '"') {
            Py_ssize_t n = d->p - begin;
            d->p++;
            if (!ascii)
                return PyUnicode_DecodeUTF8((const char *)begin, n, NULL);
            s = PyUnicode_New(n, 127);
            if (s != NULL)
                memcpy(PyUnicode_DATA(s), begin, (size_t)n);
            return s;
        }
        if (c == '\\') {
            d->p = begin;
            return decode_escaped_string(d);
        }
        if (c < 0x20)
            return syntax_error(d, "control character in string (escape it)");
        if (c >= 0x80) {
            size_t n = utf8_sequence(d->p, d->end);
            if (n == 0)
                return syntax_error(d, "invalid UTF-8 in string");
            ascii = 0;
            d->p += n;
            continue;
        }
        d->p++;
    }
    return syntax_error(d, "unterminated string");
}

/* An object key: short plain ASCII keys come from the key cache, a
 * direct-mapped table of recent keys, so the records of a list share their
 * key strings (and those strings' cached hashes). */
static PyObject *decode_key(decoder *d)
{
    const unsigned char *begin = d->p + 1, *q = begin;
    size_t n, slot;
    uint32_t hash = 2166136261u;
    PyObject **entry, *key;

    while (q < d->end && (size_t)(q - begin) <= RC_JSON_KEY_CACHE_MAX_LEN && *q != '"' &&
           *q != '\\' && *q >= 0x20 && *q < 0x80) {
        hash = (hash ^ *q) * 16777619u;
        q++;
    }
    if (q >= d->end || *q != '"' || (size_t)(q - begin) > RC_JSON_KEY_CACHE_MAX_LEN)
        return decode_string(d);
    n = (size_t)(q - begin);
    slot = hash & (sizeof(d->st->key_cache) / sizeof(d->st->key_cache[0]) - 1);
    entry = &d->st->key_cache[slot];
    d->p = q + 1;
    if (*entry != NULL && (size_t)PyUnicode_GET_LENGTH(*entry) == n &&
        memcmp(PyUnicode_DATA(*entry), begin, n) == 0)
        return Py_NewRef(*entry);
    key = PyUnicode_New((Py_ssize_t)n, 127);
    if (key == NULL)
        return NULL;
    memcpy(PyUnicode_DATA(key), begin, n);
    Py_XSETREF(*entry, Py_NewRef(key));
    return key;
}

static int enter_container(decoder *d)
{
    if (++d->depth > RC_JSON_MAX_DEPTH) {
        PyErr_Format(d->error_type, "invalid JSON at byte %zd: nested deeper than %d levels",
                     (Py_ssize_t)(d->p - d->start), RC_JSON_MAX_DEPTH);
        return -1;
    }
    return 0;
}

static PyObject *decode_array(decoder *d)
{
    PyObject *list = NULL, *item;

    if (enter_container(d) < 0)
        return NULL;
    list = PyList_New(0);
    if (list == NULL)
        goto error;
    d->p++;
    skip_space(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        goto done;
    }
    while (1) {
        item = decode_value(d);
        if (item == NULL)
            goto error;
        if (PyList_Append(list, item) < 0) {
            Py_DECREF(item);
            goto error;
        }
        Py_DECREF(item);
        skip_space(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            goto done;
        }
        syntax_error(d, "expected ',' or ']' in array");
        goto error;
    }
done:
    d->depth--;
    return list;
error:
    Py_XDECREF(list);
    return NULL;
}

static PyObject *decode_object(decoder *d)
{
    PyObject *dict = NULL, *key = NULL, *value = NULL;

    if (enter_container(d) < 0)
        return NULL;
    dict = PyDict_New();
    if (dict == NULL)
        goto error;
    d->p++;
    skip_space(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        goto done;
    }
    while (1) {
        skip_space(d);
        if (d->p >= d->end || *d->p != '"') {
            syntax_error(d, "expected a string key in object");
            goto error;
        }
        key = decode_key(d);
        if (key == NULL)
            goto error;
        skip_space(d);
        if (d->p >= d->end || *d->p != ':') {
            syntax_error(d, "expected ':' after object key");
            goto error;
        }
        d->p++;
        value = decode_value(d);
        if (value == NULL || PyDict_SetItem(dict, key, value) < 0)
            goto error;
        Py_CLEAR(key);
        Py_CLEAR(value);
        skip_space(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            goto done;
        }
        syntax_error(d, "expected ',' or '}' in object");
        goto error;
    }
done:
    d->depth--;
    return dict;
error:
    Py_XDECREF(key);
    Py_XDECREF(value);
    Py_XDECREF(dict);
    return NULL;
}

static PyObject *decode_value(decoder *d)
{
    skip_space(d);
    if (d->p >= d->end)
        return syntax_error(d, "expected a JSON value, found the end of the input");
    switch (*d->p) {
    case '{':
        return decode_object(d);
    case '[':
        return decode_array(d);
    case '"':
        return decode_string(d);
    case 't':
        return decode_literal(d, "true", 4, Py_True);
    case 'f':
        return decode_literal(d, "false", 5, Py_False);
    case 'n':
        return decode_literal(d, "null", 4, Py_None);
    default:
        if (*d->p == '-' || is_digit(*d->p))
            return decode_number(d);
        return syntax_error(d, "expected a JSON value");
    }
}

PyObject *rc_json_decode(const char *p, size_t n, rc_state *st)
{
    decoder d;
    PyObject *value;

    d.start = d.p = (const unsigned char *)p;
    d.end = d.start + n;
    d.st = st;
    d.error_type = st->SerializationError;
    d.depth = 0;
    value = decode_value(&d);
    if (value == NULL)
        return NULL;
    skip_space(&d);
    if (d.p != d.end) {
        Py_DECREF(value);
        return syntax_error(&d, "extra data after the JSON value");
    }
    return value;
}

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
