/* JSON decoder; see json.h.
 *
 * Recursive descent over the bytes, with one stack for the whole decode
 * that holds every object made and not yet placed in its container: a list's
 * items until the list is made (once, at its size, instead of growing by
 * appends), and a dict being filled with its pending key and value. So
 * rc_json_decode is the one place that cleans up after an error.
 *
 * The common cases have fast paths: plain ASCII strings found 16 bytes at a
 * time, short keys and short string values shared through caches, short ints
 * and decimals read in one pass. Anything unusual goes back to the
 * byte-at-a-time code, which decides every error and its byte offset.
 */
#include "json.h"
#include "floats.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Stack slots on the C stack; a decode that needs more moves to the heap. */
#define INLINE_STACK 256

typedef struct decoder {
    const unsigned char *start, *p, *end;
    rc_state *st;
    PyObject *error_type;
    int depth;
    /* New references waiting for their container: a list's items, or a
     * dict being filled followed by its pending key and value. */
    PyObject **stack;
    size_t top, cap;
    int stack_on_heap;
} decoder;

static PyObject *syntax_error(decoder *d, const char *what)
{
    PyErr_Format(d->error_type, "invalid JSON at byte %zd: %s", (Py_ssize_t)(d->p - d->start),
                 what);
    return NULL;
}

/* Indented JSON: a newline and the next line's indentation, 16 bytes at a
 * time (twitter.json's runs are 7 to 15 bytes, citm_catalog.json's up to
 * 29). */
static void skip_space_loop(decoder *d)
{
    const unsigned char *p = d->p, *end = d->end;

#ifdef __SSE2__
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i space = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(' ')),
                                                  _mm_cmpeq_epi8(v, _mm_set1_epi8('\n'))),
                                     _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\r')),
                                                  _mm_cmpeq_epi8(v, _mm_set1_epi8('\t'))));
        unsigned other = ~(unsigned)_mm_movemask_epi8(space) & 0xFFFF;
        if (other != 0) {
            d->p = p + __builtin_ctz(other);
            return;
        }
        p += 16;
    }
#endif
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    d->p = p;
}

/* Compact JSON has no whitespace at all: one test decides that inline. The
 * one space after a ':' or ',' of indented JSON (half its runs) is skipped
 * inline too. */
