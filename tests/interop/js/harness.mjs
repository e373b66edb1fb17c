// Shared helpers of the client suites: start a tusker binary on a free
// loopback port with a temporary data directory (file or S3 storage),
// deterministic data, SHA-256, and Chromium through playwright-core.
import { spawn } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

export const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, "..", "..", "..");
export const MiB = 1024 * 1024;

/** The binary under test: TUSKER_BIN (tests/clients.rs sets it), else target/debug/tusker. */
export function tuskerBin() {
  const bin = process.env.TUSKER_BIN || join(REPO, "target", "debug", "tusker");
  if (!existsSync(bin)) throw new Error(`no tusker binary at ${bin}: run cargo build or set TUSKER_BIN`);
  return bin;
}

/** Where artifacts such as screenshots go: cargo's target directory. */
export function artifactsDir() {
  const dir = process.env.TUSKER_ARTIFACTS_DIR || join(REPO, "target");
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** The S3 endpoint for the S3 variants, or null (they are then skipped). */
export function s3Endpoint() {
  return process.env.TUSKER_TEST_S3_ENDPOINT || null;
}

/**
 * Starts tusker. storage: "file" or "s3". Resolves to
 * { endpoint, origin, stop() } once the server logged its address.
 */
export async function startTusker({ storage = "file", args = [], env = {} } = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "tusker-clients-"));
  const argv = ["--listen", "127.0.0.1:0", "--data-dir", join(dataDir, "data"), "--log-format", "json", "--workers", "2", ...args];
  const childEnv = { ...process.env, RUST_LOG: "info", ...env };
  if (storage === "s3") {
    const s3 = s3Endpoint();
    if (!s3) throw new Error("no S3 endpoint");
    const bucket = "c" + randomUUID().replaceAll("-", "");
    const res = await fetch(`${s3}/${bucket}`, { method: "PUT" });
    if (!res.ok) throw new Error(`creating bucket: ${res.status}`);
    argv.push("--storage", `s3://${bucket}/x`, "--s3-endpoint", s3, "--part-size", "5MiB");
    Object.assign(childEnv, { AWS_ACCESS_KEY_ID: "test", AWS_SECRET_ACCESS_KEY: "test", AWS_REGION: "us-east-1" });
  }
  const child = spawn(tuskerBin(), argv, { env: childEnv, stdio: ["ignore", "ignore", "pipe"] });
  const log = [];
  const addr = await new Promise((resolveAddr, reject) => {
    const timer = setTimeout(() => reject(new Error("tusker did not start in 30 s:\n" + log.join("\n"))), 30_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`tusker exited with ${code}:\n` + log.join("\n")));
    });
    createInterface({ input: child.stderr }).on("line", (line) => {
      log.push(line);
      if (log.length > 200) log.shift();
      try {
        const ev = JSON.parse(line);
        if (ev.message === "tusker listening" && ev.addr) {
          clearTimeout(timer);
          resolveAddr(ev.addr);
        }
      } catch (_) { /* not JSON */ }
    });
  });
  const origin = `http://${addr}`;
  return {
    origin,
    endpoint: `${origin}/files/`,
    log,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Starts tusker with --demo only to see it fail; resolves to { code, stderr }. */
export function runTuskerToExit(args, timeoutMs = 30_000) {
  const dataDir = mkdtempSync(join(tmpdir(), "tusker-clients-"));
  const child = spawn(tuskerBin(), ["--listen", "127.0.0.1:0", "--data-dir", join(dataDir, "data"), ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  return new Promise((r) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      rmSync(dataDir, { recursive: true, force: true });
      r({ code, stderr });
    });
  });
}

/** Deterministic pseudo-random bytes (xorshift), the same in Node and in the page. */
export function bytes(len, seed) {
  const out = Buffer.alloc(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

export function sha256(buf) {
  return createHash("sha256").update(buf).digest("hex");
}

/** GET the upload and return { status, headers, sha, length }. */
export async function download(url) {
  const res = await fetch(url);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, sha: sha256(body), length: body.length };
}

/** Chromium from the system (Debian's package), never a downloaded build. */
export function chromiumPath() {
  return process.env.TUSKER_CHROMIUM || "/usr/bin/chromium";
}

export async function launchChromium() {
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "tusker-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath(),
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
      "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run",
    ],
    viewport: { width: 900, height: 760 },
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
