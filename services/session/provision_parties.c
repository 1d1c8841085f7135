/* mimir-session provisioner, the parties' side: once the dealer has a CREATED session,
 * opens it at every party (POST /v1/sessions of docs/PARTY.md, under the id
 * reg_party_session_id derives from the registry's), follows each party's
 * GET /v1/sessions/{id} until it is ready or failed, and records what the party says in
 * the registry as that party's initialisation report; once the session has ended in the
 * registry, deletes it at the parties (which wipes their engines, weights and KV
 * caches). Every request goes over mTLS with this service's certificate, pinned to the
 * party's registered certificate and requiring the party role: the service knows whom
 * it is talking to, which is why it may vouch for the party's report.
 *
 * Opening is all at once: the identities of all the parties are read first (stream
 * port, share index, model, sealing key) and checked against the registry, then the
 * session is posted to every party in one concurrent round, because a party's first
 * rounds wait only its timeouts.round_ms for the slowest peer. A refusal that will not
 * change (a party holding another share, model or split, a sealing key the registry
 * does not have, the party's 4xx other than 409 on the id) fails the session with the
 * reason. A party's 409 on the id means it has the session already (we were
 * restarted, or posted twice), which makes opening idempotent. A party that cannot be
 * reached is asked again each tick; whatever has not become ready within
 * parties.init_timeout_ms of the first attempt fails the session, naming the party and
 * its last failure. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sodium.h>

#include "err/err.h"
#include "httpc/httpc.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "prov.h"

#define PCLIENT_MAX 256                   /* parties with a kept connection */
#define CLOSE_GIVEUP_MS (15LL * 60 * 1000) /* then the party's own idle expiry wipes it */
#define REPORT_DETAIL_MAX 200             /* what the registry takes of a party's report */
#define URL_MAX 256                       /* what a party takes in a URL */

/* One party's client: a connection pinned to its certificate, kept across sessions and
 * made again when the registry changes its endpoint or pin. */
struct pclient {
	char party_id[REG_ID_SIZE];
	char endpoint[REG_ENDPOINT_MAX + 1];
	uint8_t fp[32];
	struct httpc *hc;
};

struct prov_parties {
	struct session_ctx *c;
	const char *ca, *cert, *key;
	const char *dealer_url; /* what the parties are told */
	bool dealer_pinned;
	uint8_t dealer_pin[32];
	struct httpc_multi *multi;
	struct pclient cl[PCLIENT_MAX];
	size_t ncl;
	struct metric *requests;
	struct metric_series *init_seconds;
};

static const struct reg_actor prov_actor = {.actor = "system:provisioner", .request_id = ""};

static void count(struct prov_parties *pp, const char *op, const char *outcome)
{
	metric_inc(metric_series(pp->requests, METRIC_LABELS(op, outcome)));
}

/* Text from a party, made fit for the registry and a log line: printable ASCII only. */
static void clean_text(char *dst, size_t cap, const char *src)
{
	size_t n = 0;
	for (; src && *src && n + 1 < cap; src++) {
		unsigned char ch = (unsigned char)*src;
		dst[n++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	dst[n] = '\0';
}

/* snprintf for reasons, which are cut at the registry's bound on purpose. */
static void textf(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void textf(char *dst, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dst, cap, fmt, ap);
	va_end(ap);
}

/* A transient failure: remembered for the timeout's reason, logged once per session. */
static void transient(struct prov_known *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void transient(struct prov_known *k, const char *fmt, ...)
{
	char raw[REG_DESC_MAX + 1];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof raw, fmt, ap);
	va_end(ap);
	clean_text(k->why, sizeof k->why, raw);
	if (!k->party_warned)
		LOG_WARN("session.party_retry", LOG_S("session", k->id), LOG_S("detail", k->why),
			 LOG_S("hint", "asked again every tick until parties.init_timeout_ms"));
	k->party_warned = true;
}

/* The problem a party answered: its detail and field (either may be ""). */
static void problem_of(const struct httpc_resp *r, char *detail, size_t dcap, char *field, size_t fcap)
{
	json_t *doc = r->body && r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
	clean_text(detail, dcap, json_string_value(json_object_get(doc, "detail")));
	if (field)
		clean_text(field, fcap, json_string_value(json_object_get(doc, "field")));
	json_decref(doc);
}

/* ---- URLs ---- */

/* The party's endpoint as its peers reach it: https, a host, no trailing slash. */
static bool endpoint_url(const char *endpoint, char *out, size_t cap)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL;
	bool ok = u && curl_url_set(u, CURLUPART_URL, endpoint, 0) == CURLUE_OK &&
		  curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK && !strcmp(scheme, "https") &&
		  curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host[0];
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	size_t n = strlen(endpoint);
	while (n && endpoint[n - 1] == '/')
		n--;
	if (!ok || n >= cap || n >= URL_MAX)
		return false;
	memcpy(out, endpoint, n);
	out[n] = '\0';
	return true;
}

/* The party's stream listener: its endpoint's host with the port it publishes. */
static bool stream_url(const char *endpoint, int port, char *out, size_t cap)
{
	CURLU *u = curl_url();
	char portstr[8], *url = NULL;
	snprintf(portstr, sizeof portstr, "%d", port);
	bool ok = u && curl_url_set(u, CURLUPART_URL, endpoint, 0) == CURLUE_OK &&
		  curl_url_set(u, CURLUPART_PORT, portstr, 0) == CURLUE_OK &&
		  curl_url_set(u, CURLUPART_PATH, NULL, 0) == CURLUE_OK &&
		  curl_url_set(u, CURLUPART_QUERY, NULL, 0) == CURLUE_OK &&
		  curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) == CURLUE_OK &&
		  curl_url_set(u, CURLUPART_USER, NULL, 0) == CURLUE_OK &&
		  curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) == CURLUE_OK &&
		  curl_url_get(u, CURLUPART_URL, &url, 0) == CURLUE_OK;
	size_t n = ok ? strlen(url) : 0;
	while (n && url[n - 1] == '/')
		n--;
	ok = ok && n < cap && n < URL_MAX;
	if (ok) {
		memcpy(out, url, n);
		out[n] = '\0';
	}
	curl_free(url);
	curl_url_cleanup(u);
	return ok;
}

