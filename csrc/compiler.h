/* Hints for the compiler, shared by the hot loops (the JSON codec, float
 * formatting); plain C where the compiler is not GCC or Clang. */
#ifndef RC_COMPILER_H
#define RC_COMPILER_H

#if defined(__GNUC__)
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define RC_ALWAYS_INLINE inline __attribute__((always_inline))
#define RC_NOINLINE __attribute__((noinline))
#define RC_UNUSED __attribute__((unused))
#else
#define likely(x) (x)
#define unlikely(x) (x)
#define RC_ALWAYS_INLINE inline
#define RC_NOINLINE
#define RC_UNUSED
#endif

#endif
