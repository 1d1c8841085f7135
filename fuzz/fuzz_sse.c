/* libFuzzer harness: the SSE parser on arbitrary bytes, fed whole and again in chunks
 * whose sizes come from the input, with a small event bound so the limits are hit. Both
 * feedings must agree on the number of events (chunking never changes the parse). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse/sse.h"

static int count(const struct sse_event *e, void *arg)
{
	(void)e;
	(*(size_t *)arg)++;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = (size_t)data[0] % 7 + 1;
	data++, size--;
	size_t whole = 0, chunked = 0;
	struct sse_parser *p = sse_parser_new(256);
	int rc1 = sse_parser_feed(p, (const char *)data, size, count, &whole);
	sse_parser_free(p);
	p = sse_parser_new(256);
	int rc2 = 0;
	for (size_t i = 0; i < size && rc2 == 0; i += step)
		rc2 = sse_parser_feed(p, (const char *)data + i, size - i < step ? size - i : step, count, &chunked);
	sse_parser_free(p);
	if (rc1 == 0 && rc2 == 0 && whole != chunked)
		abort();
	return 0;
}
