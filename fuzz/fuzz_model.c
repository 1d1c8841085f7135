/* fuzz_model: the checkpoint loader on arbitrary bytes. A refused input must come with a
 * message that names the file; an accepted one must be usable: a few forward steps and
 * an argmax run on it (tiny headers make tiny models, so this stays fast). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/sampler.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct model *m = NULL;
	char err[256] = "";
	if (model_load_mem(data, size, "fuzz", &m, err, sizeof err) != 0) {
		if (m != NULL || strncmp(err, "fuzz: ", 6) != 0)
			abort();
		return 0;
	}
	const struct model_config *c = model_config(m);
	if (c->shared_classifier != (model_weights(m)->wcls == model_weights(m)->token_embedding))
		abort();
	int n = c->seq_len < 3 ? c->seq_len : 3;
	struct model_state *s = NULL;
	if (model_state_new(m, n, &s) == 0) {
		int tok = 0;
		for (int pos = 0; pos < n; pos++) {
			const float *lg;
			if (model_forward(s, tok, pos, &lg) != 0)
				abort();
			tok = sampler_argmax(lg, c->vocab_size);
			if (tok < 0 || tok >= c->vocab_size)
				abort();
		}
		model_state_free(s);
	}
	model_free(m);
	return 0;
}
