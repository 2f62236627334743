/* JSON encoder; see json.h.
 *
 * Speed comes from writing through a cursor: e->p is the next byte to write
 * and e->end the end of the reserved memory, kept in the encoder rather than
 * re-read from the rc_buf on every byte. Every writer reserves what it needs
 * plus SPARE bytes, so the separators and brackets callers add after it
 * (',', ':', ']', '}') need no check of their own.
 */
#include "json.h"
#include "compiler.h"
#include "floats.h"

#include <datetime.h>
#include <stdint.h>
#include <stdio.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Room every writer leaves after what it wrote (see the top of the file). */
#define SPARE 2

/* Levels of nesting per unit of Python's recursion limit (see enter()). */
#define RECURSION_STEP 16

/* Characters of a non-ASCII str transcoded per reservation (6 bytes each at
 * most, for a \u00XX escape). */
#define WIDE_CHUNK 1024

typedef struct encoder {
    char *p;   /* where the next byte goes */
    char *end; /* end of the memory written to */
    /* The memory: out's, or when out is NULL the bytes object's (see
     * rc_json_dumps). */
    rc_buf *out;
    PyObject *bytes;
    rc_state *st;
    PyObject *error_type;
    /* Path segments collected while an error unwinds, innermost first. */
    PyObject *path;
    int depth;
    /* Levels whose path segments an error records: all but those below a
     * cycle's repeated container (see refuse_depth). */
    int path_depth;
    /* Calls into Python code so far (see encode_other). */
    unsigned long hooks;
    int flags; /* RC_JSON_* */
    /* The containers being encoded, outermost first: a container met again
     * among them is a cycle (see refuse_depth, which puts the one being
     * entered after them). */
    PyObject *open[RC_JSON_MAX_DEPTH + 1];
} encoder;

static int encode_value(encoder *e, PyObject *obj);
static int encode_container(encoder *e, PyObject *obj);
static int encode_dict(encoder *e, PyObject *obj);
static RC_ALWAYS_INLINE int encode_items(encoder *e, PyObject *obj, int is_list);
static int encode_other(encoder *e, PyObject *obj);

/* Makes room for n more bytes when the cursor is short of it. */
static int grow(encoder *e, size_t n)
{
    rc_buf *out = e->out;
    size_t len, cap;

    if (out != NULL) {
        out->len = (size_t)(e->p - out->data);
        if (rc_buf_grow(out, n) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        e->p = out->data + out->len;
        e->end = out->data + out->cap;
        return 0;
    }
    len = (size_t)(e->p - PyBytes_AS_STRING(e->bytes));
    cap = (size_t)PyBytes_GET_SIZE(e->bytes);
    if (n > (size_t)PY_SSIZE_T_MAX - len) {
        PyErr_NoMemory();
        return -1;
    }
    while (cap < len + n)
        cap = cap > (size_t)PY_SSIZE_T_MAX / 2 ? len + n : cap * 2;
    /* The bytes object is this encoder's alone, so it may be resized. */
    if (_PyBytes_Resize(&e->bytes, (Py_ssize_t)cap) < 0)
        return -1;
    e->p = PyBytes_AS_STRING(e->bytes) + len;
    e->end = PyBytes_AS_STRING(e->bytes) + cap;
    return 0;
}

static inline int reserve(encoder *e, size_t n)
{
    if (likely((size_t)(e->end - e->p) >= n))
        return 0;
    return grow(e, n);
}

/* Writes a literal (null, true, false) of n bytes. */
static inline int put_literal(encoder *e, const char *text, size_t n)
{
    if (reserve(e, n + SPARE) < 0)
        return -1;
    memcpy(e->p, text, n);
    e->p += n;
    return 0;
}

/* Non-zero for the bytes (and Latin-1 characters) that JSON strings must
 * escape: the control characters, '"' and '\\'. */
/* clang-format off */
static const unsigned char needs_escape[256] = {
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

/* Word-at-a-time tests: non-zero when one of the 8 bytes of x is a control
 * character, '"' or '\\' (each the classic "has a zero byte" / "has a byte
 * less than" test, exact for any bytes). */
#define BYTES8(c) (0x0101010101010101ULL * (unsigned char)(c))

static inline RC_UNUSED uint64_t escapes_in8(uint64_t x)
{
    uint64_t quote = x ^ BYTES8('"'), backslash = x ^ BYTES8('\\');

    return (((x - BYTES8(0x20)) & ~x) | ((quote - BYTES8(1)) & ~quote) |
            ((backslash - BYTES8(1)) & ~backslash)) &
           BYTES8(0x80);
}

static inline uint64_t load8(const unsigned char *s)
{
    uint64_t x;
    memcpy(&x, s, 8);
    return x;
}

static inline uint32_t load4(const unsigned char *s)
{
    uint32_t x;
    memcpy(&x, s, 4);
    return x;
}

#ifdef __SSE2__
/* The bytes of v to escape, as a mask; with high set, bytes from 0x80 up too
 * (the Latin-1 characters that take two bytes in UTF-8). */
static inline int escapes_in16(__m128i v, int high)
{
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    __m128i control = high ? _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)) /* signed: 0x80+ too */
                           : _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v);

    return _mm_movemask_epi8(
        _mm_or_si128(control, _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash))));
}
#endif

