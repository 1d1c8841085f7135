/* ring: arithmetic in Z_2^64, Z_2^128 and Z_2^192 and the signed fixed-point encoding
 * of Mimir.
 *
 * MPC values live in Z_2^64 (k = 64); SPDZ2k shares and MACs live in Z_2^128 (k + s,
 * s = 64). The triple sacrifice checks 128-bit values, so its shares and MACs live in
 * Z_2^192 (128 + s), three 64-bit limbs with explicit carries. C unsigned arithmetic already wraps modulo 2^width, so the ring operations
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

/* Z_2^192 as three little-endian 64-bit limbs. Every operation is straight-line code
 * on the limbs (carries through unsigned __int128), with no branch on the values. */
typedef struct {
	uint64_t w[3];
} ring192_t;

static inline ring192_t ring192_from128(ring128_t a)
{
	return (ring192_t){{(uint64_t)a, (uint64_t)(a >> 64), 0}};
}

/* The projection to Z_2^128 and the top limb (bits 128..191). */
static inline ring128_t ring192_lo(ring192_t a) { return ((ring128_t)a.w[1] << 64) | a.w[0]; }
static inline ring64_t ring192_hi(ring192_t a) { return a.w[2]; }
/* 2^128 * c: the element whose top limb is c. */
static inline ring192_t ring192_shl128(ring64_t c) { return (ring192_t){{0, 0, c}}; }

static inline ring192_t ring192_add(ring192_t a, ring192_t b)
{
	ring128_t t = (ring128_t)a.w[0] + b.w[0];
	ring192_t r;
	r.w[0] = (uint64_t)t;
	t = (t >> 64) + a.w[1] + b.w[1];
	r.w[1] = (uint64_t)t;
	r.w[2] = (uint64_t)(t >> 64) + a.w[2] + b.w[2];
	return r;
}

static inline ring192_t ring192_neg(ring192_t a)
{
	/* two's complement: invert and add one */
	ring192_t r = {{~a.w[0], ~a.w[1], ~a.w[2]}};
	return ring192_add(r, (ring192_t){{1, 0, 0}});
}

static inline ring192_t ring192_sub(ring192_t a, ring192_t b)
{
	return ring192_add(a, ring192_neg(b));
}

static inline ring192_t ring192_mul(ring192_t a, ring192_t b)
{
	ring128_t t = (ring128_t)a.w[0] * b.w[0];
	ring192_t r;
	r.w[0] = (uint64_t)t;
	ring128_t c = t >> 64; /* column 1, up to 3 * 2^64 */
	uint64_t c2 = 0;       /* column 2, mod 2^64 */
	t = (ring128_t)a.w[0] * b.w[1];
	c += (uint64_t)t;
	c2 += (uint64_t)(t >> 64);
	t = (ring128_t)a.w[1] * b.w[0];
	c += (uint64_t)t;
	c2 += (uint64_t)(t >> 64);
	r.w[1] = (uint64_t)c;
	r.w[2] = c2 + (uint64_t)(c >> 64) + a.w[0] * b.w[2] + a.w[1] * b.w[1] + a.w[2] * b.w[0];
	return r;
}

static inline bool ring192_eq(ring192_t a, ring192_t b)
{
	return ((a.w[0] ^ b.w[0]) | (a.w[1] ^ b.w[1]) | (a.w[2] ^ b.w[2])) == 0;
}

/* Little-endian wire format (8, 16 and 24 bytes), inline because every opened value and
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

static inline void ring192_store(uint8_t out[24], ring192_t a)
{
	for (int i = 0; i < 3; i++)
		ring64_store(out + 8 * i, a.w[i]);
}

static inline ring192_t ring192_load(const uint8_t in[24])
{
	return (ring192_t){{ring64_load(in), ring64_load(in + 8), ring64_load(in + 16)}};
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
