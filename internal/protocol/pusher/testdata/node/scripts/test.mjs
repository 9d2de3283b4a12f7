// Builds the Go server binary (unless RELAY_BIN names one) and runs the
// node --test suites against it, one file at a time (the machine is shared).
// Arguments name test files to run instead of all of test/*.test.mjs.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL("..", import.meta.url));
const root = join(here, "..", "..", "..", "..", "..");
let tmp;
if (!process.env.RELAY_BIN) {
  tmp = mkdtempSync(join(tmpdir(), "relay-pusher-"));
  const bin = join(tmp, "relay");
  console.log(`building ${bin} from ${root}`);
  const b = spawnSync("go", ["build", "-o", bin, "./cmd/relay"], { cwd: root, stdio: "inherit" });
  if (b.status !== 0) process.exit(b.status ?? 1);
  process.env.RELAY_BIN = bin;
}
const only = process.argv.slice(2);
const files = only.length ? only : readdirSync(join(here, "test")).filter((f) => f.endsWith(".test.mjs")).sort().map((f) => join("test", f));
const r = spawnSync(process.execPath, ["--test", "--test-concurrency=1", "--test-timeout=120000", ...files], { cwd: here, stdio: "inherit", env: process.env });
if (tmp) rmSync(tmp, { recursive: true, force: true });
process.exit(r.status ?? 1);
