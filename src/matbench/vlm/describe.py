"""``matbench describe``: ask a vision-language model about every region of a datamodule.

``--task describe`` (default) writes the appearance-description sidecar ``{sample key:
description}`` that the two-stream readers take (``descriptions:``); ``--task classify`` is
the zero-shot VLM baseline: the model picks one class from the list for each region, and
the parsed answers are scored by the classification metrics into a results JSON.

Regions come from any matbench datamodule whose datasets hold material regions (FMD,
MaterialFolder, DMS in region mode, LVIS-materials), taken from a ``--config`` file's
``data:`` section (and ``--data.*`` overrides) or from ``--data <class>``. They are read at
full resolution: the datamodule's resizing, cropping and augmentation are not applied.

Answers are cached in a JSONL file keyed by the SHA-256 of the image's pixels, the region
(its mask's SHA-256), the prompt (version and text hash) and the model id; a rerun only asks
for what is missing (and retries failures), and a killed run loses at most one batch.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import queue
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from matbench.results import atomic_write_text, package_versions, write_run
from matbench.utils.progress import progress_bar
from matbench.vlm import add_model_arguments, backend_from_args
from matbench.vlm.base import MARKERS, Backend, Request
from matbench.vlm.store import AnswerStore, answer_id

TASKS = ("describe", "classify")


class DescribeError(ValueError):
    """Bad input of ``matbench describe``: the message names the file or argument."""


SPLITS = ("train", "val", "test", "predict")


# -- prompts -------------------------------------------------------------------------------------
def load_prompts(path: str | Path | None = None) -> dict[str, Any]:
    """The prompt file (the packaged ``matbench/data/vlm_prompts.json`` by default)."""
    if path is None:
        text = resources.files("matbench").joinpath("data/vlm_prompts.json").read_text("utf-8")
        source = "matbench/data/vlm_prompts.json"
    else:
        text = Path(path).expanduser().read_text(encoding="utf-8")
        source = str(path)
    try:
        prompts = json.loads(text)
    except json.JSONDecodeError as err:
        raise DescribeError(f"prompt file {source}: not valid JSON ({err})") from err
    if not isinstance(prompts, dict) or "version" not in prompts:
        raise DescribeError(f"prompt file {source}: expected an object with a 'version'")
    for task in TASKS:
        missing = [m for m in MARKERS if not isinstance(prompts.get(task, {}).get(m), str)]
        if missing:
            raise DescribeError(f"prompt file {source}: no '{task}' prompt for {missing}")
    prompts["_source"] = source
    return prompts


@dataclass
class Prompt:
    """One task's prompt for one marker, with the id that enters the cache keys."""

    text: str
    system: str | None
    version: str

    @property
    def id(self) -> str:
        digest = hashlib.sha256(f"{self.system}\n{self.text}".encode()).hexdigest()[:12]
        return f"v{self.version}:{digest}"


def make_prompt(
    prompts: dict[str, Any], task: str, marker: str, classes: Sequence[str] = ()
) -> Prompt:
    text = prompts[task][marker]
    if task == "classify":
        text = text.replace("{classes}", ", ".join(classes))
    return Prompt(text=text, system=prompts.get("system"), version=str(prompts["version"]))


# -- answers to classes -------------------------------------------------------------------------
def _names(class_name: str) -> list[str]:
    """The ways an answer may name a class: the name, its ``/`` parts and its head before a
    comma (``Fabric/cloth`` → fabric/cloth, fabric, cloth)."""
    name = class_name.lower().strip()
    parts = {name, name.split(",")[0].strip()}
    parts |= {p.strip() for p in name.split(",")[0].split("/")}
    return sorted((p for p in parts if p), key=len, reverse=True)


