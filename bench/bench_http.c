/* bench_http: what one request/response costs on loopback, the figure that bounds the
 * per-round latency of the party transport. Measures a raw TCP ping-pong (the floor),
 * then mTLS requests through httpc on one persistent connection to the real
 * mimir-example (GET /healthz, and POST bodies of 1 KiB and 64 KiB), and prints
 * medians and 99th percentiles. Needs build/bin/mimir-pki and mimir-example. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "httpc/httpc.h"


static void report(const char *what, double *t, int n)
{
	double med = bench_quantile(t, (size_t)n, 0.5), p99 = bench_quantile(t, (size_t)n, 0.99);
	printf("%-44s median %8.1f us   p99 %8.1f us   (%d runs)\n", what, med, p99, n);
}

static void *echo_server(void *arg)
{
	int ls = *(int *)arg, fd = accept(ls, NULL, NULL);
	char b[1];
	while (read(fd, b, 1) == 1 && write(fd, b, 1) == 1)
		;
	close(fd);
	return NULL;
}

static void raw_tcp(int n)
{
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in sa = {.sin_family = AF_INET};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	socklen_t sl = sizeof sa;
	if (bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 1) != 0 ||
	    getsockname(ls, (struct sockaddr *)&sa, &sl) != 0)
		return;
	pthread_t th;
	pthread_create(&th, NULL, echo_server, &ls);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
		return;
	double *t = calloc((size_t)n, sizeof *t);
	char b = 'x';
	for (int i = 0; i < n; i++) {
		double t0 = bench_now_us();
		if (write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1)
			break;
		t[i] = bench_now_us() - t0;
	}
	close(fd);
	pthread_join(th, NULL);
	close(ls);
	report("raw TCP ping-pong, 1 byte", t, n);
	free(t);
}

int main(void)
{
	const char *build = getenv("MIMIR_BUILD") ? getenv("MIMIR_BUILD") : "build";
	char dir[] = "/tmp/mimir-bench-XXXXXX", cmd[2048], cfg[256], portf[256], url[64];
	if (!mkdtemp(dir))
		return 1;
	int n = 2000;
	printf("bench_http: loopback, %d requests per figure\n", n);
	raw_tcp(n * 5);

	snprintf(cmd, sizeof cmd,
		 "%s/bin/mimir-pki dev --out %s/pki >/dev/null && %s/bin/mimir-pki issue --ca %s/pki "
		 "--role gateway --name svc --dns localhost --ip 127.0.0.1 --out %s/pki >/dev/null",
		 build, dir, build, dir, dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "bench_http: mimir-pki failed\n");
		return 1;
	}
	snprintf(cfg, sizeof cfg, "%s/c.json", dir);
	snprintf(portf, sizeof portf, "%s/port", dir);
	FILE *f = fopen(cfg, "w");
	fprintf(f, "{\"http\": {\"port\": 0}, \"log\": {\"level\": \"warn\"}, \"tls\": {\"cert\": \"%s/pki/svc.crt\","
		   " \"key\": \"%s/pki/svc.key\", \"ca\": \"%s/pki/ca.crt\"}}", dir, dir, dir);
	fclose(f);
	char bin[512];
	snprintf(bin, sizeof bin, "%s/bin/mimir-example", build);
	pid_t pid = fork();
	if (pid == 0) {
		execl(bin, bin, "--config", cfg, "--port-file", portf, (char *)NULL);
		_exit(127);
	}
	struct stat st;
	for (int i = 0; i < 200 && (stat(portf, &st) != 0 || st.st_size == 0); i++)
		usleep(20000);
	f = fopen(portf, "r");
	unsigned port = 0;
	if (!f || fscanf(f, "%u", &port) != 1) {
		fprintf(stderr, "bench_http: the service did not start\n");
		kill(pid, SIGKILL);
		return 1;
	}
	fclose(f);
	snprintf(url, sizeof url, "https://localhost:%u", port);
	char ca[300], crt[300], key[300];
	snprintf(ca, sizeof ca, "%s/pki/ca.crt", dir);
	snprintf(crt, sizeof crt, "%s/pki/client.crt", dir);
	snprintf(key, sizeof key, "%s/pki/client.key", dir);
	struct httpc_opts o = {.base_url = url, .ca_file = ca, .cert_file = crt, .key_file = key};
	struct httpc *c;
	if (httpc_new(&c, &o) != 0)
		return 1;
	double *t = calloc((size_t)n, sizeof *t);
	struct httpc_resp r;
	static const size_t sizes[] = {0, 1024, 65536};
	char *body = malloc(65536 + 64);
	for (size_t k = 0; k < 3; k++) {
		size_t len = sizes[k];
		if (len) {
			/* {"event":"x","data":"aaaa..."} of about len bytes */
			int h = snprintf(body, 64, "{\"event\": \"x\", \"data\": \"");
			memset(body + h, 'a', len - (size_t)h - 2);
			memcpy(body + len - 2, "\"}", 2);
		}
		for (int i = -50; i < n; i++) { /* 50 warm-up requests */
			double t0 = bench_now_us();
			int rc = len ? httpc_request(c, "POST", "/v1/feeds/bench/events", NULL, "application/json", body, len, &r)
				     : httpc_request(c, "GET", "/healthz", NULL, NULL, NULL, 0, &r);
			if (rc != 0 || (r.status != 200 && r.status != 201)) {
				fprintf(stderr, "bench_http: request failed: %d %ld %s\n", rc, r.status, r.body);
				return 1;
			}
			if (i >= 0)
				t[i] = bench_now_us() - t0;
			httpc_resp_free(&r);
		}
		char what[64];
		if (len)
			snprintf(what, sizeof what, "mTLS POST %zu KiB, persistent connection", len / 1024);
		else
			snprintf(what, sizeof what, "mTLS GET /healthz, persistent connection");
		report(what, t, n);
	}
	httpc_free(c);
	free(body);
	free(t);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}
