/* clientio: the client input and output protocols on N in-process parties (threads, hub,
 * dealer) and a client, with an in-test gateway that relays every message and, when a
 * test asks, alters one on the way (a cheating party or gateway).
 *   - a prompt goes in, the parties compute on it (a Beaver product, reversal) and the
 *     tokens come out equal, at N = 2, 3, 5, with the exact rounds and bytes of
 *     docs/PROTOCOL.md and the exact message sizes;
 *   - randomised attacks (2000 trials at N = 3, 400 at N = 2 and at N = 5): a party lies about
 *     a mask share (also with a receipt made consistent with the lie, and a coalition
 *     of N-1 liars), about its receipt or an output part, or its sealed message is
 *     altered, truncated, replayed from another generation or sealed to another key,
 *     or the gateway alters the INPUT for one party, or one bit of one party-to-party
 *     message flips. Every trial is detected by the client or the parties, and no wrong
 *     value is ever released to the client;
 *   - messages sealed to another key, truncated, repeated, out of order or of another
 *     generation are refused, on both sides;
 *   - the gateway's view (every relayed byte) has the same sizes and, bit by bit, the
 *     same distribution for different prompts (two-sample test, which does flag a
 *     deliberate leak). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "clientio/clientio.h"
#include "clientio/clientio_int.h"
#include "err/err.h"
#include "log/log.h"
#include "test_mpc_harness.h"
#include "testutil.h"

#define MAXOUT 16
#define MAXIN 16

/* ---------------------------------------------------------------- keys */

struct keys {
	uint8_t client_pk[CIO_KEY_BYTES], client_sk[CIO_KEY_BYTES];
	uint8_t other_pk[CIO_KEY_BYTES], other_sk[CIO_KEY_BYTES]; /* a stranger's key */
	uint8_t party_pk[MPC_MAX_PARTIES][CIO_KEY_BYTES];
	uint8_t party_sk[MPC_MAX_PARTIES][CIO_KEY_BYTES];
	uint8_t session[CIO_ID_BYTES];
};

static void keys_make(struct keys *k)
{
	ck_assert_int_eq(cio_keypair(k->client_pk, k->client_sk), 0);
	ck_assert_int_eq(cio_keypair(k->other_pk, k->other_sk), 0);
	for (unsigned i = 0; i < MPC_MAX_PARTIES; i++)
		ck_assert_int_eq(cio_keypair(k->party_pk[i], k->party_sk[i]), 0);
	randombytes_buf(k->session, sizeof k->session);
}

/* ---------------------------------------------------------------- the gateway */

struct blob {
	uint8_t *b;
	size_t n;
};

/* every message of one generation, as relayed */
struct rec {
	struct blob masks[MPC_MAX_PARTIES], receipt[MPC_MAX_PARTIES], input;
	struct blob out[MPC_MAX_PARTIES][MAXOUT];
};

static void rec_free(struct rec *r)
{
	for (unsigned i = 0; i < MPC_MAX_PARTIES; i++) {
		free(r->masks[i].b);
		free(r->receipt[i].b);
		for (unsigned t = 0; t < MAXOUT; t++)
			free(r->out[i][t].b);
	}
	free(r->input.b);
	memset(r, 0, sizeof *r);
}

enum attack {
	ATT_NONE,
	ATT_MASK,       /* a party adds delta to one of its mask shares */
	ATT_MASK_ADAPT, /* ... and makes its receipt agree with the lie */
	ATT_COALITION,  /* N-1 parties do so together */
	ATT_RECEIPT,    /* a party changes one check value of its receipt */
	ATT_DIGEST,     /* a party acknowledges another INPUT */
	ATT_OUTPUT,     /* a party changes its part of one output */
	ATT_WIRE_FLIP,  /* one bit of one of a party's sealed messages flips */
	ATT_WIRE_TRUNC, /* ... or the message is cut short */
	ATT_WIRE_REPLAY, /* ... or replaced by its twin of an earlier generation */
	ATT_OTHER_KEY,  /* a party seals to another client key */
	ATT_INPUT_FLIP, /* the gateway flips a bit of the INPUT it gives one party */
	ATT_TRANSPORT,  /* one bit of one party-to-party message flips */
	ATT_COUNT
};

static const char *const att_name[ATT_COUNT] = {
    "none",      "mask",      "mask+receipt", "coalition", "receipt",    "digest",  "output",
    "wire-flip", "truncated", "replayed",     "other-key", "input-flip", "transport"};

enum wire_kind { W_MASKS, W_RECEIPT, W_OUTPUT };

struct run {
	/* the generation */
	unsigned n;
	uint32_t n_in, n_out, chunk;
	uint64_t prompt[MAXIN];
	uint8_t generation[CIO_ID_BYTES];
	const struct keys *k;
	/* the attack */
	enum attack att;
	unsigned bad;
	uint64_t idx, delta, bit;
	enum wire_kind wk;
	uint32_t wt;          /* output position of a wire attack */
	size_t cut;           /* bytes cut off */
	const struct rec *old; /* an earlier generation (replay) */
	uint64_t cidx[MPC_MAX_PARTIES], cdelta[MPC_MAX_PARTIES]; /* coalition */
	bool check_before_output; /* cost test: empty the check log before outputs */
	/* the gateway */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct cio_client *cl;
	bool input_ready, stop, timeout;
	struct rec rec;
	int client_rc;
	char why[CIO_WHY_BYTES];
	uint64_t taken[MAXOUT];
	size_t ntaken;
	/* per party, measured in the party threads */
	struct mpc_stats st[MPC_MAX_PARTIES][5]; /* before masks, after masks, after input,
						    before outputs, after outputs */
};

static void client_fail(struct run *r, int rc)
{
	if (r->client_rc)
		return;
	r->client_rc = rc;
	const char *w = cio_client_why(r->cl);
	snprintf(r->why, sizeof r->why, "%s", w ? w : "?");
	r->stop = true;
	pthread_cond_broadcast(&r->cv);
}

/* The client's side of the gateway: it sees each message as it arrives. Called with the
 * lock held. */
static void client_feed(struct run *r, const struct blob *m)
{
	if (r->client_rc)
		return; /* the client aborted the generation at its first refusal */
	int rc = cio_client_feed(r->cl, m->b, m->n);
	if (rc != 0) {
		client_fail(r, rc);
		return;
	}
	struct cio_client_status st;
	cio_client_status(r->cl, &st);
	if (st.masks == r->n && !st.input_made) {
		rc = cio_client_input(r->cl, r->prompt, r->n_in, &r->rec.input.b, &r->rec.input.n);
		if (rc != 0) {
			client_fail(r, rc);
			return;
		}
		r->input_ready = true;
		pthread_cond_broadcast(&r->cv);
	}
	size_t got = 0;
	if ((rc = cio_client_take(r->cl, r->taken + r->ntaken, MAXOUT - r->ntaken, &got)) != 0)
		client_fail(r, rc);
	r->ntaken += got;
}

/* A party hands a message to the gateway (which owns it from now on); a wire attack
 * alters it on the way. */
