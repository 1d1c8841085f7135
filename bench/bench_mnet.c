/* bench_mnet: the per-round cost of the MPC transport, the figure that decides secure
 * generation throughput over the network. Three parties in threads exchange a round
 * of a given size with every peer, over the in-process hub and over mnet (mutual TLS on
 * loopback, each party with its own HTTPS server), and the time per round is printed
 * as a median over many rounds. Needs build/bin/mimir-pki for the certificates. */
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
	{"POST", MNET_ROUTE, h_round, HTTP_ROLE(IDENT_ROLE_PARTY), MNET_HDR_LEN + MNET_MAX_DATA, HTTP_ROUTE_QUIET | HTTP_ROUTE_SECRET},
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

static double measure(struct mpc_net *nets[NP], size_t bytes)
{
	struct party ps[NP];
	pthread_t th[NP];
	for (unsigned i = 0; i < NP; i++) {
		ps[i] = (struct party){.net = nets[i], .id = i, .bytes = bytes, .t = calloc(ROUNDS, sizeof(double))};
		pthread_create(&th[i], NULL, run, &ps[i]);
	}
	for (unsigned i = 0; i < NP; i++)
		pthread_join(th[i], NULL);
	double med = -1;
	if (ps[0].rc == 0) {
		med = bench_quantile(ps[0].t, ROUNDS, 0.5);
	}
	for (unsigned i = 0; i < NP; i++)
		free(ps[i].t);
	return med;
}

int main(void)
{
	const char *build = getenv("MIMIR_BUILD") ? getenv("MIMIR_BUILD") : "build";
	char dir[] = "/tmp/mimir-bench-XXXXXX", cmd[1024];
	if (!mkdtemp(dir))
		return 1;
	log_set_level(LOG_LEVEL_WARN);
	snprintf(cmd, sizeof cmd, "%s/bin/mimir-pki dev --parties %d --out %s/pki >/dev/null", build, NP, dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "bench_mnet: mimir-pki failed\n");
		return 1;
	}
	struct http_server *srv[NP];
	struct mnet_hub *hub[NP];
	struct mnet_peer peers[NP];
	static char url[NP][64], crt[NP][300], key[NP][300], ca[300];
	snprintf(ca, sizeof ca, "%s/pki/ca.crt", dir);
	for (unsigned i = 0; i < NP; i++) {
		snprintf(crt[i], sizeof crt[i], "%s/pki/party%u.crt", dir, i);
		snprintf(key[i], sizeof key[i], "%s/pki/party%u.key", dir, i);
		struct http_server_config hc = {.service = "bench", .threads = 2, .tls_cert = crt[i],
						.tls_key = key[i], .tls_ca = ca};
		if (mnet_hub_new(0, &hub[i]) != 0 || http_server_start(&srv[i], &hc, routes, hub[i], NULL) != 0)
			return 1;
		snprintf(url[i], sizeof url[i], "https://localhost:%u", http_server_port(srv[i]));
		peers[i].url = url[i];
		mnet_cert_fingerprint(crt[i], peers[i].fingerprint);
	}
	printf("bench_mnet: %d parties, one round = a payload to every peer and one from each; median of %d rounds\n",
	       NP, ROUNDS);
	printf("%-12s %14s %14s %8s\n", "bytes/peer", "in-process us", "mTLS us", "ratio");
	static const size_t sizes[] = {8, 1024, 16384, 131072};
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		struct mpc_net *local[NP], *tls[NP];
		struct mpc_hub *lh;
		uint8_t sid[MNET_SESSION_LEN] = {(uint8_t)k};
		mpc_hub_new(NP, 10000, &lh);
		for (unsigned i = 0; i < NP; i++) {
			struct mnet_opts o = {.ca_file = ca, .cert_file = crt[i], .key_file = key[i], .timeout_ms = 10000};
			if (mpc_net_local_new(lh, i, &local[i]) != 0 ||
			    mnet_net_new(hub[i], sid, 1, i, NP, peers, &o, &tls[i]) != 0)
				return 1;
		}
		double a = measure(local, sizes[k]), b = measure(tls, sizes[k]);
		printf("%-12zu %14.1f %14.1f %8.1f\n", sizes[k], a, b, a > 0 ? b / a : 0);
		for (unsigned i = 0; i < NP; i++) {
			mpc_net_free(local[i]);
			mpc_net_free(tls[i]);
		}
		mpc_hub_free(lh);
	}
	for (unsigned i = 0; i < NP; i++) {
		http_server_free(srv[i]);
		mnet_hub_free(hub[i]);
	}
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}
