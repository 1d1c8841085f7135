/* attest: verification of hardware attestation evidence (AMD SEV-SNP, Intel TDX, AWS
 * Nitro Enclaves) against the vendors' roots, and the policy decision on the result.
 *
 * A verifier takes the evidence bytes, the certificates and collateral that came with
 * them, a set of trust anchors (attest_roots, by default the vendor roots shipped in
 * attest/roots/) and the verification time, which is an input so that recorded evidence
 * verifies at its own time and a deployment without network access works from files.
 * On success it fills a struct attest_claims: the platform, the measurement, the bound
 * data (report_data / user_data), the debug flag, the TCB and the platform's own
 * fields. On rejection it says which check failed and why (struct attest_error), so a
 * service can answer with a problem+json body that names the check. The policy
 * (attest_policy, one JSON file) then decides whether claims are good enough for a
 * role. docs/ATTESTATION.md lists every check, in order, with the vendor sections.
 *
 * Codes: 0 verified; ERR_PARSE malformed bytes (wrong length, unknown version, bad
 * CBOR, bad certificate encoding); ERR_ATTESTATION evidence that parses but is
 * rejected (signature, chain, TCB, binding, freshness, policy); ERR_INVALID bad
 * arguments; ERR_NOMEM. Everything is thread-safe: roots, collateral and policy are
 * read-only once built. */
#ifndef MIMIR_ATTEST_H
#define MIMIR_ATTEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ident/ident.h"
#include "jspec/jspec.h"

/* Where the shipped roots live, relative to the repository (and install) root. */
#define ATTEST_ROOTS_DEFAULT_DIR "attest/roots"

/* Evidence larger than this is refused before parsing (real ones are under 16 KiB). */
#define ATTEST_EVIDENCE_MAX (64 * 1024)

/* --- Claims --- */

#define ATTEST_MEASUREMENT_MAX 48
#define ATTEST_REPORT_DATA_LEN 64
#define ATTEST_CHIP_ID_LEN 64
#define ATTEST_NITRO_PCRS 32
#define ATTEST_NITRO_PCR_LEN 48
#define ATTEST_NITRO_DATA_MAX 1024
#define ATTEST_NITRO_MODULE_ID_MAX 128

/* SEV-SNP ATTESTATION_REPORT (SEV-SNP ABI spec 56860, section 7.3, Table 23 in rev
 * 1.57), every field. Multi-byte integers are host-order values; TCB_VERSION fields
 * stay packed (bootloader in bits 7:0, tee 15:8, snp 55:48, microcode 63:56 on Milan
 * and Genoa; attest_snp_tcb_split() unpacks them). */
struct attest_snp {
	uint32_t version; /* 2 to 5 */
	uint32_t guest_svn;
	uint64_t policy;
	uint8_t family_id[16];
	uint8_t image_id[16];
	uint32_t vmpl;
	uint32_t signature_algo; /* 1: ECDSA P-384 with SHA-384 */
	uint64_t current_tcb;
	uint64_t platform_info;
	uint32_t signer_info; /* bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_ID, bits 4:2 SIGNING_KEY */
	uint8_t report_data[64];
	uint8_t measurement[48];
	uint8_t host_data[32];
	uint8_t id_key_digest[48];
	uint8_t author_key_digest[48];
	uint8_t report_id[32];
	uint8_t report_id_ma[32];
	uint64_t reported_tcb;
	bool has_cpuid; /* version >= 3 */
	uint8_t cpuid_fam_id, cpuid_mod_id, cpuid_step;
	uint8_t chip_id[64];
	uint64_t committed_tcb;
	uint8_t current_build, current_minor, current_major;
	uint8_t committed_build, committed_minor, committed_major;
	uint64_t launch_tcb;
	bool has_mit_vectors; /* version >= 5 */
	uint64_t launch_mit_vector, current_mit_vector;
	uint8_t sig_r[48], sig_s[48]; /* big-endian */
	/* Set by verification: the VCEK's product name ("Milan", "Genoa") and TCB. */
	char product[16];
};

