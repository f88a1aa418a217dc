"""Three-level prompts of ``matbench synth materials``: parsing, the sanity filter, balance,
the written and hashed list, and the language-model back ends (a local chat server; a tiny
causal LM)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from matbench.errors import FileContentError
from matbench.synth.materials import prompts as P
from matbench.vlm import GenerationSettings, build_backend
from matbench.vlm.tiny import make_tiny_lm
from tests.vlm.server import chat_server

CLASSES = ["ceramic", "metal", "wood"]


def test_parse_answer_reads_lists_and_counts_junk() -> None:
    answer = "\n".join(
        [
            "Here are objects:",  # not a triplet
            "1. Vase | Porcelain",
            "- teapot: glazed",
            "* Cake pan - cast",
            "3) a very long object name indeed | shiny",  # over MAX_WORDS
            '"mug | stoneware"',
            "",
        ]
    )
    triplets, bad = P.parse_answer(answer, "ceramic")
    assert [(t.object, t.detail) for t in triplets] == [
        ("vase", "porcelain"),
        ("teapot", "glazed"),
        ("cake pan", "cast"),
        ("mug", "stoneware"),
    ]
    assert bad == 2 and all(t.material == "ceramic" for t in triplets)


def test_sanity_filter_deny_lists_and_balance(tmp_path: Path) -> None:
    user = tmp_path / "deny.txt"
    user.write_text("# my additions\nchair, metal\n")
    deny = P.load_deny_list([user])
    assert ("sponge", "metal") in deny and ("chair", "metal") in deny
    T = P.Triplet
    candidates = [
        T("vase", "ceramic", "porcelain"),
        T("kitchen sponge", "metal", "shiny"),  # packaged pair, object words inside
        T("chair", "metal", "steel"),  # user pair
        T("metal", "metal", "brushed"),  # names only the material
        T("wooden", "wood", "oak"),  # a derived form of the material only
        T("spoon", "metal", "steel"),
        T("Spoon", "metal", "Steel"),  # duplicate after normalisation
        T("cup", "glass", "clear"),  # not a class of the run
        T("table", "wood", "oak"),
        T("stool", "wood", "pine"),
        T("wooden bowl", "wood", "walnut"),  # object with more than the material word
    ]
    kept, dropped = P.sanity_filter(candidates, CLASSES, deny)
    assert dict(dropped) == {
        "deny_list": 2,
        "object_is_material": 2,
        "duplicate": 1,
        "unknown_material": 1,
    }
    assert [t.object for t in kept["wood"]] == ["table", "stool", "wooden bowl"]
    prompts = P.balance(kept, 4, dropped, P.DEFAULT_TEMPLATE, "test")
    assert {c: len(t) for c, t in prompts.by_class.items()} == {c: 4 for c in CLASSES}
    assert [t.object for t in prompts.by_class["metal"]] == ["spoon"] * 4  # repeated in order
    assert prompts.unique == {"ceramic": 1, "metal": 1, "wood": 3}
    records = prompts.records()
    assert records[0] == {
        "id": "ceramic/0",
        "object": "vase",
        "material": "ceramic",
        "detail": "porcelain",
        "text": "a photo of a vase made of porcelain ceramic",
        "query": "vase.",
    }
    assert T("umbrella", "metal", "steel").text().startswith("a photo of an umbrella")
    digest = prompts.write(tmp_path / "out")
    written = (tmp_path / "out" / P.PROMPTS_FILE).read_bytes()
    assert hashlib.sha256(written).hexdigest() == digest
    assert (tmp_path / "out" / "prompts.jsonl.sha256").read_text().split()[0] == digest
    assert P.read_prompt_list(tmp_path / "out" / P.PROMPTS_FILE) == records
    info = json.loads((tmp_path / "out" / P.FILTER_FILE).read_text())
    assert info["dropped"]["deny_list"] == 2 and info["unique"]["wood"] == 3
    with pytest.raises(P.PromptError, match=r"\['ceramic'\]"):
        P.balance({"ceramic": [], "wood": kept["wood"]}, 2, dropped, P.DEFAULT_TEMPLATE, "x")


def test_triplet_files_and_their_errors(tmp_path: Path) -> None:
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("object,material,detail\nvase,ceramic,porcelain\nspoon,metal, steel \n")
    assert P.read_triplet_file(csv_file) == [
        P.Triplet("vase", "ceramic", "porcelain"),
        P.Triplet("spoon", "metal", "steel"),
    ]
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"object": "vase", "material": "ceramic", "detail": "x"}\n{oops\n')
    with pytest.raises(FileContentError, match=r"t.jsonl: line 2"):
        P.read_triplet_file(bad)
    missing = tmp_path / "m.json"
    missing.write_text('[{"object": "vase", "material": "ceramic"}]')
    with pytest.raises(FileContentError, match=r"m.json: entry 1.*detail"):
        P.read_triplet_file(missing)
    deny = tmp_path / "deny.txt"
    deny.write_text("sponge metal\n")
    with pytest.raises(FileContentError, match=r"deny.txt: line 1"):
        P.load_deny_list([deny])


def test_language_model_over_a_chat_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = {
        "ceramic": "1. vase | porcelain\n2. mug | glazed\n3. sponge | soft",
        "metal": "Sure!\n- spoon | stainless steel\n- sponge | shiny\n- metal | brushed",
        "wood": "chair | oak\ntable | walnut",
    }

    def answer(text: str, images: list) -> str:
        assert not images and "object | sub-material or adjective" in text
        return next(a for c, a in answers.items() if f"made of {c}" in text)

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with chat_server(answer) as server:
        backend = build_backend(
            "openai:gpt-test", GenerationSettings(max_new_tokens=200), base_url=server.url
        )
        triplets, unparseable = P.ask_language_model(backend, CLASSES, 5, tmp_path / "raw.jsonl")
        assert len(server.log) == 3 and server.log[0]["max_tokens"] == 200
    assert unparseable == 1  # "Sure!"
    kept, dropped = P.sanity_filter(triplets, CLASSES, P.load_deny_list())
    assert [t.object for t in kept["metal"]] == ["spoon"]  # sponge: deny list; metal: material
    assert [t.object for t in kept["ceramic"]] == ["vase", "mug"]  # sponge, ceramic: denied
    assert dropped == {"deny_list": 2, "object_is_material": 1}
    raw = [json.loads(line) for line in (tmp_path / "raw.jsonl").read_text().splitlines()]
    assert [r["class"] for r in raw] == CLASSES and raw[2]["answer"] == answers["wood"]

    monkeypatch.setenv("OPENAI_API_KEY", "wrong-key")
    with chat_server(answer) as server:
        backend = build_backend("openai:gpt-test", base_url=server.url)
        with pytest.raises(P.PromptError, match=r"failed for 3 classes.*'ceramic': HTTP 401"):
            P.ask_language_model(backend, CLASSES, 5, tmp_path / "failed.jsonl")
    assert "HTTP 401" in (tmp_path / "failed.jsonl").read_text()


def test_tiny_causal_lm_answers_are_recorded_and_judged(tmp_path: Path) -> None:
    """A random LM writes no triplets: its answers are kept for the record and the prompt
    list refuses classes without one, naming them."""
    backend = build_backend(
        f"hf-text:{make_tiny_lm(tmp_path / 'lm')}", GenerationSettings(max_new_tokens=8)
    )
    triplets, unparseable = P.ask_language_model(backend, CLASSES, 3, tmp_path / "raw.jsonl")
    raw = [json.loads(line) for line in (tmp_path / "raw.jsonl").read_text().splitlines()]
    assert [r["class"] for r in raw] == CLASSES and all(r["answer"] for r in raw)
    assert "made of wood" in raw[2]["prompt"]
    # the triplets are exactly what the recorded answers parse to
    parsed = [P.parse_answer(r["answer"], r["class"]) for r in raw]
    assert [t for found, _ in parsed for t in found] == triplets
    assert sum(bad for _, bad in parsed) == unparseable
    kept, dropped = P.sanity_filter(triplets, CLASSES, P.load_deny_list())
    empty = [c for c in CLASSES if not kept[c]]
    if empty:
        with pytest.raises(P.PromptError, match="no usable triplet"):
            P.balance(kept, 3, dropped, P.DEFAULT_TEMPLATE, backend.model_id)
