/* attest policy: which verified evidence is good enough for which role. The policy is
 * one JSON file read through jspec, so a typo in a key is an error that names the key
 * rather than a silently weaker policy, and every list is bounded. A decision walks the
 * rule of the requester's role for the evidence's platform: the measurement must be
 * listed (there is no wildcard for real platforms), debug must be allowed if the guest
 * is debuggable, the TCB must reach the minimum, the evidence must be recent enough
 * and, when the caller knows what the evidence must commit to, bind it. Simulated
 * evidence passes only where a role allows it, with a warning on every use. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest_int.h"
#include "err/err.h"
#include "log/log.h"

#define POLICY_MAX_LIST 256
#define POLICY_CLOCK_SKEW 300
#define N_PLATFORMS (IDENT_PLATFORM_NITRO + 1)
#define N_ROLES (IDENT_ROLE_ADMIN + 1)

struct mlist {
	size_t n;
	uint8_t (*v)[ATTEST_MEASUREMENT_MAX];
	size_t *len;
};

struct rule {
	bool present;
	struct mlist meas, pcr1, pcr2, pcr8;
	bool debug;
	bool has_max_age;
	uint64_t max_age;
	/* SEV-SNP */
	bool has_min_tcb;
	struct attest_snp_tcb min_tcb;
	/* TDX */
	bool has_min_svn;
	uint8_t min_svn[16];
	unsigned tcb_status_mask; /* bit i: status i allowed; 0: no constraint */
};

struct attest_policy {
	struct rule rule[N_ROLES][N_PLATFORMS];
};

static const char *const tdx_statuses[] = {
	"UpToDate",	       "SWHardeningNeeded", "ConfigurationNeeded",
	"ConfigurationAndSWHardeningNeeded", "OutOfDate",	  "OutOfDateConfigurationNeeded",
	"Revoked",	       NULL};

/* "a.b" into dst, cut at cap (names are bounded by the policy's own keys). */
static void dotted(char *dst, size_t cap, const char *a, const char *b)
{
	if (snprintf(dst, cap, "%s.%s", a, b) >= (int)cap)
		dst[cap - 1] = '\0';
}

static void mlist_free(struct mlist *m)
{
	free(m->v);
	free(m->len);
	memset(m, 0, sizeof *m);
}

void attest_policy_free(struct attest_policy *p)
{
	if (!p)
		return;
	for (int r = 0; r < N_ROLES; r++)
		for (int k = 0; k < N_PLATFORMS; k++) {
			struct rule *u = &p->rule[r][k];
			mlist_free(&u->meas);
			mlist_free(&u->pcr1);
			mlist_free(&u->pcr2);
			mlist_free(&u->pcr8);
		}
	free(p);
}

static int perr(struct jspec_error *e, int code, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int perr(struct jspec_error *e, int code, const char *field, const char *fmt, ...)
{
	if (e) {
		e->code = code;
		snprintf(e->field, sizeof e->field, "%s", field);
		char what[160];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(what, sizeof what, fmt, ap);
		va_end(ap);
		snprintf(e->detail, sizeof e->detail, "%s: %s", field, what);
	}
	return code;
}

static int unhex(const char *s, uint8_t *out, size_t max, size_t *len)
{
	size_t n = strlen(s);
	if (n == 0 || n % 2 || n / 2 > max)
		return ERR_RANGE;
	for (size_t i = 0; i < n / 2; i++) {
		int v = 0;
		for (int k = 0; k < 2; k++) {
			char c = s[2 * i + k];
			int d = c >= '0' && c <= '9'   ? c - '0'
				: c >= 'a' && c <= 'f' ? c - 'a' + 10
				: c >= 'A' && c <= 'F' ? c - 'A' + 10
						       : -1;
			if (d < 0)
				return ERR_PARSE;
			v = v * 16 + d;
		}
		out[i] = (uint8_t)v;
	}
	*len = n / 2;
	return 0;
}

/* A JSON array of hex strings of exactly want bytes (any length 1..48 when want is 0). */
static int read_list(json_t *arr, size_t want, const char *field, struct mlist *m,
		     struct jspec_error *e)
{
	size_t n = json_array_size(arr);
	if (n > POLICY_MAX_LIST)
		return perr(e, ERR_RANGE, field, "at most 256 entries");
	m->v = calloc(n ? n : 1, sizeof *m->v);
	m->len = calloc(n ? n : 1, sizeof *m->len);
	if (!m->v || !m->len)
		return ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(arr, i));
		if (!s)
			return perr(e, ERR_TYPE, field, "entries must be hex strings");
		int rc = unhex(s, m->v[i], ATTEST_MEASUREMENT_MAX, &m->len[i]);
		if (rc != 0 || (want && m->len[i] != want))
			return perr(e, rc == ERR_PARSE ? ERR_PARSE : ERR_RANGE, field,
				    want ? "entries must be 48 bytes of hex"
					 : "entries must be 1 to 48 bytes of hex");
		m->n++;
	}
	return 0;
}