/* ---- clients ---- */

/* The client of party pt: 0, or ERR_INVALID with why (the party cannot be reached as
 * registered: a permanent refusal), or ERR_NOMEM. */
static int client_for(struct prov_parties *pp, const struct reg_party *pt, struct httpc **out, char *why,
		      size_t cap)
{
	char url[URL_MAX];
	*out = NULL;
	if (!pt->endpoint[0] || !endpoint_url(pt->endpoint, url, sizeof url)) {
		textf(why, cap,
			 "party %s has %s; the session service opens sessions there and its peers reach "
			 "it there (set its endpoint to https://host:port)",
			 pt->identity, pt->endpoint[0] ? "an endpoint that is no https:// URL" : "no endpoint");
		return ERR_INVALID;
	}
	if (!pt->has_fingerprint) {
		textf(why, cap, "party %s has no pinned certificate (set its cert_fingerprint)", pt->identity);
		return ERR_INVALID;
	}
	struct pclient *slot = NULL;
	for (size_t i = 0; i < pp->ncl && !slot; i++)
		if (!strcmp(pp->cl[i].party_id, pt->id))
			slot = &pp->cl[i];
	if (slot && !strcmp(slot->endpoint, pt->endpoint) && !sodium_memcmp(slot->fp, pt->fingerprint, 32)) {
		*out = slot->hc;
		return 0;
	}
	if (!slot) {
		if (pp->ncl == PCLIENT_MAX)
			return ERR_NOMEM; /* the caller frees the table between sessions */
		slot = &pp->cl[pp->ncl++];
		memset(slot, 0, sizeof *slot);
	}
	httpc_free(slot->hc);
	slot->hc = NULL;
	struct httpc_opts o = {
		.base_url = url,
		.ca_file = pp->ca,
		.cert_file = pp->cert,
		.key_file = pp->key,
		.expect_role = IDENT_ROLE_PARTY,
		.expect_fingerprint = pt->fingerprint,
		.connect_timeout_ms = 2000,
		.timeout_ms = pp->c->set.parties_timeout_ms,
		.retries = 0, /* the next tick is the retry */
		.max_response = 1u << 20,
	};
	int rc = httpc_new(&slot->hc, &o);
	if (rc != 0) {
		*slot = pp->cl[--pp->ncl];
		return ERR_NOMEM; /* the options were checked at start-up: only memory is left */
	}
	snprintf(slot->party_id, sizeof slot->party_id, "%s", pt->id);
	snprintf(slot->endpoint, sizeof slot->endpoint, "%s", pt->endpoint);
	memcpy(slot->fp, pt->fingerprint, 32);
	*out = slot->hc;
	return 0;
}

/* Clients for all n parties, freeing the kept ones first when they would not fit.
 * 0, ERR_INVALID (why) or ERR_NOMEM. */