/* Guest policy bits (SEV-SNP ABI, Table 9 "Guest policy structure"). */
#define ATTEST_SNP_POLICY_SMT (1ull << 16)
#define ATTEST_SNP_POLICY_RESERVED1 (1ull << 17) /* must be one */
#define ATTEST_SNP_POLICY_MIGRATE_MA (1ull << 18)
#define ATTEST_SNP_POLICY_DEBUG (1ull << 19)
#define ATTEST_SNP_POLICY_SINGLE_SOCKET (1ull << 20)

struct attest_snp_tcb {
	uint8_t bootloader, tee, snp, microcode;
};
/* Milan/Genoa TCB_VERSION layout. */
void attest_snp_tcb_split(uint64_t tcb, struct attest_snp_tcb *out);

/* Intel TDX quote (DCAP quote v4 and v5), header and TD report body. */
struct attest_tdx {
	uint16_t version; /* 4 or 5 */
	uint16_t att_key_type; /* 2: ECDSA P-256 */
	uint32_t tee_type; /* 0x81: TDX */
	uint8_t header_reserved[4];
	uint8_t qe_vendor_id[16];
	uint8_t user_data[20];
	uint16_t body_type; /* 2: TD report 1.0 (v4 and v5), 3: TD report 1.5 (v5) */
	uint8_t tee_tcb_svn[16];
	uint8_t mrseam[48];
	uint8_t mrsignerseam[48];
	uint8_t seam_attributes[8];
	uint8_t td_attributes[8]; /* byte 0 bit 0: DEBUG */
	uint8_t xfam[8];
	uint8_t mrtd[48];
	uint8_t mrconfigid[48];
	uint8_t mrowner[48];
	uint8_t mrownerconfig[48];
	uint8_t rtmr[4][48];
	uint8_t report_data[64];
	bool has_td15; /* body_type 3 */
	uint8_t tee_tcb_svn2[16];
	uint8_t mrservicetd[48];
	/* The quoting enclave's report (SGX report body) and the PCK certificate's SGX
	 * extension, both from the signature data. */
	uint8_t qe_cpu_svn[16];
	uint8_t qe_mrenclave[32];
	uint8_t qe_mrsigner[32];
	uint32_t qe_miscselect;
	uint8_t qe_attributes[16];
	uint16_t qe_isv_prod_id, qe_isv_svn;
	uint8_t fmspc[6];
	uint8_t pce_id[2];
	uint8_t pck_cpu_svn[16]; /* the 16 SGX TCB component SVNs */
	uint16_t pck_pce_svn;
	/* Collateral results (only when collateral was given). */
	bool tcb_info_checked;
	char tcb_status[40]; /* "UpToDate", "SWHardeningNeeded", ..., "" when unchecked */
	int64_t tcb_date; /* of the matching TCB level, unix seconds */
	bool qe_identity_checked;
	char qe_tcb_status[40];
	bool crls_checked;
};

/* AWS Nitro Enclaves attestation document (the COSE_Sign1 payload). */
struct attest_nitro {
	char module_id[ATTEST_NITRO_MODULE_ID_MAX + 1];
	char digest[16]; /* "SHA384" */
	uint64_t timestamp_ms;
	uint32_t pcr_present; /* bit i: PCR i was in the document */
	uint8_t pcr[ATTEST_NITRO_PCRS][ATTEST_NITRO_PCR_LEN];
	bool has_user_data, has_nonce, has_public_key;
	size_t user_data_len, nonce_len, public_key_len;
	uint8_t user_data[ATTEST_NITRO_DATA_MAX];
	uint8_t nonce[ATTEST_NITRO_DATA_MAX];
	uint8_t public_key[ATTEST_NITRO_DATA_MAX];
	size_t n_cabundle; /* certificates in cabundle, root first */
};

/* What every verifier fills. Plain data, no ownership (about 6 KiB: keep it off small
 * stacks in deep call chains, or allocate it). */
