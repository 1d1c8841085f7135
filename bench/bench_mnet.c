/* bench_mnet: the per-round cost of the MPC transport, the figure that decides secure
 * generation throughput over the network. Three parties in threads exchange a round
 * of a given size with every peer, over the in-process hub and over mnet (mutual TLS on
 * loopback, each party with its own HTTPS server and stream listener) in both of its
 * modes: a POST per payload (request) and one upgraded mTLS connection per ordered pair
 * of parties (stream). The time per round is printed as a median (and 99th
 * percentile) over many rounds. Needs build/bin/mimir-pki for the certificates. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "http/http.h"
#include "log/log.h"
#include "mnet/mnet.h"
#include "mpc/mpc.h"

#define NP 3
#define ROUNDS 2000

static int h_round(struct http_req *r, void *ctx) { return mnet_hub_deliver(ctx, r); }
static const struct http_route routes[] = {
	{"POST", MNET_ROUTE, h_round, HTTP_ROLE(IDENT_ROLE_PARTY), MNET_HDR_LEN + MNET_MAX_DATA,
	 HTTP_ROUTE_QUIET | HTTP_ROUTE_SECRET},
	{NULL, NULL, NULL, 0, 0, 0},
};

struct party {
	struct mpc_net *net;
	unsigned id;
	size_t bytes;
	double *t;
	int rc;
};


static void *run(void *arg)
{
	struct party *p = arg;
	uint8_t *sb = calloc(1, p->bytes + 1), *rb[NP];
	const uint8_t *send[NP];
	size_t len[NP];
	for (unsigned j = 0; j < NP; j++) {
		rb[j] = malloc(p->bytes + 1);
		send[j] = sb;
		len[j] = p->bytes;
	}
	for (int i = -100; i < ROUNDS && p->rc == 0; i++) {
		double t0 = bench_now_us();
		p->rc = mpc_net_exchange(p->net, send, len, rb, len);
		if (i >= 0)
			p->t[i] = bench_now_us() - t0;
	}
	for (unsigned j = 0; j < NP; j++)
		free(rb[j]);
	free(sb);
	return NULL;
}

struct figure {
	double med, p99;
};

static struct figure measure(struct mpc_net *nets[NP], size_t bytes)
{
	struct party ps[NP];
	pthread_t th[NP];
	for (unsigned i = 0; i < NP; i++) {
		ps[i] = (struct party){.net = nets[i], .id = i, .bytes = bytes, .t = calloc(ROUNDS, sizeof(double))};
		pthread_create(&th[i], NULL, run, &ps[i]);
	}
	for (unsigned i = 0; i < NP; i++)
		pthread_join(th[i], NULL);
	struct figure f = {-1, -1};
	if (ps[0].rc == 0) {
		f.med = bench_quantile(ps[0].t, ROUNDS, 0.5);
		f.p99 = bench_quantile(ps[0].t, ROUNDS, 0.99);
	}
	for (unsigned i = 0; i < NP; i++)
		free(ps[i].t);
	return f;
}

int main(void)
{
	const char *build = getenv("MIMIR_BUILD") ? getenv("MIMIR_BUILD") : "build";
	char dir[] = "/tmp/mimir-bench-XXXXXX", cmd[1024];
	if (!mkdtemp(dir))
		return 1;
	log_set_level(getenv("BENCH_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(cmd, sizeof cmd, "%s/bin/mimir-pki dev --parties %d --out %s/pki >/dev/null", build, NP, dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "bench_mnet: mimir-pki failed\n");
		return 1;
	}
	struct http_server *srv[NP];
	struct mnet_hub *hub[NP];
	struct mnet_peer peers[NP];
	static char url[NP][64], surl[NP][64], crt[NP][300], key[NP][300], ca[300];
	snprintf(ca, sizeof ca, "%s/pki/ca.crt", dir);
	for (unsigned i = 0; i < NP; i++) {
		snprintf(crt[i], sizeof crt[i], "%s/pki/party%u.crt", dir, i);
		snprintf(key[i], sizeof key[i], "%s/pki/party%u.key", dir, i);
		struct http_server_config hc = {.service = "bench", .threads = 2, .tls_cert = crt[i],
						.tls_key = key[i], .tls_ca = ca};
		if (mnet_hub_new(0, &hub[i]) != 0 || http_server_start(&srv[i], &hc, routes, hub[i], NULL) != 0)
			return 1;
		struct mnet_listen_opts lo = {.ca_file = ca, .cert_file = crt[i], .key_file = key[i]};
		if (mnet_hub_listen(hub[i], &lo) != 0)
			return 1;
		snprintf(url[i], sizeof url[i], "https://localhost:%u", http_server_port(srv[i]));
		snprintf(surl[i], sizeof surl[i], "https://localhost:%u", mnet_hub_stream_port(hub[i]));
		peers[i].url = url[i];
		peers[i].stream_url = surl[i];
		mnet_cert_fingerprint(crt[i], peers[i].fingerprint);
	}
	printf("bench_mnet: %d parties, one round = a payload to every peer and one from each; median (p99) of %d "
	       "rounds, in us\n", NP, ROUNDS);
	printf("%-10s %18s %18s %18s %9s\n", "bytes/peer", "in-process", "mTLS request", "mTLS stream",
	       "req/str");
	static const size_t sizes[] = {8, 1024, 16384, 131072};
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		struct figure f[3];
		for (int m = 0; m < 3; m++) {
			struct mpc_net *nets[NP];
			struct mpc_hub *lh = NULL;
			uint8_t sid[MNET_SESSION_LEN] = {(uint8_t)k, (uint8_t)m};
			if (m == 0 && mpc_hub_new(NP, 10000, &lh) != 0)
				return 1;
			for (unsigned i = 0; i < NP; i++) {
				struct mnet_opts o = {.ca_file = ca, .cert_file = crt[i], .key_file = key[i],
						      .timeout_ms = 10000,
						      .mode = m == 1 ? MNET_MODE_REQUEST : MNET_MODE_STREAM};
				if (m == 0 ? mpc_net_local_new(lh, i, &nets[i]) != 0
					   : mnet_net_new(hub[i], sid, 1, i, NP, peers, &o, &nets[i]) != 0)
					return 1;
			}
			f[m] = measure(nets, sizes[k]);
			for (unsigned i = 0; i < NP; i++)
				mpc_net_free(nets[i]);
			mpc_hub_free(lh);
		}
		char col[3][32];
		for (int m = 0; m < 3; m++)
			snprintf(col[m], sizeof col[m], "%.1f (%.0f)", f[m].med, f[m].p99);
		printf("%-10zu %18s %18s %18s %9.1f\n", sizes[k], col[0], col[1], col[2],
		       f[2].med > 0 ? f[1].med / f[2].med : 0);
	}
	for (unsigned i = 0; i < NP; i++) {
		http_server_free(srv[i]);
		mnet_hub_free(hub[i]);
	}
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}
