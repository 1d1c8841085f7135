/* mimir (the client tool) internals: the exit statuses every command shares and the
 * commands. `mimir generate` runs the client side of Mimir's input and output
 * protocols (common/clientio) through a gateway: the prompt is tokenized here and
 * leaves this machine only as masked values, each token comes back as sealed parts
 * that are checked and reconstructed here, so the gateway and the parties see neither.
 * `mimir proxy` serves the OpenAI API locally with the same protocol (common/oai). */
#ifndef MIMIR_TOOL_MIMIR_H
#define MIMIR_TOOL_MIMIR_H

#include "gclient/gclient.h"

#define MIMIR_PROG "mimir"

/* Exit statuses: one per kind of outcome a script may want to tell apart (0-9 mean
 * what they mean for mimirctl), the outcomes of common/gclient. */
enum mimir_exit {
	MX_OK = GCL_OK,
	MX_FAIL = GCL_FAIL,
	MX_USAGE = GCL_USAGE,
	MX_UNREACHABLE = GCL_UNREACHABLE,
	MX_AUTH = GCL_AUTH,
	MX_NOT_FOUND = GCL_NOT_FOUND,
	MX_CONFLICT = GCL_CONFLICT,
	MX_INVALID = GCL_INVALID,
	MX_LIMITED = GCL_LIMITED,
	MX_SERVER = GCL_SERVER,
	MX_GENERATION = GCL_GENERATION,
	MX_INTEGRITY = GCL_INTEGRITY,
};

/* "prog: message" on stderr, with the --help hint for MX_USAGE; returns status. */
int mimir_say(const char *prog, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The environment variable, or dflt when it is unset or empty. */
const char *mimir_env(const char *name, const char *dflt);

int mimir_generate(int argc, char **argv);
int mimir_proxy(int argc, char **argv);

#endif
