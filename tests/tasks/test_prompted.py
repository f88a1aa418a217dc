"""Prompted segmenters (tiny random SAM / SAM 2), their prompts and the hard similarity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from matbench.cli import main
from matbench.models.prompted import HFSamSegmenter, PromptedSegmenter, build_prompted_segmenter
from matbench.prompts import region_prompt, triplet_prompts
from matbench.report import build_report
from matbench.tasks.prompted import mask_similarity
from tests.data.matseg.data import make as make_matseg
from tests.models.tiny_sam import write_config, write_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_sam")
    return {kind: write_config(root / kind, kind) for kind in ("sam", "sam2")}


def test_triplet_prompts_follow_the_rule() -> None:
    points = torch.tensor([[1, 1, 1], [2, 2, 1], [3, 3, 1], [4, 4, 1], [5, 5, 1]])
    groups = torch.tensor([0, 0, 0, 1, 1])
    coords, labels = triplet_prompts(points, groups, 3, seed=0, key="img")
    assert coords.shape == (5, 3, 2) and labels.shape == (5, 3)
    assert torch.equal(coords[:, 0], points[:, :2].float())  # the anchor comes first
    for a in range(5):
        chosen = [int(c[0]) - 1 for c in coords[a]]
        assert len(set(chosen)) == 3  # drawn without replacement
        assert labels[a].tolist() == [int(groups[c] == groups[a]) for c in chosen]
    again = triplet_prompts(points, groups, 3, seed=0, key="img")
    other = triplet_prompts(points, groups, 3, seed=1, key="img")
    assert torch.equal(coords, again[0]) and not torch.equal(coords, other[0])
    pos_coords, pos_labels = triplet_prompts(points, groups, 3, 0, "img", rule="positive")
    assert bool((pos_labels == 1).all())
    assert torch.equal(pos_coords[3, 2], pos_coords[3, 0])  # group of 2: the anchor repeats
    one, one_labels = triplet_prompts(points, groups, 1, 0, "img")
    assert one.shape == (5, 1, 2) and bool((one_labels == 1).all())


def test_region_prompt_draws_inside_and_labels_by_membership() -> None:
    region = torch.zeros(10, 12, dtype=torch.bool)
    region[2:5, 3:9] = True
    coords, labels = region_prompt(region, 8, seed=0, key="k", index=3)
    xs, ys = coords[:, 0].long(), coords[:, 1].long()
    assert bool(region[ys[0], xs[0]]) and labels[0] == 1
    assert torch.equal(labels, region[ys, xs].long())
    coords, labels = region_prompt(region, 4, 0, "k", 3, rule="positive")
    assert bool((labels == 1).all())
    with pytest.raises(ValueError, match="region 0 is empty"):
        region_prompt(torch.zeros(3, 3, dtype=torch.bool), 1, 0, "k", 0)


def test_mask_similarity_is_the_papers_hard_rule() -> None:
    masks = torch.zeros(2, 4, 5, dtype=torch.bool)
    masks[0, :, :2] = True  # anchor 0's mask: the two left columns
    masks[1, 3, 4] = True
    points = torch.tensor([[0, 0, 1], [4, 3, 1]])
    assert mask_similarity(masks, points).tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_batched_prompts_equal_one_prompt_at_a_time(tiny: dict[str, Path], kind: str) -> None:
    torch.manual_seed(0)
    model = HFSamSegmenter(kind, None, str(tiny[kind]), prompt_batch_size=4).eval()
    image = torch.rand(3, 37, 50)
    points = torch.rand(6, 2, 2) * torch.tensor([50.0, 37.0])
    labels = torch.tensor([[1, 0], [1, 1], [1, 0], [1, 1], [1, 0], [1, 1]])
    with torch.no_grad():
        batched = model(image, points, labels)
        single = torch.cat([model(image, points[i : i + 1], labels[i : i + 1]) for i in range(6)])
    assert batched.shape == (6, 37, 50) and batched.dtype == torch.bool
    assert torch.equal(batched, single)


def test_sam_pre_and_post_processing_match_transformers(tiny: dict[str, Path]) -> None:
    from transformers import SamImageProcessor, SamProcessor

    model = HFSamSegmenter("sam", None, str(tiny["sam"])).eval()
    size = model.input_size
    image = torch.rand(3, 30, 48)
    processor = SamImageProcessor(
        size={"longest_edge": size}, pad_size={"height": size, "width": size}
    )
    pixels, resized = model.preprocess(image)
    ref = processor(
        images=(image * 255).round().byte().permute(1, 2, 0).numpy(), return_tensors="pt"
    )
    assert tuple(ref["reshaped_input_sizes"][0].tolist()) == resized
    assert pixels.shape == ref["pixel_values"].shape
    # different resampling code (PIL vs torch bilinear): close, not equal
    assert (pixels - ref["pixel_values"]).abs().mean() < 0.1
    logits = torch.randn(3, 1, size // 2, size // 2)
    expected = processor.post_process_masks(
        [logits], [[30, 48]], [list(resized)], mask_threshold=0.0, binarize=True
    )[0][:, 0]
    assert torch.equal(model._to_image(logits, resized, (30, 48))[:, 0] > 0, expected)
    coords = torch.tensor([[[10.0, 20.0]]])
    wrapper = SamProcessor(image_processor=processor)
    ref_coords = wrapper._normalize_coordinates(size, coords.numpy(), (30, 48))
    scale = torch.tensor([resized[1] / 48, resized[0] / 30])
    assert np.allclose((coords * scale).numpy(), ref_coords)


def test_local_weights_folder_and_wrong_files(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "sam_tiny", "sam")
    model = build_prompted_segmenter("sam", str(folder))
    assert isinstance(model, HFSamSegmenter) and not any(
        p.requires_grad for p in model.parameters()
    )
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_prompted_segmenter("sam", str(tmp_path / "nowhere"))
    sam2_folder = write_model(tmp_path / "sam2_tiny", "sam2")
    with pytest.raises(ValueError, match="sam2_tiny"):
        build_prompted_segmenter("sam", str(sam2_folder))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        build_prompted_segmenter("sam", None, str(bad))
    with pytest.raises(ValueError, match="unknown prompted model"):
        build_prompted_segmenter("segment_everything")
    with pytest.raises(ValueError, match="not a PromptedSegmenter"):
        build_prompted_segmenter("torch.nn.Linear")


class CentreDisk(PromptedSegmenter):
    """A user-defined prompted segmenter in one class: the disk of radius 10 around each
    prompt's first point (what a Materialistic wrapper would look like, minus the net)."""

    def __init__(self, weights: str | None = None, config: str | None = None) -> None:
        super().__init__()

    def forward(self, image: torch.Tensor, points: torch.Tensor, labels: torch.Tensor):
        ys, xs = torch.meshgrid(
            torch.arange(image.shape[1]), torch.arange(image.shape[2]), indexing="ij"
        )
        x, y = points[:, 0, 0, None, None], points[:, 0, 1, None, None]
        return (xs - x) ** 2 + (ys - y) ** 2 <= 100