static void gw_post(struct run *r, unsigned from, enum wire_kind wk, uint32_t t, uint8_t *b,
		    size_t n)
{
	pthread_mutex_lock(&r->mu);
	struct blob m = {b, n}, *slot = wk == W_MASKS     ? &r->rec.masks[from]
					: wk == W_RECEIPT ? &r->rec.receipt[from]
							  : &r->rec.out[from][t];
	bool target = from == r->bad && wk == r->wk && (wk != W_OUTPUT || t == r->wt);
	if (target && r->att == ATT_WIRE_FLIP) {
		m.b[(r->bit / 8) % m.n] ^= (uint8_t)(1u << (r->bit % 8));
	} else if (target && r->att == ATT_WIRE_TRUNC) {
		m.n -= r->cut % m.n + 1;
	} else if (target && r->att == ATT_WIRE_REPLAY) {
		const struct blob *o = wk == W_MASKS     ? &r->old->masks[from]
				       : wk == W_RECEIPT ? &r->old->receipt[from]
							 : &r->old->out[from][t];
		uint8_t *nb = malloc(o->n);
		if (nb) {
			memcpy(nb, o->b, o->n);
			free(m.b);
			m.b = nb;
			m.n = o->n;
		}
	}
	*slot = m;
	client_feed(r, slot);
	pthread_mutex_unlock(&r->mu);
}

static void party_stop(struct run *r, struct mpch_party *pp)
{
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	mpc_net_abort(pp->net);
}

static int inject(struct run *r, unsigned id, struct cio_party *cp)
{
	int rc = 0;
	bool bad = id == r->bad;
	switch (r->att) {
	case ATT_MASK:
		rc = bad ? cio_party_inject(cp, CIO_FAULT_MASK, r->idx, r->delta) : 0;
		break;
	case ATT_MASK_ADAPT:
		rc = bad ? cio_party_inject(cp, CIO_FAULT_MASK_ADAPT, r->idx, r->delta) : 0;
		break;
	case ATT_COALITION: /* everybody but party `bad`, the one honest party */
		rc = !bad ? cio_party_inject(cp, CIO_FAULT_MASK_ADAPT, r->cidx[id], r->cdelta[id])
			  : 0;
		break;
	case ATT_RECEIPT:
		rc = bad ? cio_party_inject(cp, CIO_FAULT_RECEIPT, r->idx % CIO_CHECKS, r->delta) : 0;
		break;
	case ATT_DIGEST:
		rc = bad ? cio_party_inject(cp, CIO_FAULT_RECEIPT, CIO_CHECKS, r->delta) : 0;
		break;
	case ATT_OUTPUT:
		rc = bad ? cio_party_inject(cp, CIO_FAULT_OUTPUT, r->wt, r->delta) : 0;
		break;
	default:
		break;
	}
	return rc;
}

/* One party: masks, input, a computation on the prompt, outputs. The computation:
 * y[t] = x[n_in - 1 - t mod n_in] * [1] (a Beaver product), or the constant 1000 + t
 * when there is no prompt. */
static int party_prog(struct mpch_party *pp, void *arg)
{
	struct run *r = arg;
	struct cio_party *cp = NULL;
	uint8_t *msg = NULL, *in = NULL;
	size_t len = 0, in_len = 0;
	mpc_share x[MAXIN], y[MAXOUT], xr[MAXOUT], one[MAXOUT];
	struct cio_party_params prm = {.n_in = r->n_in, .n_out = r->n_out};
	memcpy(prm.session, r->k->session, CIO_ID_BYTES);
	memcpy(prm.generation, r->generation, CIO_ID_BYTES);
	memcpy(prm.client_pk,
	       r->att == ATT_OTHER_KEY && pp->id == r->bad ? r->k->other_pk : r->k->client_pk,
	       CIO_KEY_BYTES);
	memcpy(prm.party_sk, r->k->party_sk[pp->id], CIO_KEY_BYTES);
	int rc = cio_party_new(pp->mpc, pp->net, &prm, &cp);
	if (rc != 0)
		goto out;
	if ((rc = inject(r, pp->id, cp)) != 0)
		goto out;
	mpc_get_stats(pp->mpc, &r->st[pp->id][0]);
	if ((rc = cio_party_masks(cp, &msg, &len)) != 0)
		goto out;
	mpc_get_stats(pp->mpc, &r->st[pp->id][1]);
	gw_post(r, pp->id, W_MASKS, 0, msg, len);
	msg = NULL;

	pthread_mutex_lock(&r->mu);
	while (!r->input_ready && !r->stop) {
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 30;
		if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT) {
			r->timeout = r->stop = true;
			pthread_cond_broadcast(&r->cv);
		}
	}
	if (r->input_ready && (in = malloc(r->rec.input.n)) != NULL) {
		in_len = r->rec.input.n;
		memcpy(in, r->rec.input.b, in_len);
		/* within the part every party's tag covers (a flip in another party's tag
		 * would change nothing this party reads) */
		size_t covered = in_len - (size_t)r->n * CIO_TAG_BYTES + CIO_TAG_BYTES;
		size_t at = (r->bit / 8) % covered;
		if (at >= in_len - (size_t)r->n * CIO_TAG_BYTES) /* then: this party's own tag */
			at += (size_t)pp->id * CIO_TAG_BYTES;
		if (r->att == ATT_INPUT_FLIP && pp->id == r->bad)
			in[at] ^= (uint8_t)(1u << (r->bit % 8));
	}
	pthread_mutex_unlock(&r->mu);
	if (!in) {
		rc = ERR_ABORTED; /* the client gave up on this generation */
		goto out;
	}
	if ((rc = cio_party_input(cp, in, in_len, x, &msg, &len)) != 0)
		goto out;
	mpc_get_stats(pp->mpc, &r->st[pp->id][2]);
	gw_post(r, pp->id, W_RECEIPT, 0, msg, len);
	msg = NULL;

	if (r->n_out) {
		if (r->n_in) {
			for (uint32_t t = 0; t < r->n_out; t++)
				xr[t] = x[(r->n_in - 1 - t % r->n_in) % r->n_in];
			mpc_constant(pp->mpc, one, 1, r->n_out);
			if ((rc = mpc_mul(pp->mpc, y, xr, one, r->n_out)) != 0)
				goto out;
		} else {
			for (uint32_t t = 0; t < r->n_out; t++)
				mpc_constant(pp->mpc, &y[t], 1000 + t, 1);
		}
	}
	if (r->check_before_output && (rc = mpc_check(pp->mpc)) != 0)
		goto out;
	mpc_get_stats(pp->mpc, &r->st[pp->id][3]);
	for (uint32_t t = 0; t < r->n_out; t += r->chunk) {
		uint32_t c = r->n_out - t < r->chunk ? r->n_out - t : r->chunk;
		if ((rc = cio_party_output(cp, y + t, c, &msg, &len)) != 0)
			goto out;
		gw_post(r, pp->id, W_OUTPUT, t, msg, len);
		msg = NULL;
	}
	mpc_get_stats(pp->mpc, &r->st[pp->id][4]);
out:
	if (rc != 0)
		party_stop(r, pp);
	free(in);
	free(msg);
	cio_party_free(cp);
	sodium_memzero(x, sizeof x);
	return rc;
}

/* Runs one generation; the caller reads r afterwards and calls run_done. */
static void run_gen(struct run *r, struct mpch_opts *o, struct mpch_party *pp)
{
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	if (!r->chunk)
		r->chunk = 1;
	struct cio_client_params cp = {.nparties = r->n,
				       .party_pk = r->k->party_pk,
				       .n_in = r->n_in,
				       .n_out = r->n_out};
	memcpy(cp.session, r->k->session, CIO_ID_BYTES);
	memcpy(cp.generation, r->generation, CIO_ID_BYTES);
	memcpy(cp.client_sk, r->k->client_sk, CIO_KEY_BYTES);
	ck_assert_int_eq(cio_client_new(&cp, &r->cl), 0);
	struct mpch_opts def = {.fault_party = -1, .cfg = {.prep_batch = 64}};
	ck_assert_int_eq(mpch_run(r->n, o ? o : &def, party_prog, r, pp), 0);
	ck_assert_msg(!r->timeout, "a party waited 30 s for the client");
}

