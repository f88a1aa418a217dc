"""Streaming shards: any matbench dataset's samples in LitData's optimized format.

``matbench data export`` decodes a split once (object crops, masks, captions, labels, keys,
exactly as its datamodule produces them) and writes the samples into LitData chunks
(``chunk-*.bin`` + ``index.json``) plus ``matbench.json`` (class names, split, collate). The
folder can live on local disk or object storage (``s3://…``); :class:`StreamingDataModule`
streams it to every rank of a multi-node fit: LitData hands each rank and loader worker its
own chunks, so each sample is read once per epoch without a shared file system.

LitData is optional (``pip install "matbench[stream]"``) and imported only here, when used.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from matbench.datamodules.base import BaseDataModule, list_collate
from matbench.datamodules.folder import RandomHorizontalFlip

#: Written beside the LitData chunks: what the samples are.
META_FILE = "matbench.json"
#: Bumped when the meaning of an exported folder changes.
EXPORT_FORMAT = 1
#: Datamodule arguments that export turns off: random training augmentation (a flip written
#: once would be the same flip every epoch) and work deferred to the device after transfer.
EXPORT_OFF_ARGS = ("flip", "augment", "crop_on_device")


def require_litdata() -> ModuleType:
    """The ``litdata`` module, or an ImportError naming the extra that installs it."""
    try:
        import litdata
    except ImportError as err:
        raise ImportError('streaming shards need LitData: pip install "matbench[stream]"') from err
    return litdata


def _as_list(samples: list[Any]) -> list[Any]:
    return samples


def _check_value(value: Any, where: str) -> None:
    if isinstance(value, (torch.Tensor, str, int, float, bool)):
        return
    raise TypeError(
        f"{where}: a {type(value).__name__} cannot be written to a shard (tensors, strings "
        "and numbers only)"
    )


def export_samples(
    dataset: Dataset,
    output_dir: str | Path,
    chunk_bytes: str | int = "64MB",
    num_workers: int = 0,
    batch_size: int = 32,
    order: Sequence[int] | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> int:
    """Write every sample of ``dataset`` into LitData chunks in ``output_dir``.

    Args:
        dataset: Any dataset returning dict samples of tensors, strings and numbers.
        output_dir: An empty or new local folder.
        chunk_bytes: Target chunk size (LitData's ``chunk_bytes``).
        num_workers: Loader worker processes that decode samples (the writing is in this
            process, in order).
        batch_size: Samples per worker fetch (a dataset with ``__getitems__`` decodes each
            image once per fetch).
        order: The order to write the samples in (default: dataset order).
        meta: Extra metadata for ``matbench.json``.
        progress: Print progress to stderr.

    Returns:
        The number of samples written.
    """
    require_litdata()
    from litdata.streaming.cache import Cache

    out = Path(output_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"'{out}' is not empty: export into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    indices = list(range(len(dataset))) if order is None else [int(i) for i in order]  # type: ignore[arg-type]
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices if order is not None else SequentialSampler(dataset),  # type: ignore[arg-type]
        num_workers=num_workers,
        collate_fn=_as_list,
    )
    cache = Cache(str(out), chunk_bytes=chunk_bytes)
    fields: dict[str, str] | None = None
    count, start, shown = 0, time.perf_counter(), 0.0
    for batch in loader:
        for sample in batch:
            where = f"sample {count} (key {sample.get('key', '?')})"
            kinds = {k: type(v).__name__ for k, v in sample.items()}
            for key, value in sample.items():
                _check_value(value, f"{where}, field '{key}'")
            if fields is None:
                fields = kinds
            elif kinds != fields:
                raise ValueError(f"{where} has fields {kinds}, the first sample had {fields}")
            cache[count] = sample
            count += 1
        now = time.perf_counter()
        if progress and (now - shown > 5 or count == len(indices)):
            shown = now
            rate = count / max(now - start, 1e-9)
            print(f"export: {count}/{len(indices)} samples ({rate:.1f}/s)", file=sys.stderr)
    cache.done()
    cache.merge()
    record = {"format": EXPORT_FORMAT, "num_samples": count, "fields": fields or {}}
    record.update(meta or {})
    (out / META_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return count


def read_meta(directory: str) -> dict[str, Any]:
    """``matbench.json`` of an exported folder ({} for a remote folder or a missing file)."""
    if "://" in directory:
        return {}
    path = Path(directory).expanduser() / META_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


class StreamingDataModule(BaseDataModule):
    """Samples streamed from folders written by ``matbench data export``.

    Batches hold the same sample dicts as the source datamodule's. Training reads the train
    folder in a seeded shuffle of LitData (chunks, then items within a window), split over
    ranks and workers; under DDP LitData drops the last few samples so that every rank has the
    same number of batches. Validation, test and predict read every sample exactly once over
    all ranks, in order (ranks may get different numbers, as with matbench's unpadded sampler).

    Args:
        train_dir: Exported training split (a local path or an object-store URL).
        val_dir: Exported validation split.
        test_dir: Exported test split.
        predict_dir: Exported split to predict (default: ``test_dir``).
        batch_size: Samples per training batch.
        num_workers: Loader worker processes.
        eval_batch_size: Samples per evaluation batch (default: ``batch_size``).
        shuffle: Shuffle the training stream.
        flip: Random horizontal flips of training samples (``image``, ``mask``, ``context``).
        cache_dir: Local folder for chunks downloaded from object storage (LitData's default
            when None).
        class_names: Class names, when the folders are remote (a local folder's
            ``matbench.json`` has them).
        test_split: Name of the split ``test_dir`` holds (from ``matbench.json`` when None).
    """

    def __init__(
        self,
        train_dir: str | None = None,
        val_dir: str | None = None,
        test_dir: str | None = None,
        predict_dir: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        shuffle: bool = True,
        flip: bool = False,
        cache_dir: str | None = None,
        class_names: list[str] | None = None,
        test_split: str | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.save_hyperparameters()
        require_litdata()
        self.dirs = {"train": train_dir, "val": val_dir, "test": test_dir}
        self.dirs["predict"] = predict_dir or test_dir
        self.meta: dict[str, Any] = {}
        for directory in self.dirs.values():
            if directory and not self.meta:
                self.meta = read_meta(directory)
        self._class_names = class_names
        self.test_split = test_split or str(
            read_meta(test_dir).get("split", "test") if test_dir else "test"
        )
        if self.meta.get("collate") == "list":
            self.collate_fn = list_collate

    @property
    def class_names(self) -> list[str]:
        """The class names recorded at export (or given)."""
        if self._class_names is not None:
            return list(self._class_names)
        return list(self.meta.get("class_names") or [])

    def _stream(self, stage: str, train: bool) -> Any:
        from litdata import StreamingDataset

        directory = self.dirs[stage]
        if not directory:
            raise RuntimeError(f"{type(self).__name__} has no {stage} folder (set {stage}_dir)")
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return StreamingDataset(
            directory,
            cache_dir=self.hparams.cache_dir,
            shuffle=train and self.hparams.shuffle,
            drop_last=None if train else False,
            seed=seed,
            transform=RandomHorizontalFlip() if (train and self.hparams.flip) else None,
        )

    def _streaming_loader(self, stage: str, train: bool) -> Any:
        from litdata import StreamingDataLoader

        return StreamingDataLoader(
            self._stream(stage, train),
            batch_size=self.batch_size if train else self.eval_batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
        )

    def train_dataloader(self) -> Any:
        return self._streaming_loader("train", train=True)

    def val_dataloader(self) -> Any:
        return self._streaming_loader("val", train=False)

    def test_dataloader(self) -> Any:
        return self._streaming_loader("test", train=False)

    def predict_dataloader(self) -> Any:
        return self._streaming_loader("predict", train=False)

    def setup(self, stage: str | None = None) -> None:
        """Nothing to index: LitData reads each folder's ``index.json`` when it streams."""


# -- matbench data export ----------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def export_main(argv: Sequence[str]) -> int:
    """``matbench data export --config CFG --split train --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="matbench data export",
        description="Write a split of an experiment config's datamodule into LitData shards "
        "(read them back with matbench.datamodules.StreamingDataModule).",
    )
    parser.add_argument("--config", required=True, help="experiment config (its data section)")
    parser.add_argument("--split", required=True, choices=("train", "val", "test", "predict"))
    parser.add_argument("--out", required=True, help="a new, empty output folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a datamodule argument, e.g. --set root=/data/lvis (repeatable)",
    )
    parser.add_argument("--chunk-bytes", default="64MB", help="LitData chunk size (64MB)")
    parser.add_argument("--workers", type=int, default=0, help="decoding worker processes")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per worker fetch")
    parser.add_argument(
        "--group-by-image",
        action="store_true",
        help="write the samples of an image together (each image decoded once; for training "
        "splits: evaluation splits keep dataset order)",
    )
    args = parser.parse_args(list(argv))
    from matbench.utils.config import config_section

    cls, init_args = config_section(args.config, "data", "matbench.datamodules")
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set needs NAME=VALUE, got '{item}'")
        init_args[name] = _parse_value(value)
    accepted = inspect.signature(cls).parameters
    for name in EXPORT_OFF_ARGS:
        if name in accepted:
            init_args[name] = False
    datamodule = cls(**init_args)
    stage = {"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[args.split]
    datamodule.setup(stage)
    dataset = getattr(datamodule, f"{args.split}_dataset", None)
    if dataset is None:
        print(f"error: {cls.__name__} has no {args.split} dataset", file=sys.stderr)
        return 2
    order = None
    if args.group_by_image and hasattr(dataset, "sample_groups"):
        from matbench.datamodules.sampler import group_index

        order = group_index(dataset.sample_groups())[0].tolist()
    class_names = datamodule.class_names if isinstance(datamodule, BaseDataModule) else None
    meta = {
        "datamodule": cls.__name__,
        "init_args": {k: str(v) if isinstance(v, Path) else v for k, v in init_args.items()},
        "split": getattr(datamodule, "test_split", "test")
        if args.split in ("test", "predict")
        else args.split,
        "class_names": [str(c) for c in class_names] if class_names else [],
        "collate": "list" if datamodule.collate_fn is list_collate else "stack",
    }
    count = export_samples(
        dataset,
        args.out,
        chunk_bytes=args.chunk_bytes,
        num_workers=args.workers,
        batch_size=args.batch_size,
        order=order,
        meta=meta,
    )
    print(f"wrote {count} samples to {args.out}")
    return 0


def main(argv: Sequence[str]) -> int:
    """``matbench data <command>``: ``export``."""
    commands = {"export": export_main}
    if not argv or argv[0] not in commands:
        print("usage: matbench data export --config CFG --split SPLIT --out DIR", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])
