/* http routing: path patterns with {param} segments, and the 404/405 decision. Pure
 * string work with fixed bounds, no allocation, so it is cheap per request and easy to
 * test exhaustively. */
#include <stdio.h>
#include <string.h>

#include "http/http.h"

/* Next segment of s starting after any '/'; returns its length and advances *s. */
static size_t next_seg(const char **s, const char **seg)
{
	while (**s == '/')
		(*s)++;
	*seg = *s;
	while (**s && **s != '/')
		(*s)++;
	return (size_t)(*s - *seg);
}

bool http_path_match(const char *pattern, const char *path, struct http_params *p)
{
	if (p)
		p->n = 0;
	if (!pattern || !path || path[0] != '/')
		return false;
	/* A trailing slash is a different resource, except for the root. */
	size_t plen = strlen(path), tlen = strlen(pattern);
	if ((plen > 1 && path[plen - 1] == '/') != (tlen > 1 && pattern[tlen - 1] == '/'))
		return false;
	const char *a = pattern, *b = path;
	for (;;) {
		const char *sa, *sb;
		size_t la = next_seg(&a, &sa), lb = next_seg(&b, &sb);
		if (la == 0 || lb == 0)
			return la == 0 && lb == 0;
		if (sa[0] == '{' && sa[la - 1] == '}') {
			if (p) {
				if (p->n >= HTTP_MAX_PARAMS || la - 2 >= sizeof p->name[0] ||
				    lb >= sizeof p->value[0])
					return false;
				memcpy(p->name[p->n], sa + 1, la - 2);
				p->name[p->n][la - 2] = '\0';
				memcpy(p->value[p->n], sb, lb);
				p->value[p->n][lb] = '\0';
				p->n++;
			}
			continue;
		}
		if (la != lb || memcmp(sa, sb, la) != 0)
			return false;
	}
}

const struct http_route *http_route_find(const struct http_route *routes, const char *method,
					 const char *path, struct http_params *p, char *allow,
					 size_t allow_cap)
{
	size_t used = 0;
	if (allow_cap)
		allow[0] = '\0';
	for (const struct http_route *r = routes; r && r->method; r++) {
		if (!http_path_match(r->pattern, path, NULL))
			continue;
		if (strcmp(r->method, method) == 0 ||
		    (strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0)) {
			http_path_match(r->pattern, path, p);
			return r;
		}
		/* Collect distinct methods for Allow. */
		char needle[16];
		snprintf(needle, sizeof needle, "%s", r->method);
		bool seen = false;
		for (const char *q = allow; q && *q;) {
			size_t l = strcspn(q, ",");
			const char *t = q;
			while (*t == ' ')
				t++, l--;
			if (l == strlen(needle) && memcmp(t, needle, l) == 0)
				seen = true;
			q += strcspn(q, ",");
			if (*q == ',')
				q++;
		}
		if (!seen && allow_cap) {
			int w = snprintf(allow + used, allow_cap - used, "%s%s", used ? ", " : "",
					 needle);
			if (w > 0 && (size_t)w < allow_cap - used)
				used += (size_t)w;
		}
	}
	return NULL;
}
