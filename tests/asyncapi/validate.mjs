// Validate AsyncAPI documents with the official parser (@asyncapi/parser, installed
// under .npm/ by `make install`). Usage: node validate.mjs FILE...
// Prints one JSON object per file: {"file", "diagnostics": [{severity, code, message, path}]}
// with severity "error" | "warning" | "information" | "hint". Exits 0 when every
// file parsed (whatever the diagnostics say), 2 when the parser is not installed.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = process.env.HERALD_NPM_DIR || path.resolve(here, "..", "..", ".npm");
let Parser;
try {
  ({ Parser } = createRequire(path.join(root, "package.json"))("@asyncapi/parser"));
} catch (error) {
  console.error(`@asyncapi/parser is not installed under ${root} (run make install): ${error.message}`);
  process.exit(2);
}

const SEVERITY = ["error", "warning", "information", "hint"];
const parser = new Parser();
for (const file of process.argv.slice(2)) {
  const source = await readFile(file, "utf8");
  const { diagnostics } = await parser.parse(source, { source: path.resolve(file) });
  const found = diagnostics.map((d) => ({
    severity: SEVERITY[d.severity] ?? String(d.severity),
    code: String(d.code ?? ""),
    message: d.message,
    path: (d.path ?? []).join("/"),
  }));
  console.log(JSON.stringify({ file, diagnostics: found }));
}