static inline void skip_space(decoder *d)
{
    const unsigned char *p = d->p;

    if (p < d->end && *p <= ' ') {
        if (*p == ' ' && d->end - p > 1 && p[1] > ' ') {
            d->p = p + 1;
            return;
        }
        skip_space_loop(d);
    }
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Scans digits at *pp, adding them to the significand (past 19 digits
 * only their count matters: the fast paths stop at 15). */
static void scan_digits(const unsigned char **pp, const unsigned char *end, uint64_t *digits,
                        Py_ssize_t *significant, Py_ssize_t *count)
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

static PyObject *decode_number_slow(decoder *d)
{
    const unsigned char *begin = d->p, *p = d->p;
    /* Counts are Py_ssize_t: a number may have more than 2^31 digits. */
    Py_ssize_t significant = 0, int_count = 0, frac_count = 0;
    int is_float = 0, negative = 0;
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
    if (is_float && significant <= 19 && frac_count <= 100000) {
        /* |exponent| < 10^5 + 10, so q fits an int. */
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

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

#define HIGH_BITS 0x8080808080808080ULL

/* The str of n bytes of string text (no quote, backslash or control
 * character; escapes already replaced), decoded as strict UTF-8 without
 * CPython's decoder, which for text that is not ASCII grows its result
 * through the kinds (1, 2, 4 bytes a character) and copies it at each step.
 * Here one pass checks every sequence (as utf8_sequence does: CPython's
 * strict decoder refuses the same ones), counts the characters and finds the kind
 * from the largest lead byte (below 0xC4: U+00FF at most; below 0xF0:
 * U+FFFF at most; else beyond), and a second fills a str made at its final
 * size and kind. Eight ASCII bytes at a time where they come in runs.
 * Returns 1 with *out set; 0 when the text is not valid UTF-8 (nothing
 * made, no exception: the caller's checked path says where); -1 with an
 * exception (no memory). */
static int utf8_str(const unsigned char *s, size_t n, PyObject **out)
{
    size_t i = 0, j = 0, count = 0;
    unsigned char top = 0;
    Py_UCS4 maxchar;
    PyObject *str;
    int kind;
    void *data;

    while (i < n) {
        unsigned char c = s[i];
        size_t len;

        if (c < 0x80) {
            if (n - i >= 8 && (load64(s + i) & HIGH_BITS) == 0) {
                i += 8;
                count += 8;
            } else {
                i++;
                count++;
            }
            continue;
        }
        /* utf8_sequence()'s checks, inline: continuation bytes, then the
         * second byte's range where the lead allows overlong forms (E0,
         * F0), surrogates (ED) or code points past U+10FFFF (F4) */
        if (c < 0xE0) {
            if (c < 0xC2 || n - i < 2 || (s[i + 1] & 0xC0) != 0x80)
                return 0;
            len = 2;
        } else if (c < 0xF0) {
            if (n - i < 3 || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
                (c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] >= 0xA0))
                return 0;
            len = 3;
        } else {
            if (c > 0xF4 || n - i < 4 || (s[i + 1] & 0xC0) != 0x80 ||
                (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80 ||
                (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] >= 0x90))
                return 0;
            len = 4;
        }
        if (c > top)
            top = c;
        i += len;
        count++;
    }
    maxchar = top == 0 ? 0x7F : top < 0xC4 ? 0xFF : top < 0xF0 ? 0xFFFF : 0x10FFFF;
    str = PyUnicode_New((Py_ssize_t)count, maxchar);
    if (str == NULL)
        return -1;
    kind = PyUnicode_KIND(str);
    data = PyUnicode_DATA(str);
    i = 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        Py_UCS1 *d = data;
        if (top == 0) {
            memcpy(d, s, n);
        } else {
            while (i < n) {
                unsigned char c = s[i];
                if (c < 0x80 && n - i >= 8 && (load64(s + i) & HIGH_BITS) == 0) {
                    memcpy(d + j, s + i, 8);
                    i += 8;
                    j += 8;
                } else if (c < 0x80) {
                    d[j++] = c;
                    i++;
                } else {
                    d[j++] = (Py_UCS1)((c & 0x1F) << 6 | (s[i + 1] & 0x3F));
                    i += 2;
                }
            }
        }
    } else if (kind == PyUnicode_2BYTE_KIND) {
        Py_UCS2 *d = data;
        while (i < n) {
            unsigned char c = s[i];
            if (c < 0x80) {
                d[j++] = c;
                i++;
            } else if (c < 0xE0) {
                d[j++] = (Py_UCS2)((c & 0x1F) << 6 | (s[i + 1] & 0x3F));
                i += 2;
            } else {
                d[j++] = (Py_UCS2)((c & 0x0F) << 12 | (s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F));
                i += 3;
            }
        }
    } else {
        Py_UCS4 *d = data;
        while (i < n) {
            unsigned char c = s[i];
            if (c < 0x80) {
                d[j++] = c;
                i++;
            } else if (c < 0xE0) {
                d[j++] = (Py_UCS4)(c & 0x1F) << 6 | (s[i + 1] & 0x3F);
                i += 2;
            } else if (c < 0xF0) {
                d[j++] = (Py_UCS4)(c & 0x0F) << 12 | (Py_UCS4)(s[i + 1] & 0x3F) << 6 |
                         (s[i + 2] & 0x3F);
                i += 3;
            } else {
                d[j++] = (Py_UCS4)(c & 0x07) << 18 | (Py_UCS4)(s[i + 1] & 0x3F) << 12 |
                         (Py_UCS4)(s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F);
                i += 4;
            }
        }
    }
    *out = str;
    return 1;
}

/* Decodes a string holding escapes, from the opening quote's successor. The
 * UTF-8 is rebuilt in a scratch buffer; lone surrogate escapes, which Python's
 * json module accepts, pass through "surrogatepass". */
static PyObject *decode_escaped_string_checked(decoder *d)
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

static inline const unsigned char *scan_text(const unsigned char *p, const unsigned char *end);

/* Decodes a string holding escapes, from the opening quote's successor: the
 * runs between escapes are found 16 bytes at a time and copied whole, and
 * the UTF-8 is checked once at the end (utf8_str). Anything unusual (an
 * error, a \u escape of a surrogate, text that is not valid UTF-8) starts
 * the string over on decode_escaped_string_checked, which decides what it
 * is and where. */
static PyObject *decode_escaped_string(decoder *d)
{
    const unsigned char *begin = d->p;
    rc_buf scratch;
    PyObject *result = NULL;
    int rc;

    rc_buf_init(&scratch);
    while (1) {
        const unsigned char *run = d->p, *q = scan_text(d->p, d->end);
        unsigned char c;

        if (q > run && rc_buf_append(&scratch, run, (size_t)(q - run)) < 0) {
            PyErr_NoMemory();
            goto out;
        }
        if (q >= d->end)
            goto checked;
        if (*q == '"') {
            d->p = q + 1;
            break;
        }
        if (*q != '\\' || d->end - q < 2)
            goto checked; /* a control character, or the input ends */
        if (rc_buf_reserve(&scratch, 4) < 0) {
            PyErr_NoMemory();
            goto out;
        }
        d->p = q + 2;
        switch (q[1]) {
        case '"':
        case '\\':
        case '/':
            c = q[1];
            break;
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        case 'u': {
            long cp = read_hex4(d);
            if (cp < 0 || (cp >= 0xD800 && cp <= 0xDFFF))
                goto checked; /* surrogates: pairs and lone ones */
            put_utf8(&scratch, (uint32_t)cp);
            continue;
        }
        default:
            goto checked;
        }
        scratch.data[scratch.len++] = (char)c;
    }
    rc = utf8_str((const unsigned char *)(scratch.data ? scratch.data : ""), scratch.len, &result);
    if (rc > 0)
        goto out;
    if (rc < 0) {
        result = NULL;
        goto out;
    }
checked:
    d->p = begin;
    result = decode_escaped_string_checked(d);
out:
    rc_buf_free(&scratch);
    return result;
}

/* A str of the n ASCII bytes at p. */
static PyObject *ascii_str(const unsigned char *p, size_t n)
{
    PyObject *s;

    /* CPython keeps the one-character strings; take those instead of a copy. */
    if (n == 1)
        return PyUnicode_FromStringAndSize((const char *)p, 1);
    s = PyUnicode_New((Py_ssize_t)n, 127);
    if (s != NULL)
        memcpy(PyUnicode_DATA(s), p, n);
    return s;
}

static PyObject *decode_string_checked(decoder *d)
{
    const unsigned char *begin;
    int ascii = 1;

    d->p++; /* the opening quote */
    begin = d->p;
    while (d->p < d->end) {
        unsigned char c = *d->p;
        if (c == '"') {
            Py_ssize_t n = d->p - begin;
            d->p++;
            if (!ascii)
                return PyUnicode_DecodeUTF8((const char *)begin, n, NULL);
            return ascii_str(begin, (size_t)n);
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


static inline uint32_t load32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* The first byte from p on that ends a run of plain string text: '"', '\\',
 * a control character or a byte >= 0x80 (end if none). */
static inline const unsigned char *scan_ascii(const unsigned char *p, const unsigned char *end)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                  space = _mm_set1_epi8(' ');

    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        /* Signed compare: bytes >= 0x80 are negative, so "< ' '" catches
         * them along with the control characters. */
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                   _mm_cmplt_epi8(v, space));
        int mask = _mm_movemask_epi8(hit);
        if (mask != 0)
            return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x80)
        p++;
    return p;
}

/* As scan_ascii, but bytes >= 0x80 do not stop it (their UTF-8 is checked
 * once the string's end is known). */
static inline const unsigned char *scan_text(const unsigned char *p, const unsigned char *end)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                  space = _mm_set1_epi8(' '), zero = _mm_setzero_si128();

    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i control = _mm_andnot_si128(_mm_cmplt_epi8(v, zero), _mm_cmplt_epi8(v, space));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                   control);
        int mask = _mm_movemask_epi8(hit);
        if (mask != 0)
            return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20)
        p++;
    return p;
}