def parse_class(answer: str, classes: Sequence[str]) -> int | None:
    """The class an answer chose, or None when it names none or several.

    The whole answer (lower case, without surrounding punctuation and a leading "answer:")
    equal to a name wins; otherwise exactly one class must occur as a whole word (plural
    ``s``/``es`` allowed) in the answer.
    """
    text = answer.lower().strip()
    text = re.sub(r"^(the )?(answer|material)\s*(is)?\s*[:\-]?\s*", "", text)
    text = text.strip(" \t\n.!\"'`*")
    for i, name in enumerate(classes):
        if text in _names(name):
            return i
    found = set()
    for i, name in enumerate(classes):
        for part in _names(name):
            if re.search(rf"(?<![\w-]){re.escape(part)}(s|es)?(?![\w-])", text):
                found.add(i)
                break
    return found.pop() if len(found) == 1 else None


# -- regions ------------------------------------------------------------------------------------
def load_datamodule(config: str | None, data_args: Sequence[str]) -> Any:
    """The datamodule of a matbench config's ``data:`` section, with ``--data.*`` overrides
    (or ``--data <class>`` and its arguments alone)."""
    import importlib

    import yaml
    from jsonargparse import ArgumentParser

    from matbench.datamodules.base import BaseDataModule

    importlib.import_module("matbench.datamodules")
    parser = ArgumentParser(prog="matbench describe", exit_on_error=False)
    parser.add_subclass_arguments(BaseDataModule, "data", required=True)
    args: list[str] = []
    if config is not None:
        path = Path(config).expanduser()
        if not path.is_file():
            raise DescribeError(f"config file '{path}' does not exist")
        section = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data")
        if not isinstance(section, dict):
            raise DescribeError(f"config file '{path}' has no 'data:' section")
        args += ["--data", json.dumps(section)]
    args += list(data_args)
    try:
        parsed = parser.parse_args(args)
        return parser.instantiate_classes(parsed).data
    except Exception as err:  # noqa: BLE001 - jsonargparse raises several types
        raise DescribeError(f"cannot build the datamodule: {err}") from err


def full_resolution(dataset: Any) -> Any:
    """A shallow copy of a dataset that loads samples at full resolution: no resizing,
    object crop or transforms (the feature cache is the datamodule's, not the dataset's)."""
    raw = copy.copy(dataset)
    for name, value in (
        ("image_size", None),
        ("object_crop", False),
        ("transforms", None),
    ):
        if hasattr(raw, name):
            setattr(raw, name, value)
    return raw


def class_names_of(dataset: Any) -> list[str]:
    for name in ("classes", "materials"):
        names = getattr(dataset, name, None)
        if names:
            return [str(c) for c in names]
    raise DescribeError(f"{type(dataset).__name__} has no class names (classes/materials)")


def datamodule_regions(datamodule: Any, splits: Sequence[str]) -> list[tuple[Any, int]]:
    """(full-resolution dataset, index) of every region of the chosen splits, once per
    sample key (splits that share samples, such as test and predict, count once)."""
    # the sidecar being written may not exist yet: read the regions without descriptions
    for module in [datamodule, *getattr(datamodule, "_children", list)()]:
        if "descriptions" in module.hparams:
            module.hparams.descriptions = None
    stages = {"train": "fit", "val": "validate", "test": "test", "predict": "predict"}
    for stage in dict.fromkeys(stages[split] for split in splits):
        datamodule.setup(stage)
    out: list[tuple[Any, int]] = []
    seen: set[str] = set()
    for dataset in [d for split in splits for d in datamodule.stage_datasets(split)]:
        if getattr(dataset, "mode", "region") != "region":
            raise DescribeError(
                f"{type(dataset).__name__} in '{dataset.mode}' mode has no regions: "
                "use mode: region"
            )
        raw = full_resolution(dataset)
        for index in range(len(raw)):
            key = _sample_key(raw, index)
            if key not in seen:
                seen.add(key)
                out.append((raw, index))
    if not out:
        raise DescribeError(f"{type(datamodule).__name__} has no samples in splits {list(splits)}")
    return out


def _sample_key(dataset: Any, index: int) -> str:
    """A sample's key without decoding it where the dataset can say it."""
    if hasattr(dataset, "samples") and isinstance(dataset.samples, list):
        return str(dataset.samples[index][0])
    if hasattr(dataset, "_key"):
        return str(dataset._key(index))
    if hasattr(dataset, "objects"):
        return str(dataset.objects[index]["id"])
    return str(dataset[index]["key"])


