/* mimir generate: one generation through a gateway, with everything that must stay on
 * the client's machine done here.
 *
 * It reads the session from the gateway (its parties in share order with the X25519
 * keys they seal to, the model's vocabulary, the context and the padding bucket),
 * tokenizes the prompt locally with the public tokenizer, makes an ephemeral key pair,
 * starts the generation, and follows its event stream: every party's MASKS must open
 * and authenticate under the sealing key the session lists for that party (so a party
 * that is not the registered one, or a message altered on the way, is refused); the
 * prompt then leaves as the INPUT message (one-hot rows minus the masks, uniform to
 * anyone else); every RECEIPT must match the masks; every token must be the same in all
 * parties' OUTPUT parts. Only then is it decoded and printed, as it arrives. The output
 * is the prompt followed by the continuation, as mimir-ref prints it. A broken stream is
 * resumed with Last-Event-ID. Exit statuses: mimir.h (and --help). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "clientio/clientio.h"
#include "err/err.h"
#include "httpc/httpc.h"
#include "mimir.h"
#include "model/model.h"
#include "model/tok.h"
#include "registry/registry.h"
#include "sse/sse.h"

#define PROG MIMIR_PROG " generate"
#define KEY_PREFIX "mimir_sk_"
#define KEY_LEN 69
#define RESUMES 5

struct opts {
	const char *gateway, *session, *ca, *prompt;
	char key[KEY_LEN + 1];
	char tokenizer[4096];
	long tokens, top_k, timeout_s;
	double temperature, top_p;
	uint64_t seed;
	bool has_seed, ids, quiet;
};

struct run {
	const struct opts *o;
	struct httpc *h;  /* requests */
	struct httpc *hs; /* the event stream (h stays free for INPUT and cancel meanwhile) */
	char auth[KEY_LEN + 32];
	struct tok *tok;
	int vocab;
	unsigned n;
	uint8_t pk[MPC_MAX_PARTIES][CIO_KEY_BYTES];
	char psid[REG_PARTY_SESSION_HEX + 1];
	char gid[2 * CIO_ID_BYTES + 1];
	char gen_path[160];
	int *ids;
	size_t np;
	uint32_t slots, n_in;
	uint8_t csk[CIO_KEY_BYTES];
	struct cio_client *cl;
	struct sse_parser *p;
	bool input_sent;
	bool nl; /* the text's line is ended */
	/* the outcome */
	bool finished;
	int status;
	uint64_t *out;
	size_t made;
	int prev;
	double t0, t_first;
};

static int say(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int say(int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs(PROG ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	if (status == MX_USAGE)
		fputs("(see " PROG " --help)\n", stderr);
	return status;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " --gateway URL --session ID [options] PROMPT\n"
		"\n"
		"Generates text after PROMPT on the session's model. The prompt is tokenized here\n"
		"and sent only masked; each token comes back sealed to a key made for this run,\n"
		"is checked against every party's part and printed as it arrives (the prompt, then\n"
		"the continuation). Neither the gateway nor any party sees the text.\n"
		"\n"
		"  --gateway URL       the gateway (default $MIMIR_GATEWAY, else https://localhost:8443)\n"
		"  --session ID        the session (ses_...; default $MIMIR_SESSION)\n"
		"  --key KEY           the API key (default $MIMIR_API_KEY; prefer the variable: a\n"
		"                      command line is visible to other users)\n"
		"  --ca FILE           the deployment's CA certificate, for https (default $MIMIR_CA)\n"
		"  --tokens N          new tokens (default 64); generation also stops at BOS\n"
		"  --temperature T     0 = greedy (default 0)\n"
		"  --top-k K           keep the K most likely tokens when sampling (default 0: all)\n"
		"  --top-p P           nucleus mass, with --top-k (default 0: off)\n"
		"  --seed S            public sampling seed (default: the parties toss one)\n"
		"  --tokenizer PATH    llama2.c tokenizer (default $MIMIR_SHARED/models/tok512.bin,\n"
		"                      MIMIR_SHARED defaulting to ../shared)\n"
		"  --timeout S         bound on each request, not on the stream (default 30)\n"
		"  --ids               print only the new token ids, space separated, one line\n"
		"  --quiet             no summary line on stderr\n"
		"  -h, --help          this text\n"
		"\n"
		"exit status: 0 done; 1 failed otherwise; 2 bad command line; 3 gateway unreachable;\n"
		"4 API key refused (401/403); 5 not found; 6 conflict (session not ready or busy);\n"
		"7 invalid request (400/413/415, e.g. prompt too long); 8 rate limited; 9 server\n"
		"error (5xx); 10 the generation ended with an error (a party failed, cancelled);\n"
		"11 a party's message did not verify (wrong sealing key, a party caught lying).\n");
}

/* ---- the command line ---- */

static bool parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool parse_double(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (*s == '-' || *s == '+')
		return false;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v > (unsigned long long)INT64_MAX)
		return false;
	*out = v;
	return true;
}

