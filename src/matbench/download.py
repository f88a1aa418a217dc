"""``matbench data``: fetch the publicly downloadable datasets into the layouts matbench reads.

``matbench data list`` shows what can be fetched, from where, under which licence;
``matbench data download NAME --root DIR`` downloads (resuming an interrupted file with an HTTP
range request), checks each file and unpacks it. A file is checked against the checksums that
are published for it (``Remote.sha256``/``md5``/``size``, each with its source: the COCO 2017
and LVIS v1 archives by SHA-256 and size as TensorFlow Datasets and torchvision list them, FMD
by the MD5 of DeepMind's NEVIS dataset registry). Where none is published (DMS), the SHA-256 of
the first complete download is recorded in ``DIR/.matbench_downloads.json`` and later runs check
the file against it; ``--sha256 FILE=HEX`` pins one yourself (and replaces the published ones,
e.g. for a mirror's repackaged file).

Datasets whose photos are not a public download are not fetched: DMS ships label maps only
(its images come from Open Images through the release's own scripts, under the release's
terms); the MatSeg release is a manual download from its project page (or generate data with
``matbench synth``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from matbench.errors import DatasetFormatError, MatbenchError

MANIFEST = ".matbench_downloads.json"
CHUNK = 1 << 20


class DownloadError(MatbenchError, OSError):
    """A file that could not be fetched or did not check out.

    Args:
        message: What went wrong (the URL, the file).
        hint: What to do.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        self.hint = hint
        super().__init__(message)


@dataclass(frozen=True)
class Remote:
    """One downloadable file: where it comes from and where its content goes.

    Args:
        url: The official download URL.
        into: Folder (relative to the dataset root) the archive is unpacked into, or the file
            is stored in.
        sha256: The published SHA-256 (else the first download's is recorded and checked).
        unpack: Unpack a zip archive (and keep only the unpacked files).
        md5: The published MD5, where only that is published.
        size: The published size in bytes.
        checksums_from: Where the published checksums come from.
    """

    url: str
    into: str = "."
    sha256: str | None = None
    unpack: bool = True
    md5: str | None = None
    size: int | None = None
    checksums_from: str = ""

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DatasetSource:
    """A dataset that ``matbench data download`` can fetch.

    Args:
        name: The name on the command line.
        description: What it is and which matbench datamodule reads it.
        files: The files to fetch.
        licence: The terms it comes under.
        homepage: The official page.
    """

    name: str
    description: str
    files: tuple[Remote, ...]
    licence: str
    homepage: str
    notes: str = field(default="")


_LVIS = "https://dl.fbaipublicfiles.com/LVIS"
_COCO = "http://images.cocodataset.org/zips"
# SHA-256 and sizes as listed by TensorFlow Datasets (object_detection/lvis/checksums.tsv and
# url_checksums/coco.txt); the COCO SHA-256 also as torchvision's prototype COCO dataset.
_TFDS = "TensorFlow Datasets checksums (object_detection/lvis/checksums.tsv)"
_LVIS_FILES = (
    Remote(
        f"{_LVIS}/lvis_v1_train.json.zip",
        "lvis",
        sha256="334a4caa374030a7817cf050364525e910f7960f9b6968cef47cffbf3893f8ba",
        size=350_264_821,
        checksums_from=_TFDS,
    ),
    Remote(
        f"{_LVIS}/lvis_v1_val.json.zip",
        "lvis",
        sha256="5cae9a3c79aadb667550c2b5dcf7f4d86e059a41ec91ef690225b667e28e9ba5",
        size=64_026_968,
        checksums_from=_TFDS,
    ),
)
_COCO_FILES = (
    Remote(
        f"{_COCO}/val2017.zip",
        "coco",
        sha256="4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
        size=815_585_330,
        checksums_from=_TFDS + "; torchvision",
    ),
    Remote(
        f"{_COCO}/train2017.zip",
        "coco",
        sha256="69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929",
        size=19_336_861_798,
        checksums_from=_TFDS + "; torchvision",
    ),
)

