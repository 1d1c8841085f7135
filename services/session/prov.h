/* The provisioner's inner parts, shared by provision.c (the thread, the session table
 * and the dealer) and provision_parties.c (the parties); the handlers see only
 * session_prov_* in session.h. Everything here runs on the provisioner's one thread,
 * so nothing is locked. */
#ifndef MIMIR_SESSION_PROV_H
#define MIMIR_SESSION_PROV_H

#include <stdbool.h>
#include <stdint.h>

#include "session.h"

/* Where a session stands at one of its parties. */
enum prov_stage {
	PROV_NONE = 0, /* not opened there (as far as this process knows) */
	PROV_OPENED,   /* the party has it; following it to ready */
	PROV_READY,    /* reported ready in the registry */
	PROV_FAILED,   /* reported failed */
	PROV_CLOSED,   /* deleted there (or given up on) after the session ended */
};

/* A session the provisioner is working on, from its creation until the dealer and the
 * parties have forgotten it. */
struct prov_known {
	char id[REG_ID_SIZE];
	char pid[REG_PARTY_SESSION_HEX + 1]; /* its id at the parties, "" until derived */
	bool warned;                         /* a transient dealer failure was logged */
	bool posted;                         /* the dealer has it */
	/* the parties */
	bool touched;        /* a party may have it: delete it there when it ends */
	bool party_warned;   /* a transient party failure was logged */
	int64_t open_ms;     /* first attempt to open it at the parties (monotonic), 0 before */
	int64_t close_ms;    /* first attempt to close it there (monotonic), 0 before */
	bool busy;           /* being opened or followed this tick (the thread ticks faster) */
	char why[REG_DESC_MAX + 1]; /* the last transient failure, for the timeout's reason */
	uint8_t stage[REG_MAX_PARTIES]; /* enum prov_stage, in share order */
};

/* Monotonic milliseconds, for the provisioner's bounds. */
int64_t prov_now_ms(void);

/* Fails a CREATED session with reason (a refusal that will not change); logged. */
void prov_fail_session(struct session_ctx *c, const char *id, const char *reason);

struct metrics;
struct prov_parties;

/* The parties' side; *out stays NULL (and 0 is returned) when parties.provision is
 * off. ERR_CONFIG for an unusable configuration (logged). */
int prov_parties_new(struct session_ctx *c, struct metrics *m, struct prov_parties **out);
void prov_parties_free(struct prov_parties *pp); /* accepts NULL */

/* One step for a CREATED session the dealer has (s and parties from one registry
 * snapshot): open it at every party, or follow the parties and report what they say,
 * or fail it once parties.init_timeout_ms has passed without all of them ready. */
void prov_parties_step(struct prov_parties *pp, struct prov_known *k, const struct reg_session *s,
		       const struct reg_party *parties);
/* One attempt to delete an ended session at its parties (s and parties NULL when the
 * registry has no such session, which leaves nothing to ask). Returns true when no
 * party needs asking again. */
bool prov_parties_close(struct prov_parties *pp, struct prov_known *k, const struct reg_session *s,
			const struct reg_party *parties);
#endif
