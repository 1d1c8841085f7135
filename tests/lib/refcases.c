/* refcases: parser of the shared models README for the model suites. */
#include "refcases.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static int ints(const char *s, int *out, int cap)
{
	int n = 0;
	char *end;
	for (;;) {
		long v = strtol(s, &end, 10);
		if (end == s || n == cap)
			return n;
		out[n++] = (int)v;
		s = end;
	}
}

/* The text between the first open and the last close delimiter of line. */
static void between(const char *line, char open, char close, char *dst, size_t cap)
{
	const char *a = strchr(line, open), *b = strrchr(line, close);
	ck_assert_msg(a && b && b > a, "malformed README line: %s", line);
	snprintf(dst, cap, "%.*s", (int)(b - a - 1), a + 1);
}

int tu_ref_load(struct tu_ref_case *c, int cap, double *margin)
{
	char path[1024];
	char *doc = tu_read_file(tu_shared(path, sizeof path, "models/README.md"), NULL);
	ck_assert_msg(doc != NULL, "cannot read %s", path);
	if (margin) {
		/* "beats the runner-up by at least X" (the line may break anywhere) */
		const char *claim = strstr(doc, "runner-up by");
		claim = claim ? strstr(claim, "least") : NULL;
		ck_assert_msg(claim != NULL, "the README states no margin");
		char *end;
		*margin = strtod(claim + strlen("least"), &end);
		ck_assert(*margin > 0);
	}
	int n = -1;
	for (char *line = doc; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		if (strncmp(line, "### \"", 5) == 0 && n + 1 < cap) {
			memset(&c[++n], 0, sizeof c[0]);
			between(line, '"', '"', c[n].prompt, sizeof c[n].prompt);
		} else if (n >= 0 && strncmp(line, "- prompt ids:", 13) == 0) {
			c[n].np = ints(line + 13, c[n].pids, 64);
		} else if (n >= 0 && strncmp(line, "- generated ids:", 16) == 0) {
			c[n].ng = ints(line + 16, c[n].gids, 128);
			size_t k = 0;
			for (int i = 0; i < c[n].ng && k + 12 < sizeof c[n].ids; i++)
				k += (size_t)snprintf(c[n].ids + k, sizeof c[n].ids - k, "%s%d", i ? " " : "", c[n].gids[i]);
		} else if (n >= 0 && strncmp(line, "- text: `", 9) == 0) {
			between(line, '`', '`', c[n].text, sizeof c[n].text);
		}
		line = nl ? nl + 1 : NULL;
	}
	free(doc);
	ck_assert_msg(n >= 0, "no prompts found in %s", path);
	return n + 1;
}
