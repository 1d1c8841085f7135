/* ring: the fixed-point conversions behind ring.h (the ring operations and the byte
 * order are inline in the header). The conversions are the only place where reals
 * enter or leave the ring, so the rounding and saturation rules documented in the
 * header are implemented (and tested) here alone. */
#include "ring/ring.h"

#include <math.h>

#include "err/err.h"

bool ring_fxp_valid_f(unsigned f)
{
	return f >= RING_FXP_MIN_F && f <= RING_FXP_MAX_F;
}

int ring_fxp_encode(double x, unsigned f, ring64_t *out, bool *saturated)
{
	*out = 0;
	if (saturated)
		*saturated = false;
	if (!ring_fxp_valid_f(f) || isnan(x))
		return ERR_INVALID;
	/* ldexp is exact (a power-of-two scale), so the only rounding is round()'s. The
	 * bounds are compared in double: 2^63 is exactly representable, INT64_MAX is not,
	 * so anything >= 2^63 saturates. */
	double y = round(ldexp(x, (int)f));
	int64_t v;
	bool sat = false;
	if (y >= 9223372036854775808.0) {
		v = INT64_MAX;
		sat = true;
	} else if (y < -9223372036854775808.0) {
		v = INT64_MIN;
		sat = true;
	} else {
		v = (int64_t)y;
	}
	*out = (ring64_t)v;
	if (saturated)
		*saturated = sat;
	return 0;
}

double ring_fxp_decode(ring64_t a, unsigned f)
{
	return ldexp((double)(int64_t)a, -(int)f);
}
