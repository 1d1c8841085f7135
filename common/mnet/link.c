/* mnet links: the sending end of a stream, one per peer for the life of a net (one
 * generation), and the stream-mode round. libcurl in connect-only mode makes the TCP
 * connection and the TLS handshake with the checks httpc makes (the Mimir CA alone, the
 * peer's certificate pinned by fingerprint and required to carry the party role, all
 * inside the handshake so nothing reaches an impostor), then curl_easy_send/recv carry
 * the Upgrade request and the payloads. Connect-only mode served without a fight: curl
 * keeps the connection for the easy handle and exposes its socket for poll().
 *
 * A round is one poll loop in the engine thread: it writes the payloads as the sockets
 * take them (non-blocking, all peers interleaved, so a large round to one slow peer
 * does not hold up the others) and reads the generation's incoming streams, which it
 * has taken over from the hub's reader (listen.c), until every peer's payload is in.
 * Each link has a lock, held while its payload is being written: an abort from another
 * thread uses a link only when it is free (else it POSTs). A link that stopped in the
 * middle of a payload is broken for good: nothing may be framed after half a payload. */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err/err.h"
#include "ident/ident.h"
#include "attestpeer/attestpeer.h"
#include "log/log.h"
#include "mnet/mnet_int.h"

struct mnet_link {
	pthread_mutex_t mu; /* held while a payload is being written */
	CURL *curl;
	curl_socket_t fd;
	bool broken;        /* failed, or stopped within a payload: no more frames */
	uint8_t fp[32];     /* the peer's pinned certificate */
	const char *ca_file;
	const char *url;
};

static pthread_once_t link_once = PTHREAD_ONCE_INIT;
static int link_idx = -1;

static void link_global(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	link_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* Inside the handshake, on the peer's leaf certificate: the one pinned for this peer,
 * with the party role. Nothing is sent to anyone else. */
static int link_verify(int ok, X509_STORE_CTX *st)
{
	if (!ok || X509_STORE_CTX_get_error_depth(st) != 0)
		return ok;
	SSL *ssl = X509_STORE_CTX_get_ex_data(st, SSL_get_ex_data_X509_STORE_CTX_idx());
	const struct mnet_link *l = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), link_idx) : NULL;
	struct ident id;
	const char *err = NULL;
	if (!l || ident_from_x509(X509_STORE_CTX_get_current_cert(st), &id) != 0)
		err = "the peer's certificate could not be read";
	else if (sodium_memcmp(id.fingerprint, l->fp, sizeof l->fp) != 0)
		err = "the peer's certificate is not the one pinned for this party";
	else if (id.role != IDENT_ROLE_PARTY)
		err = "the peer's certificate does not carry the party role";
	struct attestpeer *ap = err ? NULL : attestpeer_default();
	struct attestpeer_verdict v = {0};
	if (ap && attestpeer_check_x509(ap, X509_STORE_CTX_get_current_cert(st), NULL, &v) != 0)
		err = v.detail[0] ? v.detail : "the peer's certificate is refused (revoked or not attested)";
	else if (ap && v.simulated)
		LOG_WARN("mnet.simulated_peer", LOG_S("url", l->url), LOG_S("detail", v.detail));
	attestpeer_free(ap);
	if (!err)
		return ok;
	LOG_WARN("mnet.wrong_peer", LOG_S("url", l ? l->url : "?"), LOG_S("error", err));
	X509_STORE_CTX_set_error(st, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

static CURLcode link_ssl_ctx(CURL *curl, void *sslctx, void *arg)
{
	(void)curl;
	struct mnet_link *l = arg;
	SSL_CTX *ctx = sslctx;
	/* Trust the Mimir CA and nothing else: a fresh store replaces curl's. */
	X509_STORE *store = X509_STORE_new();
	if (!store || X509_STORE_load_file(store, l->ca_file) != 1) {
		X509_STORE_free(store);
		return CURLE_SSL_CACERT_BADFILE;
	}
	SSL_CTX_set_cert_store(ctx, store);
	SSL_CTX_set_ex_data(ctx, link_idx, l);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, link_verify);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	return CURLE_OK;
}

static long long left_ms(long long deadline)
{
	long long l = deadline - mnet_mono_ms();
	return l > 0 ? l : 0;
}

