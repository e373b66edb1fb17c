// tus-js-client 4 in Node against the tusker binary, on file storage and
// (when TUSKER_TEST_S3_ENDPOINT is set) on S3 storage. Every upload is
// checked by downloading it again and comparing SHA-256.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { Upload } from "tus-js-client";
import { startTusker, s3Endpoint, bytes, sha256, download, MiB } from "./harness.mjs";

const T = { timeout: 120_000 };

/**
 * Runs one upload to completion. Resolves to { upload, requests } where
 * requests lists { method, headers } of every request the client sent.
 * `hook(upload, event)` may act on progress events (e.g. abort).
 */
function run(input, options, hook) {
  const requests = [];
  return new Promise((resolve, reject) => {
    const upload = new Upload(input, {
      retryDelays: [0, 200, 500],
      ...options,
      onBeforeRequest(req) {
        const h = (n) => req.getHeader(n);
        requests.push({
          method: req.getMethod(),
          url: req.getURL(),
          offset: h("Upload-Offset"),
          concat: h("Upload-Concat"),
          length: h("Upload-Length"),
          deferred: h("Upload-Defer-Length"),
          contentType: h("Content-Type"),
        });
      },
      onChunkComplete(chunk, sent, total) {
        if (hook) hook(upload, { chunk, sent, total }, resolve);
      },
      onSuccess() { resolve({ upload, requests }); },
      onError(err) { reject(err); },
    });
    upload.start();
  });
}

async function head(url) {
  return fetch(url, { method: "HEAD", headers: { "Tus-Resumable": "1.0.0" } });
}

async function assertStored(url, data) {
  const got = await download(url);
  assert.equal(got.status, 200);
  assert.equal(got.length, data.length);
  assert.equal(got.sha, sha256(data));
  return got;
}

const count = (requests, method) => requests.filter((r) => r.method === method).length;

const variants = [{ storage: "file" }, { storage: "s3" }];

for (const { storage } of variants) {
  const skip = storage === "s3" && !s3Endpoint() ? "set TUSKER_TEST_S3_ENDPOINT to run the S3 variant" : false;

  describe(`tus-js-client on ${storage} storage`, { skip }, () => {
    let server;
    before(async () => { server = await startTusker({ storage }); });
    after(async () => { if (server) await server.stop(); });

    it("sends a whole file in one PATCH by default", T, async () => {
      const data = bytes(3 * MiB + 17, 1);
      const { upload, requests } = await run(data, { endpoint: server.endpoint, metadata: { filename: "one.bin" } });
      assert.equal(count(requests, "POST"), 1);
      assert.equal(count(requests, "PATCH"), 1);
      await assertStored(upload.url, data);
    });

    it("sends 1 MiB chunks", T, async () => {
      const data = bytes(5 * MiB + 512 * 1024, 2);
      const { upload, requests } = await run(data, { endpoint: server.endpoint, chunkSize: MiB });
      assert.equal(count(requests, "PATCH"), 6);
      const offsets = requests.filter((r) => r.method === "PATCH").map((r) => Number(r.offset));
      assert.deepEqual(offsets, [0, 1, 2, 3, 4, 5].map((i) => i * MiB));
      await assertStored(upload.url, data);
    });

    it("sends the first chunk with the POST (uploadDataDuringCreation)", T, async () => {
      const data = bytes(2 * MiB + 1000, 3);
      const { upload, requests } = await run(data, { endpoint: server.endpoint, chunkSize: MiB, uploadDataDuringCreation: true });
      assert.equal(requests[0].method, "POST");
      assert.equal(requests[0].contentType, "application/offset+octet-stream");
      assert.equal(count(requests, "PATCH"), 2);
      assert.equal(Number(requests.find((r) => r.method === "PATCH").offset), MiB);
      await assertStored(upload.url, data);
    });

    it("uploads in 3 parallel partial uploads and concatenates them", T, async () => {
      const data = bytes(7 * MiB + 333, 4);
      const { upload, requests } = await run(data, { endpoint: server.endpoint, parallelUploads: 3, metadata: { filename: "parallel.bin" } });
      const posts = requests.filter((r) => r.method === "POST");
      assert.equal(posts.filter((r) => r.concat === "partial").length, 3);
      const final = posts.find((r) => r.concat && r.concat.startsWith("final;"));
      assert.ok(final, "a final upload was created");
      await assertStored(upload.url, data);
      const res = await head(upload.url);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("upload-length"), String(data.length));
    });

    it("aborts and resumes on the same URL", T, async () => {
      const data = bytes(4 * MiB + 99, 5);
      // Abort after two chunks: the promise then resolves with no success.
      const first = await run(data, { endpoint: server.endpoint, chunkSize: MiB }, (upload, ev, done) => {
        if (ev.sent >= 2 * MiB) upload.abort().then(() => done({ upload, aborted: true }));
      });
      const url = first.upload.url;
      assert.ok(url);
      const mid = await head(url);
      assert.equal(mid.headers.get("upload-offset"), String(2 * MiB));
      const second = await run(data, { endpoint: server.endpoint, uploadUrl: url, chunkSize: MiB });
      assert.equal(count(second.requests, "POST"), 0, "no new upload");
      assert.equal(second.requests[0].method, "HEAD");
      const patches = second.requests.filter((r) => r.method === "PATCH");
      assert.equal(Number(patches[0].offset), 2 * MiB);
      assert.equal(second.upload.url, url);
      await assertStored(url, data);
    });

    it("uploads a stream of unknown length (uploadLengthDeferred)", T, async () => {
      const data = bytes(3 * MiB + 4321, 6);
      const pieces = [];
      for (let i = 0; i < data.length; i += 100_000) pieces.push(data.subarray(i, i + 100_000));
      const stream = Readable.from(pieces);
      const { upload, requests } = await run(stream, { endpoint: server.endpoint, chunkSize: MiB, uploadLengthDeferred: true });
      assert.equal(requests[0].deferred, "1");
      assert.equal(requests[0].length, undefined);
      await assertStored(upload.url, data);
      const res = await head(upload.url);
      assert.equal(res.headers.get("upload-length"), String(data.length));
      assert.equal(res.headers.get("upload-offset"), String(data.length));
    });

    it("terminates with abort(true)", T, async () => {
      const data = bytes(3 * MiB, 7);
      const { upload } = await run(data, { endpoint: server.endpoint, chunkSize: MiB }, (upload, ev, done) => {
        if (ev.sent >= MiB) upload.abort(true).then(() => done({ upload }), (e) => done({ upload, error: e }));
      });
      assert.ok(upload.url);
      const res = await head(upload.url);
      assert.equal(res.status, 410, "terminated upload is gone");
      const get = await fetch(upload.url);
      assert.ok([404, 410].includes(get.status), `GET after termination: ${get.status}`);
    });

    it("uploads zero bytes", T, async () => {
      const data = Buffer.alloc(0);
      const { upload } = await run(data, { endpoint: server.endpoint, metadata: { filename: "empty.txt", filetype: "text/plain" } });
      await assertStored(upload.url, data);
      const res = await head(upload.url);
      assert.equal(res.headers.get("upload-length"), "0");
      assert.equal(res.headers.get("upload-offset"), "0");
    });

    it("round-trips non-ASCII metadata through HEAD and Content-Disposition", T, async () => {
      const name = "vidéo 🎬.mp4";
      const data = bytes(200_000, 8);
      const { upload } = await run(data, { endpoint: server.endpoint, metadata: { filename: name, filetype: "video/mp4" } });
      const res = await head(upload.url);
      const meta = Object.fromEntries(
        res.headers.get("upload-metadata").split(",").map((pair) => {
          const [k, v] = pair.trim().split(" ");
          return [k, Buffer.from(v || "", "base64").toString("utf8")];
        }),
      );
      assert.equal(meta.filename, name);
      assert.equal(meta.filetype, "video/mp4");
      const got = await assertStored(upload.url, data);
      assert.equal(got.headers.get("content-type"), "video/mp4");
      const disposition = got.headers.get("content-disposition");
      const star = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
      assert.ok(star, `filename* in ${disposition}`);
      assert.equal(decodeURIComponent(star[1]), name);
    });
  });
}