/* Finishes the string whose text starts at begin, given where scan_ascii
 * stopped (q). Plain strings are made here; escapes and every error go to
 * decode_string_checked, which starts over at the opening quote. */
static PyObject *finish_string(decoder *d, const unsigned char *begin, const unsigned char *q)
{
    if (q < d->end && *q == '"') {
        d->p = q + 1;
        return ascii_str(begin, (size_t)(q - begin));
    }
    if (q < d->end && *q >= 0x80) {
        q = scan_text(q, d->end);
        if (q < d->end && *q == '"') {
            PyObject *s;
            /* 0: invalid UTF-8, whose offset the checked path finds */
            int rc = utf8_str(begin, (size_t)(q - begin), &s);
            if (rc > 0) {
                d->p = q + 1;
                return s;
            }
            if (rc < 0)
                return NULL;
        }
    }
    if (q < d->end && *q == '\\') {
        d->p = begin;
        return decode_escaped_string(d);
    }
    d->p = begin - 1;
    return decode_string_checked(d);
}

/* The str of the n plain ASCII bytes at begin (n <= RC_JSON_KEY_CACHE_MAX_LEN)
 * through a cache: a direct-mapped table of recent strings (a miss replaces
 * the slot's string). A slot is found and checked by a fingerprint, the
 * length and two words, which for strings up to 16 bytes hold every byte (no
 * plain byte is 0, so the zero padding is unambiguous) and for longer ones
 * the first and last 8 bytes, the rest then compared. */
