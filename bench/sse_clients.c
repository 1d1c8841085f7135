/* sse_clients: the client side of bench/sse.sh, many concurrent event streams of one
 * generation held open against one gateway. It opens the streams in cumulative stages
 * (for example 250,500,1000,2000), each stream its own HTTP/1.1 connection over TLS
 * (libcurl's multi interface, one easy handle per stream, the deployment's CA, the API
 * key as a bearer token), and paces the opening so that at most a batch of streams is
 * between connect and first byte at a time: on 2 cores thousands of simultaneous TLS
 * handshakes would otherwise starve one another into timeouts. Each stream's bytes are
 * scanned as they come (no event is buffered: a line's first characters are all it
 * keeps) for event names and heartbeat comments. A stage is reached when every stream
 * has had its `masks` event; then all streams are held for a while and watched for
 * heartbeats (at least one, and no silence longer than two heartbeat intervals). One
 * line per stage goes to stdout, key=value, for the script; then the program waits for
 * a line on stdin (end of file: at once) while it keeps servicing the streams, so the
 * script can sample the gateway with every stream still open. Run with no arguments
 * (as `make bench` runs every bench program) it says what it is and exits 0. */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#include "bench.h"

#define MAX_STAGES 16
#define MAX_STREAMS 100000
#define BATCH 100             /* streams between connect and first byte at once */
#define FD_SPARE 64           /* descriptors kept for everything but the streams */
#define POLL_MS 100
#define CONNECT_TIMEOUT_MS 30000L
#define STAGE_TIMEOUT_MS 60000.0 /* a stage that cannot open its streams in this long stops */
#define HEAD_MAX 40

struct run;

struct conn {
	CURL *h;
	struct run *run;
	/* the line being scanned: its first HEAD_MAX - 1 characters */
	char head[HEAD_MAX];
	size_t col;
	bool pending;    /* fields seen since the last blank line: an event is being read */
	char event[32];  /* its name ("" until an event: line) */
	/* what arrived */
	uint64_t bytes, events, heartbeats, hb_mark;
	long status;
	bool added, first, data, failed, done, error_event;
	double gap_ref_ms, max_gap_ms;
};

struct run {
	struct conn *c;
	size_t n;               /* streams added so far */
	size_t connecting;      /* added, no first byte yet, not done */
	size_t with_data, open, failed, error_events;
};

static double now_ms(void)
{
	return bench_now_us() / 1000.0;
}

/* One complete line (without its end) of stream c. */
static void on_line(struct run *r, struct conn *c)
{
	if (c->col == 0) { /* blank line: the event is complete */
		if (c->pending) {
			c->events++;
			if (!strcmp(c->event, "masks") && !c->data) {
				c->data = true;
				r->with_data++;
			} else if (!strcmp(c->event, "error") && !c->error_event) {
				c->error_event = true;
				r->error_events++;
			}
		}
		c->pending = false;
		c->event[0] = '\0';
		return;
	}
	size_t n = c->col < HEAD_MAX - 1 ? c->col : HEAD_MAX - 1;
	c->head[n] = '\0';
	if (c->head[0] == ':') {
		c->heartbeats++;
		return;
	}
	c->pending = true;
	if (!strncmp(c->head, "event:", 6)) {
		const char *v = c->head + 6 + (c->head[6] == ' ');
		snprintf(c->event, sizeof c->event, "%s", v);
	}
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg)
{
	struct conn *c = arg;
	struct run *r = c->run;
	size_t len = size * nmemb;
	if (!c->first) {
		c->first = true;
		r->connecting--;
		curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &c->status);
		if (c->status != 200)
			return 0; /* a refusal (problem+json): this stream failed */
	}
	double t = now_ms();
	if (t - c->gap_ref_ms > c->max_gap_ms)
		c->max_gap_ms = t - c->gap_ref_ms;
	c->gap_ref_ms = t;
	c->bytes += len;
	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\n') {
			on_line(r, c);
			c->col = 0;
		} else if (p[i] != '\r') { /* the gateway ends lines with LF alone */
			if (c->col < HEAD_MAX - 1)
				c->head[c->col] = p[i];
			c->col++;
		}
	}
	return len;
}

