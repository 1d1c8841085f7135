/* libFuzzer harness: route matching on arbitrary paths (and patterns), which come from
 * request lines. Splits the input at the first NUL into pattern and path. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

static int h(struct http_req *r, void *c) { (void)r, (void)c; return 0; }
static const struct http_route routes[] = {
	{"GET", "/v1/sessions/{id}", h, 0, 0},
	{"POST", "/v1/sessions/{id}/generations/{gen}", h, 0, 0},
	{"GET", "/", h, 0, 0},
	{NULL, NULL, NULL, 0, 0},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	const char *pattern = buf;
	const char *path = buf + strlen(buf) + (strlen(buf) < size ? 1 : 0);
	struct http_params p;
	char allow[128];
	http_path_match(pattern, path, &p);
	http_route_find(routes, "GET", path, &p, allow, sizeof allow);
	http_route_find(routes, "PUT", pattern, &p, allow, sizeof allow);
	if (strlen(allow) >= sizeof allow)
		abort();
	free(buf);
	return 0;
}