# -- the run ------------------------------------------------------------------------------------
@dataclass
class RegionResult:
    key: str
    label: int
    text: str | None = None
    error: str | None = None
    cached: bool = False


def _prepare_region(
    dataset: Any,
    index: int,
    backend: Backend,
    prompt: Prompt,
    marker: str,
    store: AnswerStore,
    max_side: int,
    retry_failed: bool,
) -> tuple[RegionResult, dict[str, Any] | None, Request | None]:
    """Load one region and look its answer up; for a region still to ask, also its cache
    record and request. A region that cannot be loaded or shown gets an ``error``."""
    from matbench.vlm.regions import mask_sha256, pixels_sha256, region_view

    result = RegionResult(key=_sample_key(dataset, index), label=-1)
    try:
        sample = dataset[index]
        result.label = int(sample["label"])
        image, mask = sample["image"], sample["mask"]
        image_sha, region = pixels_sha256(image), mask_sha256(mask)
    except Exception as err:  # noqa: BLE001 - a broken file must not end the run
        result.error = f"cannot load the region: {type(err).__name__}: {err}"
        return result, None, None
    key = answer_id(image_sha, region, prompt.id, backend.model_id)
    found = store.get(key)
    if found is not None and ("text" in found or not retry_failed):
        result.text, result.error, result.cached = found.get("text"), found.get("error"), True
        return result, None, None
    try:
        view = region_view(image, mask, marker, max_side=max_side)
    except ValueError as err:
        result.error = f"cannot show the region: {err}"
        return result, None, None
    record = {
        "id": key,
        "key": result.key,
        "image_sha256": image_sha,
        "region": region,
        "prompt": prompt.id,
        "model_id": backend.model_id,
        "marker": marker,
    }
    return result, record, Request(prompt.text, [view], system=prompt.system)


def ask_regions(
    backend: Backend,
    regions: Sequence[tuple[Any, int]],
    prompt: Prompt,
    marker: str,
    store: AnswerStore,
    batch_size: int = 8,
    max_side: int = 768,
    retry_failed: bool = True,
    progress: bool = True,
) -> list[RegionResult]:
    """Ask ``backend`` about every region (cached answers reused); one result per region.

    A region that cannot be loaded or shown, or whose answer fails, gets an ``error``; the
    run goes on. A second thread loads, hashes and draws the regions and prepares the next
    batch (:meth:`Backend.prepare`) while the model answers the current one; each batch's
    answers are stored before the next batch is asked.
    """
    results: list[RegionResult] = []
    ready: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        pending: list[tuple[RegionResult, dict[str, Any], Request]] = []
        try:
            for dataset, index in regions:
                if stop.is_set():
                    return
                result, record, request = _prepare_region(
                    dataset, index, backend, prompt, marker, store, max_side, retry_failed
                )
                results.append(result)
                if request is None:
                    ready.put(("done", result))
                    continue
                assert record is not None
                pending.append((result, record, request))
                if len(pending) >= batch_size:
                    ready.put(("batch", pending, backend.prepare([p[2] for p in pending])))
                    pending = []
            if pending:
                ready.put(("batch", pending, backend.prepare([p[2] for p in pending])))
            ready.put(("end", None))
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            ready.put(("raise", err))

    bar = progress_bar(len(regions), "describe", "region", progress)
    counts = {"cached": 0, "failed": 0}
    producer = threading.Thread(target=produce, name="describe-regions", daemon=True)
    producer.start()
    try:
        while True:
            kind, *payload = ready.get()
            if kind == "end":
                break
            if kind == "raise":
                raise payload[0]
            if kind == "done":
                result = payload[0]
                counts["cached"] += result.cached
                counts["failed"] += result.error is not None
                bar.update(1)
                continue
            pending, prepared = payload
            answers = backend.generate_prepared(prepared)
            records = []
            for (result, record, _), answer in zip(pending, answers, strict=True):
                result.text, result.error = answer.text, answer.error
                if answer.error is not None:
                    counts["failed"] += 1
                    record["error"] = answer.error
                else:
                    record["text"] = answer.text
                records.append(record)
            store.append(records)
            bar.update(len(pending))
            bar.set_postfix(counts, refresh=False)
    finally:
        stop.set()
        while producer.is_alive():  # let a producer blocked on the full queue finish
            try:
                ready.get_nowait()
            except queue.Empty:
                producer.join(timeout=0.05)
        bar.close()
    return results


