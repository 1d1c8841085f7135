/* fuzz_oai: the OpenAI-compatible API's request parser and its UTF-8 cleaner on
 * arbitrary bytes. A body that parses keeps every bound (a model, a prompt within
 * OAI_PROMPT_MAX without NUL, max_tokens in range, at most OAI_MAX_STOPS stops of 1 to
 * OAI_STOP_MAX bytes, top_p below 1 only with top_k); a refusal always names why. The
 * cleaner's output is valid UTF-8 (checked by jansson), no longer than 3x its input, and
 * holds back at most 3 bytes. Any violation aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "model/model.h"
#include "oai/oai.h"

static void check_utf8(const uint8_t *data, size_t size, bool final)
{
	char *out = malloc(3 * size + 1);
	if (!out)
		return;
	size_t keep = 0, n = oai_utf8_clean((const char *)data, size, final, out, &keep);
	if (n > 3 * size || keep > 3 || keep > size || (final && keep))
		abort();
	json_t *s = json_stringn(out, n); /* NULL when not valid UTF-8 */
	if (!s)
		abort();
	json_decref(s);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_utf8(data, size, false);
	check_utf8(data, size, true);
	json_t *b = json_loadb((const char *)data, size, 0, NULL);
	if (!b)
		return 0;
	struct oai_completion c;
	char why[256] = "";
	const char *field = NULL;
	int rc = oai_parse_completion(b, 16, &c, why, sizeof why, &field);
	if (rc == 0) {
		if (!c.model || !c.prompt || c.prompt_len > OAI_PROMPT_MAX || memchr(c.prompt, 0, c.prompt_len) ||
		    c.max_tokens < 1 || c.max_tokens > MODEL_MAX_SEQ || c.n_stops > OAI_MAX_STOPS ||
		    !(c.temperature >= 0 && c.temperature <= 2) || !(c.top_p > 0 && c.top_p <= 1) ||
		    (c.top_p < 1 && !c.top_k))
			abort();
		for (size_t i = 0; i < c.n_stops; i++)
			if (c.stop_len[i] < 1 || c.stop_len[i] > OAI_STOP_MAX)
				abort();
	} else if (!why[0] || !field) {
		abort();
	}
	json_decref(b);
	return 0;
}