static inline PyObject *cached_str(rc_key_entry *table, const unsigned char *begin, size_t n)
{
    uint64_t head, tail, h;
    rc_key_entry *entry;
    PyObject *s;

    if (n >= 8) {
        head = load64(begin);
        tail = load64(begin + n - 8);
    } else if (n >= 4) {
        head = load32(begin) | (uint64_t)load32(begin + n - 4) << 32;
        tail = 0;
    } else {
        head = n == 0 ? 0 : begin[0] | (uint64_t)begin[n / 2] << 8 | (uint64_t)begin[n - 1] << 16;
        tail = 0;
    }
    /* Any decent mix will do: the slot only has to spread the few dozen
     * key names or enum-like values of a payload over the table. */
    h = (head ^ (tail * 0x9E3779B97F4A7C15ULL) ^ n) * 0xFF51AFD7ED558CCDULL;
    entry = &table[(h >> 32) & (RC_KEY_CACHE_SIZE - 1)];
    if (entry->str != NULL && entry->len == n && entry->head == head && entry->tail == tail &&
        (n <= 16 || memcmp(PyUnicode_DATA(entry->str), begin, n) == 0))
        return Py_NewRef(entry->str);
    s = ascii_str(begin, n);
    if (s == NULL)
        return NULL;
    Py_XSETREF(entry->str, Py_NewRef(s));
    entry->len = n;
    entry->head = head;
    entry->tail = tail;
    return s;
}

/* A string value. Short plain ones come from the string cache: values that
 * repeat (codes, tags, currencies) become one shared str instead of an
 * allocation each, which pays for the lookup on the unique ones. Empty and
 * one-character strings are CPython's own singletons already. */
static PyObject *decode_string(decoder *d)
{
    const unsigned char *begin = d->p + 1, *q = scan_ascii(begin, d->end);
    size_t n = (size_t)(q - begin);

    if (q < d->end && *q == '"' && n >= 2 && n <= 16) {
        d->p = q + 1;
        return cached_str(d->st->str_cache, begin, n);
    }
    return finish_string(d, begin, q);
}

/* An object key: plain ASCII keys up to RC_JSON_KEY_CACHE_MAX_LEN bytes come
 * from the key cache, so the records of a list share their key strings and
 * those strings' cached hashes (the dicts do not hash them again). */
static PyObject *decode_key(decoder *d)
{
    const unsigned char *begin = d->p + 1, *q = scan_ascii(begin, d->end);
    size_t n = (size_t)(q - begin);

    if (q >= d->end || *q != '"' || n > RC_JSON_KEY_CACHE_MAX_LEN)
        return finish_string(d, begin, q);
    d->p = q + 1;
    return cached_str(d->st->key_cache, begin, n);
}

