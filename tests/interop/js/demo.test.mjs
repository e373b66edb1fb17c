// The demo page (`tusker --demo`) clicked through in Chromium: choose
// files, pause and resume, see them in the finished list, download them.
// Saves demo-screenshot.png (paused) and demo-screenshot-finished.png in
// cargo's target directory.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { startTusker, launchChromium, artifactsDir, bytes, sha256, REPO, MiB } from "./harness.mjs";

const T = { timeout: 180_000 };

describe("demo page in Chromium", () => {
  let tusker, browser, page;

  before(async () => {
    tusker = await startTusker({ args: ["--demo", "--demo-dir", join(REPO, "demo")] });
    browser = await launchChromium();
    page = await browser.context.newPage();
    page.on("pageerror", (e) => console.error("page error:", e));
  });

  after(async () => {
    if (browser) await browser.close();
    if (tusker) await tusker.stop();
  });

  async function downloadInPage(href) {
    return page.evaluate(async (url) => {
      const res = await fetch(url);
      const buf = await res.arrayBuffer();
      const digest = await crypto.subtle.digest("SHA-256", buf);
      return {
        status: res.status,
        disposition: res.headers.get("content-disposition"),
        sha: Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join(""),
      };
    }, href);
  }

  it("uploads, pauses and resumes, lists and downloads", T, async () => {
    await page.goto(tusker.origin + "/demo/");
    await page.waitForSelector("body[data-ready='1']", { timeout: 20_000 });
    assert.equal(await page.textContent("#endpoint"), tusker.endpoint);

    // A small file: straight to the finished list.
    const small = bytes(300_000, 31);
    await page.setInputFiles("#files", { name: "notes 📝.txt", mimeType: "text/plain", buffer: small });
    const smallLink = page.locator("#finished li a", { hasText: "notes 📝.txt" });
    await smallLink.waitFor({ timeout: 60_000 });
    const href = await smallLink.getAttribute("href");
    assert.ok(href.startsWith(tusker.endpoint), href);
    const got = await downloadInPage(href);
    assert.equal(got.status, 200);
    assert.equal(got.sha, sha256(small));
    assert.match(got.disposition, /filename\*=UTF-8''notes%20%F0%9F%93%9D\.txt/);

    // A larger file over a throttled link, paused and resumed with the button.
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 1 * MiB });
    const big = bytes(12 * MiB, 32);
    await page.setInputFiles("#files", { name: "holiday-video.mp4", mimeType: "video/mp4", buffer: big });
    const row = page.locator("#uploads li.upload", { hasText: "holiday-video.mp4" });
    await row.waitFor({ timeout: 20_000 });
    // Pause once some progress shows (the link is throttled, so it does).
    await page.waitForFunction(() => {
      const bar = document.querySelector("#uploads li.upload progress");
      return bar && bar.value >= 15;
    }, null, { timeout: 60_000 });
    await row.locator("button.toggle").click();
    await page.waitForSelector("#uploads li.upload[data-state='paused']", { timeout: 20_000 });
    const shot = join(artifactsDir(), "demo-screenshot.png");
    await page.screenshot({ path: shot, fullPage: true });
    console.log("screenshot saved to", shot);
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await row.locator("button.toggle").click();
    const bigLink = page.locator("#finished li a", { hasText: "holiday-video.mp4" });
    await bigLink.waitFor({ timeout: 120_000 });
    const bigGot = await downloadInPage(await bigLink.getAttribute("href"));
    assert.equal(bigGot.status, 200);
    assert.equal(bigGot.sha, sha256(big));
    assert.equal(await page.locator("#finished li").count(), 2);
    await page.screenshot({ path: join(artifactsDir(), "demo-screenshot-finished.png"), fullPage: true });
  });
});
