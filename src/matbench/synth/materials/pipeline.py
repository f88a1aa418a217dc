"""The resumable pipeline of ``matbench synth materials``: prompts → diffusion → grounding.

Output (a :class:`~matbench.datasets.folder.MaterialFolder` dataset)::

    <out>/image/<class>/<class>_<k>.jpg     kept images
    <out>/mask/<class>/<class>_<k>.png      the object's mask (the material's region)
    <out>/prompts.jsonl (+ .sha256)         the balanced prompt list
    <out>/manifest.jsonl                    one record per attempted image, kept or dropped
    <out>/run.json                          the settings that make the images (checked on resume)
    <out>/summary.json, contact_sheet.png   kept/dropped per class; samples with their masks

Image ``k`` of a class uses prompt ``k mod prompts_per_class`` of that class and the seed
:func:`~matbench.synth.materials.models.prompt_seed` of (run seed, class, k). Every class
gets ``per_class`` kept images: dropped images are replaced by the next indices, up to
``max_attempts × per_class`` attempts. The attempted indices of a class are always its
first ones, so a run killed anywhere and resumed, or a run continued with a larger
``--per-class``, keeps exactly the images an uninterrupted run would keep (a 0.2x scale set is
the first fifth of the 1x set).

A record enters the manifest (fsync'd) only after its files are written, and recorded images
are never written again; a kill loses at most the batches in flight. Generation runs in the
main thread while a second thread detects, segments and writes the previous batch.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from matbench.errors import MatbenchError
from matbench.results import atomic_write_text
from matbench.synth.materials.models import (
    DEFAULT_DETECTOR,
    DEFAULT_DIFFUSION,
    DEFAULT_SEGMENTER,
    DiffusionSettings,
    prompt_seed,
)
from matbench.synth.materials.prompts import PROMPTS_FILE, read_prompt_list
from matbench.vlm.store import AnswerStore

MANIFEST = "manifest.jsonl"
RUN_FILE = "run.json"
SUMMARY = "summary.json"
CONTACT_SHEET = "contact_sheet.png"
#: Why a generated image was dropped.
IMAGE_DROP_REASONS = ("object_not_found", "mask_too_small", "mask_too_large", "nsfw_flagged")
#: ``run.json`` keys that may change between runs into one folder.
RESUMABLE = ("per_class", "max_attempts", "batch_size", "device", "dtype")


class ResumeMismatchError(MatbenchError, ValueError):
    """The output folder was made with other settings than the ones of this run."""


@dataclass
class SynthConfig:
    """Settings of a ``matbench synth materials`` run.

    Args:
        per_class: Kept images wanted per class.
        max_attempts: Attempt budget per class, as a multiple of ``per_class``.
        seed: Run seed (the image seeds derive from it).
        model: Diffusion pipeline (hub name or folder).
        detector: Grounding DINO (hub name or folder).
        segmenter: SAM (hub name or folder).
        segmenter_kind: ``sam`` or ``sam2``.
        diffusion: Steps, guidance, size, negative prompt.
        box_threshold: Smallest detection score of a kept image.
        min_mask: Smallest mask area, as a fraction of the image.
        max_mask: Largest mask area, as a fraction of the image.
        batch_size: Images per diffusion (and labelling) batch.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        dtype: ``auto`` (float16 on a GPU, float32 on the CPU) or a dtype name.
        jpeg_quality: Quality of the written JPEG images.
    """

    per_class: int = 583
    max_attempts: float = 3.0
    seed: int = 0
    model: str = DEFAULT_DIFFUSION
    detector: str = DEFAULT_DETECTOR
    segmenter: str = DEFAULT_SEGMENTER
    segmenter_kind: str = "sam"
    diffusion: DiffusionSettings = field(default_factory=DiffusionSettings)
    box_threshold: float = 0.35
    min_mask: float = 0.02
    max_mask: float = 0.9
    batch_size: int = 4
    device: str = "auto"
    dtype: str = "auto"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {self.per_class}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not 0.0 <= self.min_mask < self.max_mask <= 1.0:
            raise ValueError(
                f"need 0 <= min_mask < max_mask <= 1, got {self.min_mask}, {self.max_mask}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def budget(self) -> int:
        """Most attempts per class."""
        return math.ceil(self.per_class * self.max_attempts)


@dataclass
class Job:
    """One image to make: class, index ``k`` within the class, its prompt and seed."""

    class_name: str
    index: int
    prompt: dict[str, Any]
    seed: int

    @property
    def id(self) -> str:
        return f"{self.class_name}/{self.index}"

    @property
    def stem(self) -> str:
        return f"{self.class_name}_{self.index:05d}"


@dataclass
class RunResult:
    """What a run did: the counts of :func:`summarize` and the time spent."""

    summary: dict[str, Any]
    new_images: int
    seconds: float


# -- planning --------------------------------------------------------------------------------------
def plan(
    records: dict[str, dict[str, Any]],
    prompts: dict[str, list[dict[str, Any]]],
    config: SynthConfig,
) -> list[Job]:
    """The next jobs: for every class, its missing kept images, taken from its smallest
    indices not yet attempted (below the budget); interleaved across classes so that a kill
    leaves the classes balanced."""
    per_class: list[list[Job]] = []
    for name, class_prompts in prompts.items():
        done = [r for r in records.values() if r["class"] == name]
        kept = sum(r["status"] == "kept" for r in done)
        tried = {int(r["index"]) for r in done}
        deficit = max(0, config.per_class - kept)
        jobs: list[Job] = []
        k = 0
        while len(jobs) < deficit and k < config.budget:
            if k not in tried:
                prompt = class_prompts[k % len(class_prompts)]
                jobs.append(Job(name, k, prompt, prompt_seed(config.seed, name, k)))
            k += 1
        per_class.append(jobs)
    longest = max((len(j) for j in per_class), default=0)
    return [jobs[i] for i in range(longest) for jobs in per_class if i < len(jobs)]


# -- files --------------------------------------------------------------------------------------
def _save_atomic(image: Image.Image, path: Path, **kwargs: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format=kwargs.pop("format"), **kwargs)
    os.replace(tmp, path)


def _run_settings(
    config: SynthConfig, models: dict[str, str], prompts_sha256: str
) -> dict[str, Any]:
    settings = asdict(config)
    settings.pop("diffusion")
    settings.update(asdict(config.diffusion))
    settings.update(models)
    settings["prompts_sha256"] = prompts_sha256
    return settings


def check_resume(out: Path, settings: dict[str, Any]) -> None:
    """Stop when ``out`` holds a run made with other image-making settings."""
    path = out / RUN_FILE
    if not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = sorted(
        k
        for k in set(before) | set(settings)
        if k not in RESUMABLE and before.get(k) != settings.get(k)
    )
    if changed:
        detail = ", ".join(f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise ResumeMismatchError(
            f"{path}: this folder was made with other settings ({detail}); continue it with "
            "the same settings, or write to a new --out"
        )


# -- the run -------------------------------------------------------------------------------------
def _bar(total: int, desc: str, unit: str, enabled: bool, position: int) -> Any:
    from matbench.utils.progress import progress_bar

    return progress_bar(total, desc, unit, enabled, position)


class _Labeller:
    """Detects, segments and writes the batches that the generator hands over, in order, in
    a thread of its own; records each batch in the manifest once its files are written."""

    def __init__(
        self,
        out: Path,
        grounder: Any,
        config: SynthConfig,
        models: dict[str, str],
        store: AnswerStore,
        bar: Any,
    ) -> None:
        self.out, self.grounder, self.config, self.models = out, grounder, config, models
        self.store, self.bar = store, bar
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.counts: Counter[str] = Counter()
        self.thread = threading.Thread(target=self._loop, name="synth-label", daemon=True)
        self.thread.start()

    def put(self, item: Any) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Let the thread finish the batches handed over (it only drains them after an
        error), then raise its error, if any."""
        while self.thread.is_alive():
            try:
                self.queue.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain: the main thread raises
            try:
                self.store.append(self.label(*item))
                self.bar.update(len(item[0]))
                self.bar.set_postfix(self.counts, refresh=False)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                self.error = err

    def label(
        self, jobs: Sequence[Job], images: Sequence[Image.Image], flagged: Sequence[bool]
    ) -> list[dict[str, Any]]:
        c = self.config
        found = self.grounder.detect(images, [j.prompt["query"] for j in jobs])
        ask = [i for i, g in enumerate(found) if g.score >= c.box_threshold and not flagged[i]]
        masks = self.grounder.segment([images[i] for i in ask], [found[i].box for i in ask])
        for i, mask in zip(ask, masks, strict=True):
            found[i].mask = mask
        records = []
        for job, image, grounding, nsfw in zip(jobs, images, found, flagged, strict=True):
            fraction = None if grounding.mask is None else float(grounding.mask.mean())
            if nsfw:
                reason = "nsfw_flagged"
            elif grounding.mask is None:
                reason = "object_not_found"
            elif fraction < c.min_mask:
                reason = "mask_too_small"
            elif fraction > c.max_mask:
                reason = "mask_too_large"
            else:
                reason = None
            record: dict[str, Any] = {
                "id": job.id,
                "class": job.class_name,
                "index": job.index,
                "status": "kept" if reason is None else "dropped",
                "reason": reason,
                "prompt_id": job.prompt["id"],
                "prompt": job.prompt["text"],
                "object": job.prompt["object"],
                "detail": job.prompt["detail"],
                "query": job.prompt["query"],
                "seed": job.seed,
                "score": round(grounding.score, 6),
                "box": [round(v, 2) for v in grounding.box],
                "mask_fraction": None if fraction is None else round(fraction, 6),
                **self.models,
            }
            if reason is None:
                image_path = Path("image") / job.class_name / f"{job.stem}.jpg"
                mask_path = Path("mask") / job.class_name / f"{job.stem}.png"
                _save_atomic(
                    image.convert("RGB"),
                    self.out / image_path,
                    format="JPEG",
                    quality=c.jpeg_quality,
                )
                mask_image = Image.fromarray(grounding.mask.astype(np.uint8) * 255)
                _save_atomic(mask_image, self.out / mask_path, format="PNG")
                record.update(image=image_path.as_posix(), mask=mask_path.as_posix())
            self.counts["kept" if reason is None else reason] += 1
            records.append(record)
        return records