static int wait_fd(curl_socket_t fd, short events, long long deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	int r;
	do
		r = poll(&p, 1, (int)left_ms(deadline));
	while (r < 0 && errno == EINTR);
	return r > 0 ? 0 : r == 0 ? ERR_TIMEOUT : ERR_IO;
}

/* Writes all of p on one link before the deadline (link lock held). */
static int link_write(struct mnet_link *l, const uint8_t *p, size_t len, long long deadline)
{
	size_t off = 0;
	while (off < len) {
		size_t k = 0;
		CURLcode cc = curl_easy_send(l->curl, p + off, len - off, &k);
		if (cc == CURLE_OK && k > 0) {
			off += k;
			continue;
		}
		int rc = cc == CURLE_AGAIN || cc == CURLE_OK ? wait_fd(l->fd, POLLOUT, deadline) : ERR_IO;
		if (rc != 0) {
			l->broken = true;
			return rc;
		}
	}
	return 0;
}

static int link_connect(struct mnet_net *n, unsigned j, struct mnet_link *l)
{
	long long deadline = mnet_mono_ms() + n->timeout_ms;
	CURL *c = l->curl;
	char url[512];
	snprintf(url, sizeof url, "%s", n->peers[j].stream_url);
	size_t ul = strlen(url);
	while (ul && url[ul - 1] == '/')
		url[--ul] = '\0';
	bool opt = curl_easy_setopt(c, CURLOPT_URL, url) == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_CONNECT_ONLY, 1L) == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L) == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)n->timeout_ms) == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_SSLCERT, n->o.cert_file) == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_SSLKEY, n->o.key_file) == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_CAINFO, n->o.ca_file) == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, link_ssl_ctx) == CURLE_OK &&
		   curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, l) == CURLE_OK;
	if (!opt)
		return ERR_INTERNAL;
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	CURLcode cc = curl_easy_perform(c);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
	if (cc != CURLE_OK) {
		LOG_WARN("mnet.stream_connect", LOG_S("url", url),
			 LOG_S("error", errbuf[0] ? errbuf : curl_easy_strerror(cc)));
		return cc == CURLE_OPERATION_TIMEDOUT ? ERR_TIMEOUT
		       : (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CONNECT_ERROR) ? ERR_TLS
		       : ERR_IO;
	}
	if (curl_easy_getinfo(c, CURLINFO_ACTIVESOCKET, &l->fd) != CURLE_OK || l->fd == CURL_SOCKET_BAD)
		return ERR_IO;

	/* The Upgrade request, then its answer (headers only; a refusal's body is read as
	 * far as it came, for the log). */
	const char *host = strstr(url, "://");
	host = host ? host + 3 : url;
	char hexs[2 * MNET_SESSION_LEN + 1], req[1024];
	sodium_bin2hex(hexs, sizeof hexs, n->session, MNET_SESSION_LEN);
	int rl = snprintf(req, sizeof req,
			  "GET %s?session=%s&generation=%" PRIu64 "&sender=%u&receiver=%u HTTP/1.1\r\n"
			  "Host: %.*s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n"
			  "User-Agent: mimir-mnet\r\n\r\n",
			  MNET_STREAM_ROUTE, hexs, n->generation, n->party, j, (int)strcspn(host, "/"), host,
			  MNET_STREAM_PROTOCOL);
	if (rl < 0 || (size_t)rl >= sizeof req)
		return ERR_INVALID;
	int rc = link_write(l, (const uint8_t *)req, (size_t)rl, deadline);
	if (rc != 0)
		return rc;
	char resp[4096];
	size_t have = 0;
	char *end = NULL;
	while (!end) {
		size_t k = 0;
		if (have == sizeof resp - 1)
			return ERR_PROTOCOL;
		cc = curl_easy_recv(c, resp + have, sizeof resp - 1 - have, &k);
		if (cc == CURLE_AGAIN) {
			if ((rc = wait_fd(l->fd, POLLIN, deadline)) != 0)
				return rc;
			continue;
		}
		if (cc != CURLE_OK || k == 0)
			return ERR_IO;
		have += k;
		resp[have] = '\0';
		end = strstr(resp, "\r\n\r\n");
	}
	int status = 0;
	if (sscanf(resp, "HTTP/1.%*1[01] %3d", &status) != 1)
		return ERR_PROTOCOL;
	if (status == 101)
		return 0;
	char detail[256];
	snprintf(detail, sizeof detail, "%s", end + 4);
	LOG_WARN("mnet.stream_refused", LOG_S("url", url), LOG_I("status", status), LOG_S("detail", detail));
	return status == 410 ? ERR_ABORTED : status == 403 ? ERR_FORBIDDEN : status == 409 ? ERR_CONFLICT
	       : status == 503 ? ERR_UNAVAILABLE : ERR_PROTOCOL;
}

