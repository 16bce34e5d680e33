// The published JSON Schemas as a partner's JavaScript validator reads them: ajv in strict mode,
// JSON Schema 2020-12, formats checked.
//
//   node tests/contract/validate.mjs [cases.json]
//
// Compiles every schema in schemas/jsonschema/ (strict mode refuses unknown keywords, ignored keywords,
// keywords without their type, union types, unknown formats). With a cases file — a JSON array of
// {"name", "schema" (a file name in schemas/jsonschema/), "event", "valid"} — validates each event and
// reports every case where ajv's verdict differs from "valid". Exit status 0 only when all is well.
// Nothing is loaded from the network: the schemas reference only their own $defs.

import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const here = dirname(fileURLToPath(import.meta.url));
const schemaDir = join(here, "..", "..", "schemas", "jsonschema");

// The contract's annotations: labels for people and the event's place in the network (schemas/README.md).
const ANNOTATION_KEYWORDS = ["x-tsunagu", "x-labels"];

function newAjv() {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats(ajv);
  ajv.addVocabulary(ANNOTATION_KEYWORDS);
  return ajv;
}

function compileAll(ajv) {
  const validators = new Map();
  const problems = [];
  for (const file of readdirSync(schemaDir).filter((f) => f.endsWith(".json")).sort()) {
    try {
      const schema = JSON.parse(readFileSync(join(schemaDir, file), "utf8"));
      validators.set(file, ajv.compile(schema));
    } catch (error) {
      problems.push(`${file}: ${error.message}`);
    }
  }
  return { validators, problems };
}

function checkCases(validators, cases) {
  const problems = [];
  for (const c of cases) {
    const validate = validators.get(c.schema);
    if (validate === undefined) {
      problems.push(`${c.name}: no schema ${c.schema}`);
      continue;
    }
    const valid = validate(c.event);
    if (valid !== c.valid) {
      const why = valid ? "accepted" : ajvErrors(validate.errors);
      problems.push(`${c.name}: expected ${c.valid ? "valid" : "invalid"}, ajv ${why}`);
    }
  }
  return problems;
}

function ajvErrors(errors) {
  return "refused: " + (errors ?? []).slice(0, 3).map((e) => `${e.instancePath || "/"} ${e.message}`).join("; ");
}

const ajv = newAjv();
const { validators, problems } = compileAll(ajv);
let checked = 0;
if (process.argv[2]) {
  const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
  problems.push(...checkCases(validators, cases));
  checked = cases.length;
}
if (problems.length > 0) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(`ajv strict: ${validators.size} schemas compiled, ${checked} events checked`);
