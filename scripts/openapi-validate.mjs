#!/usr/bin/env node
// Validates live HTTP responses against the OpenAPI 3.1 document of the edge, with
// @hyperjump/json-schema (a maintained JSON Schema validator that implements the
// OpenAPI 3.1 schema dialect and resolves references inside an OpenAPI document).
//
//   node scripts/openapi-validate.mjs [--tools DIR] DOC.yaml --document
//       checks the document itself against the OpenAPI 3.1 meta-schema
//   node scripts/openapi-validate.mjs [--tools DIR] DOC.yaml RECORDS.jsonl
//       checks every recorded response; one JSON object per line:
//       {"method", "path" (with query), "status", "content_type", "headers": {lower-case
//        name: value}, "body" (text)}
//
// A response passes when its path and method are documented (or it is the platform's
// 404/405 for an undocumented one, with a Problem body), its status is documented for
// that operation (exactly, as NXX, or default), its media type is one the response
// declares (and it has a body exactly when one is declared), the body validates
// against that media type's schema, every required response header is present, and
// every documented header that is present validates against its schema. Exit status
// 0 when all pass, 1 when any fails (each failure is printed), 2 on bad usage.
// The tools (node_modules) live in DIR, default build/tools/openapi, installed by
// scripts/openapi-lint.sh.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
let tools = process.env.MIMIR_TOOLS || path.join(here, "..", "build", "tools", "openapi");
const rest = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--tools" && i + 1 < args.length) tools = args[++i];
  else rest.push(args[i]);
}
if (rest.length !== 2) {
  console.error("usage: openapi-validate.mjs [--tools DIR] DOC.yaml (--document | RECORDS.jsonl)");
  process.exit(2);
}
const [docPath, what] = rest;

const need = createRequire(path.join(path.resolve(tools), "package.json"));
let YAML, hj;
try {
  YAML = (await import(pathToFileURL(need.resolve("yaml")).href)).default;
  hj = await import(pathToFileURL(need.resolve("@hyperjump/json-schema/openapi-3-1")).href);
} catch (e) {
  console.error(`openapi-validate: the tools are not installed in ${tools} (run scripts/openapi-lint.sh --install-only): ${e.message}`);
  process.exit(2);
}

const doc = YAML.parse(fs.readFileSync(docPath, "utf8"));
if (what === "--document") {
  const out = await hj.validate("https://spec.openapis.org/oas/3.1/schema-base", doc, "BASIC");
  if (!out.valid) {
    for (const e of out.errors ?? []) console.error(`  ${e.instanceLocation}: ${e.keyword}`);
    console.error(`openapi-validate: ${docPath} does not conform to the OpenAPI 3.1 schema`);
    process.exit(1);
  }
  console.log(`openapi-validate: ${docPath} conforms to the OpenAPI 3.1 schema`);
  process.exit(0);
}

// hyperjump reads OpenAPI documents as JSON files named *.openapi.json.
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mimir-openapi-"));
const jsonPath = path.join(tmp, "mimir.openapi.json");
fs.writeFileSync(jsonPath, JSON.stringify(doc));
const docUrl = pathToFileURL(jsonPath).href;
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));

