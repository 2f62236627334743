/* Fast, exact float conversions for the JSON codec: repr()'s shortest
 * round-trip text for any double, and the exact parse of short decimals
 * (anything longer falls back to CPython's correctly rounded float()). */
#ifndef RC_FLOATS_H
#define RC_FLOATS_H

#include <stddef.h>
#include <stdint.h>

/* Room rc_float_format needs. */
#define RC_FLOAT_TEXT_MAX 40

/* Writes repr(v) into out and returns its length; returns 0 for NaN,
 * infinities and the two smallest subnormals (left to CPython). */
size_t rc_float_format(double v, char *out);

/* The double nearest digits * 10^exp10, negated when negative, when that
 * can be computed exactly with one IEEE operation (digits < 2^53 and
 * |exp10| <= 22). Returns 1 with *out set, or 0 to fall back. */
int rc_float_from_decimal(uint64_t digits, int exp10, int negative, double *out);

/* digits * 10^q for digits < 2^64 (up to 19 significant digits), exact when
 * it returns 1; 0 means "fall back" (ambiguous rounding, subnormal or out of
 * range). */
int rc_float_from_digits(uint64_t digits, int q, int negative, double *out);

#endif