SOURCES: dict[str, DatasetSource] = {
    source.name: source
    for source in (
        DatasetSource(
            "lvis",
            "LVIS v1 annotations (train, val) into <root>/lvis/ (LVIS-materials)",
            _LVIS_FILES,
            "CC BY 4.0 (annotations)",
            "https://www.lvisdataset.org/dataset",
        ),
        DatasetSource(
            "coco2017",
            "COCO 2017 train and val images into <root>/coco/ (LVIS-materials, FG-OVD); 19 GB",
            _COCO_FILES,
            "images: the Flickr terms of each photo (COCO terms of use); annotations CC BY 4.0",
            "https://cocodataset.org/#download",
        ),
        DatasetSource(
            "lvis_materials",
            "LVIS v1 annotations + COCO 2017 images: a complete LVIS-materials root "
            "(then `matbench materials build`)",
            _LVIS_FILES + _COCO_FILES,
            "LVIS annotations CC BY 4.0; COCO images under the Flickr terms of each photo",
            "https://www.lvisdataset.org/dataset",
        ),
        DatasetSource(
            "fmd",
            "Flickr Material Database: image/ and mask/ into <root> (FMDDataModule)",
            (
                Remote(
                    "http://people.csail.mit.edu/celiu/CVPR2010/FMD/FMD.zip",
                    md5="0721ba72cd981aa9599a81bbfaaebd75",
                    checksums_from="DeepMind NEVIS dataset registry "
                    "(datasets_storage/handlers/flickr_material_database.py)",
                ),
            ),
            "research use; the photos are Flickr images under Creative Commons licences",
            "https://people.csail.mit.edu/lavanya/fmd.html",
        ),
        DatasetSource(
            "dms",
            "DMS v1 label maps, info.json.gz and taxonomy.json into <root> (DMSDataModule); "
            "the photos come from Open Images through the release's own scripts",
            (
                Remote(
                    "https://docs-assets.developer.apple.com/ml-research/datasets/dms/"
                    "dms_v1_labels.zip"
                ),
            ),
            "CC BY-NC 4.0 (labels); photos: Open Images, under each photo's licence",
            "https://github.com/apple/ml-dms-dataset",
        ),
    )
}


def file_digests(path: Path) -> tuple[str, str]:
    """SHA-256 and MD5 of a file, in one read."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha256.update(block)
            md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


def check_file(target: Path, remote: Remote, pinned: str | None, recorded: str | None) -> str:
    """Check a fetched file against the user's pin, else the published size, SHA-256 and MD5,
    else the SHA-256 recorded by an earlier download; return its SHA-256. A file that fails
    is moved to ``<name>.bad`` (so that the next run fetches it afresh)."""
    sha256, md5 = file_digests(target)
    problems = []
    if pinned is not None:
        if sha256 != pinned.lower():
            problems.append(f"SHA-256 {sha256[:16]}… is not the pinned {pinned[:16]}…")
    else:
        published = f" (published by {remote.checksums_from})" if remote.checksums_from else ""
        size = target.stat().st_size
        if remote.size is not None and size != remote.size:
            problems.append(f"{size} bytes, not the published {remote.size}{published}")
        if remote.sha256 is not None and sha256 != remote.sha256.lower():
            problems.append(
                f"SHA-256 {sha256[:16]}… is not the published {remote.sha256[:16]}…{published}"
            )
        if remote.md5 is not None and md5 != remote.md5.lower():
            problems.append(f"MD5 {md5} is not the published {remote.md5}{published}")
        if remote.sha256 is None and recorded is not None and sha256 != recorded:
            problems.append(
                f"SHA-256 {sha256[:16]}… is not the {recorded[:16]}… recorded by the first download"
            )
    if problems:
        bad = target.with_name(target.name + ".bad")
        target.replace(bad)
        raise DownloadError(
            f"{target}: {'; '.join(problems)}; moved to {bad.name}",
            hint="run again to fetch it afresh; if it persists the server's file changed",
        )
    return sha256


def fetch(url: str, target: Path, timeout: float = 30.0, quiet: bool = False) -> Path:
    """Download ``url`` to ``target``, resuming ``target.part`` with a range request.

    A server that ignores the range (status 200) restarts the file from the beginning.
    Progress goes to stderr.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "matbench"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) only
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the part is already complete
            part.replace(target)
            return target
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(
            f"{url}: cannot be reached ({getattr(err, 'reason', err)})",
            hint="check the connection, or download the file yourself into the root and run "
            "again (an existing file is checked, not fetched)",
        ) from err
    with response:
        resumed = start and response.status == 206
        total = response.length
        total = (total + (start if resumed else 0)) if total is not None else None
        done = start if resumed else 0
        last = 0.0
        with part.open("ab" if resumed else "wb") as out:
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                if not quiet and time.monotonic() - last > 1.0:
                    last = time.monotonic()
                    size = f"/{total / 1e6:.0f} MB" if total else " MB"
                    print(f"\r  {target.name}: {done / 1e6:.0f}{size}", end="", file=sys.stderr)
    if total is not None and done != total:
        raise DownloadError(
            f"{url}: the connection ended after {done} of {total} bytes",
            hint="run the same command again: it resumes",
        )
    if not quiet:
        print(f"\r  {target.name}: {done / 1e6:.1f} MB done", file=sys.stderr)
    part.replace(target)
    return target


