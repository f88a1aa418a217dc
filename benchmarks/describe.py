"""Benchmark: ``matbench describe`` against the bare ``generate`` call on the same batches,
side by side in one run (CPU).

``describe`` path: :func:`matbench.vlm.describe.ask_regions` over the regions of a fake FMD
copy at the real size (512 x 384 JPEGs with masks) -- decode, SHA-256 of pixels and mask,
cache lookup, the outlined view, the processor's chat template and image preprocessing,
batched greedy ``model.generate``, decoding, and the fsync'd JSONL append of every batch --
in regions/second, against the bare ``model.generate`` on the very same batches, already
preprocessed into tensors. Target: >= 85 %. A second line shows the back end's ``generate``
on prebuilt requests (processor included) for reference.

The model is the tiny random LLaVA of :mod:`matbench.vlm.tiny`, widened with ``--hidden``
(its answers are meaningless; their length is fixed by ``--tokens``, as greedy decoding of
a random model rarely stops early; both paths must give the same answers). After one warm-up
pass, the measurements alternate for ``--rounds`` rounds (in reversed order every other
round) and each keeps its best round, as the CPU may be shared.

    python -m benchmarks.describe                 # the defaults reported in the docs
    python -m benchmarks.describe --regions 16    # a quick run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from matbench.datasets.fmd import FMD
from matbench.vlm import GenerationSettings, Request, build_backend
from matbench.vlm.describe import ask_regions, load_prompts, make_prompt
from matbench.vlm.regions import region_view
from matbench.vlm.store import AnswerStore
from matbench.vlm.tiny import make_tiny_vlm
from tests.data.fmd.data import make as make_fmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regions", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per answer")
    parser.add_argument("--hidden", type=int, default=256, help="decoder width")
    parser.add_argument("--image-size", type=int, default=224, help="vision tower input")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        per_class = max(1, args.regions // 10)
        root = make_fmd(tmp_path / "fmd", per_class=per_class, size=(512, 384))
        folder = make_tiny_vlm(tmp_path / "vlm", image_size=args.image_size, hidden=args.hidden)
        settings = GenerationSettings(max_new_tokens=args.tokens)
        backend = build_backend(f"hf:{folder}", settings)
        # a random model may emit EOS early: generate exactly --tokens tokens on both paths
        backend.model.generation_config.eos_token_id = None
        dataset = FMD(root)
        regions = [(dataset, i) for i in range(len(dataset))]
        prompt = make_prompt(load_prompts(), "describe", "outline")
        requests = []
        for index in range(len(dataset)):
            sample = dataset[index]
            view = region_view(sample["image"], sample["mask"], "outline")
            requests.append(Request(prompt.text, [view], system=prompt.system))
        batches = [
            requests[i : i + args.batch_size] for i in range(0, len(requests), args.batch_size)
        ]
        inputs = [backend._inputs(batch) for batch in batches]

        texts: dict[str, list[str]] = {}

        def run_describe(round_: int) -> float:
            store = AnswerStore(tmp_path / f"cache{round_}.jsonl")
            start = time.perf_counter()
            results = ask_regions(
                backend, regions, prompt, "outline", store, args.batch_size, progress=False
            )
            seconds = time.perf_counter() - start
            assert all(r.text is not None for r in results), [r.error for r in results]
            texts["describe"] = [str(r.text) for r in results]
            return len(regions) / seconds

        @torch.no_grad()
        def run_bare() -> float:
            answers, lengths = [], []
            start = time.perf_counter()
            for batch in inputs:
                out = backend.model.generate(
                    **batch,
                    max_new_tokens=args.tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=backend.tokenizer.pad_token_id,
                )
                new = out[:, batch["input_ids"].shape[1] :]
                lengths.append(new.shape[1])
                answers += backend.tokenizer.batch_decode(new, skip_special_tokens=True)
            seconds = time.perf_counter() - start
            texts["bare"] = [a.strip() for a in answers]
            assert lengths == [args.tokens] * len(inputs), lengths
            return len(regions) / seconds

        def run_backend() -> float:
            start = time.perf_counter()
            for batch in batches:
                backend.generate(batch)
            return len(regions) / (time.perf_counter() - start)

        run_bare()  # warm-up: the first generate calls pay one-off allocations
        best = {"describe": 0.0, "bare": 0.0, "backend": 0.0}
        for round_ in range(args.rounds):
            # alternate the order, so that neither path always runs first
            runs = [("bare", run_bare), ("describe", lambda r=round_: run_describe(r))]
            runs.append(("backend", run_backend))
            for name, run in runs if round_ % 2 == 0 else runs[::-1]:
                best[name] = max(best[name], run())
    # the same work on both paths: the same answers, every one --tokens long
    assert texts["describe"] == texts["bare"], "describe and bare generate answered differently"
    print(
        f"{len(regions)} regions, batches of {args.batch_size}, {args.tokens} new tokens, "
        f"decoder width {args.hidden}, vision input {args.image_size} px, best of {args.rounds}"
    )
    print(f"  bare model.generate (preprocessed): {best['bare']:8.2f} regions/s")
    print(f"  backend.generate (processor incl.): {best['backend']:8.2f} regions/s")
    print(f"  matbench describe (whole path):     {best['describe']:8.2f} regions/s")
    print(f"  describe / bare generate:           {best['describe'] / best['bare']:8.1%}")


if __name__ == "__main__":
    main()
