/* mimir-attest verify: the offline verifier for operators and tests. Evidence, its
 * certificates and collateral come from files, the roots from attest/roots (checked
 * against their pinned hashes) or a directory given, the time from --at (so recorded
 * evidence verifies at its own time); the verdict and every extracted field are printed
 * as one JSON object, and the exit status says accepted (0) or not (1). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attest/attest.h"
#include "err/err.h"
#include "tool.h"

static void usage(FILE *f)
{
	fputs("Usage: mimir-attest verify --platform snp|tdx|nitro|simulated --evidence FILE\n"
	      "                           [--cert FILE]... [--collateral FILE]... [--roots DIR]\n"
	      "                           [--at RFC3339-TIME] [--policy FILE [--role ROLE]]\n"
	      "                           [--report-data HEX]\n"
	      "\n"
	      "Verifies evidence against the vendors' roots and prints a JSON object: verdict\n"
	      "(accepted or rejected), the check and reason of a rejection, and the claims\n"
	      "(measurement or MRTD or PCRs, report_data / user_data, TCB, debug, chip id).\n"
	      "\n"
	      "  --platform P       snp (or sev-snp), tdx, nitro, simulated\n"
	      "  --evidence FILE    the SNP report, TDX quote, Nitro document (raw bytes)\n"
	      "  --cert FILE        SNP: the VCEK and the ASK (PEM or DER; a PEM may hold both)\n"
	      "  --collateral FILE  TDX: TCB info, QE identity, collateral bundle, CRLs, chains\n"
	      "  --roots DIR        trust anchors (default: attest/roots, each checked against\n"
	      "                     its pinned SHA-256; a directory given here is not pinned)\n"
	      "  --at TIME          verify at this time, e.g. 2024-09-07T15:00:00Z (default now)\n"
	      "  --policy FILE      also apply this policy (exit 1 when it refuses)\n"
	      "  --role ROLE        the role the policy is applied for (default party)\n"
	      "  --report-data HEX  require report_data / user_data to be these 64 bytes\n"
	      "\n"
	      "Exit status: 0 accepted, 1 rejected or failed, 2 bad command line.\n",
	      f);
}

int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{"platform", required_argument, NULL, 'p'}, {"evidence", required_argument, NULL, 'e'},
		{"cert", required_argument, NULL, 'c'},	    {"collateral", required_argument, NULL, 'l'},
		{"roots", required_argument, NULL, 'r'},    {"at", required_argument, NULL, 'a'},
		{"policy", required_argument, NULL, 'P'},   {"role", required_argument, NULL, 'R'},
		{"report-data", required_argument, NULL, 'd'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *evidence = NULL, *roots_dir = NULL, *policy_file = NULL, *certs[TOOL_FILES_MAX],
		   *colls[TOOL_FILES_MAX];
	size_t ncert = 0, ncoll = 0, rdlen = 0;
	enum ident_platform platform = IDENT_PLATFORM_NONE;
	enum ident_role role = IDENT_ROLE_PARTY;
	int64_t at = (int64_t)time(NULL);
	uint8_t rd[ATTEST_REPORT_DATA_LEN];
	bool has_rd = false;
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (!tool_platform(optarg, &platform))
				return tool_usage("verify", "--platform: snp, tdx, nitro or simulated, not '%s'", optarg);
			break;
		case 'e': evidence = optarg; break;
		case 'c':
			if (ncert == TOOL_FILES_MAX)
				return tool_usage("verify", "--cert: at most %d files", TOOL_FILES_MAX);
			certs[ncert++] = optarg;
			break;
		case 'l':
			if (ncoll == TOOL_FILES_MAX)
				return tool_usage("verify", "--collateral: at most %d files", TOOL_FILES_MAX);
			colls[ncoll++] = optarg;
			break;
		case 'r': roots_dir = optarg; break;
		case 'a':
			if (!tool_rfc3339(optarg, &at))
				return tool_usage("verify", "--at: an RFC 3339 UTC time like 2024-09-07T15:00:00Z, not '%s'", optarg);
			break;
		case 'P': policy_file = optarg; break;
		case 'R':
			if (ident_role_parse(optarg, &role) != 0)
				return tool_usage("verify", "--role: not a role: '%s'", optarg);
			break;
		case 'd':
			if (!tool_hex(optarg, rd, sizeof rd, &rdlen) || rdlen != sizeof rd)
				return tool_usage("verify", "--report-data: 64 bytes of hex (128 digits)");
			has_rd = true;
			break;
		case 'h': usage(stdout); return TOOL_EXIT_OK;
		default: return tool_opt_error("verify", c, argv);
		}
	}
	if (optind < argc)
		return tool_usage("verify", "unexpected argument '%s'", argv[optind]);
	if (platform == IDENT_PLATFORM_NONE || !evidence)
		return tool_usage("verify", "--platform and --evidence are required");

	int code = TOOL_EXIT_FAIL, rc;
	uint8_t *ev = NULL, *cbuf[TOOL_FILES_MAX] = {0}, *lbuf[TOOL_FILES_MAX] = {0};
	struct attest_blob cb[TOOL_FILES_MAX], lb[TOOL_FILES_MAX];
	struct attest_roots *roots = NULL;
	struct attest_policy *pol = NULL;
	struct attest_claims *cl = calloc(1, sizeof *cl);
	json_t *out = NULL;
	size_t evlen = 0;
	if (!cl)
		return tool_fail("out of memory");
	if (tool_read(evidence, &ev, &evlen) != 0)
		goto out;
	for (size_t i = 0; i < ncert; i++)
		if (tool_read(certs[i], &cbuf[i], &cb[i].len) != 0)
			goto out;
		else
			cb[i].data = cbuf[i];
	for (size_t i = 0; i < ncoll; i++)
		if (tool_read(colls[i], &lbuf[i], &lb[i].len) != 0)
			goto out;
		else
			lb[i].data = lbuf[i];
	rc = attest_roots_load_dir(&roots, roots_dir ? roots_dir : ATTEST_ROOTS_DEFAULT_DIR,
				   roots_dir ? 0 : ATTEST_ROOTS_PINNED);
	if (rc != 0) {
		tool_fail("cannot load the roots from %s: %s%s", roots_dir ? roots_dir : ATTEST_ROOTS_DEFAULT_DIR,
			err_title(rc), roots_dir ? "" : " (run from the repository root, or give --roots)");
		goto out;
	}
	if (policy_file) {
		struct jspec_error je;
		if ((rc = attest_policy_load(&pol, policy_file, &je)) != 0) {
			tool_fail("policy %s: %s", policy_file, je.detail);
			goto out;
		}
	}
	struct attest_evidence e = {.platform = platform, .data = ev, .len = evlen, .certs = cb, .n_certs = ncert,
				    .collateral = lb, .n_collateral = ncoll};
	struct attest_error why;
	char when[32];
	json_t *claims = NULL;
	tool_time(at, when, sizeof when);
	rc = attest_verify(roots, &e, at, cl, &why);
	if (rc == 0) {
		claims = attest_claims_json(cl);
		if (has_rd && (!cl->has_report_data || memcmp(cl->report_data, rd, sizeof rd) != 0)) {
			rc = ERR_ATTESTATION;
			why = (struct attest_error){.code = rc, .check = ATTEST_CHECK_BINDING, .field = "report_data"};
			snprintf(why.reason, sizeof why.reason, "report_data is not the one given with --report-data");
		}
	}
	if (rc == 0 && pol)
		rc = attest_policy_check(pol, role, cl, at, NULL, &why);
	/* The verdict first, then why, then what was found. */
	out = json_object();
	json_object_set_new(out, "verdict", json_string(rc == 0 ? "accepted" : "rejected"));
	if (rc != 0) {
		json_object_set_new(out, "check", json_string(attest_check_name(why.check)));
		if (why.field[0])
			json_object_set_new(out, "field", json_string(why.field));
		json_object_set_new(out, "reason", json_string(why.reason));
	}
	json_object_set_new(out, "platform", json_string(ident_platform_name(platform)));
	json_object_set_new(out, "verified_at", json_string(when));
	if (pol)
		json_object_set_new(out, "policy_role", json_string(ident_role_name(role)));
	if (claims)
		json_object_set_new(out, "claims", claims);
	char *text = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (text) {
		puts(text);
		free(text);
	}
	code = rc == 0 ? TOOL_EXIT_OK : TOOL_EXIT_FAIL;
out:
	json_decref(out);
	attest_policy_free(pol);
	attest_roots_free(roots);
	free(cl);
	free(ev);
	for (size_t i = 0; i < TOOL_FILES_MAX; i++) {
		free(cbuf[i]);
		free(lbuf[i]);
	}
	return code;
}