def _manifest(root: Path) -> dict[str, str]:
    path = root / MANIFEST
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValueError) as err:
        raise DatasetFormatError(path, f"not a download record ({err})") from err


def download(
    source: DatasetSource,
    root: str | Path,
    mirror: str | None = None,
    pinned: dict[str, str] | None = None,
    quiet: bool = False,
) -> list[Path]:
    """Fetch, check and unpack every file of ``source`` under ``root``.

    Args:
        source: What to fetch.
        root: The dataset root (created).
        mirror: Fetch ``<mirror>/<file name>`` instead of the official URLs.
        pinned: Expected SHA-256 by file name (overrides the recorded ones).
        quiet: No progress output.

    Returns:
        The downloaded archives or files (archives are removed once unpacked; then the
        folder they were unpacked into).
    """
    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    record = _manifest(root)
    outputs = []
    for remote in source.files:
        folder = root / remote.into
        target = folder / remote.filename
        done_mark = f"{remote.filename}:unpacked"
        if remote.unpack and record.get(done_mark) and not target.exists():
            outputs.append(folder)  # fetched, checked and unpacked by an earlier run
            continue
        url = f"{mirror.rstrip('/')}/{remote.filename}" if mirror else remote.url
        if not target.is_file():
            if not quiet:
                print(f"{source.name}: {url}", file=sys.stderr)
            fetch(url, target, quiet=quiet)
        pin = (pinned or {}).get(remote.filename)
        record[remote.filename] = check_file(target, remote, pin, record.get(remote.filename))
        if remote.unpack and zipfile.is_zipfile(target):
            with zipfile.ZipFile(target) as archive:
                archive.extractall(folder)  # noqa: S202 - the archive's hash was checked
            target.unlink()
            record[done_mark] = "yes"
            outputs.append(folder)
        else:
            outputs.append(target)
        tmp = root / f"{MANIFEST}.tmp"
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, root / MANIFEST)
    return outputs


def checksums_label(remote: Remote) -> str:
    """What a file is checked against, for ``matbench data list``."""
    kinds = [k for k, v in (("SHA-256", remote.sha256), ("MD5", remote.md5)) if v]
    if not kinds:
        return "the SHA-256 recorded by its first download (none is published)"
    size = " and size" if remote.size is not None else ""
    return f"published {' and '.join(kinds)}{size} ({remote.checksums_from})"


def main(argv: list[str]) -> int:
    """``matbench data list`` / ``matbench data download NAME --root DIR`` /
    ``matbench data export …`` (LitData shards, `matbench.datamodules.streaming`)."""
    if argv and argv[0] == "export":
        from matbench.datamodules.streaming import main as streaming_main

        return streaming_main(argv)
    parser = argparse.ArgumentParser(
        prog="matbench data",
        description="Fetch the publicly downloadable datasets (SHA-256 checked, resumable), "
        "or export a split to LitData streaming shards.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the datasets, their sources and licences")
    sub.add_parser("export", help="a split as LitData shards (matbench data export --help)")
    get = sub.add_parser("download", help="fetch, check and unpack a dataset")
    get.add_argument("name", choices=sorted(SOURCES))
    get.add_argument("--root", required=True, type=Path, help="the dataset root to fill")
    get.add_argument("--mirror", help="fetch <mirror>/<file name> instead of the official URLs")
    get.add_argument(
        "--sha256", action="append", default=[], metavar="FILE=HEX", help="pin a checksum"
    )
    get.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    if args.command == "list":
        for source in SOURCES.values():
            print(f"{source.name:<15} {source.description}")
            print(f"{'':<15} licence: {source.licence}; {source.homepage}")
            for remote in source.files:
                print(f"{'':<15}   {remote.url}")
                print(f"{'':<15}     checked by: {checksums_label(remote)}")
        return 0
    pinned = {}
    for item in args.sha256:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--sha256 expects FILE=HEX, got '{item}'")
        pinned[name] = value
    source = SOURCES[args.name]
    print(f"licence: {source.licence} ({source.homepage})")
    outputs = download(source, args.root, args.mirror, pinned, args.quiet)
    print(f"matbench data download {source.name} done")
    for path in dict.fromkeys(outputs):
        print(f"  {path}")
    print(f"  checksums:        {Path(args.root).expanduser().resolve() / MANIFEST}")
    return 0
