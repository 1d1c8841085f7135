/* fuzz_jspec: jspec_parse_body() over arbitrary bytes, with a spec that uses every field
 * type, nested paths and bounds, in strict and lenient mode. Beyond "no crash, no leak"
 * it checks the contract: on success every stored value is inside its bounds, on error
 * nothing was written and the error names a code that jspec_problem() can render. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "jspec/jspec.h"

static const char *const modes[] = {"greedy", "sample", "beam", NULL};

#define REQUIRE(c)                                                                         \
	do {                                                                               \
		if (!(c))                                                                  \
			abort();                                                           \
	} while (0)

static void run(const uint8_t *data, size_t size, unsigned flags)
{
	const char *model = NULL;
	int64_t seed = 0;
	uint64_t top_k = 0;
	double temp = -1;
	bool stream = false, has_key = false;
	int mode = -1;
	struct jspec_bytes key = {0}, nonce = {0};
	json_t *meta = NULL, *stop = NULL;
	const struct jspec_field spec[] = {
		JSPEC_STR("model", true, 1, 64, &model),
		JSPEC_I64("seed", false, -1000, 1000, &seed),
		JSPEC_U64("options.top_k", false, 1, 100, &top_k),
		JSPEC_DBL("options.temperature", false, 0, 2, &temp),
		JSPEC_BOOLEAN("stream", false, &stream),
		JSPEC_CHOICE("options.mode", false, modes, &mode),
		JSPEC_HEXBYTES("tls.key", false, 16, 32, &key, .present = &has_key),
		JSPEC_B64BYTES("tls.nonce", false, 0, 24, &nonce),
		JSPEC_OBJ("meta", false, &meta),
		JSPEC_ARR("stop", false, 0, 4, &stop),
		JSPEC_END_F,
	};
	struct jspec_error e;
	json_t *root = NULL;
	int rc = jspec_parse_body(data, size, spec, flags, &root, &e);
	if (rc == 0) {
		REQUIRE(root && e.code == 0);
		REQUIRE(model && strlen(model) >= 1 && strlen(model) <= 64);
		REQUIRE(seed >= -1000 && seed <= 1000);
		REQUIRE(top_k == 0 || (top_k >= 1 && top_k <= 100));
		REQUIRE(temp == -1 || (temp >= 0 && temp <= 2));
		REQUIRE(mode >= -1 && mode <= 2);
		REQUIRE(has_key == (key.data != NULL));
		REQUIRE(!key.data || (key.len >= 16 && key.len <= 32));
		REQUIRE(!nonce.data || nonce.len <= 24);
		REQUIRE(!meta || json_is_object(meta));
		REQUIRE(!stop || json_array_size(stop) <= 4);
	} else {
		REQUIRE(!root && e.code == rc && rc < 0);
		REQUIRE(!model && !key.data && !nonce.data && !meta && !stop && !has_key);
		REQUIRE(memchr(e.field, '\0', sizeof e.field) && memchr(e.detail, '\0', sizeof e.detail));
		json_t *p = jspec_problem(&e, "fuzz");
		REQUIRE(p != NULL);
		REQUIRE(json_integer_value(json_object_get(p, "status")) == err_http_status(rc));
		json_decref(p);
	}
	jspec_bytes_free(&key);
	jspec_bytes_free(&nonce);
	json_decref(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run(data, size, 0);
	run(data, size, JSPEC_ALLOW_UNKNOWN);
	return 0;
}
