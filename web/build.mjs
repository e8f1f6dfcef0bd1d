// Builds Beacon's browser assets into gateway/assets/, which the gateway embeds in the binary:
// the tracker (tracker/beacon.js, minified) and the dashboard (dashboard/: its page, its
// script bundled with the generated TypeScript client from sdk/typescript, its style sheet).
// `--check` builds in memory and fails when the checked-in output differs, so the embedded
// assets never drift from their sources.
import { build } from "esbuild";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const check = process.argv.includes("--check");
const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const minified = { minify: true, legalComments: "none", write: false };

/** Each output and how it is made. */
const outputs = [
  {
    out: "../gateway/assets/beacon.js",
    make: () => build({ ...minified, entryPoints: [here("tracker/beacon.js")], target: "es2017" }),
  },
  {
    out: "../gateway/assets/dashboard/app.js",
    make: () =>
      build({
        ...minified,
        entryPoints: [here("dashboard/src/main.js")],
        bundle: true,
        format: "iife",
        target: "es2020",
        // The generated client's runtime, installed by sdk/generate.sh: one copy for both.
        nodePaths: [here("../sdk/typescript/node_modules")],
      }),
  },
  {
    out: "../gateway/assets/dashboard/app.css",
    make: () => build({ ...minified, entryPoints: [here("dashboard/app.css")] }),
  },
  {
    out: "../gateway/assets/dashboard/index.html",
    make: async () => ({ outputFiles: [{ text: readFileSync(here("dashboard/index.html"), "utf8") }] }),
  },
];

let drift = false;
for (const { out, make } of outputs) {
  const text = (await make()).outputFiles[0].text;
  const gzipped = gzipSync(text, { level: 9 }).length;
  console.log(`${out}: ${text.length} bytes, ${gzipped} bytes gzipped`);
  const path = here(out);
  if (!check) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
    continue;
  }
  let current = "";
  try {
    current = readFileSync(path, "utf8");
  } catch {}
  if (current !== text) {
    console.error(`${out} differs from what its sources build: run \`node build.mjs\` in web/ and commit`);
    drift = true;
  }
}
if (drift) process.exit(1);