/* Copies n bytes of UTF-8 (or ASCII) from s to d and tells whether none of
 * them needs an escape. Blocks may overlap (the last one ends at n) but
 * never reach past either end. */
static inline int copy_clean(char *d, const unsigned char *s, Py_ssize_t n)
{
#ifdef __SSE2__
    if (n >= 16) {
        __m128i v;
        Py_ssize_t i;
        int bad = 0;

        for (i = 0; i + 16 <= n; i += 16) {
            v = _mm_loadu_si128((const __m128i *)(s + i));
            _mm_storeu_si128((__m128i *)(d + i), v);
            bad |= escapes_in16(v, 0);
        }
        if (i < n) {
            v = _mm_loadu_si128((const __m128i *)(s + n - 16));
            _mm_storeu_si128((__m128i *)(d + n - 16), v);
            bad |= escapes_in16(v, 0);
        }
        return !bad;
    }
#else
    if (n > 16) {
        uint64_t bad = 0, x;
        Py_ssize_t i;

        for (i = 0; i + 8 <= n; i += 8) {
            x = load8(s + i);
            memcpy(d + i, &x, 8);
            bad |= escapes_in8(x);
        }
        if (i < n) {
            x = load8(s + n - 8);
            memcpy(d + n - 8, &x, 8);
            bad |= escapes_in8(x);
        }
        return bad == 0;
    }
#endif
#ifdef __SSE2__
    /* Short text: two overlapping loads fill one vector, tested at once. */
    if (n >= 8) {
        uint64_t a = load8(s), b = load8(s + n - 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
        return escapes_in16(_mm_set_epi64x((long long)b, (long long)a), 0) == 0;
    }
    if (n >= 4) {
        uint32_t a = load4(s), b = load4(s + n - 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
        /* The upper lanes are zero, which would count as control
         * characters: only the lower eight are looked at. */
        return (escapes_in16(_mm_set_epi32(0, 0, (int)b, (int)a), 0) & 0xFF) == 0;
    }
#else
    if (n >= 8) {
        uint64_t a = load8(s), b = load8(s + n - 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
        return (escapes_in8(a) | escapes_in8(b)) == 0;
    }
    if (n >= 4) {
        uint32_t a = load4(s), b = load4(s + n - 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
        return escapes_in8((uint64_t)a | (uint64_t)b << 32) == 0;
    }
#endif
    if (n > 0) {
        /* 1 to 3 bytes: the first, middle and last cover them all. */
        unsigned char first = s[0], middle = s[n / 2], last = s[n - 1];
        d[0] = (char)first;
        d[n / 2] = (char)middle;
        d[n - 1] = (char)last;
        return !(needs_escape[first] | needs_escape[middle] | needs_escape[last]);
    }
    return 1;
}

/* UTF-8 text with characters to escape, in runs between the escapes. */
static int encode_escaped_utf8(encoder *e, const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0, run;

    while (i < n) {
        run = i;
        while (i < n && !needs_escape[s[i]])
            i++;
        if (reserve(e, (size_t)(i - run) + 6 + SPARE) < 0)
            return -1;
        memcpy(e->p, s + run, (size_t)(i - run));
        e->p += i - run;
        if (i < n)
            e->p += write_escape(e->p, s[i++]);
    }
    return 0;
}

static int lone_surrogate(encoder *e, Py_UCS4 c, Py_ssize_t index)
{
    char code[16]; /* PyErr_Format has no %04X */

    snprintf(code, sizeof(code), "U+%04X", (unsigned)c);
    PyErr_Format(e->error_type,
                 "cannot serialize a str holding a lone surrogate (%s at index %zd): "
                 "it has no UTF-8 form; clean the text or store it with serializer=\"raw\"",
                 code, index);
    return -1;
}

/* Writes one character as UTF-8 (escaped when JSON wants it) at p. */
static inline char *put_char(char *p, Py_UCS4 c)
{
    if (c < 0x80) {
        if (needs_escape[c])
            return p + write_escape(p, (unsigned char)c);
        *p++ = (char)c;
    } else if (c < 0x800) {
        *p++ = (char)(0xC0 | (c >> 6));
        *p++ = (char)(0x80 | (c & 0x3F));
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
    return p;
}

/* A Latin-1 str (one byte per character, some from 0x80 up): blocks of
 * plain ASCII are copied whole, the rest goes a character at a time. */
static int encode_latin1(encoder *e, const Py_UCS1 *s, Py_ssize_t n)
{
    Py_ssize_t i = 0, chunk_end;

    while (i < n) {
        chunk_end = n - i > WIDE_CHUNK ? i + WIDE_CHUNK : n;
        if (reserve(e, 6 * (size_t)(chunk_end - i) + 16 + SPARE) < 0)
            return -1;
#ifdef __SSE2__
        while (i + 16 <= chunk_end) {
            __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
            int bad = escapes_in16(v, 1);

            _mm_storeu_si128((__m128i *)e->p, v);
            if (bad == 0) {
                e->p += 16;
                i += 16;
                continue;
            }
            /* The clean bytes before the first other one stay written. */
            e->p += __builtin_ctz((unsigned)bad);
            i += __builtin_ctz((unsigned)bad);
            e->p = put_char(e->p, s[i++]);
        }
#endif
        for (; i < chunk_end; i++)
            e->p = put_char(e->p, s[i]);
    }
    return 0;
}

/* Two- and four-byte strs: a character at a time, except that in two-byte
 * ones (most text beyond Latin-1: CJK, Cyrillic, ... mixed with ASCII)
 * eight characters at a time are narrowed to bytes and written at once
 * when all eight are plain ASCII. Unsigned saturation turns anything else
 * into a byte the escape test flags: 0xFF above 0xFF, 0 from 0x8000 on
 * (surrogates included), which go one at a time. Inlined once per kind. */
static inline int encode_wide_kind(encoder *e, const void *data, Py_ssize_t n, int kind)
{
    Py_ssize_t i = 0, chunk_end;
    Py_UCS4 c;

    while (i < n) {
        chunk_end = n - i > WIDE_CHUNK ? i + WIDE_CHUNK : n;
        /* 6 bytes a character at most (\u00XX), 8 for the block store */
        if (reserve(e, 6 * (size_t)(chunk_end - i) + 16 + SPARE) < 0)
            return -1;
#ifdef __SSE2__
        if (kind == PyUnicode_2BYTE_KIND) {
            const Py_UCS2 *s = data;
            while (i + 8 <= chunk_end) {
                __m128i bytes = _mm_packus_epi16(_mm_loadu_si128((const __m128i *)(s + i)),
                                                 _mm_setzero_si128());
                int bad = escapes_in16(bytes, 1) & 0xFF;

                _mm_storel_epi64((__m128i *)e->p, bytes);
                if (bad == 0) {
                    e->p += 8;
                    i += 8;
                    continue;
                }
                /* The plain characters before the first other one stay
                 * written; then one at a time up to the next plain one. */
                e->p += __builtin_ctz((unsigned)bad);
                i += __builtin_ctz((unsigned)bad);
                do {
                    c = s[i];
                    if (unlikely(c >= 0xD800 && c <= 0xDFFF))
                        return lone_surrogate(e, c, i);
                    e->p = put_char(e->p, c);
                    i++;
                } while (i < chunk_end && (s[i] >= 0x80 || needs_escape[s[i]]));
            }
        }
#endif
        for (; i < chunk_end; i++) {
            c = kind == PyUnicode_2BYTE_KIND ? ((const Py_UCS2 *)data)[i]
                                             : ((const Py_UCS4 *)data)[i];
            if (unlikely(c >= 0xD800 && c <= 0xDFFF))
                return lone_surrogate(e, c, i);
            e->p = put_char(e->p, c);
        }
    }
    return 0;
}

/* The UTF-8 form CPython keeps beside a non-ASCII str once something asked
 * for it, or NULL. Used when there, never created: creating it would double
 * the memory of every str stored. */
static inline const char *cached_utf8(PyObject *s, Py_ssize_t *n)
{
#if PY_VERSION_HEX < 0x030E0000
    if (PyUnicode_IS_COMPACT(s) && ((PyCompactUnicodeObject *)s)->utf8 != NULL) {
        *n = ((PyCompactUnicodeObject *)s)->utf8_length;
        return ((PyCompactUnicodeObject *)s)->utf8;
    }
#endif
    (void)s;
    (void)n;
    return NULL;
}

/* The characters of a str with no UTF-8 form at hand, transcoded. */
static int encode_chars(encoder *e, PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);

    switch (PyUnicode_KIND(s)) {
    case PyUnicode_1BYTE_KIND:
        return encode_latin1(e, PyUnicode_1BYTE_DATA(s), n);
    case PyUnicode_2BYTE_KIND:
        return encode_wide_kind(e, PyUnicode_DATA(s), n, PyUnicode_2BYTE_KIND);
    default:
        return encode_wide_kind(e, PyUnicode_DATA(s), n, PyUnicode_4BYTE_KIND);
    }
}

/* A str that needs more than a block copy: escapes, or no UTF-8 form at
 * hand. */
static RC_NOINLINE int encode_str_slow(encoder *e, PyObject *s, const char *utf8, Py_ssize_t n)
{
    if (reserve(e, 1) < 0)
        return -1;
    *e->p++ = '"';
    if (utf8 != NULL) {
        if (encode_escaped_utf8(e, (const unsigned char *)utf8, n) < 0)
            return -1;
    } else if (encode_chars(e, s) < 0) {
        return -1;
    }
    if (reserve(e, 1 + SPARE) < 0)
        return -1;
    *e->p++ = '"';
    return 0;
}

static RC_ALWAYS_INLINE int encode_str(encoder *e, PyObject *s)
{
    const char *utf8;
    char *p;
    Py_ssize_t n;

    if (likely(PyUnicode_IS_ASCII(s))) {
        utf8 = PyUnicode_DATA(s);
        n = PyUnicode_GET_LENGTH(s);
    } else {
        utf8 = cached_utf8(s, &n);
        if (utf8 == NULL)
            return encode_str_slow(e, s, NULL, 0);
    }
    /* The common case: text with nothing to escape (dict keys, most values)
     * is one reservation and one block copy that checks as it goes. */
    if (reserve(e, (size_t)n + 2 + SPARE) < 0)
        return -1;
    /* Through a local: a store through e->p could alias e->p itself. */
    p = e->p;
    if (likely(copy_clean(p + 1, (const unsigned char *)utf8, n))) {
        p[0] = '"';
        p[n + 1] = '"';
        e->p = p + n + 2;
        return 0;
    }
    return encode_str_slow(e, s, utf8, n);
}

/* The value of an int that fits a long long, read straight from the object
 * when it is small; 0 with *overflow set when it does not fit. */
static inline long long int_value(PyObject *obj, int *overflow)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)obj)) {
        *overflow = 0;
        return (long long)PyUnstable_Long_CompactValue((PyLongObject *)obj);
    }
#else
    /* One 30-bit digit, the usual case. */
    Py_ssize_t size = Py_SIZE(obj);
    if (size >= -1 && size <= 1) {
        *overflow = 0;
        return (long long)((PyLongObject *)obj)->ob_digit[0] * size;
    }
#endif
    return PyLong_AsLongLongAndOverflow(obj, overflow);
}

