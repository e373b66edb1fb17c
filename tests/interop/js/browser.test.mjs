// tus-js-client's browser bundle in real Chromium (playwright-core driving
// the system chromium). The test page comes from a second loopback origin,
// so every request to tusker is cross-origin and CORS is exercised.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startTusker, launchChromium, HERE, MiB } from "./harness.mjs";

const T = { timeout: 120_000 };

/** Serves the test page, its helpers and tus-js-client's bundle. */
function pageServer() {
  const files = {
    "/": ["text/html", "<!doctype html><meta charset=utf-8><title>tus-js-client test page</title><script src=/tus.min.js></script><script src=/page.js></script><body>tus-js-client test page</body>"],
    "/tus.min.js": ["text/javascript", readFileSync(join(HERE, "node_modules/tus-js-client/dist/tus.min.js"))],
    "/page.js": ["text/javascript", readFileSync(join(HERE, "browser-page.js"))],
  };
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    const file = files[path];
    if (!file) { res.writeHead(404).end(); return; }
    res.writeHead(200, { "content-type": file[0] }).end(file[1]);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

describe("tus-js-client in Chromium, cross-origin", () => {
  let tusker, pages, browser, page, origin;

  before(async () => {
    tusker = await startTusker();
    pages = await pageServer();
    origin = `http://127.0.0.1:${pages.address().port}`;
    assert.notEqual(origin, tusker.origin);
    browser = await launchChromium();
    page = await browser.context.newPage();
    page.on("pageerror", (e) => console.error("page error:", e));
    await page.goto(origin + "/");
    assert.equal(await page.evaluate(() => typeof tus.Upload), "function");
  });

  after(async () => {
    if (browser) await browser.close();
    if (pages) await new Promise((r) => pages.close(r));
    if (tusker) await tusker.stop();
  });

  async function check(result, len, seed, name) {
    const expected = await page.evaluate(([l, s, n]) => sha256(makeFile(l, s, n)), [len, seed, name]);
    const got = await page.evaluate((url) => downloadSha(url), result.url);
    assert.equal(got.status, 200);
    assert.equal(got.length, len);
    assert.equal(got.sha, expected);
  }

  it("uploads in 1 MiB chunks", T, async () => {
    const len = 3 * MiB + 5000;
    const result = await page.evaluate(
      ([len, endpoint, MiB]) => runUpload(makeFile(len, 21, "chunked.bin"), { endpoint, chunkSize: MiB, metadata: { filename: "chunked.bin" } }),
      [len, tusker.endpoint, MiB],
    );
    assert.equal(result.aborted, false);
    assert.ok(result.url.startsWith(tusker.origin), result.url);
    assert.equal(result.requests.filter((r) => r.method === "PATCH").length, 4);
    await check(result, len, 21, "chunked.bin");
  });

  it("uploads with parallelUploads: 3", T, async () => {
    const len = 6 * MiB + 77;
    const result = await page.evaluate(
      ([len, endpoint]) => runUpload(makeFile(len, 22, "parallel.bin"), { endpoint, parallelUploads: 3 }),
      [len, tusker.endpoint],
    );
    assert.equal(result.requests.filter((r) => r.concat === "partial" && r.method === "POST").length, 3);
    assert.ok(result.requests.some((r) => r.concat && r.concat.startsWith("final;")));
    await check(result, len, 22, "parallel.bin");
  });

  it("aborts, reloads, and resumes through the fingerprint in localStorage", T, async () => {
    const len = 4 * MiB + 1234;
    const first = await page.evaluate(
      ([len, endpoint, MiB]) => runUpload(makeFile(len, 23, "resume.bin"), { endpoint, chunkSize: MiB }, 2 * MiB, true),
      [len, tusker.endpoint, MiB],
    );
    assert.equal(first.aborted, true);
    assert.ok(first.url);
    // A new page load: only localStorage remembers the upload.
    await page.reload();
    const stored = await page.evaluate(() => storedFingerprints());
    assert.ok(stored.length >= 1, "fingerprint stored in localStorage");
    const second = await page.evaluate(
      ([len, endpoint, MiB]) => runUpload(makeFile(len, 23, "resume.bin"), { endpoint, chunkSize: MiB }, 0, true),
      [len, tusker.endpoint, MiB],
    );
    assert.equal(second.requests[0].count, 1, "one previous upload found");
    assert.equal(second.url, first.url, "same upload URL");
    assert.equal(second.requests.filter((r) => r.method === "POST").length, 0);
    const patches = second.requests.filter((r) => r.method === "PATCH");
    assert.equal(Number(patches[0].offset), 2 * MiB, "resumed at the acknowledged offset");
    await check(second, len, 23, "resume.bin");
  });
});

// JWT authorization, cross-origin: the Authorization header passes CORS
// preflights, parallel uploads build a final from the token owner's parts,
// and downloads use ?access_token= as a <video src> would.
import { createHmac } from "node:crypto";

const SECRET = "tusker-browser-suite-secret-0123456789";

function mint(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

describe("tus-js-client in Chromium with JWT authorization, cross-origin", () => {
  let tusker, pages, browser, page;

  before(async () => {
    tusker = await startTusker({ args: ["--auth-jwt-secret", SECRET] });
    pages = await pageServer();
    browser = await launchChromium();
    page = await browser.context.newPage();
    page.on("pageerror", (e) => console.error("page error:", e));
    await page.goto(`http://127.0.0.1:${pages.address().port}/`);
  });

  after(async () => {
    if (browser) await browser.close();
    if (pages) await new Promise((r) => pages.close(r));
    if (tusker) await tusker.stop();
  });

  it("uploads with a bearer token and downloads with access_token", T, async () => {
    const token = mint({ sub: "alice", exp: Math.floor(Date.now() / 1000) + 600 });
    const len = 3 * MiB + 99;
    const result = await page.evaluate(
      ([len, endpoint, token]) => runUpload(makeFile(len, 31, "jwt.bin"), { endpoint, parallelUploads: 2, headers: { Authorization: `Bearer ${token}` } }),
      [len, tusker.endpoint, token],
    );
    assert.equal(result.aborted, false);
    const expected = await page.evaluate(([l]) => sha256(makeFile(l, 31, "jwt.bin")), [len]);
    const got = await page.evaluate((url) => downloadSha(url), `${result.url}?access_token=${token}`);
    assert.equal(got.status, 200);
    assert.equal(got.sha, expected);
    const refused = await page.evaluate(async (url) => {
      const res = await fetch(url);
      return { status: res.status, challenge: res.headers.get("www-authenticate") };
    }, result.url);
    assert.equal(refused.status, 401);
    assert.match(refused.challenge || "", /^Bearer/);
  });
});