static void run_done(struct run *r)
{
	cio_client_free(r->cl);
	r->cl = NULL;
	rec_free(&r->rec);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
}

static void expected(const struct run *r, uint64_t *want)
{
	for (uint32_t t = 0; t < r->n_out; t++)
		want[t] = r->n_in ? r->prompt[(r->n_in - 1 - t % r->n_in) % r->n_in] : 1000 + t;
}

static void run_init(struct run *r, const struct keys *k, unsigned n, uint32_t n_in,
		     uint32_t n_out, uint64_t *seed)
{
	memset(r, 0, sizeof *r);
	r->k = k;
	r->n = n;
	r->n_in = n_in;
	r->n_out = n_out;
	r->bad = MPC_MAX_PARTIES; /* nobody */
	for (uint32_t i = 0; i < n_in; i++)
		r->prompt[i] = mpch_rand(seed) % 512; /* token ids of tok512 */
	randombytes_buf(r->generation, sizeof r->generation);
}

/* ---------------------------------------------------------------- round trip and costs */

static void roundtrip(unsigned n, uint32_t n_in, uint32_t n_out, uint32_t chunk)
{
	struct keys k;
	struct run r;
	struct mpch_party pp[MPC_MAX_PARTIES];
	uint64_t seed = 0xC10 + n * 977 + n_in * 13 + n_out, want[MAXOUT];
	keys_make(&k);
	run_init(&r, &k, n, n_in, n_out, &seed);
	r.chunk = chunk;
	r.check_before_output = true;
	run_gen(&r, NULL, pp);
	for (unsigned i = 0; i < n; i++)
		ck_assert_msg(pp[i].rc == 0, "party %u: %s", i, err_slug(pp[i].rc));
	ck_assert_msg(r.client_rc == 0, "client refused: %s", r.why);
	ck_assert_uint_eq(r.ntaken, n_out);
	expected(&r, want);
	for (uint32_t t = 0; t < n_out; t++)
		ck_assert_uint_eq(r.taken[t], want[t]);
	struct cio_client_status st;
	cio_client_status(r.cl, &st);
	ck_assert(st.verified && !st.failed);
	ck_assert_uint_eq(st.taken, n_out);

	/* message sizes: exact, and all of one kind equal */
	for (unsigned i = 0; i < n; i++) {
		ck_assert_uint_eq(r.rec.masks[i].n, cio_masks_bytes(n_in, n_out));
		ck_assert_uint_eq(r.rec.receipt[i].n, cio_receipt_bytes());
		for (uint32_t t = 0; t < n_out; t += chunk)
			ck_assert_uint_eq(r.rec.out[i][t].n,
					  cio_output_bytes(n_out - t < chunk ? n_out - t : chunk));
	}
	ck_assert_uint_eq(r.rec.input.n, cio_input_bytes(n, n_in));

	/* the costs of docs/PROTOCOL.md, exactly, at every party */
	uint64_t N1 = n - 1, Mp = (uint64_t)n_in + n_out + CIO_CHECKS + 1;
	for (unsigned i = 0; i < n; i++) {
		struct mpc_stats *s = r.st[i];
		/* masks: N inputs, the spare's opening, the session's first MAC check */
		ck_assert_uint_eq(s[1].rounds - s[0].rounds, n + 1 + 5);
		ck_assert_uint_eq(s[1].bytes_sent - s[0].bytes_sent, 8 * Mp * N1 + 8 * N1 + 248 * N1);
		/* input: open the 64 check values, MAC check */
		ck_assert_uint_eq(s[2].rounds - s[1].rounds, 1 + 4);
		ck_assert_uint_eq(s[2].bytes_sent - s[1].bytes_sent, 8 * CIO_CHECKS * N1 + 216 * N1);
		/* outputs: per message, open the values and MAC check */
		uint64_t msgs = (n_out + chunk - 1) / chunk;
		ck_assert_uint_eq(s[4].rounds - s[3].rounds, 5 * msgs);
		ck_assert_uint_eq(s[4].bytes_sent - s[3].bytes_sent, 8 * n_out * N1 + 216 * N1 * msgs);
	}
	if (chunk == 1 && n_in == 8)
		fprintf(stderr,
			"clientio N=%u n_in=%u n_out=%u: masks %llu rounds %llu B/party, input %llu "
			"rounds %llu B/party, output %llu rounds %llu B/party per token; MASKS %zu B, "
			"INPUT %zu B, RECEIPT %zu B, OUTPUT %zu B\n",
			n, n_in, n_out, (unsigned long long)(r.st[0][1].rounds - r.st[0][0].rounds),
			(unsigned long long)(r.st[0][1].bytes_sent - r.st[0][0].bytes_sent),
			(unsigned long long)(r.st[0][2].rounds - r.st[0][1].rounds),
			(unsigned long long)(r.st[0][2].bytes_sent - r.st[0][1].bytes_sent),
			(unsigned long long)((r.st[0][4].rounds - r.st[0][3].rounds) / n_out),
			(unsigned long long)((r.st[0][4].bytes_sent - r.st[0][3].bytes_sent) / n_out),
			r.rec.masks[0].n, r.rec.input.n, r.rec.receipt[0].n, r.rec.out[0][0].n);
	run_done(&r);
}

static const unsigned nn[] = {2, 3, 5};

START_TEST(test_roundtrip)
{
	roundtrip(nn[_i], 8, 8, 1);
}
END_TEST

START_TEST(test_roundtrip_shapes)
{
	roundtrip(3, 5, 11, 4); /* several values per OUTPUT, more outputs than prompt */
	roundtrip(2, 0, 3, 1);  /* no prompt: outputs only */
	roundtrip(3, 7, 0, 1);  /* no outputs: input only */
	roundtrip(MPC_MAX_PARTIES, 3, 2, 2);
}
END_TEST

/* ---------------------------------------------------------------- randomised attacks */

static uint64_t pick_delta(uint64_t *seed)
{
	switch (mpch_rand(seed) % 5) {
	case 0:
		return 1ULL << 63; /* the error a mod-2^64 triple check misses half the time */
	case 1:
		return (1ULL << 62) * (1 + 2 * (mpch_rand(seed) % 2));
	case 2:
		return 1;
	case 3:
		return (mpch_rand(seed) | 1) << (mpch_rand(seed) % 64);
	default: {
		uint64_t d = mpch_rand(seed);
		return d ? d : 7;
	}
	}
}

struct tally {
	int trials[ATT_COUNT], by_client[ATT_COUNT], by_parties[ATT_COUNT], harmless[ATT_COUNT];
	int not_fired; /* transport flips aimed at a round where that party sends nothing */
};

