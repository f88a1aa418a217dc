"""``matbench data``: fetch the publicly downloadable datasets into the layouts matbench reads.

``matbench data list`` shows what can be fetched, from where, under which licence;
``matbench data download NAME --root DIR`` downloads (resuming an interrupted file with an HTTP
range request), checks each file's SHA-256 and unpacks it. Where the publisher gives no
checksum, the SHA-256 of the first complete download is recorded in ``DIR/.matbench_downloads.json``
and later runs check the file against it; ``--sha256 FILE=HEX`` pins one yourself.

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
        sha256: The expected SHA-256, when the publisher states one (else recorded on first
            download).
        unpack: Unpack a zip archive (and keep only the unpacked files).
    """

    url: str
    into: str = "."
    sha256: str | None = None
    unpack: bool = True

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
_LVIS_FILES = (
    Remote(f"{_LVIS}/lvis_v1_train.json.zip", "lvis"),
    Remote(f"{_LVIS}/lvis_v1_val.json.zip", "lvis"),
)
_COCO_FILES = (Remote(f"{_COCO}/val2017.zip", "coco"), Remote(f"{_COCO}/train2017.zip", "coco"))

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
            (Remote("http://people.csail.mit.edu/celiu/CVPR2010/FMD/FMD.zip"),),
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


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
        expected = (pinned or {}).get(remote.filename) or remote.sha256
        expected = expected or record.get(remote.filename)
        actual = sha256_file(target)
        if expected is not None and actual != expected.lower():
            bad = target.with_name(target.name + ".bad")
            target.replace(bad)
            raise DownloadError(
                f"{target}: SHA-256 {actual[:16]}… is not the expected {expected[:16]}…; "
                f"moved to {bad.name}",
                hint="run again to fetch it afresh; if it persists the server's file changed",
            )
        record[remote.filename] = actual
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