static int clients_for(struct prov_parties *pp, const struct reg_party *parties, size_t n, struct httpc **hc,
		       char *why, size_t cap)
{
	if (pp->ncl + n > PCLIENT_MAX) {
		for (size_t i = 0; i < pp->ncl; i++)
			httpc_free(pp->cl[i].hc);
		pp->ncl = 0;
	}
	for (size_t i = 0; i < n; i++) {
		int rc = client_for(pp, &parties[i], &hc[i], why, cap);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* ---- the dealer's certificate ---- */

/* Trust the Mimir CA alone (curl would add the system's). */
static CURLcode trust_ca(CURL *curl, void *sslctx, void *ca)
{
	(void)curl;
	X509_STORE *store = X509_STORE_new();
	if (!store || X509_STORE_load_file(store, ca) != 1) {
		X509_STORE_free(store);
		return CURLE_SSL_CACERT_BADFILE;
	}
	SSL_CTX_set_cert_store(sslctx, store);
	return CURLE_OK;
}

/* The fingerprint the parties pin the dealer to: dealer.pin, or that of the certificate
 * the dealer presents now (a TLS handshake with this service's dealer credentials,
 * chained to the Mimir CA and carrying the dealer role). Learning it per opening keeps
 * up with a dealer whose short-lived certificate was renewed; the parties still check
 * the dealer's certificate with their own verifier. */
static int dealer_fingerprint(struct prov_parties *pp, uint8_t out[32], char *why, size_t cap)
{
	const struct session_settings *set = &pp->c->set;
	if (pp->dealer_pinned) {
		memcpy(out, pp->dealer_pin, 32);
		return 0;
	}
	CURL *h = curl_easy_init();
	if (!h)
		return ERR_NOMEM;
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(h, CURLOPT_URL, set->dealer_url);
	curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)set->dealer_timeout_ms);
	curl_easy_setopt(h, CURLOPT_CAINFO, set->dealer_ca);
	curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, trust_ca);
	curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, (void *)set->dealer_ca);
	curl_easy_setopt(h, CURLOPT_SSLCERT, set->dealer_cert);
	curl_easy_setopt(h, CURLOPT_SSLKEY, set->dealer_key);
	curl_easy_setopt(h, CURLOPT_CERTINFO, 1L);
	CURLcode cc = curl_easy_perform(h);
	struct curl_certinfo *ci = NULL;
	const char *pem = NULL;
	if (cc == CURLE_OK && curl_easy_getinfo(h, CURLINFO_CERTINFO, &ci) == CURLE_OK && ci &&
	    ci->num_of_certs > 0)
		for (const struct curl_slist *l = ci->certinfo[0]; l && !pem; l = l->next)
			if (!strncmp(l->data, "Cert:", 5))
				pem = l->data + 5;
	BIO *bio = pem ? BIO_new_mem_buf(pem, -1) : NULL;
	X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	int rc = ERR_IO;
	if (cc != CURLE_OK) {
		textf(why, cap, "the dealer's certificate: %s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
	} else if (!x) {
		textf(why, cap, "the dealer's certificate could not be read (set dealer.pin)");
		rc = ERR_UNSUPPORTED;
	} else {
		struct ident id;
		if (ident_from_x509(x, &id) != 0 || id.role != IDENT_ROLE_DEALER) {
			textf(why, cap, "the server at dealer.url does not hold a dealer certificate");
			rc = ERR_FORBIDDEN;
		} else {
			memcpy(out, id.fingerprint, 32);
			rc = 0;
		}
	}
	X509_free(x);
	curl_easy_cleanup(h);
	return rc;
}

/* ---- identities ---- */

struct pident {
	int stream_port; /* 0: none published (request mode) */
	char model_id[65];
};

static bool int_is(const json_t *o, const char *k, long long want, long long *got)
{
	const json_t *v = json_object_get(o, k);
	*got = json_is_integer(v) ? (long long)json_integer_value(v) : -1;
	return *got == want;
}

/* Checks the identity party i (pt) publishes against what the session needs of it.
 * 0, or ERR_CONFLICT with why (permanent). */