int mnet_links_open(struct mnet_net *n)
{
	pthread_once(&link_once, link_global);
	for (unsigned j = 0; j < n->nparties; j++) {
		if (j == n->party || n->link[j])
			continue;
		struct mnet_link *l = calloc(1, sizeof *l);
		if (!l)
			return ERR_NOMEM;
		pthread_mutex_init(&l->mu, NULL);
		l->fd = CURL_SOCKET_BAD;
		l->ca_file = n->o.ca_file;
		l->url = n->peers[j].stream_url;
		memcpy(l->fp, n->peers[j].fingerprint, sizeof l->fp);
		/* Published locked: an abort from another thread meanwhile POSTs instead. */
		pthread_mutex_lock(&l->mu);
		__atomic_store_n(&n->link[j], l, __ATOMIC_RELEASE);
		int rc = (l->curl = curl_easy_init()) ? link_connect(n, j, l) : ERR_NOMEM;
		l->broken = rc != 0;
		pthread_mutex_unlock(&l->mu);
		if (rc != 0)
			return rc;
	}
	n->links_open = true;
	return 0;
}

int mnet_stream_exchange(struct mnet_net *n, uint8_t *const recv[], const size_t recv_len[], char *why,
			 size_t cap)
{
	struct mnet_hub *h = n->hub;
	struct chan *c = n->chan;
	long long deadline = mnet_mono_ms() + n->timeout_ms;
	size_t off[MPC_MAX_PARTIES] = {0};
	bool pending[MPC_MAX_PARTIES] = {false}, blocked[MPC_MAX_PARTIES] = {false};
	unsigned npending = 0;
	int rc = 0;
	for (unsigned j = 0; j < n->nparties; j++) {
		if (j == n->party)
			continue;
		pthread_mutex_lock(&n->link[j]->mu);
		if (n->link[j]->broken)
			rc = ERR_IO;
		pending[j] = true;
		npending++;
	}
	pthread_mutex_lock(&h->mu);
	c->in_exchange = true;
	mnet_streams_borrow(h, c);
	pthread_mutex_unlock(&h->mu);

	/* One loop sends what the sockets take and reads what the peers sent: a party
	 * that only wrote could block on a peer that only writes to it. */
	bool received = false;
	while (rc == 0) {
		for (unsigned j = 0; j < n->nparties && rc == 0; j++) {
			struct mnet_link *l = n->link[j];
			blocked[j] = false;
			while (pending[j] && !blocked[j] && rc == 0) {
				size_t k = 0;
				CURLcode cc = curl_easy_send(l->curl, n->out[j].data + off[j], n->out[j].len - off[j], &k);
				if (cc == CURLE_OK && k == 0) {
					blocked[j] = true; /* nothing taken: wait for the socket */
				} else if (cc == CURLE_OK) {
					if ((off[j] += k) == n->out[j].len) {
						/* Sent: an abort from another thread may use the link now. */
						pending[j] = false, npending--;
						pthread_mutex_unlock(&l->mu);
					}
				} else if (cc == CURLE_AGAIN) {
					blocked[j] = true;
				} else {
					LOG_WARN("mnet.stream_send_failed", LOG_S("url", l->url),
						 LOG_S("error", curl_easy_strerror(cc)));
					l->broken = true;
					rc = ERR_IO;
				}
			}
		}
		if (rc != 0)
			break;
		struct pollfd pf[2 * MPC_MAX_PARTIES + 1];
		struct mnet_stream *who[MPC_MAX_PARTIES];
		bool now = false;
		pthread_mutex_lock(&h->mu);
		if (!received) {
			int taken = mnet_take_round(n, recv, recv_len, why, cap);
			if (taken < 0) {
				rc = taken;
				pthread_mutex_unlock(&h->mu);
				break;
			}
			received = taken == 0;
		}
		if (received && !npending) {
			pthread_mutex_unlock(&h->mu);
			break;
		}
		unsigned ns = mnet_streams_poll(c, pf, who, &now);
		c->polling = !now;
		pthread_mutex_unlock(&h->mu);
		if (now) {
			for (unsigned i = 0; i < ns; i++)
				mnet_stream_engine_pump(h, who[i]);
			continue;
		}
		unsigned np = ns;
		pf[np++] = (struct pollfd){.fd = c->evfd, .events = POLLIN};
		for (unsigned j = 0; j < n->nparties; j++)
			if (pending[j] && blocked[j])
				pf[np++] = (struct pollfd){.fd = n->link[j]->fd, .events = POLLOUT};
		long long left = left_ms(deadline);
		int r = left ? poll(pf, np, (int)left) : 0;
		pthread_mutex_lock(&h->mu);
		c->polling = false;
		pthread_mutex_unlock(&h->mu);
		if (r < 0 && errno != EINTR) {
			rc = ERR_IO;
			break;
		}
		if (r == 0) {
			rc = ERR_TIMEOUT;
			break;
		}
		if (pf[ns].revents) {
			uint64_t v;
			ssize_t rd = read(c->evfd, &v, sizeof v);
			(void)rd;
		}
		for (unsigned i = 0; i < ns; i++)
			if (pf[i].revents) {
				mnet_stream_mark_ready(who[i]);
				mnet_stream_engine_pump(h, who[i]);
			}
	}

	pthread_mutex_lock(&h->mu);
	c->in_exchange = false;
	if (rc == ERR_TIMEOUT) {
		unsigned j = 0;
		while (j < n->nparties && (j == n->party || c->head[j]))
			j++;
		if (received)
			snprintf(why, cap, "could not send this round within %u ms", n->timeout_ms);
		else
			snprintf(why, cap, "no payload from party %u within %u ms", j, n->timeout_ms);
		mnet_chan_abort(c, why);
	} else if (rc == ERR_IO && c->aborted && !why[0]) {
		/* The peer closed because the generation is over there: that is the news. */
		rc = ERR_ABORTED;
		snprintf(why, cap, "%s", c->why);
	}
	pthread_mutex_unlock(&h->mu);
	for (unsigned j = 0; j < n->nparties; j++) {
		if (!pending[j])
			continue;
		if (off[j] > 0)
			n->link[j]->broken = true; /* half a payload: nothing may follow */
		pthread_mutex_unlock(&n->link[j]->mu);
	}
	return rc;
}