def test_sam_configs_run_through_the_cli(tiny: dict[str, Path], tmp_path: Path) -> None:
    bench = make_matseg(tmp_path / "data") / "benchmark"
    results = tmp_path / "results"
    common = [
        f"--data.root={bench}",
        f"--results_dir={results}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.accelerator=cpu",
        "--model.weights=null",
    ]
    cli = main(
        ["test", "--config", str(CONFIGS / "matseg/sam_4pt.yaml"), *common,
         f"--model.config={tiny['sam']}"]
    )  # fmt: skip
    metrics = cli.model.results["test"][0]
    assert metrics["all_num_images"] == 2 and 0 <= metrics["all_by_point"] <= 1
    record = json.loads(next(results.glob("*.json")).read_text())
    assert record["model_name"] == "sam 4pt" and record["task"] == "PromptedMatSegTask"
    published = build_report(results).read_text().split("## Published numbers")[1]
    for row in ("SAM, 1 point", "SAM, 2 points", "SAM, 4 points", "SAM, 8 points"):
        assert row in published
    assert "0.720" in published and "iou_cu" not in published
    # one file, one class: a user's own prompted segmenter by dotted path
    cli = main(
        ["test", "--config", str(CONFIGS / "matseg/sam_1pt.yaml"), *common,
         f"--model.model={__name__}.CentreDisk"]
    )  # fmt: skip
    # the fake groups are left/right halves, far apart: a disk around the anchor holds near
    # points of its own group, so it orders more triplets right than chance
    assert cli.model.results["test"][0]["all_by_point"] > 0.55
    with pytest.raises(ValueError, match="zero-shot|only serves test"):
        main(["fit", "--config", str(CONFIGS / "matseg/sam_1pt.yaml"), *common,
              f"--model.config={tiny['sam']}", "--trainer.fast_dev_run=1"])  # fmt: skip


def test_predict_writes_the_hard_similarity(tiny: dict[str, Path], tmp_path: Path) -> None:
    bench = make_matseg(tmp_path / "data") / "benchmark"
    main(
        ["predict", "--config", str(CONFIGS / "matseg/sam_2pt.yaml"), f"--data.root={bench}",
         "--model.weights=null", f"--model.config={tiny['sam2']}", "--model.model=sam2",
         f"--model.predict_dir={tmp_path / 'pred'}", f"--trainer.default_root_dir={tmp_path}"]
    )  # fmt: skip
    with np.load(tmp_path / "pred" / "b.npz") as npz:
        assert npz["similarity"].shape == (5, 5)
        assert set(np.unique(npz["similarity"]).tolist()) <= {0.0, 1.0}
