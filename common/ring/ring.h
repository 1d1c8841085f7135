/* ring: arithmetic in Z_2^64 and Z_2^128 and the signed fixed-point encoding of Mimir.
 *
 * MPC values live in Z_2^64 (k = 64); SPDZ2k shares and MACs live in Z_2^128 (k + s,
 * s = 64). C unsigned arithmetic already wraps modulo 2^width, so the ring operations
 * are the native ones; this module names them, fixes the byte order of the wire
 * format (little endian) and owns the fixed-point convention: a real x is stored as
 * the two's complement of round(x * 2^f) with f fractional bits (8..24, default 16).
 * The ring operations are branch-free (no secret-dependent branches or table
 * look-ups); the fixed-point conversions branch on their input, which is plaintext by
 * definition (a party's own input or a released output). No I/O. */
#ifndef MIMIR_RING_H
#define MIMIR_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t ring64_t;
typedef unsigned __int128 ring128_t;

#define RING_FXP_MIN_F 8
#define RING_FXP_MAX_F 24
#define RING_FXP_DEFAULT_F 16

/* Z_2^64 and Z_2^128: the wrap-around of unsigned C arithmetic is the ring. */
static inline ring64_t ring64_add(ring64_t a, ring64_t b) { return a + b; }
static inline ring64_t ring64_sub(ring64_t a, ring64_t b) { return a - b; }
static inline ring64_t ring64_mul(ring64_t a, ring64_t b) { return a * b; }
static inline ring64_t ring64_neg(ring64_t a) { return (ring64_t)0 - a; }
static inline ring128_t ring128_add(ring128_t a, ring128_t b) { return a + b; }
static inline ring128_t ring128_sub(ring128_t a, ring128_t b) { return a - b; }
static inline ring128_t ring128_mul(ring128_t a, ring128_t b) { return a * b; }
static inline ring128_t ring128_neg(ring128_t a) { return (ring128_t)0 - a; }
/* The canonical projection Z_2^128 -> Z_2^64 and the lift Z_2^64 -> Z_2^128 (the
 * representative in [0, 2^64)). */
static inline ring64_t ring128_lo(ring128_t a) { return (ring64_t)a; }
static inline ring64_t ring128_hi(ring128_t a) { return (ring64_t)(a >> 64); }
static inline ring128_t ring128_from64(ring64_t a) { return (ring128_t)a; }
static inline ring128_t ring128_make(ring64_t hi, ring64_t lo)
{
	return ((ring128_t)hi << 64) | lo;
}

/* Little-endian wire format (8 and 16 bytes), inline because every opened value and
 * every PRG share goes through them. */
static inline void ring64_store(uint8_t out[8], ring64_t a)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__builtin_memcpy(out, &a, 8);
#else
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(a >> (8 * i));
#endif
}

static inline ring64_t ring64_load(const uint8_t in[8])
{
	ring64_t a;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__builtin_memcpy(&a, in, 8);
#else
	a = 0;
	for (int i = 0; i < 8; i++)
		a |= (ring64_t)in[i] << (8 * i);
#endif
	return a;
}

static inline void ring128_store(uint8_t out[16], ring128_t a)
{
	ring64_store(out, ring128_lo(a));
	ring64_store(out + 8, ring128_hi(a));
}

static inline ring128_t ring128_load(const uint8_t in[16])
{
	return ring128_make(ring64_load(in + 8), ring64_load(in));
}

/* Fixed point with f fractional bits, f in [RING_FXP_MIN_F, RING_FXP_MAX_F].
 *
 * Encoding rounds x * 2^f to the nearest integer, ties away from zero (C round()), and
 * saturates to [INT64_MIN, INT64_MAX] (in units of 2^-f) when the rounded x * 2^f, as
 * a double, is >= 2^63 or < -2^63 (so the largest value that does not saturate is
 * 2^63 - 1024 units, the largest double below 2^63); NaN is rejected. *saturated (may be NULL) reports whether saturation happened, so callers
 * that must not clip can refuse the input. Returns 0, or ERR_INVALID for a bad f or
 * NaN (then *out is 0). */
int ring_fxp_encode(double x, unsigned f, ring64_t *out, bool *saturated);
/* The real number a / 2^f, reading a as two's complement. Exact whenever |a| < 2^53;
 * otherwise rounded to the nearest double. f is not validated (any f < 64 works). */
double ring_fxp_decode(ring64_t a, unsigned f);
/* Signed view of an element of Z_2^64. */
static inline int64_t ring64_signed(ring64_t a) { return (int64_t)a; }
/* true iff f is an accepted number of fractional bits. */
bool ring_fxp_valid_f(unsigned f);

#endif