struct attest_claims {
	enum ident_platform platform;
	/* The value the policy matches: SNP MEASUREMENT, TDX MRTD, Nitro PCR0, or the
	 * simulated measurement. */
	uint8_t measurement[ATTEST_MEASUREMENT_MAX];
	size_t measurement_len;
	/* The 64 bytes the guest bound into the evidence: SNP and TDX REPORT_DATA, Nitro
	 * user_data when it is exactly 64 bytes (has_report_data false otherwise). */
	bool has_report_data;
	uint8_t report_data[ATTEST_REPORT_DATA_LEN];
	bool debug; /* SNP policy DEBUG, TDX TD_ATTRIBUTES.DEBUG, Nitro PCR0-2 all zero */
	bool has_chip_id;
	uint8_t chip_id[ATTEST_CHIP_ID_LEN];
	/* When the evidence says it was made (Nitro timestamp); the SNP report and the TDX
	 * quote carry none, so a caller that issued the nonce sets these itself. */
	bool has_time;
	int64_t time;
	uint8_t evidence_sha256[32]; /* of the evidence bytes */
	union {
		struct attest_snp snp;
		struct attest_tdx tdx;
		struct attest_nitro nitro;
	};
};

/* --- Why a piece of evidence was rejected --- */

enum attest_check {
	ATTEST_CHECK_NONE = 0,
	ATTEST_CHECK_FORMAT,     /* the bytes do not parse */
	ATTEST_CHECK_SIGNATURE,  /* the evidence signature */
	ATTEST_CHECK_CHAIN,      /* the certificate chain to the vendor root */
	ATTEST_CHECK_BINDING,    /* a value that ties two signed parts together (hwID, QE report data, nonce) */
	ATTEST_CHECK_TCB,        /* TCB values or status */
	ATTEST_CHECK_COLLATERAL, /* TCB info / QE identity / CRL themselves */
	ATTEST_CHECK_FRESHNESS,  /* time: evidence age, collateral validity */
	ATTEST_CHECK_POLICY,     /* the policy refused an otherwise valid piece of evidence */
};

#define ATTEST_REASON_MAX 256
#define ATTEST_FIELD_MAX 48

struct attest_error {
	int code; /* the ERR_* returned */
	enum attest_check check;
	char field[ATTEST_FIELD_MAX];   /* the evidence or policy field at fault, "" when none */
	char reason[ATTEST_REASON_MAX]; /* one sentence for operators */
};

/* "format", "signature", "chain", "binding", "tcb", "collateral", "freshness",
 * "policy"; "none". */
const char *attest_check_name(enum attest_check c);
/* RFC 9457 body for a rejection: err_problem() with detail "<check>: <reason>", field,
 * and an extra member "check". New reference; NULL on allocation failure. */
json_t *attest_problem(const struct attest_error *e, const char *request_id);

/* --- Trust anchors --- */

enum attest_root {
	ATTEST_ROOT_AMD_MILAN = 0, /* AMD ARK-Milan, RSA-4096, self-signed RSA-PSS */
	ATTEST_ROOT_AMD_GENOA,     /* AMD ARK-Genoa */
	ATTEST_ROOT_INTEL_SGX,     /* Intel SGX Root CA (TDX PCK chains and collateral) */
	ATTEST_ROOT_AWS_NITRO,     /* AWS Nitro Enclaves root G1 */
	ATTEST_ROOT_COUNT,
};

struct attest_roots;

/* File name of each root in a roots directory ("amd_ark_milan.pem", ...). */
const char *attest_root_file(enum attest_root which);
/* SHA-256 of the DER of the genuine root, compiled in (attest/roots/README.md). */
int attest_root_pinned_sha256(enum attest_root which, uint8_t out[32]);

enum attest_roots_flags {
	ATTEST_ROOTS_PINNED = 1u << 0,  /* each file must be the genuine root (SHA-256 pin) */
	ATTEST_ROOTS_ALL = 1u << 1,     /* every root must be present */
};