/* Ints beyond a long long, through int.__repr__ (not str(): an IntEnum
 * member's str() is its name). */
static RC_NOINLINE int encode_big_int(encoder *e, PyObject *obj)
{
    PyObject *text;
    const char *p;
    Py_ssize_t n;
    int rc = -1;

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
    if (p == NULL || reserve(e, (size_t)n + SPARE) < 0)
        goto out;
    memcpy(e->p, p, (size_t)n);
    e->p += n;
    rc = 0;
out:
    Py_XDECREF(text);
    return rc;
}

static RC_ALWAYS_INLINE int encode_int(encoder *e, PyObject *obj)
{
    int overflow = 0;
    long long v = int_value(obj, &overflow);
    char *p;

    if (unlikely(overflow))
        return encode_big_int(e, obj);
    if (unlikely(v == -1) && PyErr_Occurred())
        return -1;
    if (reserve(e, 20 + SPARE) < 0)
        return -1;
    p = e->p;
    e->p = p + rc_format_ll(p, v);
    return 0;
}

/* Refuses the container entered at the depth limit: as a cycle when the
 * containers open, and obj after them, hold one twice (a container met
 * again inside itself), else as too deep. Cycles are only looked for here:
 * a cycle drives the depth to the limit (each turn enters the same
 * containers again), and the first repeat on the way down is the one an
 * eager check on every enter() would have reported. The error then reads
 * as if raised there: the type is the repeated container's, and the path
 * stops at it (note_path ignores the levels below path_depth). Every
 * container in open[] is still being encoded, so still alive. */
