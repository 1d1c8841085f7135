/* Integration: the real mimir-example binary over HTTPS with mandatory client
 * certificates on a loopback port, driven through httpc (libcurl) and raw sockets.
 * Certificates come from the real mimir-pki. Proves the platform's promises: refusal
 * inside the handshake of a missing, foreign or expired certificate (with a log line),
 * the peer's role visible to handlers, role-restricted routes, problem+json for bad
 * input naming the field, 413/404/405, /metrics accepted by promtool, SSE with
 * Last-Event-ID resumption, slow clients not blocking others, and graceful shutdown.
 * The "later" case runs an in-process server whose handlers defer their answers to
 * other threads (http_reply_later): the one pool thread stays free meanwhile, JSON,
 * problem and streamed answers arrive with their headers, a shutdown answers a
 * pending request 503, and a client that left does not crash the producer. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err/err.h"
#include "http/http.h"
#include "httpc/httpc.h"
#include "log/log.h"
#include "sse/sse.h"
#include "svcproc.h"
#include "testutil.h"

static char tmp[256], pki[300], bin_example[512], base_url[64], svc_log[400];
static struct tu_svc svc;

static int start_service(struct tu_svc *p, const char *name, char *url, size_t cap, char *logp,
			 size_t logcap)
{
	char json[2048];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 4, \"idle_timeout_s\": 2, \"drain_timeout_ms\": 5000},"
		 " \"tls\": {\"cert\": \"%s/svc.crt\", \"key\": \"%s/svc.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"sse\": {\"heartbeat_ms\": 200}, \"feeds\": {\"max_events\": 4}}",
		 pki, pki, pki);
	if (tu_svc_start(p, tmp, "mimir-example", name, json, NULL) != 0)
		return -1;
	snprintf(url, cap, "%s", p->url);
	snprintf(logp, logcap, "%s", p->log);
	return 0;
}

static void setup(void)
{
	tu_tmpdir(tmp, sizeof tmp);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	tu_build(bin_example, sizeof bin_example, "bin/mimir-example");
	long now = (long)time(NULL);
	ck_assert_int_eq(tu_pki(tmp, "dev --out %s", pki), 0);
	ck_assert_int_eq(tu_pki(tmp, "issue --ca %s --role gateway --name svc --dns localhost --ip 127.0.0.1 --out %s",
				pki, pki), 0);
	ck_assert_int_eq(tu_pki(tmp, "issue --ca %s --role client --name expired --not-before %ld --not-after %ld --out %s",
				pki, now - 7200, now - 3600, pki), 0);
	ck_assert_int_eq(tu_pki(tmp, "ca --out %s/other --cn 'Someone Else CA'", tmp), 0);
	ck_assert_int_eq(tu_pki(tmp, "issue --ca %s/other --role client --name rogue --out %s/other", tmp, tmp), 0);
	ck_assert_int_eq(start_service(&svc, "example", base_url, sizeof base_url, svc_log, sizeof svc_log), 0);
}

static void teardown(void)
{
	tu_svc_stop(&svc);
	tu_rmrf(tmp);
}

/* A client with the named certificate from dir (NULL name: no certificate); the
 * server is trusted through this deployment's CA only. */
static struct httpc *client_as(const char *dir, const char *name, const char *url)
{
	if (dir == pki || !name)
		return tu_client(pki, name, url ? url : base_url, IDENT_ROLE_NONE);
	/* A certificate from elsewhere (another CA), still trusting our CA for the server. */
	char ca[400], crt[400], key[400];
	snprintf(ca, sizeof ca, "%s/ca.crt", pki);
	snprintf(crt, sizeof crt, "%s/%s.crt", dir, name);
	snprintf(key, sizeof key, "%s/%s.key", dir, name);
	struct httpc_opts o = {.base_url = url ? url : base_url, .ca_file = ca, .cert_file = crt,
			       .key_file = key, .timeout_ms = 10000, .retries = 0};
	struct httpc *c;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	return c;
}

static bool log_contains(const char *needle, int wait_ms)
{
	return tu_file_contains(svc_log, needle, wait_ms);
}

static void assert_refused(struct httpc *c, const char *why)
{
	struct httpc_resp r;
	int rc = httpc_request(c, "GET", "/v1/whoami", NULL, NULL, NULL, 0, &r);
	ck_assert_msg(rc != 0 && r.status == 0, "%s: expected a refused handshake, got rc=%d status=%ld",
		      why, rc, r.status);
	httpc_resp_free(&r);
	httpc_free(c);
}

START_TEST(test_no_client_cert_refused)
{
	assert_refused(client_as(pki, NULL, NULL), "no client certificate");
	ck_assert_msg(log_contains("event=tls.refused", 2000), "no tls.refused log line");
}
END_TEST

START_TEST(test_other_ca_refused)
{
	char other[300];
	snprintf(other, sizeof other, "%s/other", tmp);
	assert_refused(client_as(other, "rogue", NULL), "certificate from another CA");
	ck_assert_msg(log_contains("issuer", 2000) || log_contains("signer", 2000),
		      "no log line naming the unknown signer");
}
END_TEST

START_TEST(test_expired_cert_refused)
{
	assert_refused(client_as(pki, "expired", NULL), "expired certificate");
	ck_assert_msg(log_contains("expired", 2000), "no log line saying expired");
}
END_TEST

static json_t *get_json(struct httpc *c, const char *method, const char *path, const char *body,
			long want_status, struct httpc_resp *r)
{
	int rc = httpc_request(c, method, path, NULL, body ? "application/json" : NULL, body,
			       body ? strlen(body) : 0, r);
	ck_assert_msg(rc == 0, "%s %s: transport error %s", method, path, r->error);
	ck_assert_msg(r->status == want_status, "%s %s: status %ld, want %ld: %s", method, path,
		      r->status, want_status, r->body);
	json_t *j = json_loadb(r->body, r->len, 0, NULL);
	ck_assert_msg(j != NULL, "%s %s: body is not JSON: %s", method, path, r->body);
	return j;
}

