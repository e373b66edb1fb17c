// Helpers of the browser suite, loaded by the test page (served from a
// different loopback origin than tusker) next to tus-js-client's bundle.
"use strict";

window.makeFile = function (len, seed, name) {
  const out = new Uint8Array(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  // A fixed lastModified keeps the fingerprint equal across page loads.
  return new File([out], name, { type: "application/octet-stream", lastModified: 1700000000000 });
};

window.sha256 = async function (blobOrBuffer) {
  const buf = blobOrBuffer instanceof Blob ? await blobOrBuffer.arrayBuffer() : blobOrBuffer;
  const digest = await crypto.subtle.digest("SHA-256", buf);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
};

/** GET the upload (a cross-origin fetch) and hash it in the page. */
window.downloadSha = async function (url) {
  const res = await fetch(url);
  const buf = await res.arrayBuffer();
  return { status: res.status, length: buf.byteLength, sha: await window.sha256(buf) };
};

/**
 * Uploads `file`. With `abortAfter`, aborts once that many bytes are
 * acknowledged and resolves { aborted: true }. With `resume`, first looks
 * for a previous upload of the file in localStorage and resumes it.
 */
window.runUpload = function (file, options, abortAfter, resume) {
  const requests = [];
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(file, {
      retryDelays: [0, 200, 500],
      ...options,
      onBeforeRequest(req) {
        requests.push({ method: req.getMethod(), offset: req.getHeader("Upload-Offset"), concat: req.getHeader("Upload-Concat") || null });
      },
      onChunkComplete(_chunk, sent) {
        if (abortAfter && sent >= abortAfter) {
          upload.abort().then(() => resolve({ aborted: true, url: upload.url, requests }));
        }
      },
      onSuccess() { resolve({ aborted: false, url: upload.url, requests }); },
      onError(err) { reject(new Error(String(err))); },
    });
    const go = async () => {
      let resumed = 0;
      if (resume) {
        const previous = await upload.findPreviousUploads();
        resumed = previous.length;
        if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0]);
      }
      requests.push({ method: "resumed", count: resumed });
      upload.start();
    };
    go().catch(reject);
  });
};

window.storedFingerprints = function () {
  return Object.keys(localStorage).filter((k) => k.startsWith("tus::"));
};
