/* mimir-gateway plaintext mode: the OpenAI-compatible API (common/oai) for the sessions
 * listed in openai.sessions, off when the list is empty. The gateway is then its own
 * client: each completion runs the client side of the protocols here and reaches the
 * parties through the gateway's own client API over loopback, with the caller's API
 * key, so it passes the same key check, rate limit and relay as any other request.
 * The gateway sees the prompt and the text in this mode; the parties still see
 * neither. Clients that can run the protocol themselves use `mimir proxy` instead. */
#include <stdio.h>
#include <string.h>

#include "err/err.h"
#include "gateway.h"
#include "log/log.h"
#include "oai/oai.h"

int gw_oai_init(struct gw_ctx *c)
{
	const struct gw_settings *s = &c->set;
	const char *list = s->openai_sessions ? s->openai_sessions : "";
	const char *ids[OAI_MAX_SESSIONS];
	char buf[OAI_MAX_SESSIONS][REG_ID_SIZE];
	size_t n = 0;
	for (const char *p = list; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		size_t l = strcspn(p, ", ");
		if (!l)
			break;
		if (n == OAI_MAX_SESSIONS || l > REG_ID_LEN) {
			LOG_ERROR("gateway.bad_config", LOG_S("key", "openai.sessions"),
				  LOG_S("detail", "at most 32 session ids, comma-separated"));
			return ERR_CONFIG;
		}
		snprintf(buf[n], sizeof buf[n], "%.*s", (int)l, p);
		if (!reg_id_ok(buf[n], "ses_")) {
			LOG_ERROR("gateway.bad_config", LOG_S("key", "openai.sessions"),
				  LOG_S("detail", "a session id is ses_ and 16 hex digits"));
			return ERR_CONFIG;
		}
		ids[n] = buf[n];
		n++;
		p += l;
	}
	if (!n)
		return 0;
	if (!s->openai_tokenizer) {
		LOG_ERROR("gateway.bad_config", LOG_S("key", "openai.tokenizer"),
			  LOG_S("detail", "plaintext mode tokenizes at the gateway: give the llama2.c tokenizer file"));
		return ERR_CONFIG;
	}
	struct oai_config oc = {
		.gateway = s->openai_url, /* NULL: https://localhost:<the gateway's port>, at the first request */
		.ca = s->openai_ca ? s->openai_ca : s->session_ca,
		.tokenizer = s->openai_tokenizer,
		.sessions = ids,
		.n_sessions = n,
		.default_max_tokens = s->openai_max_tokens,
		.max_running = (unsigned)s->openai_concurrency,
		.heartbeat_ms = (unsigned)s->stream_heartbeat_ms,
	};
	int rc = oai_new(&oc, &c->oai);
	if (rc != 0) {
		LOG_ERROR("gateway.bad_config", LOG_S("key", "openai"), LOG_S("detail", err_title(rc)));
		return ERR_CONFIG;
	}
	LOG_WARN("gateway.plaintext_mode", LOG_I("sessions", (long long)n),
		 LOG_S("warning", "the OpenAI API is on: for the sessions in openai.sessions the gateway "
				  "sees prompts and generated text in clear"));
	return 0;
}

static int off(struct http_req *r)
{
	return oai_reply_error(r, ERR_NOT_FOUND, 404,
			       "the OpenAI API is off at this gateway (plaintext mode: openai.sessions); use mimir "
			       "proxy on your machine",
			       NULL, "not_found");
}

static struct oai *ready(struct http_req *r, struct gw_ctx *c)
{
	if (!c->oai)
		return NULL;
	if (!c->set.openai_url) {
		char url[64];
		snprintf(url, sizeof url, "%s://localhost:%u", http_req_tls(r) ? "https" : "http",
			 http_req_local_port(r));
		oai_set_gateway(c->oai, url);
	}
	gw_cors_headers(r, c, GW_API_CLIENT);
	return c->oai;
}

int gw_oai_models(struct http_req *r, void *ctx)
{
	struct oai *o = ready(r, ctx);
	return o ? oai_models(r, o) : off(r);
}

int gw_oai_completions(struct http_req *r, void *ctx)
{
	struct oai *o = ready(r, ctx);
	return o ? oai_completions(r, o) : off(r);
}