// JWT authorization (--auth-jwt-secret): tus-js-client sends the token as a
// header on every request; downloads work with the header or ?access_token=.
import { createHmac } from "node:crypto";

const SECRET = "tusker-client-suite-secret-0123456789";

/** An HS256 token, as an app backend would mint it. */
function mint(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const sig = createHmac("sha256", SECRET).update(body).digest("base64url");
  return `${body}.${sig}`;
}

describe("tus-js-client with JWT authorization", () => {
  let server;
  before(async () => { server = await startTusker({ args: ["--auth-jwt-secret", SECRET] }); });
  after(async () => { if (server) await server.stop(); });
  const exp = () => Math.floor(Date.now() / 1000) + 600;

  it("uploads and downloads with a token; refuses without one", T, async () => {
    const token = mint({ sub: "alice", exp: exp() });
    const data = bytes(2 * MiB + 5, 9);
    const { upload } = await run(data, {
      endpoint: server.endpoint,
      chunkSize: MiB,
      headers: { Authorization: `Bearer ${token}` },
    });
    const withHeader = await fetch(upload.url, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(withHeader.status, 200);
    assert.equal(sha256(Buffer.from(await withHeader.arrayBuffer())), sha256(data));
    const withQuery = await download(`${upload.url}?access_token=${token}`);
    assert.equal(withQuery.status, 200);
    assert.equal(withQuery.sha, sha256(data));
    const none = await fetch(upload.url);
    assert.equal(none.status, 401);
    assert.match(none.headers.get("www-authenticate") || "", /^Bearer/);
    const bob = await fetch(upload.url, { headers: { Authorization: `Bearer ${mint({ sub: "bob", exp: exp() })}` } });
    assert.equal(bob.status, 403);
  });

  it("fails the upload with an expired token", T, async () => {
    const token = mint({ sub: "alice", exp: Math.floor(Date.now() / 1000) - 3600 });
    await assert.rejects(
      run(bytes(1000, 3), { endpoint: server.endpoint, retryDelays: [], headers: { Authorization: `Bearer ${token}` } }),
      /401/,
    );
  });
});
