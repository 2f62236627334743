/* Fast, exact conversions for the floats caches hold most: short decimals
 * (prices, scores, coordinates). Anything else falls back to CPython's
 * correctly rounded conversions, so results never differ from float repr()
 * and float(). */
#ifndef RC_FLOATS_H
#define RC_FLOATS_H

#include <stddef.h>
#include <stdint.h>

/* Room rc_float_format_short needs. */
#define RC_FLOAT_TEXT_MAX 32

/* Writes repr(v) into out when v is a short decimal (at most 15 significant
 * digits, 1e-4 <= |v| < 1e15, or zero) and returns its length; returns 0
 * (writing nothing useful) otherwise. */
size_t rc_float_format_short(double v, char *out);

/* The double nearest digits * 10^exp10, negated when negative, when that
 * can be computed exactly with one IEEE operation (digits < 2^53 and
 * |exp10| <= 22). Returns 1 with *out set, or 0 to fall back. */
int rc_float_from_decimal(uint64_t digits, int exp10, int negative, double *out);

#endif
