// Builds Beacon's browser assets into gateway/assets/, which the gateway embeds in the binary:
// the tracker (tracker/beacon.js, minified to beacon.js). `--check` builds in memory and fails
// when the checked-in output differs, so the embedded assets never drift from their sources.
import { build } from "esbuild";
import { readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const check = process.argv.includes("--check");
const outputs = [
  {
    entry: "tracker/beacon.js",
    out: "../gateway/assets/beacon.js",
    options: { minify: true, target: "es2017", legalComments: "none" },
  },
];

let drift = false;
for (const { entry, out, options } of outputs) {
  const result = await build({ entryPoints: [entry], write: false, bundle: false, ...options });
  const text = result.outputFiles[0].text;
  const gzipped = gzipSync(text, { level: 9 }).length;
  console.log(`${out}: ${text.length} bytes, ${gzipped} bytes gzipped`);
  if (!check) {
    writeFileSync(new URL(out, import.meta.url), text);
    continue;
  }
  let current = "";
  try {
    current = readFileSync(new URL(out, import.meta.url), "utf8");
  } catch {}
  if (current !== text) {
    console.error(`${out} differs from what ${entry} builds: run \`npm run build\` in web/ and commit`);
    drift = true;
  }
}
if (drift) process.exit(1);