static RC_NOINLINE int refuse_depth(encoder *e, PyObject *obj)
{
    int i, j;

    e->open[e->depth] = obj;
    for (j = 1; j <= e->depth; j++) {
        for (i = 0; i < j; i++) {
            if (e->open[i] == e->open[j]) {
                e->path_depth = j;
                PyErr_Format(e->error_type,
                             "cannot serialize a %.100s that contains itself (circular reference)",
                             Py_TYPE(e->open[j])->tp_name);
                return -1;
            }
        }
    }
    PyErr_Format(e->error_type, "cannot serialize a value nested deeper than %d levels",
                 RC_JSON_MAX_DEPTH);
    return -1;
}

/* Steps into a container (or an object encoded as one): refuses nesting
 * past the limit, and so cycles (see refuse_depth). Every enter() is paired
 * with a leave(). */
static RC_ALWAYS_INLINE int enter(encoder *e, PyObject *obj)
{
    if (unlikely(e->depth >= RC_JSON_MAX_DEPTH))
        return refuse_depth(e, obj);
    /* The depth limit bounds this encoder's C stack; Python's recursion
     * limit bounds how many encoders nest through hooks (json_dumps() in a
     * model_dump(), ...) when each charges it for every RECURSION_STEP
     * levels. One charge per container would cost a call each. */
    if (unlikely(e->depth % RECURSION_STEP == 0) &&
        Py_EnterRecursiveCall(" while serializing a value to JSON"))
        return -1;
    e->open[e->depth++] = obj;
    return 0;
}

static RC_ALWAYS_INLINE void leave(encoder *e)
{
    e->depth--;
    if (unlikely(e->depth % RECURSION_STEP == 0))
        Py_LeaveRecursiveCall();
}

/* Stops an encoding with RC_JSON_NO_HOOKS at a value that would run Python
 * code (see json.h). */