static int add_stream(CURLM *m, struct run *r, const char *url, const char *ca, struct curl_slist *hdrs)
{
	struct conn *c = &r->c[r->n];
	c->run = r;
	if (!(c->h = curl_easy_init()))
		return -1;
	curl_easy_setopt(c->h, CURLOPT_URL, url);
	curl_easy_setopt(c->h, CURLOPT_CAINFO, ca);
	curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(c->h, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
	curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(c->h, CURLOPT_PRIVATE, (char *)c);
	if (curl_multi_add_handle(m, c->h) != CURLM_OK) {
		curl_easy_cleanup(c->h);
		c->h = NULL;
		return -1;
	}
	c->added = true;
	c->gap_ref_ms = now_ms();
	r->n++;
	r->connecting++;
	r->open++;
	return 0;
}

/* Collects the streams that ended: any end is a failure while we hold them. */
static void reap(CURLM *m, struct run *r)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(m, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		struct conn *c = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
		if (!c || c->done)
			continue;
		c->done = true;
		r->open--;
		if (!c->first)
			r->connecting--;
		if (!c->failed) {
			c->failed = true;
			r->failed++;
		}
		if (r->failed > 3) /* the first few say why; the count says how many */
			;
		else if (c->status && c->status != 200)
			fprintf(stderr, "sse_clients: stream %zu refused: HTTP %ld\n", (size_t)(c - r->c), c->status);
		else if (c->error_event)
			fprintf(stderr, "sse_clients: stream %zu ended after an error event: the generation ended (the "
					"parties wait limits.input_timeout_ms for the INPUT)\n",
				(size_t)(c - r->c));
		else
			fprintf(stderr, "sse_clients: stream %zu ended: %s (%llu bytes)\n", (size_t)(c - r->c),
				msg->data.result == CURLE_OK ? "the server ended it"
							      : curl_easy_strerror(msg->data.result),
				(unsigned long long)c->bytes);
		curl_multi_remove_handle(m, c->h);
	}
}

/* One round: wait for traffic (or stdin, when watched), then let curl move. Returns
 * whether stdin is readable. */
static bool step(CURLM *m, struct run *r, bool watch_stdin)
{
	struct curl_waitfd in = {.fd = 0, .events = CURL_WAIT_POLLIN};
	int running;
	curl_multi_poll(m, watch_stdin ? &in : NULL, watch_stdin ? 1 : 0, POLL_MS, NULL);
	curl_multi_perform(m, &running);
	reap(m, r);
	return watch_stdin && in.revents;
}

/* Keeps the streams serviced until a line (or the end) comes on stdin. */
static void wait_stdin(CURLM *m, struct run *r)
{
	for (;;) {
		if (!step(m, r, true))
			continue;
		char b[256];
		ssize_t n = read(0, b, sizeof b);
		if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
			return;
		if (n > 0 && memchr(b, '\n', (size_t)n))
			return;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Holds every stream for hold_ms and prints the stage's line. */
static void hold_and_report(CURLM *m, struct run *r, size_t k, double open_s, unsigned hold_ms,
			    unsigned hb_ms)
{
	double start = now_ms();
	for (size_t i = 0; i < r->n; i++) {
		r->c[i].hb_mark = r->c[i].heartbeats;
		r->c[i].gap_ref_ms = start;
		r->c[i].max_gap_ms = 0;
	}
	while (now_ms() - start < hold_ms)
		step(m, r, false);
	double end = now_ms(), worst = 0;
	size_t hb_ok = 0, still = 0;
	uint64_t *bytes = calloc(r->n ? r->n : 1, sizeof *bytes);
	for (size_t i = 0; i < r->n; i++) {
		struct conn *c = &r->c[i];
		if (c->done)
			continue;
		still++;
		double gap = end - c->gap_ref_ms > c->max_gap_ms ? end - c->gap_ref_ms : c->max_gap_ms;
		if (gap > worst)
			worst = gap;
		if (c->heartbeats > c->hb_mark && gap <= 2.0 * hb_ms)
			hb_ok++;
		if (bytes)
			bytes[i] = c->bytes;
	}
	uint64_t med = 0;
	if (bytes && r->n) {
		qsort(bytes, r->n, sizeof *bytes, cmp_u64);
		med = bytes[r->n / 2];
	}
	free(bytes);
	printf("stage k=%zu open_s=%.2f with_data=%zu open=%zu heartbeat_ok=%zu max_gap_ms=%.0f "
	       "median_bytes=%llu failed=%zu error_events=%zu hold_ms=%u\n",
	       k, open_s, r->with_data, still, hb_ok, worst, (unsigned long long)med, r->failed, r->error_events,
	       hold_ms);
	fflush(stdout);
}

/* "250,500,1000": increasing counts, at most MAX_STAGES. Returns how many, 0 if bad. */
static size_t parse_stages(const char *s, size_t *k)
{
	size_t n = 0;
	while (*s && n < MAX_STAGES) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(s, &end, 10);
		if (errno || end == s || v < 1 || v > MAX_STREAMS || (n && v <= k[n - 1]) || (*end && *end != ','))
			return 0;
		k[n++] = (size_t)v;
		s = *end ? end + 1 : end;
	}
	return *s ? 0 : n;
}

static bool parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = (unsigned)v;
	return true;
}