def synthesize(
    out: str | Path,
    config: SynthConfig,
    make_prompts: Callable[[], Any] | None = None,
    progress: bool = True,
    generator: Any = None,
    grounder: Any = None,
) -> RunResult:
    """Make (or continue) a synthetic material dataset in ``out``.

    Args:
        out: Output folder (created; an earlier run's folder is continued).
        config: The run's settings.
        make_prompts: Builds the :class:`~matbench.synth.materials.prompts.PromptList` when
            ``out`` has none yet (a resumed run reuses the written list).
        progress: Show a progress bar per stage.
        generator: An :class:`~matbench.synth.materials.models.ImageGenerator` (built from
            ``config`` when None).
        grounder: An :class:`~matbench.synth.materials.models.ObjectGrounder` (likewise).
    """
    from matbench.synth.materials.models import (
        ImageGenerator,
        ObjectGrounder,
        resolve_device,
        resolve_dtype,
    )
    from matbench.synth.materials.report import summarize, write_report

    start = time.perf_counter()
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    prompt_file = out / PROMPTS_FILE
    if not prompt_file.is_file():
        if make_prompts is None:
            raise FileNotFoundError(f"{prompt_file} does not exist and no prompt source was given")
        make_prompts().write(out)
    records = read_prompt_list(prompt_file)
    prompts_sha256 = _checked_sha256(prompt_file)
    prompts: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        prompts.setdefault(record["material"], []).append(record)

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if generator is None:
        generator = ImageGenerator(config.model, config.diffusion, device, dtype)
    if grounder is None:
        grounder = ObjectGrounder(
            config.detector, config.segmenter, device, dtype, config.segmenter_kind
        )
    models = {
        "model_id": generator.model_id,
        "detector_id": grounder.detector_id,
        "segmenter_id": grounder.segmenter_id,
    }
    settings = _run_settings(config, models, prompts_sha256)
    check_resume(out, settings)
    atomic_write_text(out / RUN_FILE, json.dumps(settings, indent=2) + "\n")
    for name in prompts:  # every class folder, so that MaterialFolder sees the full class list
        (out / "image" / name).mkdir(parents=True, exist_ok=True)
        (out / "mask" / name).mkdir(parents=True, exist_ok=True)

    store = AnswerStore(out / MANIFEST)
    new_images = 0
    jobs = plan(store.records, prompts, config)
    gen_bar = _bar(0, "generate", "img", progress, 0)
    label_bar = _bar(0, "label", "img", progress, 1)
    try:
        while jobs:
            gen_bar.total = gen_bar.n + len(jobs)
            label_bar.total = label_bar.n + len(jobs)
            gen_bar.refresh()
            labeller = _Labeller(out, grounder, config, models, store, label_bar)
            try:
                for start_at in range(0, len(jobs), config.batch_size):
                    batch = jobs[start_at : start_at + config.batch_size]
                    images, flagged = generator(
                        [j.prompt["text"] for j in batch], [j.seed for j in batch]
                    )
                    gen_bar.update(len(batch))
                    labeller.put((batch, images, flagged))
            finally:
                labeller.close()
            new_images += len(jobs)
            jobs = plan(store.records, prompts, config)
    finally:
        gen_bar.close()
        label_bar.close()
    seconds = time.perf_counter() - start
    summary = summarize(store.records.values(), list(prompts), config, out, settings)
    write_report(out, summary, store.records.values())
    return RunResult(summary, new_images, seconds)


def _checked_sha256(path: Path) -> str:
    from matbench.utils import sha256_file

    digest = sha256_file(path)
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        recorded = sidecar.read_text(encoding="utf-8").split()[0]
        if recorded != digest:
            raise ResumeMismatchError(
                f"{path}: its SHA-256 is {digest}, but {sidecar.name} records {recorded}: the "
                "prompt list was edited after the run started; restore it or start a new --out"
            )
    return digest