/* An empty set (verification against a missing root fails with check "chain"). */
int attest_roots_new(struct attest_roots **out);
/* Sets one root from one self-signed certificate, PEM or DER (replaces the previous
 * one). ERR_PARSE: not exactly one certificate; ERR_ATTESTATION: not self-signed. */
int attest_roots_set(struct attest_roots *r, enum attest_root which, const uint8_t *cert,
		     size_t len);
/* Reads the known file names from dir (missing files leave that root unset unless
 * ATTEST_ROOTS_ALL). ERR_IO, ERR_PARSE, ERR_ATTESTATION (a pin mismatch under
 * ATTEST_ROOTS_PINNED), ERR_MISSING (ATTEST_ROOTS_ALL and a file is missing). */
int attest_roots_load_dir(struct attest_roots **out, const char *dir, unsigned flags);
/* SHA-256 of a loaded root's DER; ERR_NOT_FOUND when unset. */
int attest_roots_sha256(const struct attest_roots *r, enum attest_root which, uint8_t out[32]);
void attest_roots_free(struct attest_roots *r);

/* --- Verifiers --- */

/* SEV-SNP: report (exactly 1184 bytes), the VCEK and the ASK (each PEM or DER). The ARK
 * is the root for the VCEK's product, from roots. */
int attest_snp_verify(const struct attest_roots *roots, const uint8_t *report, size_t len,
		      const uint8_t *vcek, size_t vcek_len, const uint8_t *ask, size_t ask_len,
		      int64_t at, struct attest_claims *out, struct attest_error *err)
	__attribute__((warn_unused_result));

/* TDX collateral: any number of files, each one of: a PCS TCB info response
 * ({"tcbInfo":..,"signature":..}), a PCS QE identity response
 * ({"enclaveIdentity":..,"signature":..}), a bundle in the dcap-qvl collateral.json
 * layout (tcb_info, qe_identity, their signatures and issuer chains, root_ca_crl,
 * pck_crl), PEM certificates (the TCB signing chain) or a DER CRL. */
struct attest_tdx_collateral;
int attest_tdx_collateral_new(struct attest_tdx_collateral **out);
/* ERR_PARSE when the file is none of the above or is malformed; ERR_CONFLICT when it
 * brings a second TCB info or QE identity. */
int attest_tdx_collateral_add(struct attest_tdx_collateral *c, const uint8_t *data, size_t len,
			      struct attest_error *err);
void attest_tdx_collateral_free(struct attest_tdx_collateral *c);

/* TDX: quote v4 or v5 with its embedded PCK chain; collateral may be NULL (then no TCB
 * status is computed and the claims say so). */
int attest_tdx_verify(const struct attest_roots *roots, const uint8_t *quote, size_t len,
		      const struct attest_tdx_collateral *coll, int64_t at,
		      struct attest_claims *out, struct attest_error *err)
	__attribute__((warn_unused_result));

/* Nitro: the COSE_Sign1 attestation document (tagged or untagged). */
int attest_nitro_verify(const struct attest_roots *roots, const uint8_t *doc, size_t len,
			int64_t at, struct attest_claims *out, struct attest_error *err)
	__attribute__((warn_unused_result));

/* Simulated evidence for development: the JSON
 * {"type":"mimir-simulated-v1","measurement":"<hex, 1..48 bytes>","report_data":"<hex, 64 bytes>"}.
 * No cryptography at all: only a policy that allows simulated evidence accepts it. */
int attest_simulated_verify(const uint8_t *doc, size_t len, struct attest_claims *out,
			    struct attest_error *err) __attribute__((warn_unused_result));
/* Writes such a document (for development tools and tests) into buf. */
int attest_simulated_make(const uint8_t *measurement, size_t mlen,
			  const uint8_t report_data[ATTEST_REPORT_DATA_LEN], char *buf, size_t cap);