static int check_identity(const json_t *id, size_t i, const struct reg_session *s, const struct reg_model *m,
			  const struct reg_party *pt, struct pident *out, char *why, size_t cap)
{
	const json_t *model = json_object_get(id, "model");
	const char *role = json_string_value(json_object_get(id, "role"));
	const char *sk = json_string_value(json_object_get(id, "sealing_key"));
	const char *mid = json_string_value(json_object_get(model, "id"));
	const json_t *port = json_object_get(id, "stream_port");
	long long got;
	if (!role || strcmp(role, "party") || !sk || !mid || strlen(mid) >= sizeof out->model_id ||
	    !json_is_object(model) || !json_is_integer(port)) {
		textf(why, cap, "party %s: GET /v1/identity is not a Mimir party's identity", pt->identity);
		return ERR_CONFLICT;
	}
	if (!int_is(id, "index", (long long)i, &got)) {
		textf(why, cap,
			 "party %s holds share %lld of its model, but the session gives it share %zu (the "
			 "session lists its parties in share order)",
			 pt->identity, got, i);
		return ERR_CONFLICT;
	}
	if (!int_is(id, "nparties", (long long)s->n_parties, &got)) {
		textf(why, cap, "party %s holds one of %lld shares; the session has %zu parties", pt->identity,
			 got, s->n_parties);
		return ERR_CONFLICT;
	}
	if (!int_is(model, "frac_bits", s->fixed_point_bits, &got)) {
		textf(why, cap,
			 "party %s's shares are fixed point with %lld fractional bits; the session asks for "
			 "%u (create it with fixed_point_bits %lld)",
			 pt->identity, got, s->fixed_point_bits, got);
		return ERR_CONFLICT;
	}
	const struct {
		const char *name;
		uint32_t want;
	} dims[] = {
		{"dim", m->dims.dim},
		{"hidden_dim", m->dims.hidden_dim},
		{"n_layers", m->dims.n_layers},
		{"n_heads", m->dims.n_heads},
		{"n_kv_heads", m->dims.n_kv_heads},
		{"vocab_size", m->dims.vocab_size},
		{"seq_len", m->dims.seq_len},
	};
	for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
		if (!int_is(model, dims[d].name, dims[d].want, &got)) {
			textf(why, cap,
				 "party %s holds shares of another model than %s (its %s is %lld, the "
				 "registry's %u)",
				 pt->identity, m->name, dims[d].name, got, dims[d].want);
			return ERR_CONFLICT;
		}
	uint8_t key[32];
	size_t bin = 0;
	if (strlen(sk) != 64 || sodium_hex2bin(key, sizeof key, sk, 64, NULL, &bin, NULL) != 0 ||
	    bin != sizeof key || sodium_memcmp(key, pt->sealing_key, sizeof key) != 0) {
		textf(why, cap,
			 "party %s seals to another key than the registry has for it, so clients would seal "
			 "to the wrong key (set its sealing_key to the one its GET /v1/identity publishes)",
			 pt->identity);
		return ERR_CONFLICT;
	}
	json_int_t sp = json_integer_value(port);
	out->stream_port = sp > 0 && sp < 65536 ? (int)sp : 0;
	snprintf(out->model_id, sizeof out->model_id, "%s", mid);
	return 0;
}

/* ---- opening ---- */

/* Reads and checks every party's identity. 0; ERR_CONFLICT when the session was failed
 * (a permanent mismatch); ERR_UNAVAILABLE when a party could not be asked (k->why). */
