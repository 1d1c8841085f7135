/* mimirctl output: pretty JSON for scripts; for people, tables whose columns fit their
 * widest cell and "key: value" lines for a single object. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

#define CELL_MAX 256

int ctl_print_json(json_t *doc)
{
	char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(doc);
	if (!text)
		return ctl_fail("out of memory");
	puts(text);
	free(text);
	return CTL_OK;
}

void ctl_cell(json_t *v, char *buf, size_t cap)
{
	if (!v || json_is_null(v))
		snprintf(buf, cap, "-");
	else if (json_is_string(v))
		snprintf(buf, cap, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
	else if (json_is_true(v) || json_is_false(v))
		snprintf(buf, cap, "%s", json_is_true(v) ? "yes" : "no");
	else {
		char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		snprintf(buf, cap, "%s", t ? t : "?");
		free(t);
	}
}

/* The value at a dotted path. */
static json_t *at(json_t *obj, const char *path)
{
	char key[64];
	while (obj && path && *path) {
		size_t l = strcspn(path, ".");
		snprintf(key, sizeof key, "%.*s", (int)(l < 63 ? l : 63), path);
		obj = json_object_get(obj, key);
		path += l + (path[l] == '.');
	}
	return obj;
}

void ctl_table(json_t *items, const struct ctl_col *cols, size_t ncols)
{
	size_t n = json_array_size(items);
	if (n == 0) {
		puts("(none)");
		return;
	}
	char(*cells)[CELL_MAX] = calloc(n * ncols, CELL_MAX);
	size_t *w = calloc(ncols, sizeof *w);
	if (!cells || !w) {
		free(cells);
		free(w);
		ctl_fail("out of memory");
		return;
	}
	for (size_t j = 0; j < ncols; j++)
		w[j] = strlen(cols[j].title);
	for (size_t i = 0; i < n; i++) {
		json_t *it = json_array_get(items, i);
		for (size_t j = 0; j < ncols; j++) {
			char *cell = cells[i * ncols + j];
			if (cols[j].fmt)
				cols[j].fmt(it, cell, CELL_MAX);
			else
				ctl_cell(at(it, cols[j].key), cell, CELL_MAX);
			size_t l = strlen(cell);
			w[j] = l > w[j] ? l : w[j];
		}
	}
	for (size_t j = 0; j < ncols; j++)
		printf("%-*s%s", j + 1 < ncols ? (int)w[j] : 0, cols[j].title, j + 1 < ncols ? "  " : "\n");
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < ncols; j++)
			printf("%-*s%s", j + 1 < ncols ? (int)w[j] : 0, cells[i * ncols + j],
			       j + 1 < ncols ? "  " : "\n");
	free(cells);
	free(w);
}

void ctl_fields(json_t *obj, const char *const *keys)
{
	size_t w = 0;
	for (size_t i = 0; keys[i]; i++)
		w = strlen(keys[i]) > w ? strlen(keys[i]) : w;
	for (size_t i = 0; keys[i]; i++) {
		char cell[1024], label[80];
		ctl_cell(at(obj, keys[i]), cell, sizeof cell);
		snprintf(label, sizeof label, "%s:", keys[i]);
		printf("%-*s %s\n", (int)w + 1, label, cell);
	}
}