static int refuse_hooks(encoder *e)
{
    PyErr_SetNone(e->st->HooksNeeded);
    return -1;
}

/* What encode_float leaves to CPython: NaN and infinities (refused), and
 * the doubles rc_float_format does not format. */
static RC_NOINLINE int encode_float_slow(encoder *e, PyObject *obj)
{
    double v = PyFloat_AS_DOUBLE(obj);
    char *text;
    size_t n;
    int rc;

    if (unlikely(!isfinite(v))) {
        if (e->flags & RC_JSON_NO_HOOKS)
            return refuse_hooks(e); /* %R below may be a subclass's __repr__ */
        PyErr_Format(e->error_type,
                     "cannot serialize float %R: JSON has no NaN or infinity; "
                     "store None or a string instead",
                     obj);
        return -1;
    }
    text = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (text == NULL)
        return -1;
    n = strlen(text);
    rc = reserve(e, n + SPARE);
    if (rc == 0) {
        memcpy(e->p, text, n);
        e->p += n;
    }
    PyMem_Free(text);
    return rc;
}

/* Inlined into the loops over items (canada.json is 111,000 doubles): the
 * reservation and rc_float_format, which returns 0 for NaN and the
 * infinities as for the few doubles it leaves to CPython. */
static RC_ALWAYS_INLINE int encode_float(encoder *e, PyObject *obj)
{
    size_t n;

    if (reserve(e, RC_FLOAT_TEXT_MAX + SPARE) < 0)
        return -1;
    n = rc_float_format(PyFloat_AS_DOUBLE(obj), e->p);
    if (likely(n > 0)) {
        e->p += n;
        return 0;
    }
    return encode_float_slow(e, obj);
}

/* Records where in the value an error happened, as a segment like [3] or
 * ['name'], so the message can point at the culprit. */
static void note_path(encoder *e, PyObject *segment_source, int is_index)
{
    PyObject *exc_type, *exc_value, *exc_tb, *segment;

    if (e->flags & RC_JSON_NO_HOOKS)
        return; /* no message is built: the caller encodes again (encode_top) */
    if (e->depth > e->path_depth)
        return; /* below the container a cycle came back to (refuse_depth) */
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
    PyObject *text;
    int rc;

    if (key == Py_None || key == Py_True || key == Py_False || PyLong_Check(key) ||
        PyFloat_Check(key)) {
        /* Their JSON form is the wanted text: write it between quotes. */
        if (reserve(e, 1) < 0)
            return -1;
        *e->p++ = '"';
        if (encode_value(e, key) < 0 || reserve(e, 1 + SPARE) < 0)
            return -1;
        *e->p++ = '"';
        return 0;
    }
    if (e->flags & RC_JSON_NO_HOOKS)
        return refuse_hooks(e);
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

/* A dict key other than an exact str. */
static int encode_key(encoder *e, PyObject *key)
{
    if (PyUnicode_Check(key))
        return encode_str(e, key);
    if (!(e->flags & RC_JSON_STRINGIFY_KEYS)) {
        if (e->flags & RC_JSON_NO_HOOKS)
            return refuse_hooks(e); /* %R below is the key's __repr__ */
        PyErr_Format(e->error_type,
                     "cannot serialize a dict key of type '%.100s' (%R): JSON object "
                     "keys are strings; convert the keys with str() first, or give the "
                     "cache stringify_keys=True",
                     Py_TYPE(key)->tp_name, key);
        return -1;
    }
    return encode_key_as_str(e, key);
}

/* Subclasses of the JSON types, and the other types encode_other knows. */
static int encode_uncommon(encoder *e, PyObject *obj)
{
    int rc;

    if (PyUnicode_Check(obj))
        return encode_str(e, obj);
    if (PyLong_Check(obj))
        return encode_int(e, obj);
    if (PyFloat_Check(obj))
        return encode_float(e, obj);
    if (PyDict_Check(obj) || PyList_Check(obj) || PyTuple_Check(obj))
        return encode_container(e, obj);
    rc = encode_other(e, obj);
    if (rc != -2)
        return rc;
    PyErr_Format(e->error_type,
                 "cannot serialize a value of type '%.100s' to JSON; store JSON types, "
                 "datetimes, UUIDs, Decimals, enums, sets, dataclasses or pydantic models, "
                 "convert it first, or choose another serializer",
                 Py_TYPE(obj)->tp_name);
    return -1;
}

/* Containers and the rest: what may run Python code is held while it is
 * encoded, as that code could drop it from the container it came from. */
static RC_NOINLINE int encode_held(encoder *e, PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    int rc;

    Py_INCREF(obj);
    /* encode_container's work, done here for lists and dicts: one call per
     * container instead of three (canada.json is lists of [x, y] pairs). */
    if (type == &PyList_Type || type == &PyDict_Type) {
        rc = enter(e, obj);
        if (likely(rc == 0)) {
            rc = type == &PyList_Type ? encode_items(e, obj, 1) : encode_dict(e, obj);
            leave(e);
        }
    } else if (type == &PyTuple_Type) {
        rc = encode_container(e, obj);
    } else {
        rc = encode_uncommon(e, obj);
    }
    Py_DECREF(obj);
    return rc;
}

/* An empty list, tuple or dict (exact types) that may be written as [] or
 * {} without entering it: within the depth limit. */
static inline int is_empty_container(const encoder *e, PyObject *obj, PyTypeObject *type)
{
    Py_ssize_t size;

    if (type == &PyList_Type)
        size = PyList_GET_SIZE(obj);
    else if (type == &PyDict_Type)
        size = PyDict_GET_SIZE(obj);
    else if (type == &PyTuple_Type)
        size = PyTuple_GET_SIZE(obj);
    else
        return 0;
    return size == 0 && e->depth < RC_JSON_MAX_DEPTH;
}

/* Inlined into the loops over containers' items: the plain types are
 * written without a call. */
static RC_ALWAYS_INLINE int encode_value_inline(encoder *e, PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);

    /* Exact types first: a pointer comparison each, no flags to load. */
    if (type == &PyUnicode_Type)
        return encode_str(e, obj);
    if (type == &PyLong_Type)
        return encode_int(e, obj);
    if (type == &PyFloat_Type)
        return encode_float(e, obj);
    if (obj == Py_None)
        return put_literal(e, "null", 4);
    if (obj == Py_True)
        return put_literal(e, "true", 4);
    if (obj == Py_False)
        return put_literal(e, "false", 5);
    /* Empty containers (citm_catalog.json has thousands of []) hold nothing
     * and run no code: written here, without entering them, unless at the
     * depth limit, where encode_held() refuses them as before. */
    if (is_empty_container(e, obj, type))
        return put_literal(e, type == &PyDict_Type ? "{}" : "[]", 2);
    return encode_held(e, obj);
}

