"""`materials caption`: Set-of-Marks pictures, a 127.0.0.1 OpenAI-compatible server as the VLM
and as the checking LM, the cache, and per-object failures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from matbench.cli import main
from matbench.materials.caption import parse_numbered, parse_yes_no
from matbench.materials.sidecar import read_sidecar
from matbench.vlm.regions import MARK_PALETTE, marks_view
from tests.data.lvis_materials.data import make as make_lvis
from tests.vlm.server import chat_server


def test_parse_answers() -> None:
    answer = "1: brushed steel\n2) oak wood, varnished\nsomething else\n2: again\n5: too far"
    assert parse_numbered(answer, 3) == {1: "brushed steel", 2: "oak wood, varnished"}
    assert parse_numbered("Object #3 - glass", 3) == {3: "glass"}
    assert parse_yes_no("Yes, it could.") is True and parse_yes_no("no") is False
    assert parse_yes_no("maybe") is None and parse_yes_no("") is None


def test_marks_view_tints_each_region() -> None:
    image = torch.zeros(3, 40, 60)
    masks = torch.zeros(2, 40, 60, dtype=torch.bool)
    masks[0, :, :30] = True
    masks[1, 10:30, 35:55] = True
    view = np.asarray(marks_view(image, masks, max_side=60))
    # A region pixel away from the outline and the number box: black tinted by its colour.
    for region, (y, x) in ((0, (2, 2)), (1, (12, 37))):
        expected = (0.4 * np.array(MARK_PALETTE[region])).round()
        assert np.array_equal(view[y, x], expected), region
    with pytest.raises(ValueError, match="empty region mask"):
        marks_view(image, torch.zeros(1, 40, 60, dtype=torch.bool))


def _answer(text: str, images: list) -> str:
    match = re.search(r"numbers 1 to (\d+)", text)
    if match:  # the VLM: every object but the last gets a caption
        n = int(match.group(1))
        assert len(images) == 1
        return "\n".join(f"{k}: polished metal number {k}" for k in range(1, n))
    return "no" if "number 2" in text else "yes"  # the checker


def test_caption_with_openai_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_lvis(tmp_path / "lvis", num_train=3, num_val=1)
    ann = root / "lvis" / "lvis_v1_train.json"
    sidecar = root / "lvis" / "lvis_v1_train_materials.json"
    out = tmp_path / "captioned.json"
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with chat_server(_answer) as server:
        args = ["materials", "caption", "--lvis", str(ann), "--images", str(root / "coco")]
        args += ["--sidecar", str(sidecar), "--out", str(out), "--model", "openai:vlm"]
        args += ["--check-model", "openai:lm", "--base-url", server.url, "--no-progress"]
        assert main(args) == 0
        asked = len(server.log)
        labels = read_sidecar(out)
        record = json.loads(out.read_text())["provenance"]["caption"]
        # Rerun: everything comes from the answers cache, nothing is asked again.
        assert main(args) == 0
        assert len(server.log) == asked
    lvis = json.loads(ann.read_text())
    per_image: dict[int, list[int]] = {}
    for a in sorted(lvis["annotations"], key=lambda a: a["id"]):
        per_image.setdefault(a["image_id"], []).append(a["id"])
    vlm_calls = [b for b in server.log if b["model"] == "vlm"]
    assert len(vlm_calls) == len(per_image)
    counts = record["counts"]
    assert counts["objects"] == len(labels) == len(lvis["annotations"])
    last = {ids[-1] for ids in per_image.values()}
    second = {ids[1] for ids in per_image.values() if len(ids) > 2}
    for ann_id, label in labels.items():
        if ann_id in last:
            assert label.caption is None and "no line" in record["failures"][str(ann_id)]
        elif ann_id in second:
            assert label.caption is None and record["checks"][str(ann_id)] == "reject"
        else:
            assert label.caption.startswith("polished metal")
            assert record["checks"][str(ann_id)] == "keep"
    assert counts["failed"] == len(last) and counts["rejected"] == len(second)
    assert "captioned" in capsys.readouterr().out