static int identities(struct prov_parties *pp, struct prov_known *k, const struct reg_session *s,
		      const struct reg_party *parties, struct httpc **hc, struct pident *ids)
{
	size_t n = s->n_parties;
	char why[REG_DESC_MAX + 1];
	struct reg_model *m = malloc(sizeof *m);
	struct httpc_call *calls = calloc(n, sizeof *calls);
	int rc = ERR_UNAVAILABLE;
	if (!m || !calls)
		goto out;
	if (reg_model_get(pp->c->reg, s->model_id, m) != 0) {
		transient(k, "the model %s could not be read: %s", s->model_id, reg_last_error()->detail);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		calls[i] = (struct httpc_call){.c = hc[i], .method = "GET", .path = "/v1/identity"};
	httpc_multi_run(pp->multi, calls, n);
	for (size_t i = 0; i < n; i++) {
		const struct httpc_resp *r = &calls[i].resp;
		if (calls[i].rc != 0 || r->status != 200) {
			count(pp, "identity", "unavailable");
			if (calls[i].rc != 0)
				transient(k, "party %s: GET /v1/identity: %s", parties[i].identity, r->error);
			else
				transient(k, "party %s: GET /v1/identity answered HTTP %ld", parties[i].identity,
					  r->status);
			goto out;
		}
		json_t *doc = json_loadb(r->body, r->len, 0, NULL);
		int crc = check_identity(doc, i, s, m, &parties[i], &ids[i], why, sizeof why);
		json_decref(doc);
		if (crc != 0) {
			count(pp, "identity", "refused");
			prov_fail_session(pp->c, s->id, why);
			rc = ERR_CONFLICT;
			goto out;
		}
		count(pp, "identity", "ok");
	}
	for (size_t i = 1; i < n; i++)
		if (strcmp(ids[i].model_id, ids[0].model_id) != 0) {
			textf(why, sizeof why,
				 "parties %s and %s hold shares of different splits of the model (share ids "
				 "%.16s... and %.16s...); give every party its share of one mimir-model share run",
				 parties[0].identity, parties[i].identity, ids[0].model_id, ids[i].model_id);
			prov_fail_session(pp->c, s->id, why);
			rc = ERR_CONFLICT;
			goto out;
		}
	rc = 0;
out:
	for (size_t i = 0; calls && i < n; i++)
		httpc_resp_free(&calls[i].resp);
	free(calls);
	free(m);
	return rc;
}

/* The peers list every party gets (the same for all). NULL: out of memory, or a URL
 * that does not fit (why). */
static json_t *peers_json(const struct reg_session *s, const struct reg_party *parties, const struct pident *ids,
			  char *why, size_t cap)
{
	json_t *peers = json_array();
	for (size_t i = 0; peers && i < s->n_parties; i++) {
		char url[URL_MAX], surl[URL_MAX], fp[65];
		sodium_bin2hex(fp, sizeof fp, parties[i].fingerprint, 32);
		bool ok = endpoint_url(parties[i].endpoint, url, sizeof url) &&
			  (!ids[i].stream_port || stream_url(parties[i].endpoint, ids[i].stream_port, surl, sizeof surl));
		json_t *p = ok ? json_pack("{s:I, s:s, s:s}", "index", (json_int_t)i, "url", url, "fingerprint", fp)
			       : NULL;
		if (p && ids[i].stream_port)
			json_object_set_new(p, "stream_url", json_string(surl));
		if (!p || json_array_append_new(peers, p) != 0) {
			if (!ok)
				textf(why, cap, "party %s: no stream URL can be made from its endpoint",
					 parties[i].identity);
			json_decref(peers);
			return NULL;
		}
	}
	return peers;
}

/* Opens the session at every party that does not have it yet. */
static void open_all(struct prov_parties *pp, struct prov_known *k, const struct reg_session *s,
		     const struct reg_party *parties, struct httpc **hc)
{
	size_t n = s->n_parties;
	char why[REG_DESC_MAX + 1] = "", fp[65];
	uint8_t dfp[32];
	struct pident *ids = calloc(n, sizeof *ids);
	struct httpc_call *calls = calloc(n, sizeof *calls);
	char **bodies = calloc(n, sizeof *bodies);
	size_t *who = calloc(n, sizeof *who);
	json_t *peers = NULL;
	size_t nc = 0;
	int rc;
	if (!ids || !calls || !bodies || !who)
		goto out;
	if (identities(pp, k, s, parties, hc, ids) != 0)
		goto out;
	if ((rc = dealer_fingerprint(pp, dfp, why, sizeof why)) != 0) {
		transient(k, "%s", why[0] ? why : err_title(rc));
		goto out;
	}
	sodium_bin2hex(fp, sizeof fp, dfp, sizeof dfp);
	if (!(peers = peers_json(s, parties, ids, why, sizeof why))) {
		if (why[0])
			prov_fail_session(pp->c, s->id, why);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (k->stage[i] != PROV_NONE)
			continue;
		json_t *body = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:O, s:{s:s, s:s, s:s}}", "id", k->pid,
					 "index", (json_int_t)i, "nparties", (json_int_t)n, "frac_bits",
					 (json_int_t)s->fixed_point_bits, "n_ctx", (json_int_t)s->max_context, "pad",
					 (json_int_t)s->pad_bucket, "peers", peers, "dealer", "url", pp->dealer_url,
					 "fingerprint", fp, "session", s->id);
		bodies[nc] = body ? json_dumps(body, JSON_COMPACT) : NULL;
		json_decref(body);
		if (!bodies[nc])
			goto out;
		calls[nc] = (struct httpc_call){.c = hc[i], .method = "POST", .path = "/v1/sessions",
						.content_type = "application/json", .body = bodies[nc],
						.len = strlen(bodies[nc])};
		who[nc++] = i;
	}
	k->touched = true; /* from here a party may have it, whatever the answers say */
	httpc_multi_run(pp->multi, calls, nc);
	for (size_t j = 0; j < nc; j++) {
		size_t i = who[j];
		const struct reg_party *pt = &parties[i];
		const struct httpc_resp *r = &calls[j].resp;
		char detail[REG_DESC_MAX + 1], field[64];
		problem_of(r, detail, sizeof detail, field, sizeof field);
		bool had = calls[j].rc == 0 && r->status == 409 && !strcmp(field, "id");
		if (calls[j].rc == 0 && (r->status == 202 || had)) {
			k->stage[i] = PROV_OPENED;
			count(pp, "open", "ok");
			LOG_INFO("session.party_opened", LOG_S("session", s->id), LOG_S("party", pt->identity),
				 LOG_I("index", (long long)i), LOG_S("party_session", k->pid),
				 LOG_S("outcome", had ? "existing" : "created"));
		} else if (calls[j].rc == 0 && r->status >= 400 && r->status < 500 && r->status != 408 &&
			   r->status != 429) {
			/* Bad input or a party that is not the session's: asking again changes nothing.
			 * The parties already opened learn of it when reap() deletes it there. */
			count(pp, "open", "refused");
			textf(why, sizeof why, "party %s refused the session (HTTP %ld%s%s): %s", pt->identity,
				 r->status, field[0] ? ", field " : "", field, detail[0] ? detail : "no detail");
			prov_fail_session(pp->c, s->id, why);
			goto out;
		} else {
			count(pp, "open", "unavailable");
			if (calls[j].rc != 0)
				transient(k, "party %s: POST /v1/sessions: %s", pt->identity, r->error);
			else
				transient(k, "party %s: POST /v1/sessions answered HTTP %ld: %s", pt->identity,
					  r->status, detail[0] ? detail : "no detail");
		}
	}
