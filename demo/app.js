// tusker demo: uploads chosen files with tus-js-client (window.tus, served
// from demo/node_modules by `tusker --demo`) and lists the finished ones.
"use strict";

(function () {
  const FINISHED_KEY = "tusker-demo-finished";
  const $ = (id) => document.getElementById(id);
  let endpoint = null;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function humanSize(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function refreshEmpty() {
    $("no-uploads").hidden = $("uploads").children.length > 0;
    $("no-finished").hidden = $("finished").children.length > 0;
  }

  // --- finished uploads (kept in localStorage across reloads) -----------
  function loadFinished() {
    try {
      const list = JSON.parse(localStorage.getItem(FINISHED_KEY) || "[]");
      return Array.isArray(list) ? list : [];
    } catch (_) {
      return [];
    }
  }

  function showFinished(entry) {
    const li = el("li", { "data-url": entry.url });
    const row = el("div", { class: "row" });
    const link = el("a", { href: entry.url, download: entry.name }, entry.name);
    row.append(link, el("span", { class: "size" }, humanSize(entry.size)));
    li.append(row);
    $("finished").prepend(li);
    refreshEmpty();
  }

  function addFinished(entry) {
    const list = loadFinished().filter((e) => e.url !== entry.url);
    list.push(entry);
    try {
      localStorage.setItem(FINISHED_KEY, JSON.stringify(list.slice(-50)));
    } catch (_) { /* storage full or disabled: the list is just not kept */ }
    showFinished(entry);
  }

  // --- one upload -------------------------------------------------------
  function start(file) {
    const li = el("li", { class: "upload", "data-state": "uploading" });
    const row = el("div", { class: "row" });
    const name = el("span", { class: "name", title: file.name }, file.name);
    const status = el("span", { class: "status" }, "starting…");
    const toggle = el("button", { class: "button toggle", type: "button" }, "Pause");
    const bar = el("progress", { max: "100", value: "0" });
    row.append(name, el("span", { class: "size" }, humanSize(file.size)), status, toggle);
    li.append(row, bar);
    $("uploads").prepend(li);
    refreshEmpty();

    const upload = new tus.Upload(file, {
      endpoint: endpoint,
      chunkSize: 5 * 1024 * 1024,
      parallelUploads: $("parallel").checked ? 3 : 1,
      retryDelays: [0, 1000, 3000, 5000],
      removeFingerprintOnSuccess: true,
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
      onProgress(sent, total) {
        const pct = total > 0 ? (sent / total) * 100 : 100;
        bar.value = pct;
        status.textContent = pct.toFixed(0) + " %";
      },
      onError(err) {
        running = false;
        li.dataset.state = "error";
        status.textContent = "failed: " + (err && err.message ? err.message.split("\n")[0] : err);
        status.className = "status error";
        toggle.textContent = "Retry";
      },
      onSuccess() {
        li.dataset.state = "done";
        bar.value = 100;
        status.textContent = "done";
        status.className = "status done";
        toggle.remove();
        addFinished({ url: upload.url, name: file.name, size: file.size });
        setTimeout(() => { li.remove(); refreshEmpty(); }, 1500);
      },
    });

    let running = false;
    function run() {
      running = true;
      li.dataset.state = "uploading";
      status.className = "status";
      toggle.textContent = "Pause";
      upload.findPreviousUploads().then((previous) => {
        if (previous.length > 0) {
          upload.resumeFromPreviousUpload(previous[0]);
          status.textContent = "resuming…";
        }
        upload.start();
      });
    }
    toggle.addEventListener("click", () => {
      if (running) {
        running = false;
        upload.abort();
        li.dataset.state = "paused";
        status.textContent = "paused at " + Math.floor(bar.value) + " %";
        toggle.textContent = "Resume";
      } else {
        run();
      }
    });
    run();
  }

  function startAll(files) {
    for (const file of files) start(file);
  }

  // --- wiring -----------------------------------------------------------
  $("files").addEventListener("change", (e) => {
    startAll(Array.from(e.target.files));
    e.target.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    startAll(Array.from(e.dataTransfer.files));
  });

  loadFinished().forEach(showFinished);
  refreshEmpty();

  fetch("config.json")
    .then((r) => r.json())
    .then((cfg) => {
      endpoint = new URL(cfg.endpoint, location.href).href;
      $("endpoint").textContent = endpoint;
      document.body.dataset.ready = "1";
    })
    .catch((err) => {
      $("endpoint").textContent = "unknown (" + err + ")";
    });
})();