# -- outputs ------------------------------------------------------------------------------------
def provenance_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.provenance.json")


def _label_leaks(results: Sequence[RegionResult], classes: Sequence[str]) -> list[dict[str, str]]:
    from matbench.datasets.descriptions import names_class

    return [
        {"key": r.key, "class": classes[r.label], "description": r.text}
        for r in results
        if r.text is not None
        and 0 <= r.label < len(classes)
        and names_class(r.text, classes[r.label])
    ]


def _provenance(
    args: argparse.Namespace,
    backend: Backend,
    prompt: Prompt,
    prompts: dict[str, Any],
    datamodule: Any,
    results: Sequence[RegionResult],
    store: AnswerStore,
    seconds: float,
) -> dict[str, Any]:
    failures = [{"key": r.key, "reason": r.error} for r in results if r.error is not None]
    return {
        "task": args.task,
        "time": datetime.now().astimezone().isoformat(timespec="seconds"),
        "model": backend.info(),
        "prompt": {
            "id": prompt.id,
            "version": prompt.version,
            "file": prompts["_source"],
            "system": prompt.system,
            "text": prompt.text,
        },
        "marker": args.marker,
        "max_side": args.max_side,
        "batch_size": args.batch_size,
        "data": {
            "datamodule": type(datamodule).__name__,
            "config": args.config,
            "overrides": args.data_args,
            "splits": args.splits,
        },
        "counts": {
            "regions": len(results),
            "answered": sum(r.text is not None for r in results),
            "from_cache": sum(r.cached for r in results),
            "failed": len(failures),
            "cache_lines_skipped": store.skipped_lines,
        },
        "failures": failures,
        "cache": str(store.path),
        "seconds": round(seconds, 3),
        "versions": package_versions(),
    }