static int parse_rule(json_t *obj, enum ident_platform plat, const char *prefix,
		      struct rule *u, struct jspec_error *e)
{
	json_t *meas = NULL, *pcr1 = NULL, *pcr2 = NULL, *pcr8 = NULL, *statuses = NULL;
	bool has_meas = false, has_p1 = false, has_p2 = false, has_p8 = false, has_st = false;
	uint64_t bl = 0, tee = 0, snp = 0, mc = 0;
	struct jspec_bytes svn = {0};
	bool has_bl = false, has_tee = false, has_snp = false, has_mc = false;
	bool real = plat != IDENT_PLATFORM_SIMULATED;
	struct jspec_field spec[16];
	size_t k = 0;
	spec[k++] = (struct jspec_field)JSPEC_ARR("measurements", real, real ? 1 : 0,
						  POLICY_MAX_LIST, &meas, .present = &has_meas);
	spec[k++] = (struct jspec_field)JSPEC_BOOLEAN("debug", false, &u->debug);
	spec[k++] = (struct jspec_field)JSPEC_U64("max_age_seconds", false, 1, 31536000, &u->max_age,
						  .present = &u->has_max_age);
	if (plat == IDENT_PLATFORM_SEV_SNP) {
		spec[k++] = (struct jspec_field)JSPEC_U64("min_tcb.bootloader", false, 0, 255, &bl,
							  .present = &has_bl);
		spec[k++] = (struct jspec_field)JSPEC_U64("min_tcb.tee", false, 0, 255, &tee,
							  .present = &has_tee);
		spec[k++] = (struct jspec_field)JSPEC_U64("min_tcb.snp", false, 0, 255, &snp,
							  .present = &has_snp);
		spec[k++] = (struct jspec_field)JSPEC_U64("min_tcb.microcode", false, 0, 255, &mc,
							  .present = &has_mc);
	} else if (plat == IDENT_PLATFORM_TDX) {
		spec[k++] = (struct jspec_field)JSPEC_HEXBYTES("min_tee_tcb_svn", false, 16, 16, &svn,
							       .present = &u->has_min_svn);
		spec[k++] = (struct jspec_field)JSPEC_ARR("tcb_status", false, 1, 7, &statuses,
							  .present = &has_st);
	} else if (plat == IDENT_PLATFORM_NITRO) {
		spec[k++] = (struct jspec_field)JSPEC_ARR("pcr1", false, 1, POLICY_MAX_LIST, &pcr1,
							  .present = &has_p1);
		spec[k++] = (struct jspec_field)JSPEC_ARR("pcr2", false, 1, POLICY_MAX_LIST, &pcr2,
							  .present = &has_p2);
		spec[k++] = (struct jspec_field)JSPEC_ARR("pcr8", false, 1, POLICY_MAX_LIST, &pcr8,
							  .present = &has_p8);
	}
	spec[k] = (struct jspec_field)JSPEC_END_F;
	struct jspec_error je;
	int rc = jspec_parse(obj, spec, 0, &je);
	if (rc != 0) {
		if (e) {
			*e = je;
			dotted(e->field, sizeof e->field, prefix, je.field);
			dotted(e->detail, sizeof e->detail, prefix, je.detail);
		}
		return rc;
	}
	char f[JSPEC_NAME_MAX];
	size_t want = real ? ATTEST_MEASUREMENT_MAX : 0;
	dotted(f, sizeof f, prefix, "measurements");
	if (has_meas && (rc = read_list(meas, want, f, &u->meas, e)) != 0)
		goto out;
	dotted(f, sizeof f, prefix, "pcr1");
	if (has_p1 && (rc = read_list(pcr1, ATTEST_NITRO_PCR_LEN, f, &u->pcr1, e)) != 0)
		goto out;
	dotted(f, sizeof f, prefix, "pcr2");
	if (has_p2 && (rc = read_list(pcr2, ATTEST_NITRO_PCR_LEN, f, &u->pcr2, e)) != 0)
		goto out;
	dotted(f, sizeof f, prefix, "pcr8");
	if (has_p8 && (rc = read_list(pcr8, ATTEST_NITRO_PCR_LEN, f, &u->pcr8, e)) != 0)
		goto out;
	if (has_bl || has_tee || has_snp || has_mc) {
		u->has_min_tcb = true;
		u->min_tcb = (struct attest_snp_tcb){(uint8_t)bl, (uint8_t)tee, (uint8_t)snp,
						     (uint8_t)mc};
	}
	if (u->has_min_svn)
		memcpy(u->min_svn, svn.data, 16);
	if (has_st) {
		dotted(f, sizeof f, prefix, "tcb_status");
		for (size_t i = 0; i < json_array_size(statuses); i++) {
			const char *s = json_string_value(json_array_get(statuses, i));
			int idx = -1;
			for (int j = 0; s && tdx_statuses[j]; j++)
				if (strcmp(s, tdx_statuses[j]) == 0)
					idx = j;
			if (idx < 0) {
				rc = perr(e, ERR_RANGE, f, "entries must be TCB statuses (%s, ...)",
					  "UpToDate, SWHardeningNeeded, OutOfDate");
				goto out;
			}
			u->tcb_status_mask |= 1u << idx;
		}
	}
	u->present = true;
out:
	jspec_bytes_free(&svn);
	return rc;
}