static void assert_problem(json_t *j, const struct httpc_resp *r, long status, const char *type,
			   const char *field)
{
	ck_assert_str_eq(r->content_type, "application/problem+json");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), status);
	ck_assert_str_eq(json_string_value(json_object_get(j, "type")), type);
	ck_assert_ptr_nonnull(json_string_value(json_object_get(j, "title")));
	ck_assert_ptr_nonnull(json_string_value(json_object_get(j, "detail")));
	if (field)
		ck_assert_str_eq(json_string_value(json_object_get(j, "field")), field);
	ck_assert_str_eq(json_string_value(json_object_get(j, "request_id")), r->request_id);
}

START_TEST(test_valid_cert_role_visible)
{
	struct httpc *c = client_as(pki, "client", NULL);
	struct httpc_resp r;
	json_t *j = get_json(c, "GET", "/v1/whoami", NULL, 200, &r);
	ck_assert_str_eq(json_string_value(json_object_get(j, "role")), "client");
	ck_assert_str_eq(json_string_value(json_object_get(j, "cn")), "client");
	json_decref(j);
	httpc_resp_free(&r);
	/* The same connection serves the next request (persistent connections). */
	j = get_json(c, "GET", "/healthz", NULL, 200, &r);
	json_decref(j);
	httpc_resp_free(&r);
	/* Role-restricted route: a client is forbidden, an admin is not. */
	j = get_json(c, "GET", "/v1/admin", NULL, 403, &r);
	assert_problem(j, &r, 403, "urn:mimir:problem:forbidden", NULL);
	json_decref(j);
	httpc_resp_free(&r);
	httpc_free(c);
	c = client_as(pki, "admin", NULL);
	j = get_json(c, "GET", "/v1/admin", NULL, 200, &r);
	json_decref(j);
	httpc_resp_free(&r);
	j = get_json(c, "GET", "/v1/whoami", NULL, 200, &r);
	ck_assert_str_eq(json_string_value(json_object_get(j, "role")), "admin");
	json_decref(j);
	httpc_resp_free(&r);
	httpc_free(c);
}
END_TEST

START_TEST(test_server_role_checked_by_client)
{
	/* The service's certificate says gateway: a client that expects a party refuses
	 * it inside the handshake, one that expects a gateway proceeds. */
	char ca[400], crt[400], key[400];
	snprintf(ca, sizeof ca, "%s/ca.crt", pki);
	snprintf(crt, sizeof crt, "%s/client.crt", pki);
	snprintf(key, sizeof key, "%s/client.key", pki);
	struct httpc_opts o = {.base_url = base_url, .ca_file = ca, .cert_file = crt, .key_file = key,
			       .expect_role = IDENT_ROLE_PARTY};
	struct httpc *c;
	struct httpc_resp r;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	ck_assert_int_eq(httpc_request(c, "GET", "/healthz", NULL, NULL, NULL, 0, &r), ERR_TLS);
	ck_assert_int_eq(r.status, 0);
	httpc_resp_free(&r);
	httpc_free(c);
	o.expect_role = IDENT_ROLE_GATEWAY;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	ck_assert_int_eq(httpc_request(c, "GET", "/healthz", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	httpc_resp_free(&r);
	httpc_free(c);
}
END_TEST

START_TEST(test_bad_json_names_field)
{
	struct httpc *c = client_as(pki, "client", NULL);
	struct httpc_resp r;
	static const struct {
		const char *body, *type, *field;
	} cases[] = {
		{"{\"message\": 5}", "urn:mimir:problem:wrong-type", "message"},
		{"{\"repeat\": 2}", "urn:mimir:problem:missing-field", "message"},
		{"{\"message\": \"hi\", \"repeat\": 11}", "urn:mimir:problem:out-of-range", "repeat"},
		{"{\"message\": \"hi\", \"options\": {\"shout\": \"yes\"}}", "urn:mimir:problem:wrong-type", "options.shout"},
		{"{\"message\": \"hi\", \"colour\": 1}", "urn:mimir:problem:unknown-field", "colour"},
		{"{\"message\": \"hi\", \"message\": \"again\"}", "urn:mimir:problem:malformed", NULL},
		{"{\"message\": ", "urn:mimir:problem:malformed", NULL},
		{"[1, 2]", "urn:mimir:problem:wrong-type", NULL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_t *j = get_json(c, "POST", "/v1/echo", cases[i].body, 400, &r);
		assert_problem(j, &r, 400, cases[i].type, cases[i].field);
		json_decref(j);
		httpc_resp_free(&r);
	}
	/* And the service still answers good input on the same connection. */
	json_t *j = get_json(c, "POST", "/v1/echo", "{\"message\": \"hi\", \"repeat\": 3}", 200, &r);
	ck_assert_str_eq(json_string_value(json_object_get(j, "peer_role")), "client");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "repeat")), 3);
	json_decref(j);
	httpc_resp_free(&r);
	httpc_free(c);
}
END_TEST

START_TEST(test_oversize_body_413)
{
	struct httpc *c = client_as(pki, "client", NULL);
	struct httpc_resp r;
	size_t n = 5000; /* the echo route allows 4096 */
	char *big = malloc(n + 1);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	big[n] = '\0';
	json_t *j = get_json(c, "POST", "/v1/echo", big, 413, &r);
	assert_problem(j, &r, 413, "urn:mimir:problem:too-large", NULL);
	json_decref(j);
	httpc_resp_free(&r);
	/* Without a Content-Length (chunked), the limit is enforced while reading. */
	httpc_free(c);
	c = client_as(pki, "client", NULL);
	const char *chunked[] = {"Transfer-Encoding: chunked", NULL};
	ck_assert_int_eq(httpc_request(c, "POST", "/v1/echo", chunked, "application/json", big, n, &r), 0);
	ck_assert_int_eq(r.status, 413);
	httpc_resp_free(&r);
	free(big);
	httpc_free(c);
}
END_TEST

START_TEST(test_404_405)
{
	struct httpc *c = client_as(pki, "client", NULL);
	struct httpc_resp r;
	json_t *j = get_json(c, "DELETE", "/v1/echo", NULL, 405, &r);
	assert_problem(j, &r, 405, "urn:mimir:problem:method-not-allowed", NULL);
	ck_assert_str_eq(r.allow, "POST");
	json_decref(j);
	httpc_resp_free(&r);
	httpc_free(c);
	c = client_as(pki, "client", NULL);
	j = get_json(c, "GET", "/v1/feeds/x/events", NULL, 405, &r);
	ck_assert_str_eq(r.allow, "POST");
	json_decref(j);
	httpc_resp_free(&r);
	httpc_free(c);
	c = client_as(pki, "client", NULL);
	j = get_json(c, "GET", "/v1/nothing/here", NULL, 404, &r);
	assert_problem(j, &r, 404, "urn:mimir:problem:not-found", NULL);
	json_decref(j);
	httpc_resp_free(&r);
	httpc_free(c);
}
END_TEST