static const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);
	return v && *v ? v : dflt;
}

/* Returns -1 to go on, otherwise the exit status. */
static int parse_args(int argc, char **argv, struct opts *o)
{
	o->gateway = env_or("MIMIR_GATEWAY", "https://localhost:8443");
	o->session = env_or("MIMIR_SESSION", NULL);
	o->ca = env_or("MIMIR_CA", NULL);
	const char *key = env_or("MIMIR_API_KEY", NULL);
	snprintf(o->tokenizer, sizeof o->tokenizer, "%s/models/tok512.bin", env_or("MIMIR_SHARED", "../shared"));
	o->tokens = 64;
	o->timeout_s = 30;
	enum { O_GW = 256, O_SES, O_KEY, O_CA, O_TOKENS, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_TOK, O_TIMEOUT, O_IDS, O_QUIET };
	static const struct option lo[] = {
		{"gateway", required_argument, NULL, O_GW},
		{"session", required_argument, NULL, O_SES},
		{"key", required_argument, NULL, O_KEY},
		{"ca", required_argument, NULL, O_CA},
		{"tokens", required_argument, NULL, O_TOKENS},
		{"temperature", required_argument, NULL, O_TEMP},
		{"top-k", required_argument, NULL, O_TOPK},
		{"top-p", required_argument, NULL, O_TOPP},
		{"seed", required_argument, NULL, O_SEED},
		{"tokenizer", required_argument, NULL, O_TOK},
		{"timeout", required_argument, NULL, O_TIMEOUT},
		{"ids", no_argument, NULL, O_IDS},
		{"quiet", no_argument, NULL, O_QUIET},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	opterr = 0;
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		const char *a = optarg;
		switch (c) {
		case 'h': usage(stdout); return MX_OK;
		case O_GW: o->gateway = a; break;
		case O_SES: o->session = a; break;
		case O_KEY: key = a; break;
		case O_CA: o->ca = a; break;
		case O_TOKENS:
			if (!parse_long(a, 1, MODEL_MAX_SEQ, &o->tokens))
				return say(MX_USAGE, "--tokens %s: expected an integer in 1..%d", a, MODEL_MAX_SEQ);
			break;
		case O_TEMP:
			if (!parse_double(a, 0, 1e6, &o->temperature))
				return say(MX_USAGE, "--temperature %s: expected a number >= 0", a);
			break;
		case O_TOPK:
			if (!parse_long(a, 0, MODEL_MAX_VOCAB, &o->top_k))
				return say(MX_USAGE, "--top-k %s: expected an integer in 0..%d", a, MODEL_MAX_VOCAB);
			break;
		case O_TOPP:
			if (!parse_double(a, 0, 1, &o->top_p))
				return say(MX_USAGE, "--top-p %s: expected a number in [0, 1]", a);
			break;
		case O_SEED:
			if (!parse_u64(a, &o->seed))
				return say(MX_USAGE, "--seed %s: expected an unsigned integer below 2^63", a);
			o->has_seed = true;
			break;
		case O_TOK:
			if (strlen(a) >= sizeof o->tokenizer)
				return say(MX_USAGE, "--tokenizer: path too long");
			snprintf(o->tokenizer, sizeof o->tokenizer, "%s", a);
			break;
		case O_TIMEOUT:
			if (!parse_long(a, 1, 3600, &o->timeout_s))
				return say(MX_USAGE, "--timeout %s: expected seconds in 1..3600", a);
			break;
		case O_IDS: o->ids = true; break;
		case O_QUIET: o->quiet = true; break;
		case ':': return say(MX_USAGE, "%s needs a value", argv[optind - 1]);
		default: return say(MX_USAGE, "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind + 1 != argc)
		return say(MX_USAGE, optind == argc ? "the prompt is missing" : "one prompt only (quote it)");
	o->prompt = argv[optind];
	if (!o->session)
		return say(MX_USAGE, "--session is required (or MIMIR_SESSION)");
	if (!reg_id_ok(o->session, "ses_"))
		return say(MX_USAGE, "--session %s: a session id is ses_ and 16 hex digits", o->session);
	if (!key)
		return say(MX_USAGE, "an API key is required: set MIMIR_API_KEY (or --key)");
	if (strlen(key) != KEY_LEN || strncmp(key, KEY_PREFIX, sizeof KEY_PREFIX - 1) != 0)
		return say(MX_USAGE, "the API key is not a Mimir API key (mimir_sk_..., %d characters)", KEY_LEN);
	snprintf(o->key, sizeof o->key, "%s", key);
	if (strncmp(o->gateway, "https://", 8) != 0 && strncmp(o->gateway, "http://", 7) != 0)
		return say(MX_USAGE, "--gateway %s: expected an http(s):// URL", o->gateway);
	if (!strncmp(o->gateway, "https://", 8) && !o->ca)
		return say(MX_USAGE, "--ca (or MIMIR_CA) is required for https: the deployment's CA certificate");
	if (o->top_p > 0 && o->top_p < 1 && !o->top_k)
		return say(MX_USAGE, "--top-p needs --top-k (the parties sample the nucleus among the top k)");
	return -1;
}

/* ---- talking to the gateway ---- */

static int exit_of(long status)
{
	switch (status) {
	case 400: case 413: case 415: return MX_INVALID;
	case 401: case 403: return MX_AUTH;
	case 404: return MX_NOT_FOUND;
	case 409: return MX_CONFLICT;
	case 429: return MX_LIMITED;
	default: return status >= 500 ? MX_SERVER : MX_FAIL;
	}
}

/* Prints a refusal of the gateway (problem+json) and returns its exit status. */
static int refused(const char *what, const struct httpc_resp *r)
{
	json_t *p = json_loadb(r->body, r->len, 0, NULL);
	const char *title = json_string_value(json_object_get(p, "title"));
	const char *detail = json_string_value(json_object_get(p, "detail"));
	const char *field = json_string_value(json_object_get(p, "field"));
	fprintf(stderr, PROG ": %s: %ld %s: %s", what, r->status, title ? title : "error",
		detail ? detail : "(no detail)");
	if (field)
		fprintf(stderr, " [field: %s]", field);
	if (r->request_id[0])
		fprintf(stderr, " (request %s)", r->request_id);
	fputc('\n', stderr);
	if (r->status == 401)
		fputs(PROG ": give a valid API key in MIMIR_API_KEY (or --key)\n", stderr);
	else if (r->status == 403)
		fputs(PROG ": the API key is not valid for this session\n", stderr);
	json_decref(p);
	return exit_of(r->status);
}

static int call(struct run *u, const char *what, const char *method, const char *path, const char *accept,
		const char *ctype, const void *body, size_t len, long want, struct httpc_resp *resp)
{
	char acc[64];
	snprintf(acc, sizeof acc, "Accept: %s", accept ? accept : "application/json");
	const char *hdrs[] = {u->auth, acc, NULL};
	int rc = httpc_request(u->h, method, path, hdrs, ctype, body, len, resp);
	if (rc != 0) {
		say(MX_UNREACHABLE, "%s: no answer from the gateway at %s: %s", what, u->o->gateway, resp->error);
		if (rc == ERR_TLS)
			fputs(PROG ": check --ca: the gateway's certificate must chain to it\n", stderr);
		return MX_UNREACHABLE;
	}
	if (resp->status != want)
		return refused(what, resp);
	return MX_OK;
}

/* ---- the session ---- */

static int read_session(struct run *u)
{
	char path[64];
	struct httpc_resp r;
	snprintf(path, sizeof path, "/v1/sessions/%s", u->o->session);
	int st = call(u, "reading the session", "GET", path, NULL, NULL, NULL, 0, 200, &r);
	json_t *s = st == MX_OK ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	httpc_resp_free(&r);
	if (st != MX_OK)
		return st;
	const char *state = json_string_value(json_object_get(s, "state"));
	json_t *dims = json_object_get(json_object_get(s, "model"), "dims");
	json_int_t vocab = json_integer_value(json_object_get(dims, "vocab_size"));
	json_int_t ctx = json_integer_value(json_object_get(s, "max_context"));
	json_int_t pad = json_integer_value(json_object_get(s, "pad_bucket"));
	json_t *ps = json_object_get(s, "parties");
	size_t n = json_array_size(ps);
	st = MX_OK;
	if (!state || vocab < TOK_MIN_VOCAB || vocab > MODEL_MAX_VOCAB || ctx < 2 || pad < 1 || n < 2 ||
	    n > MPC_MAX_PARTIES) {
		st = say(MX_FAIL, "the gateway's description of the session is incomplete");
		goto out;
	}
	if (strcmp(state, "ready") && strcmp(state, "active")) {
		const char *reason = json_string_value(json_object_get(s, "reason"));
		st = say(MX_CONFLICT, "the session is %s%s%s", state, reason && *reason ? ": " : "", reason ? reason : "");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *p = json_array_get(ps, i);
		const char *hex = json_string_value(json_object_get(p, "sealing_key"));
		size_t got = 0;
		if (json_integer_value(json_object_get(p, "index")) != (json_int_t)i || !hex || strlen(hex) != 64 ||
		    sodium_hex2bin(u->pk[i], CIO_KEY_BYTES, hex, 64, NULL, &got, NULL) != 0 || got != CIO_KEY_BYTES) {
			st = say(MX_FAIL, "the session's party %zu has no usable sealing key", i);
			goto out;
		}
	}
	u->n = (unsigned)n;
	u->vocab = (int)vocab;
	char err[256];
	if (tok_load(u->o->tokenizer, u->vocab, &u->tok, err, sizeof err) != 0) {
		st = say(MX_FAIL, "%s (the session's model has a vocabulary of %d)", err, u->vocab);
		goto out;
	}
	size_t plen = strlen(u->o->prompt);
	if (!(u->ids = malloc(tok_encode_max(plen) * sizeof *u->ids))) {
		st = say(MX_FAIL, "out of memory");
		goto out;
	}
	if (tok_encode(u->tok, u->o->prompt, plen, true, false, u->ids, tok_encode_max(plen), &u->np) != 0) {
		st = say(MX_INVALID, "the prompt cannot be tokenized");
		goto out;
	}
	/* Length hiding: the parties see the prompt's bucket, not its length. */
	uint64_t slots = (u->np + (uint64_t)pad - 1) / (uint64_t)pad * (uint64_t)pad;
	if (slots + (uint64_t)u->o->tokens > (uint64_t)ctx) {
		st = say(MX_INVALID,
			 "the prompt (%zu tokens with BOS, %llu positions padded to the session's bucket of %lld) "
			 "plus --tokens %ld exceeds the session's context of %lld",
			 u->np, (unsigned long long)slots, (long long)pad, u->o->tokens, (long long)ctx);
		goto out;
	}
	if (slots * (uint64_t)(vocab + 1) + (uint64_t)u->o->tokens > CIO_MAX_VALUES) {
		st = say(MX_INVALID, "the prompt is too long for one generation: %llu positions of %lld one-hot values",
			 (unsigned long long)slots, (long long)vocab);
		goto out;
	}
	u->slots = (uint32_t)slots;
	u->n_in = (uint32_t)(slots * (uint64_t)vocab + slots);
	if (reg_party_session_id(u->o->session, u->psid) != 0)
		st = say(MX_USAGE, "--session: not a session id");
out:
	json_decref(s);
	return st;
}

/* ---- the generation ---- */

static int start(struct run *u, uint8_t cpk[CIO_KEY_BYTES])
{
	char ck[2 * CIO_KEY_BYTES + 1], path[96];
	sodium_bin2hex(ck, sizeof ck, cpk, CIO_KEY_BYTES);
	json_t *smp = json_pack("{s:f, s:i, s:f}", "temperature", u->o->temperature, "top_k", (int)u->o->top_k,
				"top_p", u->o->top_p);
	if (smp && u->o->has_seed)
		json_object_set_new(smp, "seed", json_integer((json_int_t)u->o->seed));
	json_t *b = json_pack("{s:s, s:i, s:i, s:o}", "client_key", ck, "slots", (int)u->slots, "max_tokens",
			      (int)u->o->tokens, "sampling", smp);
	char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
	json_decref(b);
	if (!body)
		return say(MX_FAIL, "out of memory");
	snprintf(path, sizeof path, "/v1/sessions/%s/generations", u->o->session);
	struct httpc_resp r;
	int st = call(u, "starting the generation", "POST", path, "application/json", "application/json", body,
		      strlen(body), 201, &r);
	free(body);
	json_t *g = st == MX_OK ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	httpc_resp_free(&r);
	if (st != MX_OK)
		return st;
	const char *gid = json_string_value(json_object_get(g, "id"));
	size_t got = 0;
	struct cio_client_params cp = {.nparties = u->n, .party_pk = (const uint8_t(*)[CIO_KEY_BYTES])u->pk,
				       .n_in = u->n_in, .n_out = (uint32_t)u->o->tokens};
	if (!gid || strlen(gid) != 2 * CIO_ID_BYTES ||
	    sodium_hex2bin(cp.generation, CIO_ID_BYTES, gid, strlen(gid), NULL, &got, NULL) != 0 || got != CIO_ID_BYTES) {
		json_decref(g);
		return say(MX_FAIL, "the gateway started a generation without a usable id");
	}
	snprintf(u->gid, sizeof u->gid, "%s", gid);
	json_decref(g);
	snprintf(u->gen_path, sizeof u->gen_path, "/v1/sessions/%s/generations/%s", u->o->session, u->gid);
	sodium_hex2bin(cp.session, CIO_ID_BYTES, u->psid, REG_PARTY_SESSION_HEX, NULL, &got, NULL);
	memcpy(cp.client_sk, u->csk, CIO_KEY_BYTES);
	int rc = cio_client_new(&cp, &u->cl);
	sodium_memzero(&cp, sizeof cp);
	if (rc != 0)
		return say(MX_FAIL, "cannot set up the client protocol: %s", err_title(rc));
	return MX_OK;
}

static void cancel(struct run *u)
{
	char path[200];
	struct httpc_resp r;
	snprintf(path, sizeof path, "%s/cancel", u->gen_path);
	const char *hdrs[] = {u->auth, NULL};
	httpc_request(u->h, "POST", path, hdrs, NULL, NULL, 0, &r); /* best effort: the rest is unwanted */
	httpc_resp_free(&r);
}

static void end(struct run *u, int status)
{
	if (!u->finished) {
		u->finished = true;
		u->status = status;
	}
}

/* Feeds every party's part of a masks, receipt or token event to the client protocol. */
static bool feed_parts(struct run *u, json_t *ev, const char *what, size_t want_len)
{
	json_t *parts = json_object_get(ev, "parts");
	if (json_array_size(parts) != u->n) {
		end(u, say(MX_FAIL, "a %s event without one part per party", what));
		return false;
	}
	uint8_t *bin = malloc(want_len + 1);
	bool ok = bin != NULL, seen[MPC_MAX_PARTIES] = {false};
	for (size_t i = 0; ok && i < u->n; i++) {
		json_t *p = json_array_get(parts, i);
		json_int_t k = json_integer_value(json_object_get(p, "party"));
		const char *m = json_string_value(json_object_get(p, "message"));
		size_t len = 0;
		if (k < 0 || k >= (json_int_t)u->n || seen[k] || !m ||
		    sodium_base642bin(bin, want_len + 1, m, strlen(m), NULL, &len, NULL, sodium_base64_VARIANT_ORIGINAL) !=
			    0 ||
		    len != want_len) {
			end(u, say(MX_FAIL, "a malformed part in a %s event", what));
			ok = false;
			break;
		}
		seen[k] = true;
		int rc = cio_client_feed(u->cl, bin, len);
		if (rc != 0) {
			if (!strcmp(what, "masks"))
				say(MX_INTEGRITY, "party %lld's MASKS do not verify (%s): it does not seal with the key the "
						  "session lists for it, or the message was altered",
				    (long long)k, cio_client_why(u->cl));
			else
				say(MX_INTEGRITY, "party %lld's %s was refused (%s)%s", (long long)k, what,
				    cio_client_why(u->cl),
				    rc == ERR_MAC_CHECK ? ": a party lied about its part; nothing unverified was shown" : "");
			end(u, MX_INTEGRITY);
			ok = false;
		}
	}
	free(bin);
	if (!bin)
		end(u, say(MX_FAIL, "out of memory"));
	return ok;
}

/* Everything masks arrived: the prompt leaves as the INPUT message. */
static void send_input(struct run *u)
{
	const size_t V = (size_t)u->vocab, pad = u->slots - u->np;
	uint64_t *x = calloc(u->n_in, sizeof *x);
	uint8_t *msg = NULL;
	size_t len = 0;
	if (!x) {
		end(u, say(MX_FAIL, "out of memory"));
		return;
	}
	/* One one-hot row per position, left-padded with BOS rows, then the validity bits. */
	for (size_t i = 0; i < u->slots; i++) {
		int t = i < pad ? TOK_BOS : u->ids[i - pad];
		x[i * V + (size_t)t] = 1;
		x[(size_t)u->slots * V + i] = i >= pad;
	}
	int rc = cio_client_input(u->cl, x, u->n_in, &msg, &len);
	sodium_memzero(x, (size_t)u->n_in * sizeof *x);
	free(x);
	if (rc != 0) {
		end(u, say(MX_FAIL, "cannot make the INPUT message: %s", cio_client_why(u->cl)));
		return;
	}
	char path[200];
	struct httpc_resp r;
	snprintf(path, sizeof path, "%s/input", u->gen_path);
	int st = call(u, "sending the prompt", "POST", path, NULL, "application/octet-stream", msg, len, 202, &r);
	httpc_resp_free(&r);
	free(msg);
	if (st != MX_OK)
		end(u, st);
	u->input_sent = true;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A lone ASCII control byte (other than whitespace) is dropped so a model cannot drive
 * the terminal, as mimir-ref prints. */
static void print_piece(const char *p, size_t len)
{
	if (len == 1) {
		unsigned char b = (unsigned char)p[0];
		if ((b < 0x20 && b != '\t' && b != '\n' && b != '\r') || b == 0x7f)
			return;
	}
	fwrite(p, 1, len, stdout);
}

/* The tokens the client protocol has verified, printed as they come. */
static void take_tokens(struct run *u)
{
	size_t n = 0;
	if (cio_client_take(u->cl, u->out + u->made, (size_t)u->o->tokens - u->made, &n) != 0)
		return;
	for (size_t i = 0; i < n && !u->finished; i++) {
		uint64_t v = u->out[u->made];
		if (v >= (uint64_t)u->vocab) {
			end(u, say(MX_INTEGRITY, "the parties agreed on token %llu, outside the vocabulary",
				   (unsigned long long)v));
			return;
		}
		if (!u->made)
			u->t_first = now_s();
		if (v == TOK_BOS) { /* BOS starts a new text: this one is finished */
			cancel(u);
			end(u, MX_OK);
			return;
		}
		u->made++;
		if (!u->o->ids) {
			const char *p;
			size_t l;
			if (tok_decode(u->tok, u->prev, (int)v, &p, &l) == 0)
				print_piece(p, l);
			fflush(stdout);
		}
		u->prev = (int)v;
	}
}

static int on_event(const struct sse_event *ev, void *arg)
{
	struct run *u = arg;
	json_t *j = json_loadb(ev->data, ev->data_len, 0, NULL);
	const char *name = ev->event;
	if (!j) {
		end(u, say(MX_FAIL, "the gateway sent a %s event that is not JSON", name));
	} else if (!strcmp(name, "masks")) {
		if (feed_parts(u, j, "masks", cio_masks_bytes(u->n_in, (uint32_t)u->o->tokens)) && !u->input_sent)
			send_input(u);
	} else if (!strcmp(name, "receipt")) {
		feed_parts(u, j, "receipt", cio_receipt_bytes());
	} else if (!strcmp(name, "token")) {
		if (feed_parts(u, j, "token", cio_output_bytes(1)))
			take_tokens(u);
	} else if (!strcmp(name, "done")) {
		take_tokens(u);
		if (!u->finished && u->made != (size_t)u->o->tokens)
			end(u, say(MX_FAIL, "the generation ended after %zu verified tokens of %ld", u->made, u->o->tokens));
		end(u, MX_OK);
	} else if (!strcmp(name, "error")) {
		const char *detail = json_string_value(json_object_get(j, "detail"));
		const char *title = json_string_value(json_object_get(j, "title"));
		json_t *party = json_object_get(j, "party");
		if (!u->o->ids && !u->nl) {
			fputc('\n', stdout);
			fflush(stdout);
			u->nl = true;
		}
		const char *why = detail ? detail : title ? title : "an error";
		fprintf(stderr, PROG ": the generation ended after %zu token%s: %s", u->made, u->made == 1 ? "" : "s",
			why);
		if (json_is_integer(party) && strncmp(why, "party ", 6) != 0)
			fprintf(stderr, " (party %lld)", (long long)json_integer_value(party));
		fputc('\n', stderr);
		end(u, MX_GENERATION);
	} /* generation and later kinds of events: nothing to do */
	json_decref(j);
	return u->finished;
}

static int on_chunk(const char *data, size_t len, void *arg)
{
	struct run *u = arg;
	int rc = sse_parser_feed(u->p, data, len, on_event, u);
	if (rc < 0)
		end(u, say(MX_FAIL, "the gateway's event stream is malformed (%s)", err_title(rc)));
	return u->finished;
}

/* Follows the event stream to the end, resuming it with Last-Event-ID when it breaks. */
static void follow(struct run *u)
{
	char path[200], last[64] = "";
	snprintf(path, sizeof path, "%s/events", u->gen_path);
	size_t max_event = (size_t)u->n * (cio_masks_bytes(u->n_in, (uint32_t)u->o->tokens) / 3 * 4 + 256) + 65536;
	for (int attempt = 0; !u->finished; attempt++) {
		const char *id = u->p ? sse_parser_last_id(u->p) : "";
		if (id[0])
			snprintf(last, sizeof last, "Last-Event-ID: %s", id);
		const char *hdrs[] = {u->auth, "Accept: text/event-stream", last[0] ? last : NULL, NULL};
		sse_parser_free(u->p); /* a partial event is not carried over */
		if (!(u->p = sse_parser_new(max_event))) {
			end(u, say(MX_FAIL, "out of memory"));
			return;
		}
		struct httpc_resp r;
		int rc = httpc_stream(u->hs, "GET", path, hdrs, on_chunk, u, &r);
		if (!u->finished && rc == 0 && r.status != 200) {
			end(u, refused("reading the event stream", &r));
		} else if (!u->finished) {
			if (attempt >= RESUMES) {
				end(u, say(MX_UNREACHABLE, "the event stream broke %d times (last: %s)", RESUMES + 1,
					   rc ? r.error : "it ended early"));
			} else {
				fprintf(stderr, PROG ": the event stream broke (%s); resuming%s%s\n",
					rc ? r.error : "it ended early", last[0] ? " after event " : "",
					last[0] ? last + 15 : "");
				sleep(1);
			}
		}
		httpc_resp_free(&r);
	}
}

static void summary(const struct run *u)
{
	double t1 = now_s(), dt = t1 - u->t0;
	fprintf(stderr,
		PROG ": prompt %zu tokens (%u positions), %zu token%s in %.2f s (%.2f tok/s), first token after "
		     "%.2f s, %u parties, generation %s\n",
		u->np, u->slots, u->made, u->made == 1 ? "" : "s", dt, dt > 0 ? (double)u->made / dt : 0.0,
		u->made ? u->t_first - u->t0 : 0.0, u->n, u->gid);
}

int mimir_generate(int argc, char **argv)
{
	struct opts o = {0};
	int st = parse_args(argc, argv, &o);
	if (st >= 0) {
		sodium_memzero(&o, sizeof o);
		return st;
	}
	struct run u = {.o = &o};
	uint8_t cpk[CIO_KEY_BYTES];
	snprintf(u.auth, sizeof u.auth, "Authorization: Bearer %s", o.key);
	struct httpc_opts ho = {
		.base_url = o.gateway,
		.ca_file = !strncmp(o.gateway, "https://", 8) ? o.ca : NULL,
		.expect_role = IDENT_ROLE_GATEWAY,
		.timeout_ms = o.timeout_s * 1000,
		.retries = 1,
		.max_response = 4u << 20,
	};
	if (httpc_new(&u.h, &ho) != 0 || httpc_new(&u.hs, &ho) != 0) {
		st = say(MX_FAIL, "cannot set up an HTTP client for %s", o.gateway);
		goto out;
	}
	if ((st = read_session(&u)) != MX_OK)
		goto out;
	if (!(u.out = calloc((size_t)o.tokens, sizeof *u.out))) {
		st = say(MX_FAIL, "out of memory");
		goto out;
	}
	if (cio_keypair(cpk, u.csk) != 0) {
		st = say(MX_FAIL, "cannot make a key pair");
		goto out;
	}
	u.t0 = now_s();
	if ((st = start(&u, cpk)) != MX_OK)
		goto out;
	u.prev = u.ids[u.np - 1];
	if (!o.ids) {
		fwrite(o.prompt, 1, strlen(o.prompt), stdout);
		fflush(stdout);
	}
	follow(&u);
	st = u.status;
	if (st != MX_OK && st != MX_GENERATION)
		cancel(&u); /* what is left would be computed for nobody */
	{ /* what was verified is shown, whatever ended the stream */
		if (o.ids)
			for (size_t i = 0; i < u.made; i++)
				printf("%s%llu", i ? " " : "", (unsigned long long)u.out[i]);
		if (!u.nl)
			printf("\n");
		if (fflush(stdout) != 0 && st == MX_OK)
			st = say(MX_FAIL, "cannot write the output: %s", strerror(errno));
	}
	if (!o.quiet && u.gid[0])
		summary(&u);
out:
	cio_client_free(u.cl);
	sse_parser_free(u.p);
	tok_free(u.tok);
	httpc_free(u.h);
	httpc_free(u.hs);
	if (u.out)
		sodium_memzero(u.out, (size_t)o.tokens * sizeof *u.out);
	free(u.out);
	if (u.ids)
		sodium_memzero(u.ids, u.np * sizeof *u.ids);
	free(u.ids);
	sodium_memzero(u.csk, sizeof u.csk);
	sodium_memzero(u.auth, sizeof u.auth);
	sodium_memzero(&o, sizeof o);
	return st;
}