int attest_policy_parse(struct attest_policy **out, const char *json, size_t len,
			struct jspec_error *err)
{
	if (!out || !json)
		return ERR_INVALID;
	*out = NULL;
	uint64_t version = 0;
	json_t *roles = NULL, *root = NULL;
	const struct jspec_field spec[] = {
		JSPEC_U64("version", true, 1, 1, &version),
		JSPEC_OBJ("roles", true, &roles),
		JSPEC_END_F,
	};
	int rc = jspec_parse_body(json, len, spec, 0, &root, err);
	if (rc != 0)
		return rc;
	struct attest_policy *p = calloc(1, sizeof *p);
	if (!p) {
		json_decref(root);
		return ERR_NOMEM;
	}
	const char *rname;
	json_t *robj;
	json_object_foreach(roles, rname, robj)
	{
		char f[JSPEC_NAME_MAX];
		dotted(f, sizeof f, "roles", rname);
		enum ident_role role;
		if (ident_role_parse(rname, &role) != 0) {
			rc = perr(err, ERR_UNKNOWN_FIELD, f, "not a role (%s, ...)",
				  "party, dealer, gateway, session");
			goto out;
		}
		if (!json_is_object(robj)) {
			rc = perr(err, ERR_TYPE, f, "must be an %s", "object");
			goto out;
		}
		const char *pname;
		json_t *pobj;
		json_object_foreach(robj, pname, pobj)
		{
			char pf[JSPEC_NAME_MAX];
			dotted(pf, sizeof pf, f, pname);
			enum ident_platform plat;
			if (ident_platform_parse(pname, &plat) != 0 || plat == IDENT_PLATFORM_NONE) {
				rc = perr(err, ERR_UNKNOWN_FIELD, pf, "not a platform (%s)",
					  "sev-snp, tdx, nitro, simulated");
				goto out;
			}
			if (!json_is_object(pobj)) {
				rc = perr(err, ERR_TYPE, pf, "must be an %s", "object");
				goto out;
			}
			if ((rc = parse_rule(pobj, plat, pf, &p->rule[role][plat], err)) != 0)
				goto out;
		}
	}
	rc = 0;
out:
	json_decref(root);
	if (rc != 0) {
		attest_policy_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

int attest_policy_load(struct attest_policy **out, const char *path, struct jspec_error *err)
{
	if (!out || !path)
		return ERR_INVALID;
	*out = NULL;
	FILE *f = fopen(path, "rb");
	if (!f)
		return perr(err, ERR_IO, "", "cannot open the policy file %s", path);
	char *buf = malloc(JSPEC_MAX_BODY + 1);
	size_t n = buf ? fread(buf, 1, JSPEC_MAX_BODY + 1, f) : 0;
	int bad = ferror(f);
	fclose(f);
	if (!buf)
		return ERR_NOMEM;
	int rc;
	if (bad)
		rc = perr(err, ERR_IO, "", "cannot read the policy file %s", path);
	else if (n > JSPEC_MAX_BODY)
		rc = perr(err, ERR_TOO_LARGE, "", "the policy file %s is larger than 1 MiB", path);
	else
		rc = attest_policy_parse(out, buf, n, err);
	free(buf);
	return rc;
}

static bool listed(const struct mlist *m, const uint8_t *v, size_t len)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->len[i] == len && memcmp(m->v[i], v, len) == 0)
			return true;
	return false;
}

