"""An append-only JSONL store of model answers: one record per (region, prompt, model).

Each batch's records are appended and flushed to disk (``fsync``) before the next batch
starts, so a crash or kill loses at most the batch in flight. A last line cut short by a kill
is skipped when the file is read again (and counted); the next append starts a fresh line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def answer_id(image_sha256: str, region: str, prompt_id: str, model_id: str) -> str:
    """The cache key of one answer: image pixels, region, prompt (version and text hash),
    model."""
    text = "\n".join([image_sha256, region, prompt_id, model_id])
    return hashlib.sha256(text.encode()).hexdigest()


class AnswerStore:
    """Answers by :func:`answer_id`, loaded from and appended to a JSONL file.

    Args:
        path: The JSONL file (created on the first append).

    Attributes:
        skipped_lines: Unreadable lines found when loading (a line cut short by a kill).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0
        self._needs_newline = False
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        self._needs_newline = bool(raw) and not raw.endswith(b"\n")
        for line in raw.decode("utf-8", "replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                self.skipped_lines += 1
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                # a later record of the same id (a retried failure) wins
                self.records[record["id"]] = record
            else:
                self.skipped_lines += 1

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Add records and make them durable before returning."""
        records = list(records)
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if self._needs_newline:
            text = "\n" + text
            self._needs_newline = False
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for record in records:
            self.records[record["id"]] = record

    def __len__(self) -> int:
        return len(self.records)