void mnet_links_abort(struct mnet_net *n, bool reached[MPC_MAX_PARTIES])
{
	for (unsigned j = 0; j < n->nparties; j++) {
		struct mnet_link *l = __atomic_load_n(&n->link[j], __ATOMIC_ACQUIRE);
		if (j == n->party || !l || pthread_mutex_trylock(&l->mu) != 0)
			continue;
		if (!l->broken && l->fd != CURL_SOCKET_BAD) {
			struct mnet_hdr hd = {.version = MNET_VERSION, .flags = MNET_FLAG_ABORT,
					      .generation = n->generation,
					      .round = __atomic_load_n(&n->round, __ATOMIC_RELAXED),
					      .sender = (uint16_t)n->party, .receiver = (uint16_t)j};
			memcpy(hd.session, n->session, MNET_SESSION_LEN);
			uint8_t hb[MNET_HDR_LEN];
			mnet_hdr_encode(&hd, hb);
			reached[j] = link_write(l, hb, sizeof hb, mnet_mono_ms() + 1000) == 0;
		}
		pthread_mutex_unlock(&l->mu);
	}
}

void mnet_links_free(struct mnet_net *n)
{
	for (unsigned j = 0; j < MPC_MAX_PARTIES; j++) {
		struct mnet_link *l = n->link[j];
		if (!l)
			continue;
		if (l->curl) {
			/* Read whatever the server sent (nothing, normally): a close with unread
			 * bytes resets the connection, and the peer could lose our last payload. */
			char sink[1024];
			size_t k;
			for (int i = 0; i < 16 && l->fd != CURL_SOCKET_BAD; i++)
				if (curl_easy_recv(l->curl, sink, sizeof sink, &k) != CURLE_OK || k == 0)
					break;
			curl_easy_cleanup(l->curl);
		}
		pthread_mutex_destroy(&l->mu);
		free(l);
		n->link[j] = NULL;
	}
}