static int deny(struct attest_error *e, enum attest_check c, const char *field, const char *fmt,
		...) __attribute__((format(printf, 4, 5)));
static int deny(struct attest_error *e, enum attest_check c, const char *field, const char *fmt,
		...)
{
	char reason[ATTEST_REASON_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);
	return attest_fail(e, ERR_ATTESTATION, c, field, "%s", reason);
}

static int check_pcr(const struct mlist *m, const struct attest_nitro *n, int idx,
		     const char *field, struct attest_error *e)
{
	if (!m->n)
		return 0;
	if (!(n->pcr_present & (1u << idx)) || !listed(m, n->pcr[idx], ATTEST_NITRO_PCR_LEN))
		return deny(e, ATTEST_CHECK_POLICY, field, "%s is not one the policy allows", field);
	return 0;
}

int attest_policy_check(const struct attest_policy *p, enum ident_role role,
			const struct attest_claims *c, int64_t now,
			const uint8_t *expected_binding, struct attest_error *err)
{
	struct attest_error local_err;
	if (!err)
		err = &local_err;
	attest_error_clear(err);
	if (!p || !c)
		return attest_fail(err, ERR_INVALID, ATTEST_CHECK_NONE, NULL, "no policy or claims");
	const char *rn = ident_role_name(role), *pn = ident_platform_name(c->platform);
	if ((unsigned)role >= N_ROLES || (unsigned)c->platform >= N_PLATFORMS ||
	    c->platform == IDENT_PLATFORM_NONE)
		return deny(err, ATTEST_CHECK_POLICY, "platform", "no rule for role %s and platform %s",
			    rn, pn);
	const struct rule *u = &p->rule[role][c->platform];
	if (!u->present)
		return deny(err, ATTEST_CHECK_POLICY, "platform",
			    "the policy does not allow role %s on platform %s", rn, pn);
	if ((c->platform != IDENT_PLATFORM_SIMULATED || u->meas.n) &&
	    !listed(&u->meas, c->measurement, c->measurement_len))
		return deny(err, ATTEST_CHECK_POLICY, "measurement",
			    "the measurement is not one the policy allows for role %s on %s", rn, pn);
	if (c->debug && !u->debug)
		return deny(err, ATTEST_CHECK_POLICY, "debug",
			    "the guest is debuggable (its memory is open to the host) and the "
			    "policy does not allow debug for role %s on %s",
			    rn, pn);
	if (c->platform == IDENT_PLATFORM_SEV_SNP && u->has_min_tcb) {
		struct attest_snp_tcb t;
		attest_snp_tcb_split(c->snp.reported_tcb, &t);
		const char *low = t.bootloader < u->min_tcb.bootloader ? "min_tcb.bootloader"
				  : t.tee < u->min_tcb.tee		 ? "min_tcb.tee"
				  : t.snp < u->min_tcb.snp		 ? "min_tcb.snp"
				  : t.microcode < u->min_tcb.microcode	 ? "min_tcb.microcode"
									 : NULL;
		if (low)
			return deny(err, ATTEST_CHECK_TCB, low,
				    "REPORTED_TCB is below the policy's %s", low);
	}
	if (c->platform == IDENT_PLATFORM_TDX) {
		if (u->has_min_svn)
			for (int i = 0; i < 16; i++)
				if (c->tdx.tee_tcb_svn[i] < u->min_svn[i])
					return deny(err, ATTEST_CHECK_TCB, "min_tee_tcb_svn",
						    "TEE_TCB_SVN is below the policy's minimum");
		if (u->tcb_status_mask) {
			if (!c->tdx.tcb_info_checked)
				return deny(err, ATTEST_CHECK_TCB, "tcb_status",
					    "the policy requires a TCB status and no TCB info "
					    "collateral was checked");
			int idx = -1;
			for (int j = 0; tdx_statuses[j]; j++)
				if (strcmp(c->tdx.tcb_status, tdx_statuses[j]) == 0)
					idx = j;
			if (idx < 0 || !(u->tcb_status_mask & (1u << idx)))
				return deny(err, ATTEST_CHECK_TCB, "tcb_status",
					    "TCB status %s is not one the policy allows",
					    c->tdx.tcb_status);
		}
	}
	if (c->platform == IDENT_PLATFORM_NITRO) {
		int rc;
		if ((rc = check_pcr(&u->pcr1, &c->nitro, 1, "pcr1", err)) != 0 ||
		    (rc = check_pcr(&u->pcr2, &c->nitro, 2, "pcr2", err)) != 0 ||
		    (rc = check_pcr(&u->pcr8, &c->nitro, 8, "pcr8", err)) != 0)
			return rc;
	}
	if (u->has_max_age) {
		if (!c->has_time)
			return deny(err, ATTEST_CHECK_FRESHNESS, "max_age_seconds",
				    "the evidence carries no time and the caller supplied none");
		if (c->time > now + POLICY_CLOCK_SKEW)
			return deny(err, ATTEST_CHECK_FRESHNESS, "max_age_seconds",
				    "the evidence is dated in the future");
		if (now - c->time > (int64_t)u->max_age)
			return deny(err, ATTEST_CHECK_FRESHNESS, "max_age_seconds",
				    "the evidence is older than the policy's max_age_seconds");
	}
	if (expected_binding && (!c->has_report_data ||
				 memcmp(c->report_data, expected_binding, ATTEST_REPORT_DATA_LEN) != 0))
		return deny(err, ATTEST_CHECK_BINDING, "report_data",
			    "the evidence does not commit to the expected keys and nonce");
	if (c->platform == IDENT_PLATFORM_SIMULATED) {
		char mh[2 * ATTEST_MEASUREMENT_MAX + 1];
		attest_hex(mh, c->measurement, c->measurement_len);
		LOG_WARN("attest.simulated_accepted", LOG_S("role", rn), LOG_S("measurement", mh),
			 LOG_S("detail", "simulated evidence accepted: development only, no "
					 "hardware protects this peer"));
	}
	return 0;
}
