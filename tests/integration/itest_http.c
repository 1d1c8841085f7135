/* Integration: the real mimir-example binary over HTTPS with mandatory client
 * certificates on a loopback port, driven through httpc (libcurl) and raw sockets.
 * Certificates come from the real mimir-pki. Proves the platform's promises: refusal
 * inside the handshake of a missing, foreign or expired certificate (with a log line),
 * the peer's role visible to handlers, role-restricted routes, problem+json for bad
 * input naming the field, 413/404/405, /metrics accepted by promtool, SSE with
 * Last-Event-ID resumption, slow clients not blocking others, and graceful shutdown. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err/err.h"
#include "httpc/httpc.h"
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
	return s;
}