START_TEST(test_metrics_promtool)
{
	/* A refused handshake first, so the refusal counter is in the exposition. */
	assert_refused(client_as(pki, NULL, NULL), "no client certificate");
	usleep(200000);
	struct httpc *c = client_as(pki, "client", NULL);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(strstr(r.content_type, "text/plain"));
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_http_requests_total{"));
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_http_request_duration_seconds_bucket{"));
	ck_assert_ptr_nonnull(strstr(r.body, "process_resident_memory_bytes "));
	ck_assert_ptr_null(strstr(r.body, "mimir_tls_handshakes_refused_total 0\n"));
	char path[400];
	snprintf(path, sizeof path, "%s/metrics.txt", tmp);
	ck_assert_int_eq(tu_write_file(path, r.body, r.len), 0);
	int st = tu_system("promtool check metrics < %s > %s/promtool.out 2>&1", path, tmp);
	if (st != 0) {
		char out[400];
		snprintf(out, sizeof out, "%s/promtool.out", tmp);
		char *text = tu_read_file(out, NULL);
		ck_abort_msg("promtool check metrics failed (%d): %s", st, text ? text : "(no output)");
	}
	httpc_resp_free(&r);
	httpc_free(c);
}
END_TEST

struct sse_collect {
	int want;
	int got;
	char ids[16][24];
	char data[16][64];
};

static int on_event(const struct sse_event *ev, void *arg)
{
	struct sse_collect *col = arg;
	if (col->got < 16) {
		snprintf(col->ids[col->got], sizeof col->ids[0], "%s", ev->id ? ev->id : "");
		snprintf(col->data[col->got], sizeof col->data[0], "%.*s", (int)ev->data_len, ev->data);
	}
	col->got++;
	return col->want && col->got >= col->want;
}

struct stream_ctx {
	struct sse_parser *p;
	struct sse_collect *col;
	bool saw_heartbeat;
};

static int on_chunk(const char *d, size_t n, void *arg)
{
	struct stream_ctx *s = arg;
	if (memmem(d, n, ": heartbeat", 11))
		s->saw_heartbeat = true;
	return sse_parser_feed(s->p, d, n, on_event, s->col);
}

static void post_event(struct httpc *c, const char *feed, const char *data)
{
	char path[128], body[256];
	struct httpc_resp r;
	snprintf(path, sizeof path, "/v1/feeds/%s/events", feed);
	snprintf(body, sizeof body, "{\"event\": \"tick\", \"data\": \"%s\"}", data);
	ck_assert_int_eq(httpc_request(c, "POST", path, NULL, "application/json", body, strlen(body), &r), 0);
	ck_assert_msg(r.status == 201, "post event: %ld %s", r.status, r.body);
	httpc_resp_free(&r);
}

static void read_stream(const char *feed, const char *last_id, struct sse_collect *col, bool *hb)
{
	struct httpc *c = client_as(pki, "client", NULL);
	char path[128], hdr[64];
	snprintf(path, sizeof path, "/v1/feeds/%s", feed);
	snprintf(hdr, sizeof hdr, "Last-Event-ID: %s", last_id ? last_id : "");
	const char *hdrs[] = {hdr, NULL};
	struct stream_ctx s = {.p = sse_parser_new(0), .col = col};
	struct httpc_resp r;
	httpc_stream(c, "GET", path, last_id ? hdrs : NULL, on_chunk, &s, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(strstr(r.content_type, "text/event-stream"));
	if (hb)
		*hb = s.saw_heartbeat;
	httpc_resp_free(&r);
	sse_parser_free(s.p);
	httpc_free(c);
}

START_TEST(test_sse_resume)
{
	struct httpc *c = client_as(pki, "client", NULL);
	post_event(c, "t1", "one");
	post_event(c, "t1", "two");
	post_event(c, "t1", "three");
	struct sse_collect col = {.want = 3};
	read_stream("t1", NULL, &col, NULL);
	ck_assert_int_eq(col.got, 3);
	ck_assert_str_eq(col.ids[2], "3");
	ck_assert_str_eq(col.data[0], "one");
	/* Two events while the client is away, then resume after the last one seen. */
	post_event(c, "t1", "four");
	post_event(c, "t1", "five");
	struct sse_collect col2 = {.want = 2};
	read_stream("t1", col.ids[2], &col2, NULL);
	ck_assert_int_eq(col2.got, 2);
	ck_assert_str_eq(col2.ids[0], "4");
	ck_assert_str_eq(col2.data[1], "five");
	/* A live stream gets new events as they come, with heartbeats while idle, and
	 * ends when the feed finishes. */
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "POST", "/v1/feeds/t1/finish", NULL, "application/json", "{}", 2, &r), 0);
	ck_assert_int_eq(r.status, 200);
	httpc_resp_free(&r);
	struct sse_collect col3 = {0};
	read_stream("t1", "4", &col3, NULL);
	ck_assert_int_eq(col3.got, 1); /* event 5 only, then the end of the stream */
	/* Resuming from an id older than the buffer (4 events) is refused in-stream. */
	struct sse_collect col4 = {0};
	read_stream("t1", "0", &col4, NULL);
	ck_assert_int_eq(col4.got, 1);
	ck_assert_ptr_nonnull(strstr(col4.data[0], "out-of-range"));
	/* A malformed Last-Event-ID is a 400 naming the header. */
	const char *bad[] = {"Last-Event-ID: 12abc", NULL};
	ck_assert_int_eq(httpc_request(c, "GET", "/v1/feeds/t1", bad, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 400);
	ck_assert_ptr_nonnull(strstr(r.body, "Last-Event-ID"));
	httpc_resp_free(&r);
	httpc_free(c);
}
END_TEST

struct delayed_post {
	const char *feed;
	int delay_ms;
};

static void *post_later(void *arg)
{
	struct delayed_post *d = arg;
	usleep((useconds_t)d->delay_ms * 1000);
	struct httpc *c = client_as(pki, "client", NULL);
	post_event(c, d->feed, "late");
	httpc_free(c);
	return NULL;
}

START_TEST(test_sse_live_with_heartbeat)
{
	struct httpc *c = client_as(pki, "client", NULL);
	post_event(c, "t2", "first");
	httpc_free(c);
	pthread_t th;
	struct delayed_post d = {"t2", 700}; /* heartbeats every 200 ms meanwhile */
	pthread_create(&th, NULL, post_later, &d);
	struct sse_collect col = {.want = 2};
	bool hb = false;
	read_stream("t2", NULL, &col, &hb);
	pthread_join(th, NULL);
	ck_assert_int_eq(col.got, 2);
	ck_assert_str_eq(col.data[1], "late");
	ck_assert_msg(hb, "no heartbeat comment while the stream was idle");
}
END_TEST

static int connect_raw(const char *url)
{
	int port = (int)strtol(strrchr(url, ':') + 1, NULL, 10);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

START_TEST(test_slow_clients_do_not_block_others)
{
	/* Eight connections that never finish a handshake (the idle timeout is 2 s). */
	int fds[8];
	for (int i = 0; i < 8; i++) {
		fds[i] = connect_raw(base_url);
		ck_assert_int_ge(fds[i], 0);
	}
	(void)!write(fds[0], "\x16\x03\x01\x00", 4); /* half a TLS record, then silence */
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct httpc *c = client_as(pki, "client", NULL);
	struct httpc_resp r;
	json_t *j = get_json(c, "GET", "/v1/whoami", NULL, 200, &r);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	ck_assert_msg(ms < 1000, "a good client waited %.0f ms behind stalled ones", ms);
	json_decref(j);
	httpc_resp_free(&r);
	httpc_free(c);
	/* The stalled connections are closed by the server after the idle timeout. */
	for (int i = 0; i < 8; i++) {
		struct timeval tv = {.tv_sec = 6};
		setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		/* A TLS alert may come first; what matters is the end of the stream. */
		char b[256];
		ssize_t n;
		int reads = 0;
		while ((n = read(fds[i], b, sizeof b)) > 0 && ++reads < 16)
			;
		ck_assert_msg(n == 0, "stalled connection %d not closed by the server", i);
		close(fds[i]);
	}
}
END_TEST

START_TEST(test_httpc_retries_and_bounds)
{
	/* Nothing listens on the port: a GET is retried with growing backoff, and so is a
	 * POST, because a refused connection means the request was never sent. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	socklen_t sl = sizeof sa;
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd); /* the port is now known to be closed */
	char url[64];
	snprintf(url, sizeof url, "https://localhost:%u", ntohs(sa.sin_port));
	char ca[400];
	snprintf(ca, sizeof ca, "%s/ca.crt", pki);
	struct httpc_opts o = {.base_url = url, .ca_file = ca, .retries = 2, .backoff_ms = 50};
	struct httpc *c;
	struct httpc_resp r;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ck_assert_int_eq(httpc_request(c, "GET", "/healthz", NULL, NULL, NULL, 0, &r), ERR_IO);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ck_assert_uint_eq(r.attempts, 3);
	double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	ck_assert_msg(ms >= 150, "backoff too short: %.0f ms for 50 + 100 ms", ms);
	httpc_resp_free(&r);
	ck_assert_int_eq(httpc_request(c, "POST", "/v1/echo", NULL, "application/json", "{}", 2, &r), ERR_IO);
	ck_assert_uint_eq(r.attempts, 3);
	httpc_resp_free(&r);
	httpc_free(c);

	/* A POST that reached the server and failed there is not repeated; a response
	 * larger than the client's bound is refused rather than buffered. */
	char crt[400], key[400];
	snprintf(crt, sizeof crt, "%s/client.crt", pki);
	snprintf(key, sizeof key, "%s/client.key", pki);
	struct httpc_opts o2 = {.base_url = base_url, .ca_file = ca, .cert_file = crt, .key_file = key,
				.retries = 2, .max_response = 256};
	ck_assert_int_eq(httpc_new(&c, &o2), 0);
	ck_assert_int_eq(httpc_request(c, "POST", "/v1/echo", NULL, "application/json", "{", 1, &r), 0);
	ck_assert_int_eq(r.status, 400);
	ck_assert_uint_eq(r.attempts, 1);
	httpc_resp_free(&r);
	ck_assert_int_eq(httpc_request(c, "GET", "/metrics", NULL, NULL, NULL, 0, &r), ERR_TOO_LARGE);
	ck_assert_uint_eq(r.attempts, 1);
	httpc_resp_free(&r);
	httpc_free(c);
}
END_TEST

START_TEST(test_config_errors_name_the_key)
{
	char cfg[400], out[400];
	snprintf(cfg, sizeof cfg, "%s/typo.json", tmp);
	snprintf(out, sizeof out, "%s/typo.out", tmp);
	const char *typo = "{\"http\": {\"prot\": 8443}}";
	ck_assert_int_eq(tu_write_file(cfg, typo, strlen(typo)), 0);
	ck_assert_int_eq(tu_system("%s --config %s --check-config >%s 2>&1", bin_example, cfg, out), 2);
	char *text = tu_read_file(out, NULL);
	ck_assert_msg(strstr(text, "http.prot") && strstr(text, "http.port"), "message: %s", text);
	free(text);
	ck_assert_int_eq(tu_system("MIMIR_EXAMPLE_HTTP_THREADS=0 %s --check-config >%s 2>&1", bin_example, out), 2);
	text = tu_read_file(out, NULL);
	ck_assert_msg(strstr(text, "http.threads") && strstr(text, "MIMIR_EXAMPLE_HTTP_THREADS"), "message: %s", text);
	free(text);
	ck_assert_int_eq(tu_system("%s --check-config >%s 2>&1", bin_example, out), 2); /* TLS on, no cert */
	text = tu_read_file(out, NULL);
	ck_assert_msg(strstr(text, "tls.cert"), "message: %s", text);
	free(text);
	ck_assert_int_eq(tu_system("%s --no-such-flag >%s 2>&1", bin_example, out), 2);
	ck_assert_int_eq(tu_system("MIMIR_EXAMPLE_TLS_ENABLED=false %s --check-config >%s 2>&1", bin_example, out), 0);
}
END_TEST

/* ---- graceful shutdown, on a service of its own ---- */

struct slow_call {
	const char *url;
	long status;
	int rc;
};

static void *slow_request(void *arg)
{
	struct slow_call *s = arg;
	struct httpc *c = client_as(pki, "client", s->url);
	struct httpc_resp r;
	s->rc = httpc_request(c, "POST", "/v1/work", NULL, "application/json", "{\"ms\": 3000}", 12, &r);
	s->status = r.status;
	httpc_resp_free(&r);
	httpc_free(c);
	return NULL;
}

START_TEST(test_graceful_shutdown)
{
	struct tu_svc p;
	char url[64], logp[400];
	ck_assert_int_eq(start_service(&p, "drain", url, sizeof url, logp, sizeof logp), 0);
	struct slow_call call = {.url = url};
	pthread_t th;
	pthread_create(&th, NULL, slow_request, &call);
	/* Wait until the service is inside the slow request, so the test does not depend
	 * on the machine's speed. (Not by asking the service: a probe may be served by the
	 * very worker thread the slow handler occupies.) */
	ck_assert_msg(tu_file_contains(logp, "event=example.work_started", 10000),
		      "the slow request never reached the service");
	kill(p.proc.pid, SIGTERM);
	usleep(200000);
	/* New connections are refused while the in-flight request finishes. */
	int fd = connect_raw(url);
	ck_assert_msg(fd < 0, "the listening socket is still open after SIGTERM");
	pthread_join(th, NULL);
	ck_assert_msg(call.rc == 0 && call.status == 200,
		      "in-flight request lost at shutdown: rc=%d status=%ld", call.rc, call.status);
	int st = tu_proc_stop(&p.proc, 0, 5000);
	ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
	char *text = tu_read_file(logp, NULL);
	ck_assert_ptr_nonnull(strstr(text, "event=http.draining"));
	ck_assert_ptr_nonnull(strstr(text, "in_flight=1"));
	free(text);
}
END_TEST

/* ---- deferred answers (http_reply_later), on an in-process server ----
 * One pool thread (threads = 1), so a deferred request that held its thread would
 * stall every other request. Producers are threads started by the handler; each
 * records what its answering call returned and when. */

struct producer {
	struct http_later *l;
	char kind; /* j json, p problem, s stream, h hold until released, d data, b bad
		      status, S stream held open until released, r quick json */
	long us;   /* delay before answering */
	int rc;
	long long created_ms, answer_ms; /* when it started, when it began to answer */
	struct http_stream *st;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int deferred; /* handler calls that deferred */
	bool release; /* 'h' producers may answer */
	int n;
	pthread_t th[128];
	struct producer *p[128];
} lt;

static struct http_server *lsrv;
static char lurl[64];

static long long mono_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void *produce(void *arg)
{
	struct producer *p = arg;
	p->created_ms = mono_ms();
	char id[80]; /* the handle is consumed by the answering call: copy first */
	snprintf(id, sizeof id, "%s", http_later_request_id(p->l));
	if (p->kind == 'h' || p->kind == 'S') {
		if (p->kind == 'S') {
			p->rc = http_later_stream(p->l, "text/event-stream", 0, NULL, 0, &p->st);
			if (p->rc == 0)
				p->rc = http_stream_write(p->st, "data: first\n\n", 14);
		}
		pthread_mutex_lock(&lt.mu);
		while (!lt.release)
			pthread_cond_wait(&lt.cv, &lt.mu);
		pthread_mutex_unlock(&lt.mu);
	} else if (p->us) {
		usleep((useconds_t)p->us);
	}
	struct http_stream *st = NULL;
	p->answer_ms = mono_ms();
	switch (p->kind) {
	case 'j':
		p->rc = http_later_header(p->l, "X-Later", "set-by-producer");
		if (p->rc != 0) {
			http_later_json(p->l, 500, json_object());
			break;
		}
		p->rc = http_later_json(p->l, 201, json_pack("{s:i, s:s}", "answer", 42, "request_id", id));
		break;
	case 'p':
		p->rc = http_later_problem(p->l, ERR_CONFLICT, 0, "name already taken", "name");
		break;
	case 'd':
		p->rc = http_later_data(p->l, 202, "text/plain", "plain words", 11);
		break;
	case 'b':
		p->rc = http_later_json(p->l, 42, json_object());
		break;
	case 'S':
		if (p->rc == 0)
			p->rc = http_stream_write(p->st, "data: late\n\n", 13);
		http_stream_close(p->st);
		break;
	case 's':
		p->rc = http_later_stream(p->l, "text/plain; charset=utf-8", 0, NULL, 0, &st);
		for (int i = 0; p->rc == 0 && i < 3; i++) {
			static const char *const chunk[] = {"one\n", "two\n", "three\n"};
			if (i)
				usleep(100000);
			p->rc = http_stream_write(st, chunk[i], strlen(chunk[i]));
		}
		http_stream_close(st);
		break;
	default:
		p->rc = http_later_json(p->l, 200, json_pack("{s:s}", "request_id", id));
		break;
	}
	return NULL;
}

static int h_later(struct http_req *r, void *ctx)
{
	(void)ctx;
	const char *kind = http_req_param(r, "kind");
	const char *us = http_req_query(r, "us");
	struct producer *p = calloc(1, sizeof *p);
	if (!p)
		return ERR_NOMEM;
	p->kind = kind[0];
	p->us = us ? strtol(us, NULL, 10) : 0;
	http_reply_header(r, "X-Before", "set-by-handler");
	int rc = http_reply_later(r, &p->l);
	if (rc != 0) {
		free(p);
		return rc;
	}
	if (p->kind == 'n') {
		/* Answered before the handler returns: the answer is ready before the
		 * connection would be suspended. */
		rc = http_later_json(p->l, 200, json_pack("{s:s}", "when", "now"));
		free(p);
		return rc;
	}
	pthread_mutex_lock(&lt.mu);
	if (lt.n < 128 && pthread_create(&lt.th[lt.n], NULL, produce, p) == 0) {
		lt.p[lt.n++] = p;
	} else {
		http_later_problem(p->l, ERR_INTERNAL, 0, "test: no producer thread", NULL);
		free(p);
	}
	lt.deferred++;
	pthread_cond_broadcast(&lt.cv);
	pthread_mutex_unlock(&lt.mu);
	return 0;
}

static const struct http_route later_routes[] = {
	{"GET", "/v1/later/{kind}", h_later, 0, 0, 0},
	{NULL, NULL, NULL, 0, 0, 0},
};

static void setup_later_pki(void)
{
	tu_tmpdir(tmp, sizeof tmp);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	ck_assert_int_eq(tu_pki(tmp, "dev --out %s", pki), 0);
	ck_assert_int_eq(tu_pki(tmp, "issue --ca %s --role gateway --name svc --dns localhost --ip 127.0.0.1 --out %s",
				pki, pki), 0);
}

static void teardown_later_pki(void)
{
	tu_rmrf(tmp);
}

static void setup_later(void)
{
	char crt[400], key[400], ca[400];
	snprintf(crt, sizeof crt, "%s/svc.crt", pki);
	snprintf(key, sizeof key, "%s/svc.key", pki);
	snprintf(ca, sizeof ca, "%s/ca.crt", pki);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	log_set_level(LOG_LEVEL_WARN);
	memset(&lt, 0, sizeof lt);
	pthread_mutex_init(&lt.mu, NULL);
	pthread_cond_init(&lt.cv, NULL);
	struct http_server_config hc = {.service = "later", .port = 0, .threads = 1, .idle_timeout_s = 5,
					.drain_timeout_ms = 3000, .tls_cert = crt, .tls_key = key, .tls_ca = ca};
	ck_assert_int_eq(http_server_start(&lsrv, &hc, later_routes, NULL, NULL), 0);
	snprintf(lurl, sizeof lurl, "https://localhost:%u", http_server_port(lsrv));
}

static void join_producers(void)
{
	pthread_mutex_lock(&lt.mu);
	lt.release = true;
	pthread_cond_broadcast(&lt.cv);
	int n = lt.n;
	pthread_mutex_unlock(&lt.mu);
	for (int i = 0; i < n; i++)
		if (lt.th[i]) {
			pthread_join(lt.th[i], NULL);
			lt.th[i] = 0;
		}
}

static void teardown_later(void)
{
	join_producers();
	http_server_free(lsrv);
	lsrv = NULL;
	for (int i = 0; i < lt.n; i++)
		free(lt.p[i]);
	curl_global_cleanup();
}

/* Waits until n handler calls have deferred. */
static void wait_deferred(int n)
{
	long long until = mono_ms() + 5000;
	pthread_mutex_lock(&lt.mu);
	while (lt.deferred < n && mono_ms() < until) {
		pthread_mutex_unlock(&lt.mu);
		usleep(2000);
		pthread_mutex_lock(&lt.mu);
	}
	int got = lt.deferred;
	pthread_mutex_unlock(&lt.mu);
	ck_assert_msg(got >= n, "the handler deferred %d times, want %d", got, n);
}

/* A request through libcurl, keeping the response headers (httpc keeps only some). */
struct cresp {
	CURLcode cc;
	long status;
	long long ms;
	char hdrs[4096];
	size_t hlen;
	char body[8192];
	size_t blen;
};

static size_t c_append(char *dst, size_t cap, size_t *len, const char *src, size_t n)
{
	size_t k = *len + n < cap ? n : cap - 1 - *len;
	memcpy(dst + *len, src, k);
	*len += k;
	dst[*len] = '\0';
	return n;
}

static size_t c_hdr(char *b, size_t sz, size_t n, void *arg)
{
	struct cresp *r = arg;
	return c_append(r->hdrs, sizeof r->hdrs, &r->hlen, b, sz * n);
}

static size_t c_body(char *b, size_t sz, size_t n, void *arg)
{
	struct cresp *r = arg;
	return c_append(r->body, sizeof r->body, &r->blen, b, sz * n);
}

struct creq {
	const char *path;
	const char *request_id;
	long timeout_ms;
	struct cresp resp;
};

static void *curl_get(void *arg)
{
	struct creq *q = arg;
	char url[256], ca[400], crt[400], key[400], rid[96];
	snprintf(url, sizeof url, "%s%s", lurl, q->path);
	snprintf(ca, sizeof ca, "%s/ca.crt", pki);
	snprintf(crt, sizeof crt, "%s/client.crt", pki);
	snprintf(key, sizeof key, "%s/client.key", pki);
	snprintf(rid, sizeof rid, "X-Request-Id: %s", q->request_id);
	CURL *c = curl_easy_init();
	struct curl_slist *h = curl_slist_append(NULL, rid);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	curl_easy_setopt(c, CURLOPT_SSLCERT, crt);
	curl_easy_setopt(c, CURLOPT_SSLKEY, key);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, q->timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, c_hdr);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &q->resp);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, c_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &q->resp);
	long long t0 = mono_ms();
	q->resp.cc = curl_easy_perform(c);
	q->resp.ms = mono_ms() - t0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &q->resp.status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return NULL;
}