static void attacks(unsigned n, int trials, uint64_t seed)
{
	struct keys k;
	struct run old, r;
	struct mpch_party pp[MPC_MAX_PARTIES];
	struct tally ty;
	const uint32_t n_in = 6, n_out = 6;
	const uint64_t m = n_in + n_out;
	uint64_t want[MAXOUT];
	memset(&ty, 0, sizeof ty);
	keys_make(&k);
	/* an honest generation of the same session and client key, whose messages the
	 * replay attack reuses; it also gives the number of engine rounds of a run */
	run_init(&old, &k, n, n_in, n_out, &seed);
	run_gen(&old, NULL, pp);
	ck_assert_int_eq(old.client_rc, 0);
	ck_assert_uint_eq(old.ntaken, n_out);
	uint64_t R = pp[0].st.rounds;

	for (int trial = 0; trial < trials; trial++) {
		run_init(&r, &k, n, n_in, n_out, &seed);
		r.old = &old.rec;
		do
			r.att = (enum attack)(1 + mpch_rand(&seed) % (ATT_COUNT - 1));
		while (r.att == ATT_COALITION && n < 3);
		r.bad = (unsigned)(mpch_rand(&seed) % n);
		r.idx = mpch_rand(&seed) % (m + CIO_CHECKS);
		r.delta = pick_delta(&seed);
		r.bit = mpch_rand(&seed);
		r.wk = (enum wire_kind)(mpch_rand(&seed) % 3);
		r.wt = (uint32_t)(mpch_rand(&seed) % n_out);
		r.cut = (size_t)mpch_rand(&seed);
		for (unsigned i = 0; i < n; i++) {
			r.cidx[i] = mpch_rand(&seed) % (m + CIO_CHECKS);
			r.cdelta[i] = pick_delta(&seed);
		}
		struct mpch_opts o = {.fault_party = -1, .cfg = {.prep_batch = 64}};
		if (r.att == ATT_TRANSPORT) {
			o.fault_party = (int)r.bad;
			o.fault_to = (unsigned)((r.bad + 1 + mpch_rand(&seed) % (n - 1)) % n);
			o.fault_round = mpch_rand(&seed) % R;
			o.fault_bit = r.bit;
		}
		run_gen(&r, &o, pp);
		expected(&r, want);
		/* nothing wrong is ever released to the client */
		for (size_t t = 0; t < r.ntaken; t++)
			ck_assert_msg(r.taken[t] == want[t], "trial %d (%s): wrong output %zu released",
				      trial, att_name[r.att], t);
		bool parties = false;
		for (unsigned i = 0; i < n; i++)
			parties |= pp[i].rc != 0 && pp[i].rc != ERR_ABORTED;
		bool client = r.client_rc != 0;
		enum attack a = r.att;
		ty.trials[a]++;
		ty.by_client[a] += client;
		ty.by_parties[a] += !client && parties;
		switch (a) {
		case ATT_MASK:
		case ATT_MASK_ADAPT:
		case ATT_COALITION:
		case ATT_RECEIPT:
		case ATT_DIGEST:
			ck_assert_msg(r.client_rc == ERR_MAC_CHECK, "trial %d (%s): client %s (%s)",
				      trial, att_name[a], err_slug(r.client_rc), r.why);
			ck_assert_uint_eq(r.ntaken, 0);
			break;
		case ATT_OUTPUT:
			ck_assert_msg(r.client_rc == ERR_MAC_CHECK, "trial %d (output): client %s",
				      trial, err_slug(r.client_rc));
			ck_assert_uint_le(r.ntaken, r.wt);
			break;
		case ATT_WIRE_FLIP:
		case ATT_WIRE_TRUNC:
		case ATT_WIRE_REPLAY:
		case ATT_OTHER_KEY:
			ck_assert_msg(r.client_rc == ERR_PROTOCOL || r.client_rc == ERR_PARSE,
				      "trial %d (%s): client %s", trial, att_name[a],
				      err_slug(r.client_rc));
			ck_assert_uint_le(r.ntaken, r.wk == W_OUTPUT && a != ATT_OTHER_KEY ? r.wt : 0);
			break;
		case ATT_INPUT_FLIP:
			/* the party refuses the INPUT, every party stops, the client gets nothing */
			ck_assert_msg(pp[r.bad].rc == ERR_PROTOCOL || pp[r.bad].rc == ERR_PARSE ||
					  pp[r.bad].rc == ERR_UNSUPPORTED,
				      "trial %d (input-flip): party %s", trial, err_slug(pp[r.bad].rc));
			ck_assert_uint_eq(r.ntaken, 0);
			break;
		case ATT_TRANSPORT:
			/* the parties' MAC check (or the transport) stops the run, or the flipped
			 * bit was one the protocol never reads (the commitment to the next toss
			 * in the last check) and everything is right; a round in which that party
			 * sends nothing (another owner's input) has nothing to flip */
			if (!parties && !client) {
				ck_assert_uint_eq(r.ntaken, n_out);
				if (pp[r.bad].fault_fired)
					ty.harmless[a]++;
				else
					ty.not_fired++;
			}
			break;
		default:
			break;
		}
		if (a != ATT_TRANSPORT)
			ck_assert_msg(client || parties, "trial %d (%s) went undetected", trial,
				      att_name[a]);
		run_done(&r);
	}
	run_done(&old);
	int total = 0, det = 0, harm = 0;
	char line[1024];
	size_t off = 0;
	for (int a = 1; a < ATT_COUNT; a++) {
		total += ty.trials[a];
		det += ty.by_client[a] + ty.by_parties[a];
		harm += ty.harmless[a];
		off += (size_t)snprintf(line + off, sizeof line - off, " %s %d/%d/%d", att_name[a],
					ty.trials[a], ty.by_client[a], ty.by_parties[a]);
	}
	fprintf(stderr,
		"clientio attacks N=%u: %d trials, %d detected, %d harmless transport flips, %d "
		"transport flips with nothing to flip, 0 wrong outputs released (trials/by "
		"client/by parties:%s)\n",
		n, total, det, harm, ty.not_fired, line);
	ck_assert_int_eq(total, trials);
	ck_assert_int_eq(det + harm + ty.not_fired, trials);
	/* every attack but the transport's is caught, every time */
	for (int a = 1; a < ATT_COUNT; a++)
		if (a != ATT_TRANSPORT)
			ck_assert_int_eq(ty.by_client[a] + ty.by_parties[a], ty.trials[a]);
}

START_TEST(test_attacks_n3_2000)
{
	attacks(3, 2000, 0xA77AC3ULL);
}
END_TEST

START_TEST(test_attacks_n2)
{
	attacks(2, 400, 0xA77AC2ULL);
}
END_TEST

START_TEST(test_attacks_n5)
{
	attacks(5, 400, 0xA77AC5ULL);
}
END_TEST

/* ---------------------------------------------------------------- refusals */

/* A finished honest generation whose messages the refusal tests replay at will. */
static void honest(struct run *r, const struct keys *k, unsigned n, uint32_t n_in,
		   uint32_t n_out, uint64_t seed)
{
	struct mpch_party pp[MPC_MAX_PARTIES];
	run_init(r, k, n, n_in, n_out, &seed);
	run_gen(r, NULL, pp);
	ck_assert_int_eq(r->client_rc, 0);
	ck_assert_uint_eq(r->ntaken, n_out);
}

static struct cio_client *client_for(const struct keys *k, const uint8_t *gen, unsigned n,
				     uint32_t n_in, uint32_t n_out, const uint8_t *sk)
{
	struct cio_client_params cp = {
	    .nparties = n, .party_pk = k->party_pk, .n_in = n_in, .n_out = n_out};
	struct cio_client *c = NULL;
	memcpy(cp.session, k->session, CIO_ID_BYTES);
	memcpy(cp.generation, gen, CIO_ID_BYTES);
	memcpy(cp.client_sk, sk ? sk : k->client_sk, CIO_KEY_BYTES);
	ck_assert_int_eq(cio_client_new(&cp, &c), 0);
	return c;
}

