/* mimir-gateway CORS: browser clients on other origins may call the client API (and,
 * when configured, the admin API) once the browser's preflight has been answered. The
 * gateway authenticates with the Authorization header, never cookies, so it never
 * allows credentials: an allowed origin is echoed back with Vary: Origin, and a
 * response to any other origin carries no CORS header at all, which makes the browser
 * withhold it from the page. Preflights that ask for an origin, a method or a header
 * outside the configuration are refused with 403 and a problem that names which. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "err/err.h"
#include "gateway.h"
#include "log/log.h"
#include "metrics/metrics.h"

extern const struct http_route gw_routes[];

/* Request headers a browser may send besides the CORS-safelisted ones. */
static const char *const allowed_headers[] = {"authorization", "content-type", "x-request-id",
					      "last-event-id", "accept", NULL};
#define ALLOW_HEADERS "Authorization, Content-Type, X-Request-Id, Last-Event-ID, Accept"
#define EXPOSE_HEADERS "Retry-After, X-Request-Id, Location"

static bool origin_allowed(const struct gw_ctx *c, const char *origin)
{
	if (c->any_origin)
		return true;
	for (size_t i = 0; i < c->n_origins; i++)
		if (strcasecmp(c->origins[i], origin) == 0)
			return true;
	return false;
}

static bool cors_on(const struct gw_ctx *c, enum gw_api api)
{
	return (c->any_origin || c->n_origins) && (api == GW_API_CLIENT || c->set.cors_admin);
}

static enum gw_api api_of(const char *path)
{
	return strncmp(path, GW_ADMIN_PREFIX "/", sizeof GW_ADMIN_PREFIX) == 0 ? GW_API_ADMIN
										  : GW_API_CLIENT;
}

void gw_cors_headers(struct http_req *r, struct gw_ctx *c, enum gw_api api)
{
	const char *origin = http_req_header(r, "Origin");
	if (!cors_on(c, api))
		return;
	http_reply_header(r, "Vary", "Origin");
	if (!origin || strlen(origin) > GW_ORIGIN_MAX || !origin_allowed(c, origin))
		return;
	http_reply_header(r, "Access-Control-Allow-Origin", origin);
	http_reply_header(r, "Access-Control-Expose-Headers", EXPOSE_HEADERS);
}

/* Whether the comma-separated list (HTTP methods, case-sensitive) has item. */
static bool list_has(const char *list, const char *item)
{
	size_t il = strlen(item);
	for (const char *p = list; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		size_t l = strcspn(p, ",");
		while (l && p[l - 1] == ' ')
			l--;
		if (l == il && memcmp(p, item, il) == 0)
			return true;
		p += strcspn(p, ",");
	}
	return false;
}

/* The first requested header the gateway does not allow, into bad; false if none. */
static bool bad_header(const char *req_headers, char *bad, size_t cap)
{
	for (const char *p = req_headers; p && *p;) {
		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		size_t l = strcspn(p, ",");
		while (l && (p[l - 1] == ' ' || p[l - 1] == '\t'))
			l--;
		if (l) {
			bool ok = false;
			for (size_t i = 0; allowed_headers[i] && !ok; i++)
				ok = strlen(allowed_headers[i]) == l && strncasecmp(allowed_headers[i], p, l) == 0;
			if (!ok) {
				snprintf(bad, cap, "%.*s", (int)(l < 64 ? l : 64), p);
				return true;
			}
		}
		p += strcspn(p, ",");
	}
	return false;
}

static int refuse(struct http_req *r, struct gw_ctx *c, const char *detail, const char *field)
{
	metric_inc(metric_series(c->m_preflight, METRIC_LABELS("refused")));
	return http_reply_problem(r, ERR_FORBIDDEN, detail, field);
}

int gw_preflight(struct http_req *r, void *ctx)
{
	struct gw_ctx *c = ctx;
	const char *path = http_req_path(r);
	char allow[128];
	/* Every method the path has ("-" matches none, so all are collected). */
	http_route_find(gw_routes, "-", path, NULL, allow, sizeof allow);
	const char *origin = http_req_header(r, "Origin");
	const char *method = http_req_header(r, "Access-Control-Request-Method");
	if (!origin || !method) {
		http_reply_header(r, "Allow", allow);
		return http_reply_data(r, 204, NULL, "", 0);
	}
	enum gw_api api = api_of(path);
	char detail[200], bad[80];
	if (!cors_on(c, api))
		return refuse(r, c, api == GW_API_ADMIN ? "cross-origin requests to the admin API are off "
							  "(cors.admin)"
							: "cross-origin requests are off (cors.origins is empty)",
			      "Origin");
	if (strlen(origin) > GW_ORIGIN_MAX || !origin_allowed(c, origin))
		return refuse(r, c, "this origin is not among cors.origins", "Origin");
	if (!list_has(allow, method) || !strcmp(method, "OPTIONS")) {
		snprintf(detail, sizeof detail, "%.16s is not a method of this path; allowed: %s", method, allow);
		return refuse(r, c, detail, "Access-Control-Request-Method");
	}
	if (bad_header(http_req_header(r, "Access-Control-Request-Headers"), bad, sizeof bad)) {
		snprintf(detail, sizeof detail, "header %s may not be sent cross-origin; allowed: %s", bad,
			 ALLOW_HEADERS);
		return refuse(r, c, detail, "Access-Control-Request-Headers");
	}
	char age[24];
	snprintf(age, sizeof age, "%lld", (long long)c->set.cors_max_age_s);
	http_reply_header(r, "Access-Control-Allow-Origin", origin);
	http_reply_header(r, "Vary", "Origin");
	http_reply_header(r, "Access-Control-Allow-Methods", allow);
	http_reply_header(r, "Access-Control-Allow-Headers", ALLOW_HEADERS);
	http_reply_header(r, "Access-Control-Max-Age", age);
	metric_inc(metric_series(c->m_preflight, METRIC_LABELS("allowed")));
	return http_reply_data(r, 204, NULL, "", 0);
}
