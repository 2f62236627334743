/* Float conversions for the JSON codec; see floats.h.
 *
 * Why they are exact: integers below 2^53 and the powers of ten up to 1e22
 * are exact doubles, and IEEE multiplication and division round correctly.
 * So digits * 10^k or digits / 10^k is the double nearest the decimal, which
 * is what float() returns for it; and a decimal that converts back to v
 * round-trips. With at most 15 significant digits the decimal grid is more
 * than four units in the last place apart, so at most one such decimal is
 * within half a unit of v: the one repr() prints.
 */
#include "floats.h"

#include "buf.h"
#include "compiler.h"
#include "pow10.h"
#include "pow5.h"

#include <math.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

static const double powers_of_ten[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* ---------------------------------------------------------------- format
 *
 * Shortest round-trip digits by Raffaello Giulietti's Schubfach method: the
 * decimal interval that rounds to v is computed with 126-bit powers of ten
 * (pow10.h, exact by construction), and the shortest decimal inside it is
 * picked, ties going to the one nearest v, then to even. That is the same
 * choice as CPython's repr(), which the tests check on millions of doubles.
 */

#define MASK63 ((1ULL << 63) - 1)

static int flog10pow2(int64_t q)
{
    return (int)((q * 661971961083LL) >> 41);
}

static int flog10three_quarters_pow2(int64_t q)
{
    return (int)((q * 661971961083LL - 274743187321LL) >> 41);
}

static int flog2pow10(int64_t e)
{
    return (int)((e * 913124641741LL) >> 38);
}

static uint64_t mulhi(uint64_t a, uint64_t b)
{
    return (uint64_t)(((unsigned __int128)a * b) >> 64);
}

/* Rounds the product g * cp to odd, as the method requires. */
static uint64_t round_to_odd(uint64_t g1, uint64_t g0, uint64_t cp)
{
    uint64_t x1 = mulhi(g0, cp), y0 = g1 * cp, y1 = mulhi(g1, cp);
    uint64_t z = (y0 >> 1) + x1, vbp = y1 + (z >> 63);

    return vbp | (((z & MASK63) + MASK63) >> 63);
}

/* v = c * 2^q; the shortest decimal f * 10^e that rounds back to it. */
static RC_ALWAYS_INLINE void to_decimal(int q, uint64_t c, int dk, uint64_t *f, int *e)
{
    uint64_t out = c & 1, cb = c << 2, cbr = cb + 2, cbl, vb, vbl, vbr, s, t;
    const uint64_t *g;
    int k, h;

    if (c != (1ULL << 52) || q == -1074) {
        cbl = cb - 2;
        k = flog10pow2(q);
    } else {
        /* At a power of two the interval below is half as wide. */
        cbl = cb - 1;
        k = flog10three_quarters_pow2(q);
    }
    h = q + flog2pow10(-k) + 2;
    g = rc_pow10_g[k - RC_POW10_K_MIN];
    vb = round_to_odd(g[0], g[1], cb << h);
    vbl = round_to_odd(g[0], g[1], cbl << h);
    vbr = round_to_odd(g[0], g[1], cbr << h);
    s = vb >> 2;
    /* Which of s and t wins is data, not a pattern a branch predictor can
     * learn, so that choice is made with bitwise operators (not && and ||)
     * and no branch. The shorter candidate is a branch: measured faster,
     * as the code after it can start before the choice is known. */
    {
        uint64_t s10 = s / 10, sp10 = 10 * s10, tp10 = sp10 + 10;
        int upin = vbl + out <= sp10 << 2, wpin = (tp10 << 2) + out <= vbr;
        int uin, win, differ, pick_s;
        int64_t cmp;

        /* sp10 or tp10 when exactly one is inside (a digit shorter;
         * repr() may print a single digit, hence s >= 10, not 100) */
        if (s >= 10 && upin != wpin) {
            /* written with the zero they end in taken off, which spares
             * write_decimal's strip_zeros() a round */
            *f = s10 + (uint64_t)(upin ^ 1);
            *e = k + 1;
            return;
        }
        t = s + 1;
        uin = vbl + out <= s << 2;
        win = (t << 2) + out <= vbr;
        cmp = (int64_t)(vb - ((s + t) << 1));
        /* one of s and t inside the interval: that one; both: the nearer
         * to v, on a tie the even one */
        differ = uin ^ win;
        pick_s = (differ & uin) | ((differ ^ 1) & ((cmp < 0) | ((cmp == 0) & (int)((s & 1) ^ 1))));
        *f = t - (uint64_t)pick_s;
        *e = k + dk;
    }
}

/* Removes f's trailing zeros into e: big steps first, as a short decimal
 * comes out of to_decimal() as up to 17 digits ending in zeros. */
static void strip_zeros(uint64_t *f, int *e)
{
    if (*f % 10 != 0)
        return; /* most random doubles */
    while (*f % 100000000 == 0) {
        *f /= 100000000;
        *e += 8;
    }
    if (*f % 10000 == 0) {
        *f /= 10000;
        *e += 4;
    }
    if (*f % 100 == 0) {
        *f /= 100;
        *e += 2;
    }
    if (*f % 10 == 0) {
        *f /= 10;
        *e += 1;
    }
}

/* Division by 10^k (1 <= k <= 17) of n < 10^17 without a divide
 * instruction: n / 10^k = (n * m >> 64) >> shift, m = ceil(2^(63+l) / 10^k)
 * and shift = l - 1 for l = ceil(log2(10^k)). Exact: m * 10^k exceeds
 * 2^(63+l) by less than 10^k, so the product overshoots n / 10^k by less
 * than n / 2^(63+l) < 1 / 10^k (as n * 10^k < 2^57 * 2^l), too little to
 * reach the next integer. (tests/test_json_codec.py recomputes the table
 * and checks it.) */
static const struct {
    uint64_t m;
    int shift;
} pow10_div[18] = {
    {0, 0}, /* 10^0: not used */
    {0xcccccccccccccccdULL, 3}, /* 10^1 */
    {0xa3d70a3d70a3d70bULL, 6}, /* 10^2 */
    {0x83126e978d4fdf3cULL, 9}, /* 10^3 */
    {0xd1b71758e219652cULL, 13}, /* 10^4 */
    {0xa7c5ac471b478424ULL, 16}, /* 10^5 */
    {0x8637bd05af6c69b6ULL, 19}, /* 10^6 */
    {0xd6bf94d5e57a42bdULL, 23}, /* 10^7 */
    {0xabcc77118461cefdULL, 26}, /* 10^8 */
    {0x89705f4136b4a598ULL, 29}, /* 10^9 */
    {0xdbe6fecebdedd5bfULL, 33}, /* 10^10 */
    {0xafebff0bcb24aaffULL, 36}, /* 10^11 */
    {0x8cbccc096f5088ccULL, 39}, /* 10^12 */
    {0xe12e13424bb40e14ULL, 43}, /* 10^13 */
    {0xb424dc35095cd810ULL, 46}, /* 10^14 */
    {0x901d7cf73ab0acdaULL, 49}, /* 10^15 */
    {0xe69594bec44de15cULL, 53}, /* 10^16 */
    {0xb877aa3236a4b44aULL, 56}, /* 10^17 */
};

static inline uint64_t div_pow10(uint64_t n, int k)
{
    return (uint64_t)(((unsigned __int128)n * pow10_div[k].m) >> 64) >> pow10_div[k].shift;
}

/* The eight digits of n < 10^8 as the characters of a word, the first in
 * its lowest byte: rc_format_8_digits()'s computation, kept in a
 * register. */
static inline uint64_t eight_digits(uint32_t n)
{
    uint64_t halves = (uint64_t)(n / 10000) | (uint64_t)(n % 10000) << 32;
    uint64_t high_pairs = ((halves * 10486) >> 20) & 0x0000007F0000007FULL; /* / 100 */
    uint64_t pairs = high_pairs | (halves - high_pairs * 100) << 16;
    uint64_t tens = ((pairs * 103) >> 10) & 0x000F000F000F000FULL; /* / 10 */

    return (tens | (pairs - tens * 10) << 8) + 0x3030303030303030ULL;
}

#ifdef __SSE2__
/* The 16 digits of hi8 and lo8 (each < 10^8), hi8's first, stored as 16
 * characters at d: all of them at once in the eight 16-bit lanes of a
 * vector, with the multiply-and-shift divisions of eight_digits(). Each
 * number is cut into two of four digits (n / 10^4 = n * 0xd1b71759 >> 45,
 * exact below 2^32), each of those into two of two digits (x / 100 = x *
 * 5243 >> 19, exact below 10^4), each of those into tens and units (p / 10
 * = p * 103 >> 10, exact below 100). tests/test_json_codec.py checks the
 * three against every input they get. */
static inline void sixteen_digits(char *d, uint32_t hi8, uint32_t lo8)
{
    const __m128i n = _mm_set_epi64x((long long)lo8, (long long)hi8);
    /* 64-bit lanes [a, c]: hi8 = a * 10^4 + b, lo8 = c * 10^4 + d */
    const __m128i q = _mm_srli_epi64(_mm_mul_epu32(n, _mm_set1_epi32((int)0xd1b71759)), 45);
    /* 32-bit lanes [b, 0, d, 0] */
    const __m128i r = _mm_sub_epi32(n, _mm_mul_epu32(q, _mm_set1_epi32(10000)));
    /* 32-bit lanes [a, b, c, d], then 16-bit ones [a, a, b, b, c, c, d, d] */
    const __m128i quads = _mm_or_si128(q, _mm_slli_epi64(r, 32));
    const __m128i twice = _mm_or_si128(quads, _mm_slli_epi32(quads, 16));
    /* each lane's x / 100 and x % 100; the first of each two lanes keeps
     * the quotient, the second the remainder: the pairs of digits in order */
    const __m128i hundreds = _mm_srli_epi16(_mm_mulhi_epu16(twice, _mm_set1_epi16(5243)), 3);
    const __m128i rest = _mm_sub_epi16(twice, _mm_mullo_epi16(hundreds, _mm_set1_epi16(100)));
    const __m128i first = _mm_set1_epi32(0xFFFF);
    const __m128i pairs = _mm_or_si128(_mm_and_si128(first, hundreds), _mm_andnot_si128(first, rest));
    /* tens in each lane's low byte (written first), units in its high one */
    const __m128i tens = _mm_srli_epi16(_mm_mullo_epi16(pairs, _mm_set1_epi16(103)), 10);
    const __m128i units = _mm_sub_epi16(pairs, _mm_mullo_epi16(tens, _mm_set1_epi16(10)));
    const __m128i chars = _mm_add_epi16(_mm_or_si128(tens, _mm_slli_epi16(units, 8)),
                                        _mm_set1_epi16(0x3030));

    _mm_storeu_si128((__m128i *)d, chars);
}
#endif

/* The digits of f < 10^17, right-aligned in d[0..16] (d[17 - n] is the
 * first of f's n digits; what lies before it is not written when f is
 * short, or written as zeros). One lone digit and sixteen computed without
 * a loop or a branch on the digits and stored whole: formatting every
 * number into the same place lets write_decimal() cut and paste its parts
 * with fixed-size copies instead of formatting each part apart. */
static inline void digits17(char *d, uint64_t f)
{
#ifdef __SSE2__
    uint64_t high = div_pow10(f, 8); /* < 10^9 */
    uint32_t top = (uint32_t)high / 100000000;

    d[0] = (char)('0' + top);
    sixteen_digits(d + 1, (uint32_t)high - top * 100000000, (uint32_t)(f - high * 100000000));
#else
    uint64_t word;

    if (f < 100000000) {
        word = eight_digits((uint32_t)f);
        memcpy(d + 9, &word, 8);
        return;
    }
    {
        uint64_t high = div_pow10(f, 8); /* < 10^9 */
        uint32_t top = (uint32_t)high / 100000000;

        d[0] = (char)('0' + top);
        word = eight_digits((uint32_t)high - top * 100000000);
        memcpy(d + 1, &word, 8);
        word = eight_digits((uint32_t)(f - high * 100000000));
        memcpy(d + 9, &word, 8);
    }
#endif
}

/* Writes f * 10^e (f > 0) as repr() does: positional when the exponent of
 * the leading digit is in [-4, 16), scientific otherwise. The n <= 17 digits
 * are formatted once (digits17), then copied to their place in 16-byte
 * pieces, whatever n is; the bytes copied past the text's end are left over,
 * for the caller to overwrite. At most 24 bytes of text; the stores reach
 * no further than out + 34 (RC_FLOAT_TEXT_MAX is 40). */
static RC_ALWAYS_INLINE size_t write_decimal(char *out, int negative, uint64_t f, int e)
{
    char d[40] = {0}; /* 17 digits, then slack for the 16-byte copies */
    const char *s;
    char *p = out;
    int n, x;

    strip_zeros(&f, &e);
    n = (int)rc_decimal_digits(f); /* at most 17 */
    x = e + n - 1;
    digits17(d, f);
    s = d + 17 - n;
    *p = '-'; /* overwritten when positive */
    p += negative;
    if (x >= -4 && x < 16) {
        if (e >= 0) {
            /* x + 1 <= 16 digits, e of them zeros: 16 + 2 bytes at most */
            memcpy(p, s, 16);
            p += n;
            memset(p, '0', (size_t)e);
            p += e;
            memcpy(p, ".0", 2);
            p += 2;
        } else if (x >= 0) {
            /* x + 1 digits, '.', the other -e; stores reach
             * 1 + (x + 1) + 1 + 16 <= 34 bytes */
            int whole = x + 1;

            memcpy(p, s, 16);
            p[whole] = '.';
            memcpy(p + whole + 1, s + whole, 16);
            p += n + 1;
        } else {
            /* "0.", -x - 1 <= 3 zeros, n <= 17 digits: stores reach
             * 1 + 5 + 17 bytes */
            memcpy(p, "0.000", 5);
            p += 2 + (-x - 1);
            memcpy(p, s, 16);
            p[16] = s[16];
            p += n;
        }
    } else {
        /* d[.ddd]e+XX: up to 1 + 2 + 16 + 5 bytes */
        *p++ = s[0];
        if (n > 1) {
            *p++ = '.';
            memcpy(p, s + 1, 16);
            p += n - 1;
        }
        *p++ = 'e';
        *p++ = x < 0 ? '-' : '+';
        if (x < 0)
            x = -x;
        if (x >= 100) {
            *p++ = (char)('0' + x / 100);
            x %= 100;
        }
        memcpy(p, rc_digit_pairs + 2 * x, 2);
        p += 2;
    }
    return (size_t)(p - out);
}

/* Prices, ratings, coordinates: a value with at most RC_SHORT_PLACES
 * decimals and 15 significant digits is found with a multiply and a divide
 * per place tried, cheaper than the general method. Exact: see the top of
 * this file. */
#define RC_SHORT_PLACES 6

/* x rounded to the nearest integer, ties to even, for 0 <= x < 2^52:
 * adding 2^52 leaves no bits below the point. (nearbyint() is a call into
 * libm on x86-64 without SSE4.1.) */
static inline double round_to_integer(double x)
{
    const double two52 = 4503599627370496.0;
    return (x + two52) - two52;
}

static int short_decimal(double v, uint64_t *f, int *e)
{
    double a = fabs(v), scaled, whole;
    uint64_t digits;
    int places;

    if (!(a >= 1e-4 && a < 1e15))
        return 0;
    /* Most doubles are not short: one test rules them out. A decimal D of
     * at most RC_SHORT_PLACES places, times 10^RC_SHORT_PLACES, is an
     * integer N; |a - D| <= a * 2^-53 and the product's rounding adds at
     * most scaled * 2^-53, so scaled is within scaled * 2^-52 (and a hair)
     * of N; anything further from an integer is no such decimal. (The test
     * only saves time: a short decimal it let through to_decimal() would
     * still come out right.) */
    scaled = a * powers_of_ten[RC_SHORT_PLACES];
    if (scaled < 2251799813685248.0 /* 2^51 */) {
        whole = round_to_integer(scaled);
        if (fabs(scaled - whole) > scaled * (1.0000001 / 4503599627370496.0 /* 2^52 */))
            return 0;
        /* Then N = whole is the one candidate: the decimal, if any, is N
         * / 10^RC_SHORT_PLACES with N's trailing zeros taken off (at most
         * one such decimal of 15 digits rounds to a, so no other number of
         * places can find another one). One division checks it, instead
         * of one per number of places: doubles near a short decimal but
         * not one (canada.json's coordinates) get here too. It divides N
         * itself, before the zeros come off: N and N without its zeros
         * over the matching power of ten are the same decimal, and IEEE
         * division of exact operands rounds that decimal to the same
         * double, so the near misses are turned away sooner. */
        if (whole / powers_of_ten[RC_SHORT_PLACES] != a)
            return 0;
        digits = (uint64_t)whole;
        places = RC_SHORT_PLACES;
        /* its trailing zeros off, four, two and one at a time (more than
         * six only when a is an integer, which does not come here; were it
         * to, places <= 0 sends it to to_decimal()) */
        if (digits % 10000 == 0) {
            digits /= 10000;
            places -= 4;
        }
        if (digits % 100 == 0) {
            digits /= 100;
            places -= 2;
        }
        if (digits % 10 == 0) {
            digits /= 10;
            places -= 1;
        }
        if (places <= 0 || digits >= 1000000000000000ULL /* 10^15 */)
            return 0;
        *f = digits;
        *e = -places;
        return 1;
    }
    for (places = 1; places <= RC_SHORT_PLACES; places++) {
        scaled = a * powers_of_ten[places];
        if (scaled >= 1e15)
            return 0;
        whole = round_to_integer(scaled);
        if (whole / powers_of_ten[places] == a) {
            *f = (uint64_t)whole;
            *e = -places;
            return 1;
        }
    }
    return 0;
}

size_t rc_float_format(double v, char *out)
{
    uint64_t bits, t, c, f;
    int bq, q, e, negative;

    memcpy(&bits, &v, sizeof(bits));
    negative = (int)(bits >> 63);
    bits &= ~(1ULL << 63);
    t = bits & ((1ULL << 52) - 1);
    bq = (int)(bits >> 52);
    if (bq == 0x7FF)
        return 0; /* NaN and infinities: the caller refuses them */
    if (bq != 0) {
        int mq = 1075 - bq;
        c = (1ULL << 52) | t;
        q = -mq;
        if (mq > 0 && mq < 53 && ((c >> mq) << mq) == c) {
            f = c >> mq; /* an integer */
            e = 0;
            goto write;
        }
        if (short_decimal(v, &f, &e))
            goto write;
    } else {
        if (t == 0) {
            memcpy(out, negative ? "-0.0" : "0.0", negative ? 4 : 3);
            return negative ? 4 : 3;
        }
        /* The two smallest subnormals are below the method's precision;
         * CPython formats them (5e-324 and 1e-323). */
        if (t < 3)
            return 0;
        c = t;
        q = -1074;
    }
    to_decimal(q, c, 0, &f, &e);
write:
    /* to_decimal and write_decimal are inlined here, their one caller */
    return write_decimal(out, negative, f, e);
}

int rc_float_from_decimal(uint64_t digits, int exp10, int negative, double *out)
{
    double v;

    if (digits >= (1ULL << 53) || exp10 < -22 || exp10 > 22)
        return 0;
    v = (double)digits;
    v = exp10 >= 0 ? v * powers_of_ten[exp10] : v / powers_of_ten[-exp10];
    *out = negative ? -v : v;
    return 1;
}

/* ---------------------------------------------------------------- parse
 *
 * digits * 10^q for up to 19 significant digits, by Eisel and Lemire's
 * method: multiply the digits by a 64-bit truncation of 5^q and read the
 * double's 53 bits off the top of the 128-bit product. The truncations
 * (of 5^q, and of the product's low half) can only make the product too
 * small by less than one unit of its high half, so when the bits below the
 * rounding bit are neither all zeros nor all ones, the rounding is decided
 * exactly. Otherwise (1 in 60 of the 17-digit decimals repr() writes, as
 * they sit right next to a double) the next 64 bits of 5^q are multiplied
 * in too: the product's top 128 bits then fall short by less than two
 * units of their low half, which decides it unless that low half is within
 * two units of a carry (all ones) or of an exact value (zero); those few,
 * and every exact tie, fall back to a correctly rounded conversion. */
int rc_float_from_digits(uint64_t digits, int q, int negative, double *out)
{
    unsigned __int128 product;
    uint64_t hi, mantissa, low_mask, bits;
    int lz, upper, biased;

    if (digits == 0 || q < RC_POW5_Q_MIN || q > RC_POW5_Q_MAX)
        return 0;
    lz = __builtin_clzll(digits);
    product = (unsigned __int128)(digits << lz) * rc_pow5[q - RC_POW5_Q_MIN].top;
    hi = (uint64_t)(product >> 64);
    upper = (int)(hi >> 63);
    low_mask = (1ULL << (9 + upper)) - 1;
    if ((hi & low_mask) == 0 || (hi & low_mask) == low_mask) {
        uint64_t lo = (uint64_t)product;
        uint64_t more = (uint64_t)(((unsigned __int128)(digits << lz) *
                                    rc_pow5[q - RC_POW5_Q_MIN].next) >> 64);
        lo += more;
        hi += lo < more; /* the carry */
        /* the top 128 bits, short of the product by less than two units
         * of lo: hi is exact unless lo may carry, and the bits below the
         * rounding bit are not all zero (no tie) when lo >= 2 */
        if (lo < 2 || lo > UINT64_MAX - 2)
            return 0;
        upper = (int)(hi >> 63);
        low_mask = (1ULL << (9 + upper)) - 1;
    }
    mantissa = hi >> (9 + upper); /* 54 bits: the double's 53 and the rounding bit */
    mantissa = (mantissa >> 1) + (mantissa & 1);
    biased = upper + 11 + rc_pow5[q - RC_POW5_Q_MIN].log2 - lz + q + 52 + 1023;
    if (mantissa == 1ULL << 53) {
        mantissa >>= 1;
        biased++;
    }
    if (biased <= 0 || biased >= 0x7FF)
        return 0; /* subnormal or overflow: leave it to CPython */
    bits = ((uint64_t)biased << 52) | (mantissa & ((1ULL << 52) - 1));
    if (negative)
        bits |= 1ULL << 63;
    memcpy(out, &bits, sizeof(*out));
    return 1;
}
