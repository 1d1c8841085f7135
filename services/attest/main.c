/* mimir-attest: configuration, route table, metrics and lifecycle (load the CA, the
 * policy, the vendor roots and the revocations before the server starts); the handlers
 * live beside it. The challenge, attestation and CRL routes are public: the server runs
 * with optional client certificates (docs/ATTESTATION.md, "Service", says why), and
 * every other route, the built-in ones included, still needs a Mimir certificate. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "attestd.h"
#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "svc/svc.h"
#include "tool.h"

struct attestd_settings attestd_settings = {
	.roots_dir = ATTEST_ROOTS_DEFAULT_DIR,
	.roots_pinned = true,
	.cert_lifetime_s = 3600,
	.cert_backdate_s = 300,
	.nonce_lifetime_s = 120,
	.nonce_max = 4096,
	.nonce_per_address = 8,
	.challenge_rate = 2,
	.challenge_burst = 20,
	.challenge_track = 4096,
	.crl_validity_s = 3600,
	.track_max = 65536,
};

static const struct jspec_field config_spec[] = {
	JSPEC_STR("ca.cert", true, 1, 4096, &attestd_settings.ca_cert),
	JSPEC_STR("ca.key", true, 1, 4096, &attestd_settings.ca_key),
	JSPEC_STR("policy.file", true, 1, 4096, &attestd_settings.policy_file),
	JSPEC_STR("roots.dir", false, 1, 4096, &attestd_settings.roots_dir),
	JSPEC_BOOLEAN("roots.pinned", false, &attestd_settings.roots_pinned),
	JSPEC_I64("cert.lifetime_s", false, 60, 7 * 86400, &attestd_settings.cert_lifetime_s),
	JSPEC_I64("cert.backdate_s", false, 0, 3600, &attestd_settings.cert_backdate_s),
	JSPEC_I64("nonce.lifetime_s", false, 1, 3600, &attestd_settings.nonce_lifetime_s),
	JSPEC_I64("nonce.max_outstanding", false, 1, 1000000, &attestd_settings.nonce_max),
	JSPEC_I64("nonce.max_per_address", false, 0, 1000000, &attestd_settings.nonce_per_address),
	JSPEC_DBL("challenge.rate_per_s", false, 0, 100000, &attestd_settings.challenge_rate),
	JSPEC_DBL("challenge.burst", false, 1, 1000000, &attestd_settings.challenge_burst),
	JSPEC_I64("challenge.track_max", false, 1, 10000000, &attestd_settings.challenge_track),
	JSPEC_I64("crl.validity_s", false, 60, 7 * 86400, &attestd_settings.crl_validity_s),
	JSPEC_STR("revocations.file", false, 1, 4096, &attestd_settings.revocations_file),
	JSPEC_I64("issued.track_max", false, 1, 10000000, &attestd_settings.track_max),
	JSPEC_I64("testing.verify_time", false, 0, INFINITY, &attestd_settings.verify_time),
	JSPEC_END_F,
};

static const struct http_route routes[] = {
	{"POST", "/v1/challenge", attestd_challenge, 0, 1024, HTTP_ROUTE_PUBLIC},
	{"POST", "/v1/attestations", attestd_attestation, 0, JSPEC_MAX_BODY, HTTP_ROUTE_PUBLIC},
	{"GET", "/v1/crl", attestd_crl, 0, 0, HTTP_ROUTE_PUBLIC},
	{"POST", "/v1/revocations", attestd_revoke, HTTP_ROLE(IDENT_ROLE_ADMIN), 4096, 0},
	{NULL, NULL, NULL, 0, 0, 0},
};

int64_t attestd_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int64_t attestd_verify_time(const struct attestd_ctx *c)
{
	if (!c->set.verify_time)
		return attestd_now_ms() / 1000;
	char at[32];
	attestd_rfc3339(c->set.verify_time, at, sizeof at);
	LOG_WARN("attest.fixed_verify_time", LOG_S("verify_time", at),
		 LOG_S("detail", "testing.verify_time is set: evidence is verified at a fixed time, "
				 "not now (tests only)"));
	return c->set.verify_time;
}

void attestd_rfc3339(int64_t t, char *buf, size_t cap)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (!gmtime_r(&tt, &tm) || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, cap, "%lld", (long long)t);
}

static double m_nonces(void *arg)
{
	return (double)attestd_nonces_live(((struct attestd_ctx *)arg)->nonces, attestd_now_ms());
}

static double m_crl_entries(void *arg)
{
	return (double)attestd_revocations_count(((struct attestd_ctx *)arg)->revs, attestd_now_ms() / 1000);
}

static double m_ca_expiry(void *arg)
{
	return (double)attestd_ca_not_after(((struct attestd_ctx *)arg)->ca);
}

static int init_metrics(struct attestd_ctx *c, struct metrics *m)
{
	static const char *const attest_labels[] = {"platform", "result", "reason", NULL};
	static const char *const issued_labels[] = {"role", "platform", NULL};
	static const char *const platform_label[] = {"platform", NULL};
	static const char *const result_label[] = {"result", NULL};
	static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
	c->m_attest = metrics_counter(m, "mimir_attest_attestations_total",
				      "Attestation requests answered, by platform, result (accepted, rejected) "
				      "and reason (the failed check, or none).",
				      attest_labels);
	c->m_issued = metrics_counter(m, "mimir_attest_certificates_issued_total",
				      "Certificates issued after a successful attestation, by role and platform.",
				      issued_labels);
	c->m_verify = metrics_histogram(m, "mimir_attest_verify_duration_seconds",
					"Time to verify one piece of evidence, by platform.", platform_label,
					bounds, sizeof bounds / sizeof bounds[0]);
	c->m_challenges = metrics_counter(m, "mimir_attest_challenges_total",
					  "Nonces asked for, by result (issued; refused: table full; rate_limited: "
					  "the address's rate; address_quota: the address's live nonces).",
					  result_label);
	c->m_revoked = metric_series(metrics_counter(m, "mimir_attest_revocations_total",
						     "Certificates revoked by an administrator.", NULL),
				     NULL);
	metrics_gauge_fn(m, "mimir_attest_nonces_outstanding", "Nonces issued and not yet used or expired.",
			 m_nonces, c);
	metrics_gauge_fn(m, "mimir_attest_crl_entries", "Revoked certificates not yet expired (CRL entries).",
			 m_crl_entries, c);
	metrics_gauge_fn(m, "mimir_attest_ca_not_after_timestamp_seconds",
			 "When the issuing CA certificate expires (unix seconds).", m_ca_expiry, c);
	/* Every platform and result appears from the start, so dashboards and alerts need
	 * no first event. */
	for (const char *const *p = (const char *const[]){"simulated", "sev-snp", "tdx", "nitro", NULL}; *p; p++) {
		metric_series(c->m_attest, METRIC_LABELS(*p, "accepted", "none"));
		metric_series(c->m_verify, METRIC_LABELS(*p));
	}
	metric_series(c->m_challenges, METRIC_LABELS("issued"));
	metric_series(c->m_challenges, METRIC_LABELS("refused"));
	metric_series(c->m_challenges, METRIC_LABELS("rate_limited"));
	metric_series(c->m_challenges, METRIC_LABELS("address_quota"));
	return c->m_attest && c->m_issued && c->m_verify && c->m_challenges && c->m_revoked ? 0 : ERR_NOMEM;
}

