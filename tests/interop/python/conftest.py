"""Fixtures of the tuspy suite: a tusker binary (TUSKER_BIN) on a free
loopback port with a temporary data directory, and a log of the HTTP
requests tuspy sends."""

import json
import os
import subprocess
import threading
import uuid

import pytest
import requests


def _start(tmp_path, storage):
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    bin_path = os.environ.get("TUSKER_BIN") or os.path.join(repo, "target", "debug", "tusker")
    if not os.path.exists(bin_path):
        pytest.fail(f"no tusker binary at {bin_path}: run cargo build or set TUSKER_BIN")
    args = [bin_path, "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
            "--log-format", "json", "--workers", "2"]
    env = dict(os.environ, RUST_LOG="info")
    if storage == "s3":
        endpoint = os.environ["TUSKER_TEST_S3_ENDPOINT"]
        bucket = "p" + uuid.uuid4().hex
        requests.put(f"{endpoint}/{bucket}", timeout=10).raise_for_status()
        args += ["--storage", f"s3://{bucket}/x", "--s3-endpoint", endpoint, "--part-size", "5MiB"]
        env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found = {}
    ready = threading.Event()
    lines = []

    def read():
        for line in proc.stderr:
            lines.append(line.rstrip())
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("message") == "tusker listening" and "addr" in event:
                found["addr"] = event["addr"]
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(timeout=30)
    if "addr" not in found:
        proc.kill()
        pytest.fail("tusker did not start:\n" + "\n".join(lines[-50:]))
    return proc, f"http://{found['addr']}/files/"


@pytest.fixture(params=["file", "s3"])
def tusker(request, tmp_path):
    """The upload endpoint of a fresh server, on file and on S3 storage."""
    if request.param == "s3" and not os.environ.get("TUSKER_TEST_S3_ENDPOINT"):
        pytest.skip("set TUSKER_TEST_S3_ENDPOINT to run the S3 variant")
    proc, endpoint = _start(tmp_path, request.param)
    yield endpoint
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def sent(monkeypatch):
    """Records (method, headers) of every request tuspy makes through requests."""
    log = []
    for method in ("post", "patch", "head"):
        original = getattr(requests, method)

        def wrapper(url, *args, _original=original, _method=method, **kwargs):
            log.append((_method.upper(), dict(kwargs.get("headers") or {})))
            return _original(url, *args, **kwargs)

        monkeypatch.setattr(requests, method, wrapper)
    return log