START_TEST(test_sealed_to_other_key)
{
	struct keys k;
	struct run r;
	keys_make(&k);
	honest(&r, &k, 3, 4, 4, 11);
	/* a client with another key cannot open any party message */
	struct cio_client *c = client_for(&k, r.generation, 3, 4, 4, k.other_sk);
	for (unsigned i = 0; i < 3; i++) {
		ck_assert_int_eq(cio_client_feed(c, r.rec.masks[i].b, r.rec.masks[i].n),
				 ERR_PROTOCOL);
		ck_assert_ptr_nonnull(strstr(cio_client_why(c), "unseal"));
		ck_assert_int_eq(cio_client_feed(c, r.rec.receipt[i].b, r.rec.receipt[i].n),
				 ERR_PROTOCOL);
		ck_assert_int_eq(cio_client_feed(c, r.rec.out[i][0].b, r.rec.out[i][0].n),
				 ERR_PROTOCOL);
	}
	cio_client_free(c);
	/* a client that believes party 1 has another sealing key refuses its messages: the
	 * tag names the party (a gateway that seals its own masks is caught the same way) */
	struct keys k2 = k;
	memcpy(k2.party_pk[1], k.other_pk, CIO_KEY_BYTES);
	c = client_for(&k2, r.generation, 3, 4, 4, NULL);
	ck_assert_int_eq(cio_client_feed(c, r.rec.masks[0].b, r.rec.masks[0].n), 0);
	ck_assert_int_eq(cio_client_feed(c, r.rec.masks[1].b, r.rec.masks[1].n), ERR_PROTOCOL);
	ck_assert_ptr_nonnull(strstr(cio_client_why(c), "tag of party 1"));
	cio_client_free(c);
	/* the parties refuse an INPUT tagged for another party key */
	struct cio_expect e = {.nparties = 3, .n_in = 4, .n_out = 4};
	memcpy(e.session, k.session, CIO_ID_BYTES);
	memcpy(e.generation, r.generation, CIO_ID_BYTES);
	uint8_t key[CIO_TAG_BYTES], pk1[CIO_KEY_BYTES];
	struct cio_hdr h;
	size_t auth;
	crypto_scalarmult_base(pk1, k.party_sk[1]);
	ck_assert_int_eq(cio_auth_key(k.party_sk[1], k.client_pk, k.client_pk, pk1, key), 0);
	ck_assert_int_eq(cio_input_verify(&e, key, 1, r.rec.input.b, r.rec.input.n, &h, &auth,
					  NULL, 0),
			 0);
	ck_assert_int_eq(cio_input_verify(&e, key, 0, r.rec.input.b, r.rec.input.n, &h, &auth,
					  NULL, 0),
			 ERR_PROTOCOL);
	ck_assert_int_eq(cio_auth_key(k.party_sk[1], k.other_pk, k.other_pk, pk1, key), 0);
	ck_assert_int_eq(cio_input_verify(&e, key, 1, r.rec.input.b, r.rec.input.n, &h, &auth,
					  NULL, 0),
			 ERR_PROTOCOL);
	run_done(&r);
}
END_TEST

START_TEST(test_truncated_refused)
{
	struct keys k;
	struct run r;
	keys_make(&k);
	honest(&r, &k, 3, 4, 4, 12);
	struct cio_client *c = client_for(&k, r.generation, 3, 4, 4, NULL);
	const struct blob *kinds[3] = {&r.rec.masks[0], &r.rec.receipt[0], &r.rec.out[0][0]};
	for (int kd = 0; kd < 3; kd++)
		for (size_t l = 0; l < kinds[kd]->n; l++) {
			int rc = cio_client_feed(c, kinds[kd]->b, l);
			ck_assert_msg(rc == ERR_PARSE || rc == ERR_PROTOCOL,
				      "kind %d cut to %zu accepted (%d)", kd, l, rc);
		}
	/* longer is refused too, and none of it changed the state */
	uint8_t *longer = malloc(r.rec.masks[0].n + 1);
	memcpy(longer, r.rec.masks[0].b, r.rec.masks[0].n);
	longer[r.rec.masks[0].n] = 0;
	ck_assert_int_ne(cio_client_feed(c, longer, r.rec.masks[0].n + 1), 0);
	free(longer);
	struct cio_client_status st;
	cio_client_status(c, &st);
	ck_assert_uint_eq(st.masks, 0);
	ck_assert(!st.failed);
	for (unsigned i = 0; i < 3; i++)
		ck_assert_int_eq(cio_client_feed(c, r.rec.masks[i].b, r.rec.masks[i].n), 0);
	cio_client_status(c, &st);
	ck_assert_uint_eq(st.masks, 3);
	cio_client_free(c);
	/* the party side refuses every truncation of the INPUT */
	struct cio_expect e = {.nparties = 3, .n_in = 4, .n_out = 4};
	memcpy(e.session, k.session, CIO_ID_BYTES);
	memcpy(e.generation, r.generation, CIO_ID_BYTES);
	uint8_t key[CIO_TAG_BYTES], pk[CIO_KEY_BYTES];
	struct cio_hdr h;
	size_t auth;
	crypto_scalarmult_base(pk, k.party_sk[2]);
	ck_assert_int_eq(cio_auth_key(k.party_sk[2], k.client_pk, k.client_pk, pk, key), 0);
	for (size_t l = 0; l < r.rec.input.n; l++)
		ck_assert_int_ne(cio_input_verify(&e, key, 2, r.rec.input.b, l, &h, &auth, NULL, 0), 0);
	ck_assert_int_eq(cio_input_verify(&e, key, 2, r.rec.input.b, r.rec.input.n, &h, &auth, NULL, 0),
			 0);
	run_done(&r);
}
END_TEST

START_TEST(test_replay_and_order_refused)
{
	struct keys k;
	struct run g1, g2;
	keys_make(&k);
	/* two generations of one session, one client key */
	honest(&g1, &k, 3, 4, 4, 21);
	honest(&g2, &k, 3, 4, 4, 22);
	struct cio_client *c = client_for(&k, g2.generation, 3, 4, 4, NULL);
	uint8_t *in = NULL;
	size_t in_len, got;
	uint64_t out[4];
	/* g1's messages in g2: refused, whatever the kind */
	for (unsigned i = 0; i < 3; i++)
		ck_assert_int_eq(cio_client_feed(c, g1.rec.masks[i].b, g1.rec.masks[i].n),
				 ERR_PROTOCOL);
	ck_assert_ptr_nonnull(strstr(cio_client_why(c), "replay"));
	/* outputs and receipts before the input: refused */
	ck_assert_int_eq(cio_client_feed(c, g2.rec.out[0][0].b, g2.rec.out[0][0].n), ERR_PROTOCOL);
	ck_assert_int_eq(cio_client_feed(c, g2.rec.receipt[0].b, g2.rec.receipt[0].n),
			 ERR_PROTOCOL);
	/* the input needs every party's masks */
	ck_assert_int_eq(cio_client_feed(c, g2.rec.masks[0].b, g2.rec.masks[0].n), 0);
	ck_assert_int_eq(cio_client_feed(c, g2.rec.masks[0].b, g2.rec.masks[0].n), ERR_PROTOCOL);
	ck_assert_int_eq(cio_client_input(c, g2.prompt, 4, &in, &in_len), ERR_INVALID);
	ck_assert_int_eq(cio_client_feed(c, g2.rec.masks[1].b, g2.rec.masks[1].n), 0);
	ck_assert_int_eq(cio_client_feed(c, g2.rec.masks[2].b, g2.rec.masks[2].n), 0);
	ck_assert_int_eq(cio_client_input(c, g2.prompt, 3, &in, &in_len), ERR_INVALID);
	ck_assert_int_eq(cio_client_input(c, g2.prompt, 4, &in, &in_len), 0);
	/* this client's INPUT differs from the one the parties acknowledged in g2 (a fresh
	 * seed), so g2's receipts, which name that other INPUT, are refused: a receipt
	 * binds the exact INPUT message */
	ck_assert_int_eq(cio_client_feed(c, g2.rec.receipt[0].b, g2.rec.receipt[0].n),
			 ERR_MAC_CHECK);
	ck_assert_ptr_nonnull(strstr(cio_client_why(c), "another INPUT"));
	ck_assert_int_eq(cio_client_feed(c, g2.rec.receipt[1].b, g2.rec.receipt[1].n),
			 ERR_ABORTED);
	ck_assert_int_eq(cio_client_take(c, out, 4, &got), ERR_ABORTED);
	free(in);
	cio_client_free(c);

	/* the party side: g1's INPUT is refused in g2 */
	struct cio_expect e = {.nparties = 3, .n_in = 4, .n_out = 4};
	memcpy(e.session, k.session, CIO_ID_BYTES);
	memcpy(e.generation, g2.generation, CIO_ID_BYTES);
	uint8_t key[CIO_TAG_BYTES], pk[CIO_KEY_BYTES];
	struct cio_hdr h;
	size_t auth;
	crypto_scalarmult_base(pk, k.party_sk[0]);
	ck_assert_int_eq(cio_auth_key(k.party_sk[0], k.client_pk, k.client_pk, pk, key), 0);
	ck_assert_int_eq(cio_input_verify(&e, key, 0, g2.rec.input.b, g2.rec.input.n, &h, &auth,
					  NULL, 0),
			 0);
	char why[CIO_WHY_BYTES];
	ck_assert_int_eq(cio_input_verify(&e, key, 0, g1.rec.input.b, g1.rec.input.n, &h, &auth,
					  why, sizeof why),
			 ERR_PROTOCOL);
	ck_assert_ptr_nonnull(strstr(why, "another session"));
	run_done(&g1);
	run_done(&g2);
}
END_TEST