/* The value of response header name (case-insensitive), or "" when absent. */
static const char *header_of(const struct cresp *r, const char *name, char *val, size_t cap)
{
	size_t nl = strlen(name);
	val[0] = '\0';
	for (const char *line = r->hdrs; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
			const char *v = line + nl + 1;
			while (*v == ' ')
				v++;
			size_t k = strcspn(v, "\r\n");
			snprintf(val, cap, "%.*s", (int)(k < cap ? k : cap - 1), v);
			break;
		}
	}
	return val;
}

static long long metric_value(struct httpc *c, const char *name)
{
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	char needle[128];
	snprintf(needle, sizeof needle, "\n%s ", name);
	const char *at = strstr(r.body, needle);
	ck_assert_msg(at != NULL, "no %s in /metrics", name);
	long long v = strtoll(at + strlen(needle), NULL, 10);
	httpc_resp_free(&r);
	return v;
}

START_TEST(test_later_json_frees_the_thread)
{
	struct httpc *c = tu_client(pki, "client", lurl, IDENT_ROLE_NONE);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/healthz", NULL, NULL, NULL, 0, &r), 0); /* connected */
	httpc_resp_free(&r);
	struct creq q = {.path = "/v1/later/json?us=300000", .request_id = "later-json-1", .timeout_ms = 10000};
	pthread_t th;
	pthread_create(&th, NULL, curl_get, &q);
	wait_deferred(1);
	long long seen = mono_ms();
	/* The only pool thread is free while the answer is being made. */
	struct timespec u0, u1;
	clock_gettime(CLOCK_MONOTONIC, &u0);
	long long t0 = mono_ms();
	for (int i = 0; i < 20; i++) {
		ck_assert_int_eq(httpc_request(c, "GET", "/healthz", NULL, NULL, NULL, 0, &r), 0);
		ck_assert_int_eq(r.status, 200);
		httpc_resp_free(&r);
	}
	long long t1 = mono_ms();
	clock_gettime(CLOCK_MONOTONIC, &u1);
	long long pending = metric_value(c, "mimir_http_requests_deferred");
	pthread_join(th, NULL);
	join_producers();
	struct producer *p = lt.p[0];
	ck_assert_int_eq(p->rc, 0);
	ck_assert_msg(t1 < p->answer_ms, "20 GETs took %lld ms and ended after the deferred answer "
		      "(producer started at %+lld ms, answered at %+lld ms, GETs began at %+lld ms after the defer was seen)",
		      t1 - t0, p->created_ms - seen, p->answer_ms - seen, t0 - seen);
	ck_assert_msg(t1 - t0 < 300, "20 GETs took %lld ms beside a deferred request", t1 - t0);
	ck_assert_int_eq(pending, 1);
	fprintf(stderr, "later: 20 GETs /healthz in %.2f ms while a request waited on its deferred answer\n",
		(double)(u1.tv_sec - u0.tv_sec) * 1e3 + (double)(u1.tv_nsec - u0.tv_nsec) / 1e6);
	ck_assert_msg(q.resp.cc == CURLE_OK, "transport: %s", curl_easy_strerror(q.resp.cc));
	ck_assert_int_eq(q.resp.status, 201);
	ck_assert_int_ge(q.resp.ms, 290);
	char v[256];
	ck_assert_str_eq(header_of(&q.resp, "X-Request-Id", v, sizeof v), "later-json-1");
	ck_assert_str_eq(header_of(&q.resp, "X-Later", v, sizeof v), "set-by-producer");
	ck_assert_str_eq(header_of(&q.resp, "X-Before", v, sizeof v), "set-by-handler");
	ck_assert_str_eq(header_of(&q.resp, "Content-Type", v, sizeof v), "application/json");
	json_t *j = json_loads(q.resp.body, 0, NULL);
	ck_assert_msg(j != NULL, "body: %s", q.resp.body);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "answer")), 42);
	ck_assert_str_eq(json_string_value(json_object_get(j, "request_id")), "later-json-1");
	json_decref(j);
	/* Once answered, the request no longer counts as deferred. */
	ck_assert_int_eq(metric_value(c, "mimir_http_requests_deferred"), 0);
	httpc_free(c);
}
END_TEST

