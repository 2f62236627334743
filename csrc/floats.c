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
#include "pow10.h"
#include "pow5.h"

#include <math.h>
#include <string.h>

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
static void to_decimal(int q, uint64_t c, int dk, uint64_t *f, int *e)
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
    if (s >= 100) {
        uint64_t sp10 = 10 * (s / 10), tp10 = sp10 + 10;
        int upin = vbl + out <= sp10 << 2, wpin = (tp10 << 2) + out <= vbr;
        if (upin != wpin) {
            *f = upin ? sp10 : tp10;
            *e = k;
            return;
        }
    }
    t = s + 1;
    {
        int uin = vbl + out <= s << 2, win = (t << 2) + out <= vbr;
        if (uin != win) {
            *f = uin ? s : t;
            *e = k + dk;
            return;
        }
    }
    {
        int64_t cmp = (int64_t)(vb - ((s + t) << 1));
        *f = cmp < 0 || (cmp == 0 && (s & 1) == 0) ? s : t;
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

/* Writes the last width digits of v, zeros in front (width <= 24). */
static void put_fixed(char *p, uint64_t v, int width)
{
    char *q = p + width;

    if (width > 8) {
        rc_format_8_digits(q - 8, (uint32_t)(v % 100000000));
        v /= 100000000;
        q -= 8;
        width -= 8;
        if (width > 8) {
            rc_format_8_digits(q - 8, (uint32_t)(v % 100000000));
            v /= 100000000;
            q -= 8;
            width -= 8;
        }
    }
    while (width >= 2) {
        q -= 2;
        memcpy(q, rc_digit_pairs + 2 * (v % 100), 2);
        v /= 100;
        width -= 2;
    }
    if (width)
        q[-1] = (char)('0' + v);
}

/* Writes f * 10^e (f > 0) as repr() does: positional when the exponent of
 * the leading digit is in [-4, 16), scientific otherwise. The digits go
 * straight to their place in out: the part before the point and the part
 * after it are written as two numbers. */
static size_t write_decimal(char *out, int negative, uint64_t f, int e)
{
    char *p = out;
    int n, x;

    strip_zeros(&f, &e);
    n = (int)rc_decimal_digits(f); /* at most 17 */
    x = e + n - 1;
    if (negative)
        *p++ = '-';
    if (x >= -4 && x < 16) {
        if (e >= 0) {
            p += rc_format_ull(p, f);
            memset(p, '0', (size_t)e);
            p += e;
            memcpy(p, ".0", 2);
            p += 2;
        } else if (x >= 0) {
            p += rc_format_ull(p, f / rc_pow10_u64[-e]);
            *p++ = '.';
            put_fixed(p, f % rc_pow10_u64[-e], -e);
            p += -e;
        } else {
            memcpy(p, "0.0000", 6);
            p += 2 + (-x - 1);
            p += rc_format_ull(p, f);
        }
    } else {
        uint64_t scale = rc_pow10_u64[n - 1];
        *p++ = (char)('0' + f / scale);
        if (n > 1) {
            *p++ = '.';
            put_fixed(p, f % scale, n - 1);
            p += n - 1;
        }
        *p++ = 'e';
        *p++ = x < 0 ? '-' : '+';
        if (x < 0)
            x = -x;
        if (x < 10)
            *p++ = '0';
        p += rc_format_u32(p, (uint32_t)x);
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
    int places;

    if (!(a >= 1e-4 && a < 1e15))
        return 0;
    /* Most doubles are not short: one test rules them out. A decimal of at
     * most RC_SHORT_PLACES places, times 10^RC_SHORT_PLACES, is an integer
     * N, and the two roundings (to a, then of the product) move it by less
     * than N * 2^-52; anything further from an integer is no such
     * decimal. */
    scaled = a * powers_of_ten[RC_SHORT_PLACES];
    if (scaled < 2251799813685248.0 /* 2^51 */ &&
        fabs(scaled - round_to_integer(scaled)) > scaled * (1.0 / 2251799813685248.0))
        return 0;
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
    uint64_t bits, t, f;
    int bq, e, negative;

    memcpy(&bits, &v, sizeof(bits));
    negative = (int)(bits >> 63);
    bits &= ~(1ULL << 63);
    t = bits & ((1ULL << 52) - 1);
    bq = (int)(bits >> 52);
    if (bq == 0x7FF)
        return 0; /* NaN and infinities: the caller refuses them */
    if (bq != 0) {
        int mq = 1075 - bq;
        uint64_t c = (1ULL << 52) | t;
        if (mq > 0 && mq < 53 && ((c >> mq) << mq) == c)
            return write_decimal(out, negative, c >> mq, 0); /* an integer */
        if (short_decimal(v, &f, &e))
            return write_decimal(out, negative, f, e);
        to_decimal(-mq, c, 0, &f, &e);
        return write_decimal(out, negative, f, e);
    }
    if (t == 0) {
        memcpy(out, negative ? "-0.0" : "0.0", negative ? 4 : 3);
        return negative ? 4 : 3;
    }
    /* The two smallest subnormals are below the method's precision; CPython
     * formats them (5e-324 and 1e-323). */
    if (t < 3)
        return 0;
    to_decimal(-1074, t, 0, &f, &e);
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
 * exactly; otherwise (about 1 in 250 inputs, and every exact tie) the caller
 * falls back to a correctly rounded conversion. */
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
    if ((hi & low_mask) == 0 || (hi & low_mask) == low_mask)
        return 0;
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