def classify_metrics(results: Sequence[RegionResult], classes: Sequence[str]) -> dict[str, Any]:
    """Classification metrics of parsed answers; an unparsed or failed answer is wrong.

    The confusion matrix gets one extra column, ``unparsed``, for regions without a parsed
    answer: they count against their class's accuracy and IoU, and no class gains from them.
    """
    from matbench.metrics.functional.classification import confusion_metrics

    n = len(classes)
    import torch

    confusion = torch.zeros(n, n + 1, dtype=torch.long)
    unparsed = failed = 0
    for r in results:
        if not 0 <= r.label < n:
            continue
        pred = parse_class(r.text, classes) if r.text is not None else None
        if r.text is None:
            failed += 1
        elif pred is None:
            unparsed += 1
        confusion[r.label, n if pred is None else pred] += 1
    metrics = confusion_metrics(confusion)
    total = int(confusion.sum())
    metrics["unparsed"] = unparsed
    metrics["failed"] = failed
    metrics["unparsed_fraction"] = (unparsed + failed) / total if total else math.nan
    return metrics


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="matbench describe",
        description="Ask a vision-language model about every material region of a datamodule: "
        "appearance descriptions for the two-stream text stream (--task describe, writes the "
        "sidecar JSON) or a zero-shot class choice (--task classify, writes a results JSON).",
        epilog="Back ends: hf:<model name or folder> (transformers image-text-to-text), "
        "openai:<model> (OpenAI-compatible endpoint; --base-url or $OPENAI_BASE_URL, key in "
        "$OPENAI_API_KEY). Datamodule: --config <matbench config> and/or --data <class>, plus "
        "--data.<arg> <value> overrides, e.g. --data.root /data/fmd.",
    )
    add_model_arguments(parser)
    parser.add_argument("--config", help="a matbench config whose data: section gives the regions")
    parser.add_argument("--task", choices=TASKS, default="describe")
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        help="describe: the sidecar JSON; classify: the answers JSON",
    )
    parser.add_argument(
        "--marker",
        choices=MARKERS,
        default="outline",
        help="how the region is shown (default: outline)",
    )
    parser.add_argument(
        "--splits",
        default="train,val,test",
        help="comma-separated datamodule splits (default: train,val,test)",
    )
    parser.add_argument("--prompts", help="prompt file (default: the packaged one)")
    parser.add_argument("--cache", help="answers JSONL (default: <output stem>.cache.jsonl)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-side", type=int, default=768, help="longest side shown (px)")
    parser.add_argument(
        "--no-retry-failed",
        action="store_true",
        help="keep cached failures instead of asking again",
    )
    parser.add_argument("--results_dir", default="results", help="classify: results JSON folder")
    parser.add_argument("--no-progress", action="store_true")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("--") and not a.startswith("--data")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.data_args = rest
    args.splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    bad = [s for s in args.splits if s not in SPLITS]
    if bad:
        parser.error(f"unknown splits {bad}: choose from {', '.join(SPLITS)}")
    if args.config is None and not rest:
        parser.error("give --config and/or --data <datamodule class>")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    try:
        return _run(args)
    except (DescribeError, FileNotFoundError, ValueError) as err:
        print(f"matbench describe: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    output = Path(args.output).expanduser()
    prompts = load_prompts(args.prompts)
    datamodule = load_datamodule(args.config, args.data_args)
    regions = datamodule_regions(datamodule, args.splits)
    classes = class_names_of(regions[0][0])
    prompt = make_prompt(prompts, args.task, args.marker, classes)
    backend = backend_from_args(args)
    store = AnswerStore(args.cache or output.with_name(f"{output.stem}.cache.jsonl"))
    results = ask_regions(
        backend,
        regions,
        prompt,
        args.marker,
        store,
        batch_size=args.batch_size,
        max_side=args.max_side,
        retry_failed=not args.no_retry_failed,
        progress=not args.no_progress,
    )
    record = _provenance(
        args, backend, prompt, prompts, datamodule, results, store, time.perf_counter() - start
    )
    if args.task == "describe":
        sidecar = {r.key: r.text for r in sorted(results, key=lambda r: r.key) if r.text}
        leaks = _label_leaks(results, classes)
        record["label_leaks"] = {
            "count": len(leaks),
            "note": "descriptions that name their region's own class; they are kept in the "
            "sidecar, and the readers' leak policy decides what the text stream sees",
            "examples": leaks[:20],
        }
        atomic_write_text(output, json.dumps(sidecar, indent=1, ensure_ascii=False) + "\n")
    else:
        answers = {
            r.key: {
                "label": classes[r.label] if r.label >= 0 else None,
                "answer": r.text,
                "parsed": (
                    classes[p]
                    if r.text and (p := parse_class(r.text, classes)) is not None
                    else None
                ),
                "error": r.error,
            }
            for r in results
        }
        atomic_write_text(output, json.dumps(answers, indent=1, ensure_ascii=False) + "\n")
        metrics = classify_metrics(results, classes)
        data = datamodule.describe() if hasattr(datamodule, "describe") else {}
        data.update(
            dataset=data.get("dataset") or type(datamodule).__name__,
            class_names=classes,
            split=",".join(args.splits),
        )
        path = write_run(
            args.results_dir,
            {
                "task": "VLMZeroShot",
                "model_name": f"vlm:{args.model}",
                "model": {**backend.info(), "prompt": prompt.id, "marker": args.marker},
                "checkpoint": None,
                "data": data,
                "metrics": metrics,
                "seed": args.seed,
                "tag": None,
                "world_size": 1,
            },
        )
        record["results"] = str(path)
        record["counts"]["unparsed"] = metrics["unparsed"]
        print(f"results: {path}")
    atomic_write_text(
        provenance_path(output), json.dumps(record, indent=1, ensure_ascii=False) + "\n"
    )
    counts = record["counts"]
    print(
        f"{args.task}: {counts['answered']}/{counts['regions']} regions answered "
        f"({counts['from_cache']} from cache, {counts['failed']} failed) -> {output}"
    )
    return 0
