/* err: the registry table behind err.h and the problem+json builder. The table is
 * generated from ERR_LIST so a code cannot exist without its slug, title and status. */
#include "err/err.h"

#include <stddef.h>

struct err_entry {
	int code;
	const char *slug;
	int status;
	const char *title;
	const char *uri;
};

static const struct err_entry err_table[] = {
#define ERR_ROW(name, val, slug, status, title) {(val), slug, status, title, "urn:mimir:problem:" slug},
	ERR_LIST(ERR_ROW)
#undef ERR_ROW
};

static const struct err_entry *err_find(int code)
{
	for (size_t i = 0; i < sizeof err_table / sizeof err_table[0]; i++)
		if (err_table[i].code == code)
			return &err_table[i];
	return err_find(ERR_INTERNAL);
}

const char *err_slug(int code) { return err_find(code)->slug; }
const char *err_title(int code) { return err_find(code)->title; }
int err_http_status(int code) { return err_find(code)->status; }
const char *err_type_uri(int code) { return err_find(code)->uri; }

json_t *err_problem_status(int code, int status, const char *detail, const char *field,
			   const char *request_id)
{
	const struct err_entry *e = err_find(code);
	json_t *p = json_pack("{s:s, s:s, s:i, s:s}", "type", e->uri, "title", e->title,
			      "status", status, "detail", detail ? detail : e->title);
	if (!p)
		return NULL;
	if ((field && json_object_set_new(p, "field", json_string(field)) != 0) ||
	    (request_id && json_object_set_new(p, "request_id", json_string(request_id)) != 0)) {
		json_decref(p);
		return NULL;
	}
	return p;
}

json_t *err_problem(int code, const char *detail, const char *field, const char *request_id)
{
	return err_problem_status(code, err_http_status(code), detail, field, request_id);
}
