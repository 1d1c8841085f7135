/* config: a service's settings from one JSON file plus environment overrides, checked
 * at start-up against a jspec spec so a bad value stops the service with a message that
 * names the key and where the value came from.
 *
 *   struct gw_settings s = {.port = 8080, .tls = true};    // defaults first
 *   const struct jspec_field spec[] = {
 *           JSPEC_U64("http.port", false, 0, 65535, &s.port),
 *           JSPEC_BOOLEAN("tls.enabled", false, &s.tls),
 *           JSPEC_STR("tls.cert", false, 1, 4096, &s.cert),
 *           JSPEC_END_F,
 *   };
 *   struct config *cfg;
 *   struct jspec_error e;
 *   if (config_load(&cfg, "gateway", path, spec, &e) != 0) {
 *           LOG_ERROR("config.invalid", LOG_S("key", e.field), LOG_S("detail", e.detail));
 *           exit(1);
 *   }
 *   ...                                                     // s.cert borrowed from cfg
 *   config_free(cfg);
 *
 * Sources, later ones winning: the caller's defaults, the file, the environment.
 * Environment: MIMIR_<SERVICE>_<KEY>, the service and the dotted key upper-cased with
 * '.' and '-' as '_' ("gateway", "http.port" -> MIMIR_GATEWAY_HTTP_PORT). The text is
 * converted by the field's type: INT/UINT base-10 integers (whole string, no spaces;
 * UINT at most INT64_MAX, as in a JSON file), DOUBLE a finite strtod number, BOOL
 * true/false/1/0/yes/no (any case), STRING/ENUM/HEX/BASE64 the text itself,
 * OBJECT/ARRAY JSON text. A variable with the service's prefix that names no key is an
 * error: a typo must not be silently ignored.
 *
 * Errors (jspec_error): field is the dotted key (or the variable's name for an unknown
 * variable, "" for file errors), and the detail ends with the source, e.g.
 *   "http.port: must be between 0 and 65535 (from environment MIMIR_GATEWAY_HTTP_PORT)"
 *   "htpp: unknown field (did you mean http?) (from /etc/mimir/gateway.json)"
 * Codes: ERR_IO (unreadable file), ERR_TOO_LARGE (file over 1 MiB), ERR_PARSE (bad JSON,
 * with line and column), ERR_UNKNOWN_FIELD, and every jspec_parse() code. Values are
 * never quoted in messages (they may be keys). */
#ifndef MIMIR_CONFIG_H
#define MIMIR_CONFIG_H

#include "jspec/jspec.h"

/* Largest configuration file read. */
#define CONFIG_MAX_FILE (1024 * 1024)

/* Owns the merged document (file plus environment) that STRING, OBJECT and ARRAY
 * outputs borrow from: keep it until those are no longer used. */
struct config;

/* Loads path (NULL: defaults and environment only) and the environment for service
 * (letters, digits, '-' and '_', at most 32 characters) into the outputs of spec (a
 * strict jspec spec; only keys that are set are written, the rest keep the caller's
 * defaults). All-or-nothing: on error no output is written and *out is NULL. HEX/BASE64
 * outputs are allocated: the caller frees them with jspec_bytes_free(). err may be
 * NULL. */
int config_load(struct config **out, const char *service, const char *path,
		const struct jspec_field *spec, struct jspec_error *err);

/* Accepts NULL. */
void config_free(struct config *c);

/* One "config.effective" log line per key of spec (the same spec, after a successful
 * config_load): key, source (default, file or environment, with the path or variable),
 * and the value for INT/UINT/DOUBLE/BOOL/ENUM fields. Strings, bytes, objects and arrays
 * are never logged (they may be secrets); only whether they are set. */
void config_log_effective(const struct config *c, const struct jspec_field *spec);

#endif