static int encode_value(encoder *e, PyObject *obj)
{
    return encode_value_inline(e, obj);
}

/* ------------------------------------------------------- dict walking
 *
 * PyDict_Next is a call into libpython per item, an eighth of the time a
 * list of records takes. On CPython 3.11 to 3.13 the walk reads the dict's
 * entry table itself instead: a private layout, the same in the three
 * versions' Include/internal/pycore_dict.h (3.13 adds a mutex to it in
 * free-threaded builds only, which keep PyDict_Next), copied here and checked
 * against PyDict_Next on test dicts when the module loads
 * (rc_json_check_dict_layout); when that check fails, for split-table dicts
 * (instance __dict__s) and on other versions, the walk uses PyDict_Next.
 * Building with -DRC_JSON_DICT_WALK_GENERIC forces PyDict_Next (to measure
 * what the direct walk is worth). The table is found afresh for every item,
 * so a hook that resizes the dict leaves nothing dangling; encode_dict then
 * notices the change and stops. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED) && \
    !defined(RC_JSON_DICT_WALK_GENERIC)
#define DICT_WALK_DIRECT 1

typedef struct dict_keys_layout {
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size;
    uint8_t dk_log2_index_bytes;
    uint8_t dk_kind; /* 0: any keys, 1: str keys only, 2: split table */
    uint32_t dk_version;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[]; /* then the entries */
} dict_keys_layout;

typedef struct {
    Py_hash_t hash;
    PyObject *key;
    PyObject *value;
} dict_entry_any;

typedef struct {
    PyObject *key;
    PyObject *value;
} dict_entry_str;

/* Set once the layout matched PyDict_Next's view of the test dicts. */
static int dict_layout_checked;

static int walkable_directly(PyObject *dict)
{
    const dict_keys_layout *keys = (const dict_keys_layout *)((PyDictObject *)dict)->ma_keys;
    return dict_layout_checked && ((PyDictObject *)dict)->ma_values == NULL && keys->dk_kind < 2;
}
#endif

typedef struct dict_walk {
    PyObject *dict;
    Py_ssize_t pos;
    int direct;
} dict_walk;

static inline void dict_walk_start(dict_walk *w, PyObject *dict)
{
    w->dict = dict;
    w->pos = 0;
#ifdef DICT_WALK_DIRECT
    w->direct = walkable_directly(dict);
#else
    w->direct = 0;
#endif
}

/* The next item (borrowed references), or 0 at the end. */
static RC_ALWAYS_INLINE int dict_walk_next(dict_walk *w, PyObject **key, PyObject **value)
{
#ifdef DICT_WALK_DIRECT
    if (likely(w->direct)) {
        const dict_keys_layout *keys =
            (const dict_keys_layout *)((PyDictObject *)w->dict)->ma_keys;
        const char *entries = keys->dk_indices + ((size_t)1 << keys->dk_log2_index_bytes);

        while (w->pos < keys->dk_nentries) {
            Py_ssize_t i = w->pos++;
            if (keys->dk_kind == 0) {
                *key = ((const dict_entry_any *)entries)[i].key;
                *value = ((const dict_entry_any *)entries)[i].value;
            } else {
                *key = ((const dict_entry_str *)entries)[i].key;
                *value = ((const dict_entry_str *)entries)[i].value;
            }
            if (*value != NULL) /* NULL: a deleted item's slot */
                return 1;
        }
        return 0;
    }
#endif
    return PyDict_Next(w->dict, &w->pos, key, value);
}

