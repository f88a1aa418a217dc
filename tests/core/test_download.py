"""matbench data download against a local HTTP server on 127.0.0.1 that speaks range requests."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from matbench.cli import main
from matbench.download import MANIFEST, SOURCES, DatasetSource, DownloadError, Remote, download


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, honouring ``Range: bytes=N-`` (status 206), and logs what it sent."""

    sent: list[tuple[str, int]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = Path(self.directory) / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        RangeHandler.sent.append((self.path, len(data) - start))  # before the client has it all
        self.wfile.write(data[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: RangeHandler(*a, directory=str(served), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.sent = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


def _fmd_zip(path: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("image/wood/wood_001.jpg", b"\xff\xd8 not really a jpeg" * 500)
        archive.writestr("mask/wood/wood_001.jpg", b"mask" * 500)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_download_checks_unpacks_and_resumes(server, tmp_path: Path) -> None:
    url, served = server
    data = _fmd_zip(served / "FMD.zip")
    root = tmp_path / "fmd"
    # an interrupted earlier run left the first 1000 bytes
    root.mkdir()
    (root / "FMD.zip.part").write_bytes(data[:1000])
    # a stand-in for FMD.zip: pinned (a pin replaces the published MD5)
    pin = f"FMD.zip={hashlib.sha256(data).hexdigest()}"
    argv = ["data", "download", "fmd", "--root", str(root), "--mirror", url, "--quiet"]
    argv += ["--sha256", pin]
    assert main(argv) == 0
    assert RangeHandler.sent == [("/FMD.zip", len(data) - 1000)]  # only the rest was sent
    assert (root / "image" / "wood" / "wood_001.jpg").is_file() and not (root / "FMD.zip").exists()
    record = json.loads((root / MANIFEST).read_text())
    assert record["FMD.zip"] == hashlib.sha256(data).hexdigest()

    # a second run finds it done and fetches nothing
    assert main(argv) == 0
    assert len(RangeHandler.sent) == 1


def test_wrong_checksum_is_an_error(server, tmp_path: Path, capsys) -> None:
    url, served = server
    _fmd_zip(served / "FMD.zip")
    root = tmp_path / "fmd"
    argv = ["data", "download", "fmd", "--root", str(root), "--mirror", url, "--quiet"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--sha256", f"FMD.zip={'0' * 64}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "SHA-256" in err and "FMD.zip.bad" in err
    assert (root / "FMD.zip.bad").is_file() and not (root / "image").exists()


def test_missing_file_and_pinned_source(server, tmp_path: Path) -> None:
    url, served = server
    (served / "notes.txt").write_text("hello")
    good = hashlib.sha256(b"hello").hexdigest()
    source = DatasetSource(
        "t", "test", (Remote(f"{url}/notes.txt", "docs", good, False),), "-", "-"
    )
    (path,) = download(source, tmp_path / "r", quiet=True)
    assert path.read_text() == "hello" and path.parent.name == "docs"
    missing = DatasetSource("t", "test", (Remote(f"{url}/absent.zip"),), "-", "-")
    with pytest.raises(DownloadError, match="absent.zip: HTTP 404"):
        download(missing, tmp_path / "r2", quiet=True)


def test_every_source_names_licence_and_page() -> None:
    for source in SOURCES.values():
        assert source.licence and source.homepage.startswith("https://")
        assert all(r.url.startswith(("http://", "https://")) for r in source.files)


def test_published_checksums_are_checked(server, tmp_path: Path) -> None:
    url, served = server
    data = _fmd_zip(served / "FMD.zip")
    # FMD: only an MD5 is published (NEVIS); the stand-in is not the real archive
    with pytest.raises(
        DownloadError, match=r"MD5 [0-9a-f]{32} is not the published 0721ba72.*NEVIS"
    ):
        download(SOURCES["fmd"], tmp_path / "fmd", mirror=url, quiet=True)
    assert (tmp_path / "fmd" / "FMD.zip.bad").is_file()

    sha256, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()
    good = Remote(f"{url}/FMD.zip", sha256=sha256, md5=md5, size=len(data), checksums_from="x")
    assert download(DatasetSource("t", "t", (good,), "-", "-"), tmp_path / "a", quiet=True)
    for wrong, message in (
        ({"size": len(data) + 1}, f"{len(data)} bytes, not the published {len(data) + 1}"),
        ({"sha256": "0" * 64}, "SHA-256 .* is not the published 0000"),
        ({"md5": "0" * 32}, f"MD5 {md5} is not the published 0{{32}}"),
    ):
        remote = dataclasses.replace(good, **wrong)
        with pytest.raises(DownloadError, match=message):
            download(DatasetSource("t", "t", (remote,), "-", "-"), tmp_path / "b", quiet=True)


def test_shipped_checksums_name_their_source() -> None:
    remotes = {r.filename: r for source in SOURCES.values() for r in source.files}
    for name in ("train2017.zip", "val2017.zip", "lvis_v1_train.json.zip", "lvis_v1_val.json.zip"):
        remote = remotes[name]
        assert (
            len(remote.sha256 or "") == 64 and remote.size and "TensorFlow" in remote.checksums_from
        )
    assert len(remotes["FMD.zip"].md5 or "") == 32 and "NEVIS" in remotes["FMD.zip"].checksums_from
    dms = remotes["dms_v1_labels.zip"]  # nothing published: recorded on the first download
    assert dms.sha256 is None and dms.md5 is None and dms.size is None
