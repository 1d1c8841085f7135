/* mimir proxy: the OpenAI-compatible API (common/oai) on the client's own machine. An
 * OpenAI SDK or curl pointed at http://127.0.0.1:PORT/v1 gets completions from the
 * session's secret-shared model; the prompt is tokenized and masked here and every
 * token is checked against every party's part here, so the text is in clear only on
 * this machine. It listens on loopback only, over plain HTTP (what SDKs expect of a
 * local server); the API key is the proxy's own (MIMIR_API_KEY), so whatever bearer
 * token the SDK sends is not needed. It runs until SIGINT or SIGTERM. */
#include <arpa/inet.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli/cli.h"
#include "err/err.h"
#include "http/http.h"
#include "log/log.h"
#include "mimir.h"
#include "model/model.h"
#include "oai/oai.h"

#define PROG MIMIR_PROG " proxy"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " --gateway URL --session ID [options]\n"
		"\n"
		"Serves the OpenAI API (GET /v1/models, POST /v1/completions, streamed or not) on\n"
		"this machine for one session: point an OpenAI SDK or curl at\n"
		"http://127.0.0.1:PORT/v1 with the session id as the model. Each completion runs\n"
		"the client side of Mimir's protocols here, so neither the gateway nor any party\n"
		"sees the prompt or the text.\n"
		"\n"
		"  --listen ADDR:PORT  where to listen, loopback only (default 127.0.0.1:8088;\n"
		"                      port 0: any free port, see --port-file)\n"
		"  --gateway URL       the gateway (default $MIMIR_GATEWAY, else https://localhost:8443)\n"
		"  --session ID        the session served as the model (default $MIMIR_SESSION)\n"
		"  --ca FILE           the deployment's CA certificate, for https (default $MIMIR_CA)\n"
		"  --tokenizer PATH    llama2.c tokenizer (default $MIMIR_SHARED/models/tok512.bin,\n"
		"                      MIMIR_SHARED defaulting to ../shared)\n"
		"  --max-tokens N      new tokens when a request gives no max_tokens (default 16)\n"
		"  --concurrency N     completions at once, more get 429 (default 2)\n"
		"  --timeout S         bound on each request to the gateway (default 30)\n"
		"  --port-file FILE    write the bound port there once listening\n"
		"  -h, --help          this text\n"
		"\n"
		"The API key is read from MIMIR_API_KEY only (a command line is visible to other\n"
		"users). Logs go to stderr (MIMIR_LOG_LEVEL: debug, info, warn, error).\n"
		"\n"
		"exit status: 0 stopped by a signal; 1 failed (cannot listen, bad files); 2 bad\n"
		"command line.\n");
}

#define say(...) mimir_say(PROG, __VA_ARGS__)


