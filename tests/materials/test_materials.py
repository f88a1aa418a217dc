"""Material vocabulary, the packaged LVIS prior table and the sidecar builder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import matbench
from matbench.cli import main
from matbench.datasets.errors import DatasetFormatError
from matbench.datasets.fmd import FMD_CLASSES
from matbench.materials.prior import (
    assign,
    build_prior,
    load_prior,
    load_rules,
    read_rules,
    remap_materials,
)
from matbench.materials.sidecar import (
    MaterialLabel,
    build_sidecar,
    read_predictions,
    read_sidecar,
    write_sidecar,
)
from matbench.materials.vocabulary import VOCABULARY, canonical, is_material, material_names
from tests.data.lvis_materials.data import make


def test_vocabulary() -> None:
    names = material_names()
    assert 100 <= len(names) <= 200 and len(set(names)) == len(names)
    assert canonical("Wooden") == "wood" and canonical("aluminum") == "aluminium"
    assert canonical("Plastic, clear") == "clear plastic"
    assert canonical("stone_natural".replace("_", ", ")) == "stone"
    with pytest.raises(KeyError, match="unobtainium"):
        canonical("unobtainium")
    # Every DMS and FMD class name resolves.
    dms = [
        "Animal skin",
        "Bone/teeth/horn",
        "Brickwork",
        "Cardboard",
        "Carpet/rug",
        "Ceramic",
        "Fabric/cloth",
        "Foliage",
        "Food",
        "Fur",
        "Glass",
        "Leather",
        "Metal",
        "Paper",
        "Plastic, non-clear",
        "Rubber/latex",
        "Stone, polished",
        "Wood",
        "Wood, tree",
        "Wicker",
    ]
    fmd = list(FMD_CLASSES)
    assert all(is_material(n) for n in dms + fmd)


def test_packaged_prior_table() -> None:
    table = load_prior()
    categories, unknown = table["categories"], table["unknown"]
    assert table["num_categories"] == 1203
    assert len(categories) + len(unknown) == 1203
    assert len(categories) > 900 and unknown  # unknowns are listed, not guessed
    assert not set(categories) & set(unknown)
    ids = {entry["id"] for entry in categories.values()}
    assert len(ids) == len(categories)
    for entry in categories.values():
        assert entry["materials"] and all(m in VOCABULARY for m in entry["materials"])
    expected = {
        "aerosol_can": "metal",
        "paper_plate": "paper",
        "wooden_spoon": "wood",
        "beer_bottle": "glass",
        "bicycle": "metal",
        "sweater": "wool",
        "banana": "food",  # the rules say "fruit", remapped to DMS46's Food
        "duck": "feather",
    }
    for name, material in expected.items():
        assert categories[name]["materials"][0] == material, name
    assert "person" in unknown
    # No kind-of-object label is left; remapped entries keep the rules' own labels.
    rules = load_rules()
    used = {m for entry in categories.values() for m in entry["materials"]}
    assert not used & set(rules.remap) and {"food", "fur"} <= used
    assert categories["banana"]["remapped_from"] == ["fruit"]
    assert categories["asparagus"]["remapped_from"] == ["vegetable"]
    for entry in categories.values():
        if "remapped_from" in entry:
            assert entry["materials"] == remap_materials(entry["remapped_from"], rules)


#: SHA-256 of the table that the rules produced when they were still Python literals in
#: materials/prior.py (commit c6f2b18's lvis_material_prior.json, sorted-key JSON).
OLD_CODE_TABLE_SHA256 = "20d179e01ace1989d51c1b2c9fdfaf173c80f8ef6ffd2e6ba1dc6b26c4870dca"


def test_rules_file_reproduces_the_old_code(shared_data: Path) -> None:
    path = shared_data / "lvis" / "lvis_v1_categories.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    categories = json.loads(path.read_text())
    raw = build_prior(categories, remap=False)
    assert hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest() == (
        OLD_CODE_TABLE_SHA256
    )
    remapped = build_prior(categories)
    changed = {
        name
        for name, entry in raw["categories"].items()
        if entry["materials"] != remapped["categories"][name]["materials"]
    }
    # Only the documented remaps differ: entries with "fruit" or "vegetable".
    assert changed == {
        name
        for name, entry in raw["categories"].items()
        if {"fruit", "vegetable"} & set(entry["materials"])
    }
    assert len(changed) == 50


def test_rules_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    data = json.loads(
        (Path(matbench.__file__).parent / "data" / "lvis_prior_rules.json").read_text()
    )
    data["kind_words"]["berry"] = "berries"
    path.write_text(json.dumps(data))
    with pytest.raises(
        DatasetFormatError, match=r"rules.json: .*not vocabulary materials: \['berries'\]"
    ):
        read_rules(path)
    del data["head_nouns"]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match="rules.json: missing or malformed table"):
        read_rules(path)


def test_prior_rules_and_rebuild(shared_data: Path, tmp_path: Path) -> None:
    assert assign({"name": "glass_jar_(x)", "synonyms": [], "def": "a jar"})[0] == ("glass",)
    assert assign({"name": "widget", "synonyms": [], "def": "a gadget made of leather"})[0] == (
        "leather",
    )
    assert assign({"name": "blorp", "synonyms": [], "def": "an odd thing"}) == ((), "unknown")
    # The packaged table is exactly what the documented script builds from the category list.
    path = shared_data / "lvis" / "lvis_v1_categories.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    out = tmp_path / "prior.json"
    from matbench.materials.prior import main as prior_main

    assert prior_main(["--categories", str(path), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == load_prior()
    assert build_prior(json.loads(path.read_text())) == load_prior()


def _lvis(tmp_path: Path) -> tuple[dict, Path]:
    root = make(tmp_path, num_train=6, num_val=1)
    ann = root / "lvis" / "lvis_v1_train.json"
    lvis = json.loads(ann.read_text())
    # "curtain" has a prior (fabric); make category 2 unknown to the prior.
    lvis["categories"][1] = {"id": 2, "name": "mystery_thing", "synset": "mystery.n.01"}
    ann.write_text(json.dumps(lvis))
    return lvis, ann


def test_build_from_prior_reports_unknowns(tmp_path: Path) -> None:
    lvis, _ = _lvis(tmp_path)
    labels, report = build_sidecar(lvis, prior=load_prior())
    n_unknown = sum(a["category_id"] == 2 for a in lvis["annotations"])
    assert report.unknown_categories == {"mystery_thing": n_unknown}
    assert report.unlabelled == n_unknown and report.from_prior == len(labels)
    by_cat = {a["id"]: a["category_id"] for a in lvis["annotations"]}
    for ann_id, label in labels.items():
        assert label.source == "prior"
        expected = {1: "metal", 3: "glass", 4: "fabric"}[by_cat[ann_id]]
        assert label.materials[0] == expected
    assert "mystery_thing" in report.summary()


def test_build_with_predictions_and_seeded_mix(tmp_path: Path) -> None:
    lvis, _ = _lvis(tmp_path)
    predictions = {a["id"]: ["ceramic"] for a in lvis["annotations"]}
    only_pred, report = build_sidecar(lvis, predictions=predictions)
    assert report.from_predictions == len(lvis["annotations"]) == len(only_pred)
    all_prior, _ = build_sidecar(lvis, load_prior(), predictions, prior_weight=1.0)
    all_pred, _ = build_sidecar(lvis, load_prior(), predictions, prior_weight=0.0)
    assert all(label.materials == ["ceramic"] for label in all_pred.values())
    # Unknown categories fall back on the prediction even with prior_weight=1.
    unknown_ids = {a["id"] for a in lvis["annotations"] if a["category_id"] == 2}
    assert {i for i, label in all_prior.items() if label.source == "prediction"} == unknown_ids
    mix_a, rep_a = build_sidecar(lvis, load_prior(), predictions, prior_weight=0.5, seed=3)
    mix_b, _ = build_sidecar(lvis, load_prior(), predictions, prior_weight=0.5, seed=3)
    mix_c, _ = build_sidecar(lvis, load_prior(), predictions, prior_weight=0.5, seed=4)
    sources = lambda m: [m[i].source for i in sorted(m)]  # noqa: E731
    assert sources(mix_a) == sources(mix_b)
    assert sources(mix_a) != sources(mix_c)
    assert 0 < rep_a.from_prior < len(mix_a) and rep_a.from_predictions > len(unknown_ids)
    with pytest.raises(ValueError, match="prior_weight"):
        build_sidecar(lvis, load_prior(), predictions, prior_weight=1.5)


def test_sidecar_roundtrip_and_errors(tmp_path: Path) -> None:
    labels = {
        3: MaterialLabel(["metal"], "a dented can", "manual"),
        1: MaterialLabel(["wood", "metal"]),
    }
    path = write_sidecar(tmp_path / "s.json", labels)
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["vocabulary"] == ["metal", "wood"]
    assert list(data["annotations"]) == ["1", "3"]
    assert read_sidecar(path) == labels
    data["annotations"]["3"]["materials"] = ["adamantium"]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match="s.json: annotation 3"):
        read_sidecar(path)
    path.write_text("[1, 2]")
    with pytest.raises(DatasetFormatError, match="not a materials sidecar"):
        read_sidecar(path)
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"7": "Wooden", "8": ["steel", "glass"]}))
    assert read_predictions(preds) == {7: ["wood"], 8: ["steel", "glass"]}
    preds.write_text(json.dumps({"7": "unobtainium"}))
    with pytest.raises(DatasetFormatError, match="p.json: annotation 7: unknown material"):
        read_predictions(preds)


def test_materials_build_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lvis, ann = _lvis(tmp_path)
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({str(a["id"]): "ceramic" for a in lvis["annotations"]}))
    out = tmp_path / "side.json"
    code = main(
        [
            "materials",
            "build",
            "--lvis",
            str(ann),
            "--out",
            str(out),
            "--predictions",
            str(preds),
            "--prior-weight",
            "0.5",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "mystery_thing" in printed and str(out) in printed
    labels = read_sidecar(out)
    assert len(labels) == len(lvis["annotations"])
    assert {label.source for label in labels.values()} == {"prior", "prediction"}
    assert main(["materials", "prior", "--unknown"]) == 0
    assert "person" in capsys.readouterr().out