/* One entry point for all platforms, as the command line and the service take them:
 * certs are the SNP VCEK and ASK in any order (each PEM or DER; a PEM file may hold
 * both), collateral the TDX collateral files; both empty for Nitro and simulated. */
struct attest_blob {
	const uint8_t *data;
	size_t len;
};
struct attest_evidence {
	enum ident_platform platform;
	const uint8_t *data;
	size_t len;
	const struct attest_blob *certs;
	size_t n_certs;
	const struct attest_blob *collateral;
	size_t n_collateral;
};
int attest_verify(const struct attest_roots *roots, const struct attest_evidence *ev, int64_t at,
		  struct attest_claims *out, struct attest_error *err)
	__attribute__((warn_unused_result));

/* Parsers alone (no signature, chain or time), for tools and fuzzing. They check every
 * length and reserved field the verifiers check. */
int attest_snp_parse(const uint8_t *report, size_t len, struct attest_snp *out,
		     struct attest_error *err) __attribute__((warn_unused_result));
int attest_tdx_parse(const uint8_t *quote, size_t len, struct attest_tdx *out,
		     struct attest_error *err) __attribute__((warn_unused_result));
int attest_nitro_parse(const uint8_t *doc, size_t len, struct attest_nitro *out,
		       struct attest_error *err) __attribute__((warn_unused_result));

/* The claims as a JSON object (platform, measurement, report_data, debug, chip_id, TCB
 * and the platform's fields, bytes in lowercase hex). New reference or NULL. */
json_t *attest_claims_json(const struct attest_claims *c);

/* --- Binding --- */

/* The 64 bytes a requester puts into report_data (SNP, TDX) or user_data (Nitro):
 * SHA-512 over a domain tag and the length-prefixed DER SubjectPublicKeyInfo of its TLS
 * key, its 32-byte X25519 sealing key and the attest service's nonce (16..64 bytes). */
int attest_binding(const uint8_t *tls_spki, size_t spki_len, const uint8_t x25519_pub[32],
		   const uint8_t *nonce, size_t nonce_len, uint8_t out[ATTEST_REPORT_DATA_LEN]);

/* --- Policy --- */

/* One JSON file:
 * {"version": 1,
 *  "roles": {"party": {"sev-snp": {...}, "tdx": {...}, "nitro": {...}, "simulated": {...}},
 *            "dealer": {...}, ...}}
 * Per platform: "measurements" (hex list, required except for simulated), "debug"
 * (bool, default false), "max_age_seconds" (optional), and the platform's minimum TCB:
 * SNP "min_tcb": {"bootloader","tee","snp","microcode"}; TDX "min_tee_tcb_svn" (hex,
 * 16 bytes, compared byte by byte) and "tcb_status" (allowed statuses; requires
 * collateral); Nitro "pcr1", "pcr2", "pcr8" (hex lists). docs/ATTESTATION.md has an
 * example. Simulated evidence is accepted only under "simulated" and every acceptance
 * logs a warning. */
struct attest_policy;

/* err names the offending key (dotted path) as jspec does. ERR_IO for an unreadable
 * file, ERR_PARSE, ERR_TYPE, ERR_RANGE, ERR_MISSING, ERR_UNKNOWN_FIELD. */
int attest_policy_parse(struct attest_policy **out, const char *json, size_t len,
			struct jspec_error *err);
int attest_policy_load(struct attest_policy **out, const char *path, struct jspec_error *err);
void attest_policy_free(struct attest_policy *p);

/* Accepts or rejects claims for role at time now. expected_binding (64 bytes) is what
 * report_data must equal, or NULL when the caller checks binding itself. Returns 0, or
 * ERR_ATTESTATION with check policy (field: "measurement", "debug", "min_tcb.snp",
 * ...), freshness ("max_age_seconds") or binding ("report_data"). */
int attest_policy_check(const struct attest_policy *p, enum ident_role role,
			const struct attest_claims *c, int64_t now,
			const uint8_t *expected_binding, struct attest_error *err)
	__attribute__((warn_unused_result));

#endif