/* "ADDR:PORT" or "[ADDR]:PORT" with a loopback address. */
static bool parse_listen(const char *s, char *addr, size_t cap, uint16_t *port)
{
	const char *colon = strrchr(s, ':');
	if (!colon)
		return false;
	const char *a = s;
	size_t al = (size_t)(colon - s);
	if (al >= 2 && s[0] == '[' && s[al - 1] == ']')
		a++, al -= 2;
	long p;
	if (al == 0 || al >= cap || !cli_parse_long(colon + 1, 0, 65535, &p))
		return false;
	memcpy(addr, a, al);
	addr[al] = '\0';
	struct in_addr v4;
	struct in6_addr v6;
	bool loop = (inet_pton(AF_INET, addr, &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127) ||
		    (inet_pton(AF_INET6, addr, &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6));
	*port = (uint16_t)p;
	return loop;
}

static int h_models(struct http_req *r, void *ctx) { return oai_models(r, ctx); }
static int h_completions(struct http_req *r, void *ctx) { return oai_completions(r, ctx); }

static const struct http_route routes[] = {
	{"GET", "/v1/models", h_models, 0, 0, 0},
	{"POST", "/v1/completions", h_completions, 0, OAI_PROMPT_MAX + 16384, HTTP_ROUTE_SECRET},
	{NULL, NULL, NULL, 0, 0, 0},
};

int mimir_proxy(int argc, char **argv)
{
	const char *listen = "127.0.0.1:8088", *port_file = NULL;
	const char *session = mimir_env("MIMIR_SESSION", NULL);
	char tokenizer[4096];
	snprintf(tokenizer, sizeof tokenizer, "%s/models/tok512.bin", mimir_env("MIMIR_SHARED", "../shared"));
	struct oai_config oc = {
		.gateway = mimir_env("MIMIR_GATEWAY", "https://localhost:8443"),
		.ca = mimir_env("MIMIR_CA", NULL),
		.tokenizer = tokenizer,
		.key = mimir_env("MIMIR_API_KEY", NULL),
		.timeout_s = 30,
		.default_max_tokens = 16,
		.max_running = 2,
	};
	long n;
	enum { O_LISTEN = 256, O_GW, O_SES, O_CA, O_TOK, O_MAX, O_CONC, O_TIMEOUT, O_PORTFILE };
	static const struct option lo[] = {
		{"listen", required_argument, NULL, O_LISTEN},
		{"gateway", required_argument, NULL, O_GW},
		{"session", required_argument, NULL, O_SES},
		{"ca", required_argument, NULL, O_CA},
		{"tokenizer", required_argument, NULL, O_TOK},
		{"max-tokens", required_argument, NULL, O_MAX},
		{"concurrency", required_argument, NULL, O_CONC},
		{"timeout", required_argument, NULL, O_TIMEOUT},
		{"port-file", required_argument, NULL, O_PORTFILE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	opterr = 0;
	optind = 1;
	int ch;
	while ((ch = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		const char *a = optarg;
		switch (ch) {
		case 'h': usage(stdout); return MX_OK;
		case O_LISTEN: listen = a; break;
		case O_GW: oc.gateway = a; break;
		case O_SES: session = a; break;
		case O_CA: oc.ca = a; break;
		case O_TOK:
			if (strlen(a) >= sizeof tokenizer)
				return say(MX_USAGE, "--tokenizer: path too long");
			snprintf(tokenizer, sizeof tokenizer, "%s", a);
			break;
		case O_MAX:
			if (!cli_parse_long(a, 1, MODEL_MAX_SEQ, &oc.default_max_tokens))
				return say(MX_USAGE, "--max-tokens %s: expected an integer in 1..%d", a, MODEL_MAX_SEQ);
			break;
		case O_CONC:
			if (!cli_parse_long(a, 1, 64, &n))
				return say(MX_USAGE, "--concurrency %s: expected an integer in 1..64", a);
			oc.max_running = (unsigned)n;
			break;
		case O_TIMEOUT:
			if (!cli_parse_long(a, 1, 3600, &oc.timeout_s))
				return say(MX_USAGE, "--timeout %s: expected seconds in 1..3600", a);
			break;
		case O_PORTFILE: port_file = a; break;
		case ':': return say(MX_USAGE, "%s needs a value", argv[optind - 1]);
		default: return say(MX_USAGE, "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return say(MX_USAGE, "unexpected argument %s", argv[optind]);
	char addr[64];
	uint16_t port;
	if (!parse_listen(listen, addr, sizeof addr, &port))
		return say(MX_USAGE, "--listen %s: expected a loopback ADDR:PORT (127.0.0.1:8088, [::1]:8088): the "
				     "proxy serves text in clear and must not be reachable from elsewhere",
			   listen);
	if (!session)
		return say(MX_USAGE, "--session is required (or MIMIR_SESSION)");
	if (!oc.key)
		return say(MX_USAGE, "an API key is required: set MIMIR_API_KEY");
	char why[256];
	struct gcl_config gc = {.gateway = oc.gateway, .ca = oc.ca, .session = session, .key = oc.key,
				.tokenizer = tokenizer};
	if (gcl_config_check(&gc, why, sizeof why) != GCL_OK)
		return say(MX_USAGE, "%s", why);
	FILE *tf = fopen(tokenizer, "rb");
	if (!tf)
		return say(MX_FAIL, "cannot read the tokenizer %s (--tokenizer, MIMIR_SHARED)", tokenizer);
	fclose(tf);
	oc.sessions = &session;
	oc.n_sessions = 1;

	enum log_level lvl = LOG_LEVEL_WARN;
	if (log_level_parse(mimir_env("MIMIR_LOG_LEVEL", "warn"), &lvl) != 0)
		return say(MX_USAGE, "MIMIR_LOG_LEVEL: expected debug, info, warn or error");
	log_set_service("mimir-proxy");
	log_set_level(lvl);
	http_signals_block();
	struct oai *o = NULL;
	int rc = oai_new(&oc, &o);
	if (rc != 0)
		return say(MX_FAIL, "cannot set up the API: %s", err_title(rc));
	struct http_server *srv = NULL;
	struct http_server_config hc = {.service = "mimir-proxy", .bind = addr, .port = port, .threads = 2,
					.max_body = OAI_PROMPT_MAX + 16384, .plain_loopback = true};
	if (http_server_start(&srv, &hc, routes, o, NULL) != 0) {
		oai_free(o);
		return say(MX_FAIL, "cannot listen on %s (in use? see the log line above)", listen);
	}
	port = http_server_port(srv);
	if (port_file) {
		FILE *pf = fopen(port_file, "w");
		if (!pf || fprintf(pf, "%u\n", port) < 0 || fclose(pf) != 0) {
			http_server_free(srv);
			oai_free(o);
			return say(MX_FAIL, "cannot write --port-file %s", port_file);
		}
	}
	fprintf(stderr,
		PROG ": serving the OpenAI API for session %s at http://%s%s%s:%u/v1 (gateway %s); "
		     "model \"%s\"; stop with Ctrl-C\n",
		session, strchr(addr, ':') ? "[" : "", addr, strchr(addr, ':') ? "]" : "", port, oc.gateway, session);
	int sig = http_signals_wait();
	fprintf(stderr, PROG ": signal %d: stopping\n", sig);
	http_server_shutdown(srv);
	oai_free(o);
	http_server_free(srv);
	return MX_OK;
}