/* A number. Ints of up to 18 digits and decimals of up to 19 digits without
 * an exponent are read here in one pass; the rest (and every malformed
 * number) go to decode_number_slow, which starts over. */
static PyObject *decode_number(decoder *d)
{
    const unsigned char *p = d->p, *end = d->end, *first, *frac;
    int negative = 0;
    uint64_t digits = 0;
    size_t int_count, frac_count;
    double v;

    if (*p == '-') {
        negative = 1;
        p++;
    }
    first = p;
    /* 19 digits cannot overflow a uint64. */
    while (p < end && is_digit(*p) && p - first < 19) {
        digits = digits * 10 + (uint64_t)(*p - '0');
        p++;
    }
    int_count = (size_t)(p - first);
    if (int_count == 0 || int_count > 18 || (*first == '0' && int_count > 1))
        return decode_number_slow(d);
    if (p >= end || (*p != '.' && (*p | 0x20) != 'e')) {
        /* < 10^18, so it fits a long long either way. */
        long long i = (long long)digits;
        d->p = p;
        return PyLong_FromLongLong(negative ? -i : i);
    }
    if (*p != '.')
        return decode_number_slow(d);
    frac = ++p;
    while (p < end && is_digit(*p) && (size_t)(p - frac) + int_count < 19) {
        digits = digits * 10 + (uint64_t)(*p - '0');
        p++;
    }
    frac_count = (size_t)(p - frac);
    if (frac_count == 0 || (p < end && (is_digit(*p) || (*p | 0x20) == 'e')))
        return decode_number_slow(d);
    /* Both conversions are exact whenever they return 1. */
    if ((int_count + frac_count <= 15 &&
         rc_float_from_decimal(digits, -(int)frac_count, negative, &v)) ||
        rc_float_from_digits(digits, -(int)frac_count, negative, &v)) {
        d->p = p;
        return PyFloat_FromDouble(v);
    }
    return decode_number_slow(d);
}