// A JSON pointer token inside a URI fragment: ~ and / escaped, then percent-encoded.
const esc = (s) => encodeURIComponent(s.replace(/~/g, "~0").replace(/\//g, "~1"));
const validators = new Map();
async function check(pointer, value) {
  let v = validators.get(pointer);
  if (!v) {
    v = await hj.validate(`${docUrl}#${pointer}`);
    validators.set(pointer, v);
  }
  const out = v(value, "BASIC");
  return out.valid ? null : (out.errors ?? []).map((e) => `${e.instanceLocation} ${e.keyword.replace(/^.*\//, "")} (${e.absoluteKeywordLocation.replace(/^.*#/, "#")})`);
}

// Follows a local $ref; returns [object, its JSON pointer].
function deref(obj, pointer) {
  while (obj && typeof obj.$ref === "string") {
    if (!obj.$ref.startsWith("#/")) throw new Error(`external $ref ${obj.$ref} not supported`);
    pointer = obj.$ref.slice(1);
    obj = pointer.split("/").slice(1).reduce((o, k) => o?.[k.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
  }
  return [obj, pointer];
}

// The documented path template for a concrete path: literal segments beat parameters.
function findPath(p) {
  const segs = p.split("/");
  let best = null, bestScore = -1;
  for (const tpl of Object.keys(doc.paths ?? {})) {
    const ts = tpl.split("/");
    if (ts.length !== segs.length) continue;
    let score = 0, ok = true;
    for (let i = 0; i < ts.length && ok; i++) {
      if (/^\{[^}]+\}$/.test(ts[i])) ok = segs[i].length > 0;
      else if (ts[i] === segs[i]) score++;
      else ok = false;
    }
    if (ok && score > bestScore) [best, bestScore] = [tpl, score];
  }
  return best;
}

// The data of each event of a text/event-stream body (data lines joined with "\n";
// comments and other fields ignored; a trailing event without its blank line too).
function sseEvents(text) {
  const out = [];
  let data = null;
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === "") {
      if (data !== null) out.push(data);
      data = null;
    } else if (line.startsWith("data:")) {
      const v = line.slice(5).replace(/^ /, "");
      data = data === null ? v : `${data}\n${v}`;
    }
  }
  return out;
}

const lines = fs.readFileSync(what, "utf8").split("\n").filter((l) => l.trim());
let failures = 0;
const seen = new Set();
for (const [n, line] of lines.entries()) {
  let rec;
  try {
    rec = JSON.parse(line);
  } catch {
    console.error(`FAIL record ${n + 1}: not JSON`);
    failures++;
    continue;
  }
  const where = `${rec.method} ${rec.path} -> ${rec.status}`;
  const problems = [];
  const pathOnly = rec.path.split("?")[0];
  const tpl = findPath(pathOnly);
  const method = (rec.method === "HEAD" ? "get" : rec.method.toLowerCase());
  const ctype = (rec.content_type || "").split(";")[0].trim().toLowerCase();
  const headers = rec.headers ?? {};
  let body;
  if (rec.body && rec.body.length) {
    if (ctype.endsWith("json")) {
      try {
        body = JSON.parse(rec.body);
      } catch {
        problems.push("the body is not JSON");
      }
    } else body = rec.body;
  }
  const op = tpl ? doc.paths[tpl][method] : undefined;
  if (!op) {
    // The platform's own answer for a path or method the document does not have.
    const why = !tpl ? "undocumented path" : `undocumented method ${rec.method}`;
    if ((rec.status === 404 && !tpl) || (rec.status === 405 && tpl)) {
      if (ctype !== "application/problem+json") problems.push(`${why}: expected a problem+json ${rec.status}, got ${ctype || "no content type"}`);
      else {
        const errs = await check("/components/schemas/Problem", body);
        if (errs) problems.push(`${why}: the problem does not validate: ${errs.join("; ")}`);
      }
      if (rec.status === 405 && !headers["allow"]) problems.push("405 without Allow");
    } else problems.push(why);
  } else {
    const base = `/paths/${esc(tpl)}/${method}/responses`;
    const st = String(rec.status);
    const key = [st, `${st[0]}XX`, "default"].find((k) => op.responses?.[k]);
    if (!key) problems.push(`status ${st} is not documented for ${method.toUpperCase()} ${tpl}`);
    else {
      seen.add(`${method.toUpperCase()} ${tpl} ${key}`);
      const [resp, rp] = deref(op.responses[key], `${base}/${esc(key)}`);
      const content = resp.content ?? {};
      const types = Object.keys(content);
      if (!types.length) {
        if (rec.body && rec.body.length) problems.push("a body where the document declares none");
      } else if (!types.includes(ctype)) {
        problems.push(`content type ${ctype || "(none)"} is not among ${types.join(", ")}`);
      } else if (body === undefined) {
        problems.push("no body where the document declares one");
      } else if (content[ctype].schema) {
        const sp0 = `${rp}/content/${esc(ctype)}/schema`;
        const errs = await check(sp0, body);
        if (errs) problems.push(`the body does not validate: ${errs.join("; ")}`);
        // An event stream whose schema has a contentSchema: each event's data (JSON;
        // OpenAI's closing "[DONE]" aside) must validate against it.
        const [s, sp] = deref(content[ctype].schema, sp0);
        if (ctype === "text/event-stream" && s.contentSchema && typeof body === "string") {
          for (const [k, ev] of sseEvents(body).entries()) {
            if (ev === "[DONE]") continue;
            let data;
            try {
              data = JSON.parse(ev);
            } catch {
              problems.push(`event ${k + 1}: its data is not JSON`);
              continue;
            }
            const eerrs = await check(`${sp}/contentSchema`, data);
            if (eerrs) problems.push(`event ${k + 1} does not validate: ${eerrs.join("; ")}`);
          }
        }
      }
      for (const [name, h0] of Object.entries(resp.headers ?? {})) {
        const [h, hp] = deref(h0, `${rp}/headers/${esc(name)}`);
        const v = headers[name.toLowerCase()];
        if (v === undefined) {
          if (h.required) problems.push(`required header ${name} is missing`);
          continue;
        }
        const [s] = deref(h.schema ?? {}, `${hp}/schema`);
        const value = s.type === "integer" && /^-?[0-9]+$/.test(v) ? Number(v) : v;
        const errs = await check(`${hp}/schema`, value);
        if (errs) problems.push(`header ${name}: ${errs.join("; ")}`);
      }
    }
  }
  if (problems.length) {
    failures++;
    console.error(`FAIL ${where}: ${problems.join(" | ")}`);
    if (rec.body) console.error(`     body: ${rec.body.slice(0, 400)}`);
  }
}
if (failures) {
  console.error(`openapi-validate: ${failures} of ${lines.length} responses do not match ${docPath}`);
  process.exit(1);
}
console.log(`openapi-validate: ${lines.length} responses valid against ${docPath} (${seen.size} documented responses exercised)`);