/* Parties and outputs within one generation: repeats, order, agreement. The messages are
 * written by hand (header, tag, seal) so the client's rules can be driven one by one. */
static void hand_msg(const struct keys *k, const uint8_t *gen, unsigned n, uint32_t n_in,
		     uint32_t n_out, unsigned from, uint8_t type, uint64_t seq, uint32_t count,
		     const uint8_t *pre, size_t pre_len, const uint64_t *vals, struct blob *out)
{
	struct cio_hdr h = {.version = CIO_VERSION,
			    .type = type,
			    .sender = (uint8_t)from,
			    .nparties = (uint8_t)n,
			    .checks = CIO_CHECKS,
			    .count = count,
			    .n_in = n_in,
			    .n_out = n_out,
			    .seq = seq};
	memcpy(h.session, k->session, CIO_ID_BYTES);
	memcpy(h.generation, gen, CIO_ID_BYTES);
	size_t auth = CIO_HDR_BYTES + pre_len + 8 * (size_t)count;
	uint8_t *p = malloc(auth + CIO_TAG_BYTES), key[CIO_TAG_BYTES];
	cio_hdr_write(p, &h);
	if (pre_len)
		memcpy(p + CIO_HDR_BYTES, pre, pre_len);
	for (uint32_t i = 0; i < count; i++)
		ring64_store(p + CIO_HDR_BYTES + pre_len + 8 * i, vals[i]);
	ck_assert_int_eq(cio_auth_key(k->party_sk[from], k->client_pk, k->client_pk,
				      k->party_pk[from], key),
			 0);
	cio_tag(p + auth, key, p, auth);
	ck_assert_int_eq(cio_seal(p, auth + CIO_TAG_BYTES, k->client_pk, &out->b, &out->n), 0);
	free(p);
}

/* A client driven by hand-made party messages up to verified receipts: N = 2, n_in = 1,
 * n_out = 3, party 0's mask shares all 5, party 1's all 0 (so A = 5 everywhere). */
static struct cio_client *hand_client(const struct keys *k, const uint8_t *gen)
{
	const unsigned n = 2;
	const uint32_t n_in = 1, n_out = 3, cnt = n_in + n_out + CIO_CHECKS;
	uint64_t sh[2][4 + CIO_CHECKS];
	for (uint32_t i = 0; i < cnt; i++)
		sh[0][i] = 5, sh[1][i] = 0;
	struct cio_client *c = client_for(k, gen, n, n_in, n_out, NULL);
	for (unsigned p = 0; p < n; p++) {
		struct blob b;
		hand_msg(k, gen, n, n_in, n_out, p, CIO_MASKS, 0, cnt, NULL, 0, sh[p], &b);
		ck_assert_int_eq(cio_client_feed(c, b.b, b.n), 0);
		free(b.b);
	}
	uint8_t *in;
	size_t len;
	uint64_t x = 42;
	ck_assert_int_eq(cio_client_input(c, &x, 1, &in, &len), 0);
	/* the receipt the honest parties would send: L_k = sum_j chi_kj 5 + 5 */
	uint8_t digest[CIO_DIGEST_BYTES];
	crypto_generichash(digest, sizeof digest, in, len - n * CIO_TAG_BYTES, NULL, 0);
	ck_assert_uint_eq(ring64_load(in + CIO_HDR_BYTES), 42 - 5); /* x - A */
	uint64_t L[CIO_CHECKS], chi[4];
	for (uint32_t kk = 0; kk < CIO_CHECKS; kk++) {
		cio_chi(in + CIO_HDR_BYTES + 8, kk, 0, chi, 4);
		L[kk] = 5 + 5 * (chi[0] + chi[1] + chi[2] + chi[3]);
	}
	for (unsigned p = 0; p < n; p++) {
		struct blob b;
		hand_msg(k, gen, n, n_in, n_out, p, CIO_RECEIPT, 0, CIO_CHECKS, digest,
			 sizeof digest, L, &b);
		ck_assert_int_eq(cio_client_feed(c, b.b, b.n), 0);
		free(b.b);
	}
	free(in);
	struct cio_client_status st;
	cio_client_status(c, &st);
	ck_assert(st.verified);
	return c;
}

START_TEST(test_output_rules)
{
	struct keys k;
	uint8_t gen[CIO_ID_BYTES] = {7};
	keys_make(&k);
	struct cio_client *c = hand_client(&k, gen);
	struct blob b;
	uint64_t z[3] = {105, 106, 107}, out[3];
	size_t got;
	/* party 0 sends outputs 0 and 1 in one message, party 1 sends output 0 */
	hand_msg(&k, gen, 2, 1, 3, 0, CIO_OUTPUT, 0, 2, NULL, 0, z, &b);
	ck_assert_int_eq(cio_client_feed(c, b.b, b.n), 0);
	/* the same message again: a replay, refused, nothing changes */
	ck_assert_int_eq(cio_client_feed(c, b.b, b.n), ERR_PROTOCOL);
	free(b.b);
	ck_assert_int_eq(cio_client_take(c, out, 3, &got), 0);
	ck_assert_uint_eq(got, 0); /* party 1 has not sent its part */
	/* party 1 skips output 0: refused */
	hand_msg(&k, gen, 2, 1, 3, 1, CIO_OUTPUT, 1, 1, NULL, 0, z + 1, &b);
	ck_assert_int_eq(cio_client_feed(c, b.b, b.n), ERR_PROTOCOL);
	free(b.b);
	hand_msg(&k, gen, 2, 1, 3, 1, CIO_OUTPUT, 0, 1, NULL, 0, z, &b);
	ck_assert_int_eq(cio_client_feed(c, b.b, b.n), 0);
	free(b.b);
	ck_assert_int_eq(cio_client_take(c, out, 3, &got), 0);
	ck_assert_uint_eq(got, 1);
	ck_assert_uint_eq(out[0], 100); /* z - R = 105 - 5 */
	/* party 1 disagrees on output 1: the client is dead, nothing more is released */
	uint64_t lie = 999;
	hand_msg(&k, gen, 2, 1, 3, 1, CIO_OUTPUT, 1, 1, NULL, 0, &lie, &b);
	ck_assert_int_eq(cio_client_feed(c, b.b, b.n), ERR_MAC_CHECK);
	free(b.b);
	struct cio_client_status st;
	cio_client_status(c, &st);
	ck_assert(st.failed && !st.verified);
	ck_assert_int_eq(cio_client_take(c, out, 3, &got), ERR_ABORTED);
	ck_assert_uint_eq(got, 0);
	cio_client_free(c);

	/* an output past the generation's end does not even parse */
	c = hand_client(&k, gen);
	hand_msg(&k, gen, 2, 1, 3, 0, CIO_OUTPUT, 2, 2, NULL, 0, z, &b);
	ck_assert_int_eq(cio_client_feed(c, b.b, b.n), ERR_PARSE);
	free(b.b);
	/* nor one whose header claims another shape */
	hand_msg(&k, gen, 2, 1, 4, 0, CIO_OUTPUT, 0, 1, NULL, 0, z, &b);
	ck_assert_int_eq(cio_client_feed(c, b.b, b.n), ERR_PROTOCOL);
	free(b.b);
	cio_client_free(c);
}
END_TEST

