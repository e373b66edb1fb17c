"""tuspy (the tus Python client, from PyPI) against tusker."""

import base64
import hashlib
import io
import random

import pytest
import requests
from tusclient import client
from tusclient.exceptions import TusCommunicationError
from tusclient.storage import filestorage

KIB = 1024


def data(n, seed):
    return random.Random(seed).randbytes(n)


def assert_stored(url, payload):
    res = requests.get(url, timeout=30)
    assert res.status_code == 200
    assert len(res.content) == len(payload)
    assert hashlib.sha256(res.content).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_chunked_upload_with_sha1_checksums(tusker, sent):
    payload = data(1_300_000, 1)
    tus = client.TusClient(tusker)
    uploader = tus.uploader(file_stream=io.BytesIO(payload), chunk_size=256 * KIB,
                            upload_checksum=True, metadata={"filename": "report.pdf"})
    uploader.upload()
    patches = [h for m, h in sent if m == "PATCH"]
    assert len(patches) == 5
    offset = 0
    for headers in patches:
        chunk = payload[offset:offset + 256 * KIB]
        want = "sha1 " + base64.b64encode(hashlib.sha1(chunk).digest()).decode()
        assert headers["upload-checksum"] == want
        offset += len(chunk)
    assert_stored(uploader.url, payload)


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(tusker, monkeypatch):
    payload = data(100_000, 2)
    tus = client.TusClient(tusker)
    uploader = tus.uploader(file_stream=io.BytesIO(payload), chunk_size=64 * KIB,
                            upload_checksum=True, retries=0)
    # Checksums of other bytes: as if the body were corrupted on the way.
    monkeypatch.setattr(uploader, "_BaseUploader__checksum_algorithm",
                        lambda chunk: hashlib.sha1(b"x" + chunk))
    with pytest.raises(TusCommunicationError) as err:
        uploader.upload_chunk()
    assert err.value.status_code == 460
    head = requests.head(uploader.url, headers={"Tus-Resumable": "1.0.0"}, timeout=10)
    assert head.headers["upload-offset"] == "0"


def test_resumes_through_the_stored_url(tusker, tmp_path, sent):
    payload = data(900_000, 3)
    path = tmp_path / "movie.bin"
    path.write_bytes(payload)
    storage = filestorage.FileStorage(str(tmp_path / "urls.json"))
    first = client.TusClient(tusker).uploader(str(path), chunk_size=200 * KIB,
                                              store_url=True, url_storage=storage)
    first.upload_chunk()
    first.upload_chunk()
    assert first.offset == 400 * KIB
    # A new process: only the URL storage remembers the upload.
    sent.clear()
    second = client.TusClient(tusker).uploader(str(path), chunk_size=200 * KIB,
                                               store_url=True, url_storage=storage)
    assert second.url == first.url
    assert second.offset == 400 * KIB
    second.upload()
    assert [m for m, _ in sent if m == "POST"] == []
    assert_stored(second.url, payload)


def test_upload_without_metadata_sends_an_empty_header(tusker, sent):
    payload = data(50_000, 4)
    uploader = client.TusClient(tusker).uploader(file_stream=io.BytesIO(payload), chunk_size=64 * KIB)
    uploader.upload()
    post = next(h for m, h in sent if m == "POST")
    assert post["upload-metadata"] == ""
    head = requests.head(uploader.url, headers={"Tus-Resumable": "1.0.0"}, timeout=10)
    assert head.status_code == 200
    assert "upload-metadata" not in head.headers
    assert_stored(uploader.url, payload)
