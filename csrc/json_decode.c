/* JSON decoder; see json.h. */
#include "json.h"
#include "floats.h"

#include <stdint.h>
#include <stdio.h>

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