out:
	for (size_t j = 0; j < nc; j++) {
		httpc_resp_free(&calls[j].resp);
		free(bodies[j]);
	}
	json_decref(peers);
	free(who);
	free(bodies);
	free(calls);
	free(ids);
}

/* ---- following ---- */

/* Records party i's report; false when the registry could not take it now. */
static bool report(struct prov_parties *pp, struct prov_known *k, const struct reg_session *s,
		   const struct reg_party *pt, size_t i, bool ok, const char *detail)
{
	struct reg_session *after = malloc(sizeof *after);
	if (!after)
		return false;
	int rc = reg_session_report_init(pp->c->reg, &prov_actor, s->id, pt->identity, pt->fingerprint, ok, detail,
					 after);
	bool taken = true;
	if (rc == 0) {
		k->stage[i] = ok ? PROV_READY : PROV_FAILED;
		if (ok)
			LOG_INFO("session.party_ready", LOG_S("session", s->id), LOG_S("party", pt->identity),
				 LOG_I("index", (long long)i), LOG_I("ms", prov_now_ms() - k->open_ms));
		else
			LOG_WARN("session.party_failed", LOG_S("session", s->id), LOG_S("party", pt->identity),
				 LOG_I("index", (long long)i), LOG_S("detail", detail));
		if (after->state == REG_STATE_READY && ok) {
			double secs = (double)(prov_now_ms() - k->open_ms) / 1000.0;
			metric_observe(pp->init_seconds, secs);
			LOG_INFO("session.ready", LOG_S("session", s->id), LOG_I("parties", (long long)s->n_parties),
				 LOG_I("ms", prov_now_ms() - k->open_ms));
		}
	} else if (rc == ERR_CONFLICT) {
		/* no longer CREATED (closed, expired): reap() takes over */
	} else if (rc == ERR_FORBIDDEN) {
		prov_fail_session(pp->c, s->id, reg_last_error()->detail);
	} else {
		taken = false;
		transient(k, "the registry did not take party %s's report: %s", pt->identity,
			  reg_last_error()->detail);
	}
	free(after);
	return taken;
}