START_TEST(test_later_problem)
{
	struct creq q = {.path = "/v1/later/problem?us=100000", .request_id = "later-problem-1", .timeout_ms = 10000};
	curl_get(&q);
	ck_assert_int_eq(q.resp.cc, CURLE_OK);
	ck_assert_int_eq(q.resp.status, 409);
	char v[256];
	ck_assert_str_eq(header_of(&q.resp, "Content-Type", v, sizeof v), "application/problem+json");
	ck_assert_str_eq(header_of(&q.resp, "X-Request-Id", v, sizeof v), "later-problem-1");
	json_t *j = json_loads(q.resp.body, 0, NULL);
	ck_assert_msg(j != NULL, "body: %s", q.resp.body);
	ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "urn:mimir:problem:conflict");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), 409);
	ck_assert_str_eq(json_string_value(json_object_get(j, "detail")), "name already taken");
	ck_assert_str_eq(json_string_value(json_object_get(j, "field")), "name");
	ck_assert_str_eq(json_string_value(json_object_get(j, "request_id")), "later-problem-1");
	json_decref(j);
	join_producers();
	ck_assert_int_eq(lt.p[0]->rc, 0);

	/* Answered in the handler's own thread, before the connection could be parked. */
	struct httpc *c = tu_client(pki, "client", lurl, IDENT_ROLE_NONE);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/v1/later/now", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(strstr(r.body, "\"when\":\"now\""));
	httpc_resp_free(&r);
	/* Answers racing the suspension (0 to 1.5 ms after the defer), on one kept-alive
	 * connection: every one arrives, none is lost or answered twice. */
	for (int i = 0; i < 40; i++) {
		char path[64];
		snprintf(path, sizeof path, "/v1/later/race?us=%d", (i % 4) * 500);
		ck_assert_int_eq(httpc_request(c, "GET", path, NULL, NULL, NULL, 0, &r), 0);
		ck_assert_msg(r.status == 200, "request %d: status %ld", i, r.status);
		ck_assert_ptr_nonnull(strstr(r.body, r.request_id));
		httpc_resp_free(&r);
	}
	join_producers();
	for (int i = 1; i < lt.n; i++)
		ck_assert_int_eq(lt.p[i]->rc, 0);
	/* Bytes as given; and a call the service gets wrong still answers (500) and says so. */
	ck_assert_int_eq(httpc_request(c, "GET", "/v1/later/data?us=1000", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 202);
	ck_assert_str_eq(r.content_type, "text/plain");
	ck_assert_str_eq(r.body, "plain words");
	httpc_resp_free(&r);
	ck_assert_int_eq(httpc_request(c, "GET", "/v1/later/bad?us=1000", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 500);
	ck_assert_str_eq(r.content_type, "application/problem+json");
	httpc_resp_free(&r);
	join_producers();
	ck_assert_int_eq(lt.p[lt.n - 2]->rc, 0);
	ck_assert_int_eq(lt.p[lt.n - 1]->rc, ERR_INVALID);
	httpc_free(c);
}
END_TEST

struct chunks {
	char data[256];
	size_t len;
	int n;
	long long first_ms, last_ms;
};

static int on_later_chunk(const char *d, size_t n, void *arg)
{
	struct chunks *k = arg;
	long long now = mono_ms();
	if (k->n == 0)
		k->first_ms = now;
	k->last_ms = now;
	c_append(k->data, sizeof k->data, &k->len, d, n);
	__atomic_add_fetch(&k->n, 1, __ATOMIC_RELEASE); /* polled by test_later_stream_shutdown */
	return 0;
}

START_TEST(test_later_stream)
{
	struct httpc *c = tu_client(pki, "client", lurl, IDENT_ROLE_NONE);
	struct chunks k = {0};
	struct httpc_resp r;
	ck_assert_int_eq(httpc_stream(c, "GET", "/v1/later/stream?us=50000", NULL, on_later_chunk, &k, &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.content_type, "text/plain; charset=utf-8");
	ck_assert_str_eq(k.data, "one\ntwo\nthree\n");
	/* Written 100 ms apart: the body came as it was written, not at the end. */
	ck_assert_msg(k.n >= 3 && k.last_ms - k.first_ms >= 150, "%d chunks over %lld ms", k.n,
		      k.last_ms - k.first_ms);
	httpc_resp_free(&r);
	join_producers();
	ck_assert_int_eq(lt.p[0]->rc, 0);
	httpc_free(c);
}
END_TEST

START_TEST(test_later_shutdown)
{
	struct creq q = {.path = "/v1/later/hold", .request_id = "later-hold-1", .timeout_ms = 10000};
	pthread_t th;
	pthread_create(&th, NULL, curl_get, &q);
	wait_deferred(1);
	usleep(50000); /* parked by now */
	long long t0 = mono_ms();
	http_server_shutdown(lsrv);
	long long ms = mono_ms() - t0;
	ck_assert_msg(ms < 3000, "shutdown took %lld ms, past the drain bound", ms);
	fprintf(stderr, "later: shutdown with a deferred request pending took %lld ms\n", ms);
	pthread_join(th, NULL);
	ck_assert_int_eq(q.resp.cc, CURLE_OK);
	ck_assert_int_eq(q.resp.status, 503);
	char v[256];
	ck_assert_str_eq(header_of(&q.resp, "Content-Type", v, sizeof v), "application/problem+json");
	json_t *j = json_loads(q.resp.body, 0, NULL);
	ck_assert_msg(j != NULL, "body: %s", q.resp.body);
	ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "urn:mimir:problem:unavailable");
	ck_assert_str_eq(json_string_value(json_object_get(j, "detail")), "shutting down");
	ck_assert_str_eq(json_string_value(json_object_get(j, "request_id")), "later-hold-1");
	json_decref(j);
	/* The producer answers after all: nobody is left to take it. */
	join_producers();
	ck_assert_int_eq(lt.p[0]->rc, ERR_CANCELLED);
}
END_TEST

struct stream_call {
	struct chunks k;
	struct httpc_resp r;
	int rc;
};

static void *stream_get(void *arg)
{
	struct stream_call *sc = arg;
	struct httpc *c = tu_client(pki, "client", lurl, IDENT_ROLE_NONE);
	sc->rc = httpc_stream(c, "GET", "/v1/later/Stream", NULL, on_later_chunk, &sc->k, &sc->r);
	httpc_free(c);
	return NULL;
}

START_TEST(test_later_stream_shutdown)
{
	/* A deferred answer that became a stream is ended by shutdown like any stream. */
	struct stream_call sc = {0};
	pthread_t th;
	pthread_create(&th, NULL, stream_get, &sc);
	wait_deferred(1);
	for (int i = 0; i < 250 && !__atomic_load_n(&sc.k.n, __ATOMIC_ACQUIRE); i++)
		usleep(20000);
	long long t0 = mono_ms();
	http_server_shutdown(lsrv);
	long long ms = mono_ms() - t0;
	ck_assert_msg(ms < 3000, "shutdown took %lld ms, past the drain bound", ms);
	pthread_join(th, NULL);
	ck_assert_int_eq(sc.rc, 0);
	ck_assert_int_eq(sc.r.status, 200);
	ck_assert_str_eq(sc.r.content_type, "text/event-stream");
	ck_assert_str_eq(sc.k.data, "data: first\n\n");
	httpc_resp_free(&sc.r);
	join_producers();
	ck_assert_int_eq(lt.p[0]->rc, ERR_CANCELLED);
}
END_TEST

START_TEST(test_later_client_gone)
{
	struct creq q = {.path = "/v1/later/json?us=400000", .request_id = "later-gone-1", .timeout_ms = 100};
	curl_get(&q);
	ck_assert_int_eq(q.resp.cc, CURLE_OPERATION_TIMEDOUT);
	join_producers();
	int rc = lt.p[0]->rc;
	ck_assert_msg(rc == 0 || rc == ERR_CANCELLED, "producer after the client left: %d", rc);
	/* The server goes on, and the request ends once its answer found no reader. */
	struct httpc *c = tu_client(pki, "client", lurl, IDENT_ROLE_NONE);
	long long deferred = 1;
	for (int i = 0; i < 100 && deferred != 0; i++) {
		deferred = metric_value(c, "mimir_http_requests_deferred");
		if (deferred)
			usleep(20000);
	}
	ck_assert_int_eq(deferred, 0);
	httpc_free(c);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("http_mtls");
	TCase *tc = tcase_create("example_service");
	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_no_client_cert_refused);
	tcase_add_test(tc, test_other_ca_refused);
	tcase_add_test(tc, test_expired_cert_refused);
	tcase_add_test(tc, test_valid_cert_role_visible);
	tcase_add_test(tc, test_server_role_checked_by_client);
	tcase_add_test(tc, test_bad_json_names_field);
	tcase_add_test(tc, test_oversize_body_413);
	tcase_add_test(tc, test_404_405);
	tcase_add_test(tc, test_metrics_promtool);
	tcase_add_test(tc, test_sse_resume);
	tcase_add_test(tc, test_sse_live_with_heartbeat);
	tcase_add_test(tc, test_slow_clients_do_not_block_others);
	tcase_add_test(tc, test_graceful_shutdown);
	tcase_add_test(tc, test_config_errors_name_the_key);
	tcase_add_test(tc, test_httpc_retries_and_bounds);
	suite_add_tcase(s, tc);

	TCase *tl = tcase_create("later");
	tcase_add_unchecked_fixture(tl, setup_later_pki, teardown_later_pki);
	tcase_add_checked_fixture(tl, setup_later, teardown_later);
	tcase_set_timeout(tl, 30);
	tcase_add_test(tl, test_later_json_frees_the_thread);
	tcase_add_test(tl, test_later_problem);
	tcase_add_test(tl, test_later_stream);
	tcase_add_test(tl, test_later_shutdown);
	tcase_add_test(tl, test_later_stream_shutdown);
	tcase_add_test(tl, test_later_client_gone);
	suite_add_tcase(s, tl);
	return s;
}
