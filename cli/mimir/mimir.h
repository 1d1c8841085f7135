/* mimir (the client tool) internals: the exit statuses every command shares and the
 * commands. `mimir generate` runs the client side of Mimir's input and output
 * protocols (common/clientio) through a gateway: the prompt is tokenized here and
 * leaves this machine only as masked values, each token comes back as sealed parts
 * that are checked and reconstructed here, so the gateway and the parties see neither.
 * `mimir proxy` (the local OpenAI-compatible server) is not built yet. */
#ifndef MIMIR_CLI_H
#define MIMIR_CLI_H

#define MIMIR_PROG "mimir"

/* Exit statuses, one per kind of outcome a script may want to tell apart (0-9 mean
 * what they mean for mimirctl). */
enum mimir_exit {
	MX_OK = 0,
	MX_FAIL = 1,        /* anything else: a local error, an answer that makes no sense */
	MX_USAGE = 2,       /* bad command line */
	MX_UNREACHABLE = 3, /* no answer from the gateway: connection, TLS, timeout */
	MX_AUTH = 4,        /* 401 / 403: the API key was refused (or is for another session) */
	MX_NOT_FOUND = 5,   /* 404 */
	MX_CONFLICT = 6,    /* 409: the session is not ready, or runs another generation */
	MX_INVALID = 7,     /* 400, 413, 415: the request was refused as input (prompt too long) */
	MX_LIMITED = 8,     /* 429 */
	MX_SERVER = 9,      /* 5xx from the gateway: it or a party could not serve the request */
	MX_GENERATION = 10, /* the generation ended with an error event (a party failed, it was
			       cancelled, the parties' MAC check failed) */
	MX_INTEGRITY = 11,  /* a party's message did not verify: a wrong sealing key, a lying
			       party caught by the client's checks; nothing unverified was shown */
};

int mimir_generate(int argc, char **argv);

#endif