/* Asks every opened party how the session stands there and reports what it says. */
static void follow(struct prov_parties *pp, struct prov_known *k, const struct reg_session *s,
		   const struct reg_party *parties, struct httpc **hc)
{
	size_t n = s->n_parties, nc = 0;
	char path[64];
	struct httpc_call *calls = calloc(n, sizeof *calls);
	size_t *who = calloc(n, sizeof *who);
	bool *ready = calloc(n, sizeof *ready);
	/* the failure to report: a party's own cause before one that followed a peer's */
	long bad = -1;
	bool bad_is_echo = true;
	char bad_detail[REPORT_DETAIL_MAX + 1] = "";
	if (!calls || !who || !ready)
		goto out;
	snprintf(path, sizeof path, "/v1/sessions/%s", k->pid);
	for (size_t i = 0; i < n; i++)
		if (k->stage[i] == PROV_OPENED) {
			calls[nc] = (struct httpc_call){.c = hc[i], .method = "GET", .path = path};
			who[nc++] = i;
		}
	httpc_multi_run(pp->multi, calls, nc);
	for (size_t j = 0; j < nc; j++) {
		size_t i = who[j];
		const struct httpc_resp *r = &calls[j].resp;
		if (calls[j].rc != 0 || (r->status != 200 && r->status != 404)) {
			count(pp, "status", "unavailable");
			if (calls[j].rc != 0)
				transient(k, "party %s: GET the session: %s", parties[i].identity, r->error);
			else
				transient(k, "party %s: GET the session answered HTTP %ld", parties[i].identity,
					  r->status);
			continue;
		}
		count(pp, "status", "ok");
		json_t *doc = r->status == 200 ? json_loadb(r->body, r->len, 0, NULL) : NULL;
		const char *state = json_string_value(json_object_get(doc, "state"));
		const char *check = json_string_value(json_object_get(doc, "failed_check"));
		char detail[REPORT_DETAIL_MAX + 1];
		bool failed = r->status == 404 || !state || !strcmp(state, "failed") || !strcmp(state, "closed");
		if (r->status == 404)
			textf(detail, sizeof detail,
			      "the party no longer has the session (it was restarted, or the session was closed there)");
		else if (!state)
			textf(detail, sizeof detail, "the party's answer names no state");
		else
			clean_text(detail, sizeof detail, json_string_value(json_object_get(doc, "detail")));
		if (failed) {
			bool echo = check && !strcmp(check, "transport");
			if (bad < 0 || (bad_is_echo && !echo)) {
				bad = (long)i;
				bad_is_echo = echo;
				textf(bad_detail, sizeof bad_detail, "%s%s",
				      state && !strcmp(state, "closed") ? "closed: " : "",
				      detail[0] ? detail : "no detail given");
			}
		} else if (!strcmp(state, "ready")) {
			ready[i] = true;
		} else {
			textf(k->why, sizeof k->why, "party %s is still %s", parties[i].identity, state);
		}
		json_decref(doc);
	}
	if (bad >= 0) {
		report(pp, k, s, &parties[bad], (size_t)bad, false, bad_detail);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (ready[i] && !report(pp, k, s, &parties[i], i, true, NULL))
			break;
out:
	for (size_t j = 0; j < nc; j++)
		httpc_resp_free(&calls[j].resp);
	free(ready);
	free(who);
	free(calls);
}

void prov_parties_step(struct prov_parties *pp, struct prov_known *k, const struct reg_session *s,
		       const struct reg_party *parties)
{
	size_t n = s->n_parties;
	char why[REG_DESC_MAX + 1];
	struct httpc *hc[REG_MAX_PARTIES];
	if (!k->pid[0] && reg_party_session_id(s->id, k->pid) != 0)
		return;
	int64_t now = prov_now_ms();
	if (!k->open_ms)
		k->open_ms = now;
	size_t waiting = n;
	for (size_t i = 0; i < n; i++)
		if (k->stage[i] == PROV_READY)
			waiting--;
	k->busy = waiting > 0;
	if (!waiting)
		return;
	if (now - k->open_ms > pp->c->set.parties_init_timeout_ms) {
		size_t late = 0;
		while (late < n - 1 && k->stage[late] == PROV_READY)
			late++;
		textf(why, sizeof why, "party %s was not ready within parties.init_timeout_ms (%lld ms): %s",
			 parties[late].identity, (long long)pp->c->set.parties_init_timeout_ms,
			 k->why[0] ? k->why : (k->stage[late] == PROV_NONE ? "not opened" : "still initialising"));
		prov_fail_session(pp->c, s->id, why);
		return;
	}
	int rc = clients_for(pp, parties, n, hc, why, sizeof why);
	if (rc == ERR_INVALID) {
		prov_fail_session(pp->c, s->id, why);
		return;
	}
	if (rc != 0)
		return;
	bool opened = true;
	for (size_t i = 0; i < n; i++)
		if (k->stage[i] == PROV_NONE)
			opened = false;
	if (!opened)
		open_all(pp, k, s, parties, hc);
	else
		follow(pp, k, s, parties, hc);
}

/* ---- closing ---- */

bool prov_parties_close(struct prov_parties *pp, struct prov_known *k, const struct reg_session *s,
			const struct reg_party *parties)
{
	if (!s || (!k->pid[0] && reg_party_session_id(k->id, k->pid) != 0))
		return true;
	size_t n = s->n_parties, nc = 0;
	int64_t now = prov_now_ms();
	if (!k->close_ms)
		k->close_ms = now;
	struct httpc_call calls[REG_MAX_PARTIES];
	size_t who[REG_MAX_PARTIES];
	char path[64], why[REG_DESC_MAX + 1];
	snprintf(path, sizeof path, "/v1/sessions/%s", k->pid);
	if (pp->ncl + n > PCLIENT_MAX) {
		for (size_t i = 0; i < pp->ncl; i++)
			httpc_free(pp->cl[i].hc);
		pp->ncl = 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (k->stage[i] == PROV_CLOSED)
			continue;
		struct httpc *hc = NULL;
		int rc = client_for(pp, &parties[i], &hc, why, sizeof why);
		if (rc == ERR_INVALID) {
			k->stage[i] = PROV_CLOSED; /* it cannot have been opened there */
			continue;
		}
		if (rc != 0)
			continue;
		calls[nc] = (struct httpc_call){.c = hc, .method = "DELETE", .path = path};
		who[nc++] = i;
	}
	httpc_multi_run(pp->multi, calls, nc);
	for (size_t j = 0; j < nc; j++) {
		size_t i = who[j];
		const struct httpc_resp *r = &calls[j].resp;
		if (calls[j].rc == 0 && (r->status == 204 || r->status == 404)) {
			k->stage[i] = PROV_CLOSED;
			count(pp, "close", "ok");
			if (r->status == 204)
				LOG_INFO("session.party_closed", LOG_S("session", k->id),
					 LOG_S("party", parties[i].identity), LOG_S("party_session", k->pid));
		} else {
			count(pp, "close", "unavailable");
		}
		httpc_resp_free(&calls[j].resp);
	}
	size_t open = 0;
	for (size_t i = 0; i < n; i++)
		if (k->stage[i] != PROV_CLOSED)
			open++;
	if (open && now - k->close_ms > CLOSE_GIVEUP_MS) {
		LOG_WARN("session.party_close_gave_up", LOG_S("session", k->id), LOG_I("parties", (long long)open),
			 LOG_S("detail", "the session could not be deleted at some of its parties; their "
					 "limits.idle_expiry_s closes and wipes it there"));
		return true;
	}
	return open == 0;
}

/* ---- lifecycle ---- */

int prov_parties_new(struct session_ctx *c, struct metrics *m, struct prov_parties **out)
{
	*out = NULL;
	const struct session_settings *set = &c->set;
	if (!set->parties_provision)
		return 0;
	struct prov_parties *pp = calloc(1, sizeof *pp);
	if (!pp)
		return ERR_NOMEM;
	pp->c = c;
	pp->ca = set->parties_ca ? set->parties_ca : set->dealer_ca;
	pp->cert = set->parties_cert ? set->parties_cert : set->dealer_cert;
	pp->key = set->parties_key ? set->parties_key : set->dealer_key;
	pp->dealer_url = set->parties_dealer_url ? set->parties_dealer_url : set->dealer_url;
	const char *files[][2] = {{"parties.ca", pp->ca}, {"parties.cert", pp->cert}, {"parties.key", pp->key}};
	for (size_t i = 0; i < 3; i++)
		if (!files[i][1] || access(files[i][1], R_OK) != 0) {
			LOG_ERROR("session.bad_config", LOG_S("key", files[i][0]),
				  LOG_S("detail", "the Mimir CA, this service's certificate (role session) and its "
						  "key for the parties must be readable files (by default the "
						  "dealer.* ones; parties.provision false switches this off)"));
			free(pp);
			return ERR_CONFIG;
		}
	if (strncmp(pp->dealer_url, "https://", 8) != 0 || strlen(pp->dealer_url) >= URL_MAX) {
		LOG_ERROR("session.bad_config", LOG_S("key", set->parties_dealer_url ? "parties.dealer_url" : "dealer.url"),
			  LOG_S("detail", "the parties reach the dealer over https: an https:// URL of at most "
					  "255 bytes (parties.dealer_url when they reach it elsewhere)"));
		free(pp);
		return ERR_CONFIG;
	}
	if (set->dealer_pin) {
		size_t bin = 0;
		if (sodium_hex2bin(pp->dealer_pin, 32, set->dealer_pin, strlen(set->dealer_pin), NULL, &bin, NULL) != 0 ||
		    bin != 32) {
			free(pp);
			return ERR_CONFIG; /* session_prov_start has said why */
		}
		pp->dealer_pinned = true;
	}
	if (httpc_multi_new(&pp->multi) != 0) {
		free(pp);
		return ERR_NOMEM;
	}
	pp->requests = metrics_counter(m, "mimir_session_party_requests_total",
				       "Requests of the provisioner to the parties by operation and outcome",
				       (const char *const[]){"op", "outcome", NULL});
	static const double bounds[] = {0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300};
	pp->init_seconds = metric_series(
	    metrics_histogram(m, "mimir_session_party_init_seconds",
			      "From the first attempt to open a session at its parties to the session ready",
			      NULL, bounds, sizeof bounds / sizeof bounds[0]),
	    NULL);
	LOG_INFO("session.parties_provision", LOG_S("dealer_url", pp->dealer_url),
		 LOG_S("dealer_pin", pp->dealer_pinned ? "dealer.pin" : "learned from the dealer's certificate"),
		 LOG_I("init_timeout_ms", set->parties_init_timeout_ms));
	*out = pp;
	return 0;
}

void prov_parties_free(struct prov_parties *pp)
{
	if (!pp)
		return;
	for (size_t i = 0; i < pp->ncl; i++)
		httpc_free(pp->cl[i].hc);
	httpc_multi_free(pp->multi);
	free(pp);
}