/* The byte layout of docs/PROTOCOL.md, on a message the client writes. */
START_TEST(test_layout)
{
	struct keys k;
	uint8_t gen[CIO_ID_BYTES];
	for (int i = 0; i < CIO_ID_BYTES; i++)
		gen[i] = (uint8_t)(0xA0 + i);
	keys_make(&k);
	struct cio_client *c = hand_client(&k, gen);
	cio_client_free(c);
	/* rebuild the input of hand_client to look at it */
	c = client_for(&k, gen, 2, 1, 3, NULL);
	uint64_t sh[4 + CIO_CHECKS] = {0};
	for (unsigned p = 0; p < 2; p++) {
		struct blob b;
		hand_msg(&k, gen, 2, 1, 3, p, CIO_MASKS, 0, 4 + CIO_CHECKS, NULL, 0, sh, &b);
		ck_assert_int_eq(cio_client_feed(c, b.b, b.n), 0);
		free(b.b);
	}
	uint8_t *in;
	size_t len;
	uint64_t x = 0x0102030405060708ULL;
	ck_assert_int_eq(cio_client_input(c, &x, 1, &in, &len), 0);
	ck_assert_uint_eq(len, 64 + 8 + 32 + 2 * 32);
	static const uint8_t head[32] = {'M', 'C', 'I', 'O', 1, 0, CIO_INPUT, 0xFF, 2, 64, 0, 0,
					 1, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	ck_assert_mem_eq(in, head, sizeof head);
	ck_assert_mem_eq(in + 32, k.session, CIO_ID_BYTES);
	ck_assert_mem_eq(in + 48, gen, CIO_ID_BYTES);
	static const uint8_t val[8] = {8, 7, 6, 5, 4, 3, 2, 1}; /* x - A with A = 0, LE */
	ck_assert_mem_eq(in + 64, val, 8);
	struct cio_hdr h;
	size_t auth;
	ck_assert_int_eq(cio_parse(in, len, &h, &auth), 0);
	ck_assert_uint_eq(auth, 64 + 8 + 32);
	/* every other version is refused as unsupported, a changed reserved field as
	 * malformed */
	in[4] = 2;
	ck_assert_int_eq(cio_parse(in, len, &h, &auth), ERR_UNSUPPORTED);
	in[4] = 1;
	in[10] = 1;
	ck_assert_int_eq(cio_parse(in, len, &h, &auth), ERR_PARSE);
	free(in);
	cio_client_free(c);
	/* sizes */
	ck_assert_uint_eq(cio_masks_bytes(1, 3), 48 + 64 + 8 * 68 + 32);
	ck_assert_uint_eq(cio_receipt_bytes(), 48 + 64 + 32 + 8 * 64 + 32);
	ck_assert_uint_eq(cio_output_bytes(1), 48 + 64 + 8 + 32);
	ck_assert_uint_eq(cio_masks_bytes(CIO_MAX_VALUES, 0), 524944);
}
END_TEST

/* The check coefficients do not depend on how they are chunked (the parties compute
 * them in blocks of 64, the adaptive fault from the word's 8-aligned block). */
START_TEST(test_chi_chunking)
{
	uint8_t seed[CIO_SEED_BYTES];
	uint64_t a[300], b[300];
	randombytes_buf(seed, sizeof seed);
	cio_chi(seed, 5, 0, a, 300);
	for (size_t from = 0; from < 300; from += 8) {
		size_t n = 300 - from < 72 ? 300 - from : 72;
		cio_chi(seed, 5, from, b + from, n);
		ck_assert_mem_eq(a + from, b + from, n * 8);
	}
	cio_chi(seed, 6, 0, b, 300);
	ck_assert(memcmp(a, b, sizeof a) != 0); /* checks have independent rows */
	/* ChaCha20-IETF keystream: the first word is the first 8 keystream bytes */
	uint8_t ks[8], nonce[12] = {'c', 'i', 'o', '-', 'c', 'h', 'i', 0, 5, 0, 0, 0};
	crypto_stream_chacha20_ietf(ks, sizeof ks, nonce, seed);
	ck_assert_uint_eq(a[0], ring64_load(ks));
}
END_TEST

START_TEST(test_bad_arguments)
{
	struct keys k;
	keys_make(&k);
	struct cio_client_params cp = {.nparties = 3, .party_pk = k.party_pk, .n_in = 2, .n_out = 2};
	memcpy(cp.client_sk, k.client_sk, CIO_KEY_BYTES);
	struct cio_client *c = NULL;
	cp.nparties = 1;
	ck_assert_int_eq(cio_client_new(&cp, &c), ERR_INVALID);
	cp.nparties = MPC_MAX_PARTIES + 1;
	ck_assert_int_eq(cio_client_new(&cp, &c), ERR_INVALID);
	cp.nparties = 3;
	cp.n_in = cp.n_out = 0;
	ck_assert_int_eq(cio_client_new(&cp, &c), ERR_INVALID);
	cp.n_in = CIO_MAX_VALUES;
	cp.n_out = 1;
	ck_assert_int_eq(cio_client_new(&cp, &c), ERR_INVALID);
	cp.n_in = 2;
	/* a party key of low order (here the identity) is refused */
	uint8_t bad[MPC_MAX_PARTIES][CIO_KEY_BYTES];
	memcpy(bad, k.party_pk, sizeof bad);
	memset(bad[2], 0, CIO_KEY_BYTES);
	cp.party_pk = bad;
	ck_assert_int_eq(cio_client_new(&cp, &c), ERR_INVALID);
	ck_assert_ptr_null(c);
	cp.party_pk = k.party_pk;
	ck_assert_int_eq(cio_client_new(&cp, &c), 0);
	uint64_t out[2];
	size_t got = 9;
	ck_assert_int_eq(cio_client_take(c, out, 2, &got), 0);
	ck_assert_uint_eq(got, 0);
	ck_assert_int_eq(cio_client_feed(c, NULL, 0), ERR_PARSE);
	uint8_t junk[600] = {0};
	ck_assert_int_eq(cio_client_feed(c, junk, sizeof junk), ERR_PROTOCOL);
	uint8_t *big = calloc(1, cio_masks_bytes(2, 2) + 1);
	ck_assert_int_eq(cio_client_feed(c, big, cio_masks_bytes(2, 2) + 1), ERR_TOO_LARGE);
	free(big);
	cio_client_free(c);
	cio_client_free(NULL);
	cio_party_free(NULL);
}
END_TEST

/* A party refuses calls out of order and a client key of low order. */
static int misuse_prog(struct mpch_party *pp, void *arg)
{
	const struct keys *k = arg;
	struct cio_party *cp = NULL;
	struct cio_party_params prm = {.n_in = 1, .n_out = 1};
	uint8_t *msg = NULL;
	size_t len;
	mpc_share x[1], y[1] = {{0, 0}};
	memcpy(prm.party_sk, k->party_sk[pp->id], CIO_KEY_BYTES);
	/* low order */
	if (cio_party_new(pp->mpc, NULL, &prm, &cp) != ERR_INVALID || cp)
		return ERR_INTERNAL;
	prm.n_in = 0;
	prm.n_out = 0;
	memcpy(prm.client_pk, k->client_pk, CIO_KEY_BYTES);
	if (cio_party_new(pp->mpc, NULL, &prm, &cp) != ERR_INVALID)
		return ERR_INTERNAL;
	prm.n_in = prm.n_out = 1;
	if (cio_party_new(pp->mpc, NULL, &prm, &cp) != 0)
		return ERR_INTERNAL;
	int rc = ERR_INTERNAL;
	/* output before input: refused, and the object is dead from then on */
	if (cio_party_output(cp, y, 1, &msg, &len) != ERR_INVALID || !cio_party_why(cp) ||
	    cio_party_masks(cp, &msg, &len) != ERR_ABORTED ||
	    cio_party_input(cp, NULL, 0, x, &msg, &len) != ERR_ABORTED)
		goto out;
	rc = 0;
out:
	cio_party_free(cp);
	return rc;
}

START_TEST(test_party_misuse)
{
	struct keys k;
	struct mpch_party pp[MPC_MAX_PARTIES];
	keys_make(&k);
	ck_assert_int_eq(mpch_run(2, NULL, misuse_prog, &k, pp), 0);
	ck_assert_int_eq(pp[0].rc, 0);
	ck_assert_int_eq(pp[1].rc, 0);
}
END_TEST

/* ---------------------------------------------------------------- the gateway's view */

/* Everything the gateway relays in one generation, in a fixed order. */
static size_t view(const struct run *r, uint8_t *out, size_t cap, size_t *sizes, size_t *nsz)
{
	size_t off = 0, k = 0;
	const struct blob *b[64];
	size_t nb = 0;
	for (unsigned i = 0; i < r->n; i++)
		b[nb++] = &r->rec.masks[i];
	b[nb++] = &r->rec.input;
	for (unsigned i = 0; i < r->n; i++)
		b[nb++] = &r->rec.receipt[i];
	for (unsigned i = 0; i < r->n; i++)
		for (uint32_t t = 0; t < r->n_out; t++)
			b[nb++] = &r->rec.out[i][t];
	for (size_t i = 0; i < nb; i++) {
		ck_assert_uint_le(off + b[i]->n, cap);
		memcpy(out + off, b[i]->b, b[i]->n);
		off += b[i]->n;
		sizes[k++] = b[i]->n;
	}
	*nsz = k;
	return off;
}

/* For each bit position, how often it is 1 over the runs of one prompt class; two
 * classes whose counts differ by more than 6.5 sigma at some position are told apart. */
static int worst_position(const uint32_t *ones_a, const uint32_t *ones_b, size_t bits, int runs,
			  double *zmax)
{
	double sigma = sqrt(runs / 2.0); /* of the difference of two Binomial(runs, 1/2) */
	int bad = 0;
	*zmax = 0;
	for (size_t i = 0; i < bits; i++) {
		double z = fabs((double)ones_a[i] - (double)ones_b[i]) / sigma;
		if (z > *zmax)
			*zmax = z;
		bad += z > 6.5;
	}
	return bad;
}

START_TEST(test_gateway_view_independent_of_prompt)
{
	const unsigned n = 3;
	const uint32_t n_in = 4, n_out = 4;
	const int runs = 200;
	struct keys k;
	struct run r;
	struct mpch_party pp[MPC_MAX_PARTIES];
	uint64_t seed = 77;
	keys_make(&k);
	size_t cap = 32768, sizes0[64], sizes[64], nsz0 = 0, nsz, len0 = 0;
	uint8_t *buf = malloc(cap);
	/* class 0: every token 0; class 1: every token 511 (the extremes of tok512) */
	uint32_t *ones[2] = {calloc(cap * 8, 4), calloc(cap * 8, 4)};
	/* the same statistic on a deliberately leaking view (the view plus the prompt in
	 * clear), to show that the test can tell a leak */
	uint32_t leak[2][4 * 64] = {{0}};
	for (int cls = 0; cls < 2; cls++)
		for (int i = 0; i < runs; i++) {
			run_init(&r, &k, n, n_in, n_out, &seed);
			for (uint32_t t = 0; t < n_in; t++)
				r.prompt[t] = cls ? 511 : 0;
			run_gen(&r, NULL, pp);
			ck_assert_int_eq(r.client_rc, 0);
			ck_assert_uint_eq(r.ntaken, n_out);
			size_t len = view(&r, buf, cap, sizes, &nsz);
			if (!len0) {
				len0 = len;
				nsz0 = nsz;
				memcpy(sizes0, sizes, sizeof sizes);
			}
			/* the sizes never depend on the prompt */
			ck_assert_uint_eq(len, len0);
			ck_assert_uint_eq(nsz, nsz0);
			ck_assert_mem_eq(sizes, sizes0, nsz * sizeof *sizes);
			for (size_t b = 0; b < len * 8; b++)
				ones[cls][b] += (buf[b / 8] >> (b % 8)) & 1;
			for (uint32_t t = 0; t < n_in; t++)
				for (int b = 0; b < 64; b++)
					leak[cls][t * 64 + b] += (r.prompt[t] >> b) & 1;
			run_done(&r);
		}
	double z, zleak;
	int bad = worst_position(ones[0], ones[1], len0 * 8, runs, &z);
	int caught = worst_position(leak[0], leak[1], 4 * 64, runs, &zleak);
	fprintf(stderr,
		"clientio gateway view: %zu bytes in %zu messages per generation, %d runs per "
		"prompt, largest two-sample z over %zu bit positions %.2f (a clear prompt: %.1f)\n",
		len0, nsz0, runs, len0 * 8, z, zleak);
	ck_assert_msg(bad == 0, "%d bit positions of the relayed bytes depend on the prompt", bad);
	ck_assert_int_gt(caught, 0); /* the test has the power to see a leak */
	free(ones[0]);
	free(ones[1]);
	free(buf);
}
END_TEST

Suite *suite(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	Suite *s = suite_create("clientio");
	TCase *tc = tcase_create("protocol");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_roundtrip, 0, 3);
	tcase_add_test(tc, test_roundtrip_shapes);
	tcase_add_test(tc, test_sealed_to_other_key);
	tcase_add_test(tc, test_truncated_refused);
	tcase_add_test(tc, test_replay_and_order_refused);
	tcase_add_test(tc, test_output_rules);
	tcase_add_test(tc, test_layout);
	tcase_add_test(tc, test_chi_chunking);
	tcase_add_test(tc, test_bad_arguments);
	tcase_add_test(tc, test_party_misuse);
	suite_add_tcase(s, tc);
	TCase *ta = tcase_create("attacks");
	tcase_set_timeout(ta, 600);
	tcase_add_test(ta, test_attacks_n3_2000);
	tcase_add_test(ta, test_attacks_n2);
	tcase_add_test(ta, test_attacks_n5);
	tcase_add_test(ta, test_gateway_view_independent_of_prompt);
	suite_add_tcase(s, ta);
	return s;
}