static void fini(void *ctx)
{
	struct attestd_ctx *c = ctx;
	if (!c)
		return;
	attestd_ca_free(c->ca);
	attest_policy_free(c->policy);
	attest_roots_free(c->roots);
	attestd_nonces_free(c->nonces);
	attestd_limiter_free(c->limiter);
	attestd_revocations_free(c->revs);
	free(c);
}

static int init(void **out, struct metrics *m)
{
	struct attestd_ctx *c = calloc(1, sizeof *c);
	if (!c)
		return ERR_NOMEM;
	c->set = attestd_settings;
	int rc;
	struct jspec_error je;
	if (sodium_init() < 0) {
		rc = ERR_CRYPTO;
		goto out;
	}
	if ((rc = attestd_ca_load(&c->ca, c->set.ca_cert, c->set.ca_key)) != 0)
		goto out;
	if ((rc = attest_policy_load(&c->policy, c->set.policy_file, &je)) != 0) {
		LOG_ERROR("attest.policy", LOG_S("path", c->set.policy_file), LOG_S("field", je.field),
			  LOG_S("error", je.detail));
		goto out;
	}
	rc = attest_roots_load_dir(&c->roots, c->set.roots_dir, c->set.roots_pinned ? ATTEST_ROOTS_PINNED : 0);
	if (rc != 0) {
		LOG_ERROR("attest.roots", LOG_S("dir", c->set.roots_dir), LOG_S("error", err_title(rc)),
			  LOG_S("hint", rc == ERR_ATTESTATION ? "a root file is not the genuine vendor root"
							      : "set roots.dir to the repository's attest/roots"));
		goto out;
	}
	if (!c->set.roots_pinned)
		LOG_WARN("attest.roots_unpinned", LOG_S("dir", c->set.roots_dir),
			 LOG_S("detail", "roots.pinned is false: the roots are not checked against the vendors'"));
	if ((rc = attestd_nonces_new(&c->nonces, (size_t)c->set.nonce_max, c->set.nonce_lifetime_s * 1000)) != 0)
		goto out;
	if ((rc = attestd_limiter_new(&c->limiter, (size_t)c->set.challenge_track, c->set.challenge_rate,
				      c->set.challenge_burst)) != 0)
		goto out;
	if ((rc = attestd_revocations_new(&c->revs, c->set.revocations_file, attestd_now_ms() / 1000,
					  (size_t)c->set.track_max)) != 0)
		goto out;
	if ((rc = init_metrics(c, m)) != 0)
		goto out;
	if (c->set.verify_time) {
		char at[32];
		attestd_rfc3339(c->set.verify_time, at, sizeof at);
		LOG_WARN("attest.fixed_verify_time", LOG_S("verify_time", at),
			 LOG_S("detail", "testing.verify_time is set: every piece of evidence is verified at "
					 "this time, not now. Tests only: never in production"));
	}
	char na[32];
	attestd_rfc3339(attestd_ca_not_after(c->ca), na, sizeof na);
	LOG_INFO("attest.ready", LOG_S("policy", c->set.policy_file), LOG_S("ca_not_after", na),
		 LOG_I("cert_lifetime_s", c->set.cert_lifetime_s), LOG_I("nonce_lifetime_s", c->set.nonce_lifetime_s));
	*out = c;
	return 0;
out:
	fini(c);
	return rc;
}

static bool ready(void *ctx, char *why, size_t cap)
{
	struct attestd_ctx *c = ctx;
	if (attestd_now_ms() / 1000 >= attestd_ca_not_after(c->ca)) {
		snprintf(why, cap, "the issuing CA certificate has expired");
		return false;
	}
	return true;
}

static const struct svc_def def = {
	.name = "attest",
	.summary = "The attestation service: verifies SEV-SNP, TDX and Nitro evidence and issues "
		   "short-lived Mimir certificates.",
	.default_port = 8445,
	.routes = routes,
	.config_spec = config_spec,
	.init = init,
	.fini = fini,
	.ready = ready,
	.tls_client_cert_optional = true,
};

int main(int argc, char **argv)
{
	/* One binary, two faces (tool.h says why): a tool command, or the service. */
	if (argc > 1 && tool_is_command(argv[1]))
		return tool_main(argc, argv);
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			tool_help(stdout);
			printf("\nThe service:\n");
			break;
		}
	return svc_main(argc, argv, &def);
}
