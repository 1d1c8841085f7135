/* model_internal: what the model's own source files share and callers must not see (the
 * layout of struct model, the error-message helper). Not a public header. */
#ifndef MIMIR_MODEL_INTERNAL_H
#define MIMIR_MODEL_INTERNAL_H

#include <stddef.h>

#include "model/model.h"

struct model {
	struct model_config cfg;
	float *w;  /* every tensor in file order, RoPE tables dropped; wiped on free */
	size_t nw; /* floats in w */
	struct model_weights views;
	struct model_tensor tensors[MODEL_T_COUNT];
};

void model_seterr(char *err, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void model_tensor_shape(const struct model_config *c, int id, int *layers, int *rows, int *cols);

#endif