static int grow_stack(decoder *d)
{
    size_t cap = d->cap * 2;
    PyObject **stack;

    if (cap > (size_t)PY_SSIZE_T_MAX / sizeof(PyObject *)) {
        PyErr_NoMemory();
        return -1;
    }
    if (d->stack_on_heap) {
        stack = PyMem_Realloc(d->stack, cap * sizeof(PyObject *));
    } else {
        stack = PyMem_Malloc(cap * sizeof(PyObject *));
        if (stack != NULL)
            memcpy(stack, d->stack, d->top * sizeof(PyObject *));
    }
    if (stack == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    d->stack = stack;
    d->cap = cap;
    d->stack_on_heap = 1;
    return 0;
}

/* Puts v, a new reference or NULL after an error, on the stack. 0 or -1. */
static inline int push(decoder *d, PyObject *v)
{
    if (v == NULL)
        return -1;
    if (d->top == d->cap && grow_stack(d) < 0) {
        Py_DECREF(v);
        return -1;
    }
    d->stack[d->top++] = v;
    return 0;
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

static int decode_value(decoder *d);

/* The array at d->p, pushed. 0 or -1. */
static int decode_array(decoder *d)
{
    size_t base = d->top, n, i;
    PyObject *list;

    if (enter_container(d) < 0)
        return -1;
    d->p++;
    skip_space(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
    } else {
        while (1) {
            if (decode_value(d) < 0)
                return -1;
            skip_space(d);
            if (d->p < d->end && *d->p == ',') {
                d->p++;
                continue;
            }
            if (d->p < d->end && *d->p == ']') {
                d->p++;
                break;
            }
            syntax_error(d, "expected ',' or ']' in array");
            return -1;
        }
    }
    n = d->top - base;
    list = PyList_New((Py_ssize_t)n);
    if (list == NULL)
        return -1;
    /* The list takes over the stack's references. */
    for (i = 0; i < n; i++)
        PyList_SET_ITEM(list, (Py_ssize_t)i, d->stack[base + i]);
    d->top = base;
    d->depth--;
    return push(d, list);
}

/* Puts the key and value on top of the stack into the dict below them. */
static int add_item(decoder *d)
{
    PyObject *dict = d->stack[d->top - 3];

    /* In document order: a repeated key keeps its first place and takes its
     * last value, as with Python's json. */
    if (PyDict_SetItem(dict, d->stack[d->top - 2], d->stack[d->top - 1]) < 0)
        return -1;
    Py_DECREF(d->stack[d->top - 1]);
    Py_DECREF(d->stack[d->top - 2]);
    d->top -= 2;
    return 0;
}

/* The object at d->p, pushed. 0 or -1. The dict is filled as its items are
 * read (so each is inserted while its key and value are fresh in cache);
 * meanwhile it sits on the stack under the pending key and value.
 *
 * Not _PyDict_NewPresized, although it would save the resize that a dict of
 * more than 5 keys goes through: it makes a table of general keys, a third
 * bigger and slower to look up by a str that is equal but not identical
 * (what every dict["name"] in user code does) than the str-keys table
 * PyDict_New grows into, as Python's json makes. */
static int decode_object(decoder *d)
{
    if (enter_container(d) < 0 || push(d, PyDict_New()) < 0)
        return -1;
    d->p++;
    skip_space(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
    } else {
        while (1) {
            skip_space(d);
            if (d->p >= d->end || *d->p != '"') {
                syntax_error(d, "expected a string key in object");
                return -1;
            }
            if (push(d, decode_key(d)) < 0)
                return -1;
            skip_space(d);
            if (d->p >= d->end || *d->p != ':') {
                syntax_error(d, "expected ':' after object key");
                return -1;
            }
            d->p++;
            if (decode_value(d) < 0 || add_item(d) < 0)
                return -1;
            skip_space(d);
            if (d->p < d->end && *d->p == ',') {
                d->p++;
                continue;
            }
            if (d->p < d->end && *d->p == '}') {
                d->p++;
                break;
            }
            syntax_error(d, "expected ',' or '}' in object");
            return -1;
        }
    }
    d->depth--;
    return 0;
}

static int decode_literal(decoder *d, const char *word, size_t n, PyObject *value)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0) {
        syntax_error(d, "expected a JSON value");
        return -1;
    }
    d->p += n;
    return push(d, Py_NewRef(value));
}

/* The value at d->p (after any whitespace), pushed. 0 or -1. */
static int decode_value(decoder *d)
{
    skip_space(d);
    if (d->p >= d->end) {
        syntax_error(d, "expected a JSON value, found the end of the input");
        return -1;
    }
    switch (*d->p) {
    case '"':
        return push(d, decode_string(d));
    case '{':
        return decode_object(d);
    case '[':
        return decode_array(d);
    case 't':
        return decode_literal(d, "true", 4, Py_True);
    case 'f':
        return decode_literal(d, "false", 5, Py_False);
    case 'n':
        return decode_literal(d, "null", 4, Py_None);
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        return push(d, decode_number(d));
    default:
        syntax_error(d, "expected a JSON value");
        return -1;
    }
}

PyObject *rc_json_decode(const char *p, size_t n, rc_state *st)
{
    PyObject *inline_stack[INLINE_STACK];
    PyObject *value = NULL;
    decoder d;
    size_t i;

    d.start = d.p = (const unsigned char *)p;
    d.end = d.start + n;
    d.st = st;
    d.error_type = st->SerializationError;
    d.depth = 0;
    d.stack = inline_stack;
    d.top = 0;
    d.cap = INLINE_STACK;
    d.stack_on_heap = 0;
    if (decode_value(&d) < 0)
        goto out;
    skip_space(&d);
    if (d.p != d.end) {
        syntax_error(&d, "extra data after the JSON value");
        goto out;
    }
    value = d.stack[0];
    d.top = 0;
out:
    /* After an error, whatever was decoded but not yet placed. */
    for (i = 0; i < d.top; i++)
        Py_DECREF(d.stack[i]);
    if (d.stack_on_heap)
        PyMem_Free(d.stack);
    return value;
}