#ifdef DICT_WALK_DIRECT
/* Walks d both ways; 1 when they agree item for item. */
static int same_walk(PyObject *d)
{
    dict_walk w;
    Py_ssize_t pos = 0;
    PyObject *k1, *v1, *k2, *v2;

    dict_walk_start(&w, d);
    if (!w.direct)
        return 0;
    for (;;) {
        int more1 = dict_walk_next(&w, &k1, &v1), more2 = PyDict_Next(d, &pos, &k2, &v2);
        if (more1 != more2)
            return 0;
        if (!more1)
            return 1;
        if (k1 != k2 || v1 != v2)
            return 0;
    }
}

int rc_json_check_dict_layout(void)
{
    PyObject *small = NULL, *mixed = NULL, *big = NULL, *key = NULL;
    int i, ok = 0;

    dict_layout_checked = 1; /* so that same_walk tries the direct walk */
    small = Py_BuildValue("{s:i,s:i,s:i}", "a", 1, "bb", 2, "ccc", 3);
    mixed = Py_BuildValue("{i:s,s:i,(i):i}", 1, "x", "y", 2, 3, 4);
    big = PyDict_New();
    if (small == NULL || mixed == NULL || big == NULL)
        goto out;
    /* 300 keys: two-byte indices; every third deleted leaves holes. */
    for (i = 0; i < 300; i++) {
        key = PyUnicode_FromFormat("key%d", i);
        if (key == NULL || PyDict_SetItem(big, key, key) < 0)
            goto out;
        if (i % 3 == 0 && PyDict_DelItem(big, key) < 0)
            goto out;
        Py_CLEAR(key);
    }
    if (PyDict_DelItemString(small, "bb") < 0 || PyDict_DelItemString(mixed, "y") < 0)
        goto out;
    ok = same_walk(small) && same_walk(mixed) && same_walk(big);
out:
    dict_layout_checked = ok;
    Py_XDECREF(key);
    Py_XDECREF(small);
    Py_XDECREF(mixed);
    Py_XDECREF(big);
    return PyErr_Occurred() ? -1 : 0;
}

int rc_json_dict_walk_direct(void)
{
    return dict_layout_checked;
}
#else
int rc_json_check_dict_layout(void)
{
    return 0;
}

int rc_json_dict_walk_direct(void)
{
    return 0;
}
#endif

/* The dict's version tag (PEP 509), which CPython changes on every change
 * to the dict. Deprecated from 3.12, where the field is kept for dict
 * watchers (3.13 keeps watcher bits in its low 12 bits) and still changes on
 * every insert, delete or value replacement; 0 on versions without it. */
static inline uint64_t dict_version(PyObject *dict)
{
#if PY_VERSION_HEX < 0x030C0000
    return ((PyDictObject *)dict)->ma_version_tag;
#elif PY_VERSION_HEX < 0x030E0000
    uint64_t version;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    version = ((PyDictObject *)dict)->ma_version_tag;
#pragma GCC diagnostic pop
    return version;
#else
    (void)dict;
    return 0;
#endif
}

/* Non-zero when a dict is no longer as it was when its encoding started:
 * Python code run by a hook (model_dump(), a dataclass property) may have
 * changed it, and going on would write a mix of old and new items (a key
 * deleted and added again keeps the size but would be written twice). */
static int dict_changed(PyObject *dict, Py_ssize_t size, uint64_t version)
{
    return PyDict_GET_SIZE(dict) != size || dict_version(dict) != version;
}

/* Non-zero for the values whose encoding runs no Python code, and so can
 * neither free them nor change the container they sit in. */
static inline int is_plain(PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);

    if (type == &PyUnicode_Type || type == &PyLong_Type || type == &PyFloat_Type ||
        type == &PyBool_Type || obj == Py_None)
        return 1;
    /* empty containers too (see is_empty_container) */
    return (type == &PyList_Type && PyList_GET_SIZE(obj) == 0) ||
           (type == &PyDict_Type && PyDict_GET_SIZE(obj) == 0) ||
           (type == &PyTuple_Type && PyTuple_GET_SIZE(obj) == 0);
}

/* One "key":value item whose encoding may run Python code (a key other than
 * a str, or a value other than a plain one): both are held while it runs,
 * and the dict must be unchanged afterwards. */
static int encode_guarded_item(encoder *e, PyObject *dict, PyObject *key, PyObject *value,
                               Py_ssize_t size, uint64_t version)
{
    unsigned long hooks = e->hooks;
    int rc = -1;

    Py_INCREF(key);
    Py_INCREF(value);
    if (encode_key(e, key) < 0)
        goto out;
    *e->p++ = ':';
    if (encode_value(e, value) < 0) {
        note_path(e, key, 0);
        goto out;
    }
    if (e->hooks != hooks && dict_changed(dict, size, version)) {
        PyErr_SetString(e->error_type, "a dict changed while it was being serialized "
                                       "(by a hook such as model_dump() or a property)");
        goto out;
    }
    rc = 0;
out:
    Py_DECREF(key);
    Py_DECREF(value);
    return rc;
}