/* Raises the descriptor limit towards what k streams need; returns how many streams
 * fit. */
static size_t fd_room(size_t k)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return k;
	rlim_t want = (rlim_t)(k + FD_SPARE);
	if (rl.rlim_cur < want) {
		rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur >= want ? k : rl.rlim_cur > FD_SPARE ? (size_t)(rl.rlim_cur - FD_SPARE) : 0;
}

static bool key_ok(const char *k)
{
	size_t n = strlen(k);
	if (n < 8 || n > 200)
		return false;
	for (size_t i = 0; i < n; i++)
		if (k[i] <= ' ' || k[i] > '~')
			return false;
	return true;
}

int main(int argc, char **argv)
{
	if (argc == 1) {
		printf("sse_clients: a helper driven by bench/sse.sh (many concurrent SSE streams); nothing to run alone\n");
		return 0;
	}
	size_t stages[MAX_STAGES], ns = argc >= 5 ? parse_stages(argv[3], stages) : 0;
	unsigned hold_s = 0, hb_ms = 0;
	const char *key = getenv("MIMIR_API_KEY");
	if (argc != 6 || !ns || !parse_uint(argv[4], 1, 600, &hold_s) || !parse_uint(argv[5], 100, 600000, &hb_ms)) {
		fprintf(stderr, "usage: MIMIR_API_KEY=... %s EVENTS_URL CA_FILE K1,K2,... HOLD_S HEARTBEAT_MS\n"
				"  opens K1 event streams on EVENTS_URL, then K2 in all, ...; at each stage, once every\n"
				"  stream has its masks event, holds them all HOLD_S seconds, prints one line, and waits\n"
				"  for a line on stdin (end of file: goes on at once)\n",
			argv[0]);
		return 2;
	}
	if (!key || !key_ok(key)) {
		fprintf(stderr, "sse_clients: set MIMIR_API_KEY to the API key (printable, no spaces)\n");
		return 2;
	}
	const char *url = argv[1], *ca = argv[2];
	size_t room = fd_room(stages[ns - 1]);
	if (room < stages[ns - 1]) {
		while (ns && stages[ns - 1] > room)
			ns--;
		printf("limit fd_streams=%zu\n", room);
		fflush(stdout);
		fprintf(stderr, "sse_clients: the file-descriptor limit allows %zu streams: stopping at the stage below it\n",
			room);
		if (!ns)
			return 1;
	}
	int rc = 1;
	char auth[256];
	struct curl_slist *hdrs = NULL, *h2 = NULL;
	CURLM *m = NULL;
	struct run r = {0};
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
	if (sodium_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || !(m = curl_multi_init()) ||
	    !(r.c = calloc(stages[ns - 1], sizeof *r.c)) || !(hdrs = curl_slist_append(NULL, auth)) ||
	    !(h2 = curl_slist_append(hdrs, "Accept: text/event-stream"))) {
		fprintf(stderr, "sse_clients: out of memory\n");
		goto out;
	}
	hdrs = h2;
	rc = 0;
	for (size_t s = 0; s < ns && rc == 0; s++) {
		size_t k = stages[s];
		double t0 = now_ms();
		while (r.with_data < k && rc == 0) {
			while (r.n < k && r.connecting < BATCH)
				if (add_stream(m, &r, url, ca, hdrs) != 0) {
					fprintf(stderr, "sse_clients: cannot add stream %zu\n", r.n);
					rc = 1;
					break;
				}
			step(m, &r, false);
			if (r.failed || r.error_events) {
				fprintf(stderr, "sse_clients: %zu streams failed and %zu had an error event before %zu were "
						"open: stopping\n",
					r.failed, r.error_events, k);
				rc = 1;
			} else if (now_ms() - t0 > STAGE_TIMEOUT_MS) {
				fprintf(stderr, "sse_clients: after %.0f s only %zu of %zu streams have their data: stopping\n",
					STAGE_TIMEOUT_MS / 1000, r.with_data, k);
				rc = 1;
			}
		}
		double open_s = (now_ms() - t0) / 1000.0;
		hold_and_report(m, &r, k, open_s, rc == 0 ? hold_s * 1000u : 0, hb_ms);
		if (r.failed || r.error_events || r.open < k)
			rc = 1;
		wait_stdin(m, &r);
	}
out:
	for (size_t i = 0; i < r.n; i++) {
		if (!r.c[i].done)
			curl_multi_remove_handle(m, r.c[i].h);
		curl_easy_cleanup(r.c[i].h);
	}
	curl_multi_cleanup(m);
	curl_slist_free_all(hdrs);
	sodium_memzero(auth, sizeof auth);
	free(r.c);
	curl_global_cleanup();
	return rc;
}
