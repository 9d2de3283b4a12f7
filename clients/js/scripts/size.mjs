// Bundles and minifies the package with esbuild, gzips it, prints the
// size, and fails past the budget of 6 KB (6144 bytes).
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const LIMIT = 6144;
const entry = fileURLToPath(new URL("../dist/index.js", import.meta.url));
const out = await build({ entryPoints: [entry], bundle: true, minify: true, format: "esm", write: false, target: "es2022" });
const code = out.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 }).length;
console.log(`size: ${code.length} bytes minified, ${gz} bytes minified+gzipped (limit ${LIMIT})`);
if (gz > LIMIT) {
  console.error(`size: over the limit by ${gz - LIMIT} bytes`);
  process.exit(1);
}