/* Closes an array or object: the ',' after its last item becomes the
 * bracket. */
static inline int close_container(encoder *e, int empty, char bracket)
{
    if (empty)
        *e->p++ = bracket;
    else
        e->p[-1] = bracket;
    return reserve(e, SPARE);
}

static int encode_dict(encoder *e, PyObject *obj)
{
    Py_ssize_t size = PyDict_GET_SIZE(obj);
    PyObject *key, *value;
    dict_walk walk;
    uint64_t version = dict_version(obj);

    if (reserve(e, 1 + SPARE) < 0)
        return -1;
    *e->p++ = '{';
    dict_walk_start(&walk, obj);
    while (dict_walk_next(&walk, &key, &value)) {
        if (likely(PyUnicode_CheckExact(key) && is_plain(value))) {
            if (encode_str(e, key) < 0)
                return -1;
            *e->p++ = ':';
            if (encode_value_inline(e, value) < 0) {
                note_path(e, key, 0);
                return -1;
            }
        } else if (encode_guarded_item(e, obj, key, value, size, version) < 0) {
            return -1;
        }
        *e->p++ = ',';
    }
    return close_container(e, size == 0, '}');
}

/* The items of a list or tuple; inlined once for each. */
static RC_ALWAYS_INLINE int encode_items(encoder *e, PyObject *obj, int is_list)
{
    Py_ssize_t i;

    if (reserve(e, 1 + SPARE) < 0)
        return -1;
    *e->p++ = '[';
    /* A list's size is read again after each item: a hook may change it. */
    for (i = 0; i < (is_list ? PyList_GET_SIZE(obj) : PyTuple_GET_SIZE(obj)); i++) {
        PyObject *item = is_list ? PyList_GET_ITEM(obj, i) : PyTuple_GET_ITEM(obj, i);

        if (encode_value_inline(e, item) < 0) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index != NULL) {
                note_path(e, index, 1);
                Py_DECREF(index);
            }
            return -1;
        }
        *e->p++ = ',';
    }
    return close_container(e, i == 0, ']');
}

static int encode_sequence(encoder *e, PyObject *obj)
{
    return PyList_Check(obj) ? encode_items(e, obj, 1) : encode_items(e, obj, 0);
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

    if (e->flags & RC_JSON_NO_HOOKS)
        return refuse_hooks(e);
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

static void encoder_init(encoder *e, rc_state *st, int flags)
{
    e->out = NULL;
    e->bytes = NULL;
    e->p = e->end = NULL;
    e->st = st;
    e->error_type = st->SerializationError;
    e->depth = 0;
    e->path_depth = RC_JSON_MAX_DEPTH + 1;
    e->hooks = 0;
    e->flags = flags;
    e->path = NULL;
}

static int encode_top(encoder *e, PyObject *obj)
{
    int rc = encode_value(e, obj);

    if (rc < 0 && e->flags & RC_JSON_NO_HOOKS) {
        /* Direct encoding reports every failure as "run the hooks": the
         * caller encodes again where Python code may run, and that attempt
         * builds the real message (whose reprs could be user code). */
        if (!PyErr_ExceptionMatches(e->st->HooksNeeded)) {
            PyErr_Clear();
            PyErr_SetNone(e->st->HooksNeeded);
        }
    } else if (rc < 0) {
        attach_path(e);
    }
    Py_CLEAR(e->path);
    return rc;
}

int rc_json_encode(rc_buf *out, PyObject *obj, rc_state *st, int flags)
{
    encoder e;
    int rc;

    /* Memory first: the cursor never points into a NULL buffer. */
    if (rc_buf_reserve(out, 64) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    encoder_init(&e, st, flags);
    e.out = out;
    e.p = out->data + out->len;
    e.end = out->data + out->cap;
    rc = encode_top(&e, obj);
    out->len = (size_t)(e.p - out->data);
    return rc;
}

/* What most values fit in, so json_dumps() seldom grows its bytes object. */
#define DUMPS_FIRST_SIZE 1024

PyObject *rc_json_dumps(PyObject *obj, rc_state *st, int flags)
{
    encoder e;
    int rc;

    encoder_init(&e, st, flags);
    e.bytes = PyBytes_FromStringAndSize(NULL, DUMPS_FIRST_SIZE);
    if (e.bytes == NULL)
        return NULL;
    e.p = PyBytes_AS_STRING(e.bytes);
    e.end = e.p + DUMPS_FIRST_SIZE;
    rc = encode_top(&e, obj);
    /* The bytes object may have been replaced by a failed resize (NULL). */
    if (rc == 0)
        rc = _PyBytes_Resize(&e.bytes, e.p - PyBytes_AS_STRING(e.bytes));
    if (rc < 0) {
        Py_XDECREF(e.bytes);
        return NULL;
    }
    return e.bytes;
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
