/* Short-decimal float conversions; see floats.h.
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

#include <math.h>
#include <string.h>

static const double powers_of_ten[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

size_t rc_float_format_short(double v, char *out)
{
    double a = fabs(v), scaled, whole;
    char digits[24], *p = out;
    size_t nd;
    int places;

    if (a == 0) {
        if (signbit(v))
            *p++ = '-';
        memcpy(p, "0.0", 3);
        return (size_t)(p - out) + 3;
    }
    if (!(a >= 1e-4 && a < 1e15))
        return 0;
    for (places = 0; places <= 19; places++) {
        scaled = a * powers_of_ten[places];
        if (scaled >= 1e15)
            return 0;
        whole = nearbyint(scaled);
        if ((places == 0 ? whole : whole / powers_of_ten[places]) == a)
            break;
    }
    if (places > 19)
        return 0;
    if (signbit(v))
        *p++ = '-';
    nd = rc_format_ll(digits, (long long)whole);
    if (places == 0) {
        memcpy(p, digits, nd);
        memcpy(p + nd, ".0", 2);
        return (size_t)(p - out) + nd + 2;
    }
    if (nd <= (size_t)places) {
        /* 0.000ddd */
        size_t zeros = (size_t)places - nd;
        *p++ = '0';
        *p++ = '.';
        memset(p, '0', zeros);
        p += zeros;
        memcpy(p, digits, nd);
        return (size_t)(p - out) + nd;
    }
    memcpy(p, digits, nd - (size_t)places);
    p += nd - (size_t)places;
    *p++ = '.';
    memcpy(p, digits + nd - (size_t)places, (size_t)places);
    return (size_t)(p - out) + (size_t)places;
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
