"""The ``matbench`` command: LightningCLI's fit/validate/test/predict plus a few tools."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import matbench

#: Subcommands that are not Lightning runs: name -> ("module:function", one-line help).
#: Each function takes the remaining argv and returns an exit code.
TOOL_COMMANDS: dict[str, tuple[str, str]] = {
    "materials": ("matbench.materials.cli:main", "LVIS-materials sidecars, vocabulary and prior"),
    "embed-text": ("matbench.prediction:embed_text_main", "text embeddings of material queries"),
    "synth": (
        "matbench.synth.cli:main",
        "MatSeg scenes (2D, 3D), PBR materials or a benchmark by pattern infusion",
    ),
    "demo": ("matbench.demo:main", "MatSeg end to end on generated data, on CPU (make demo)"),
    "benchmark": ("matbench.benchmark:main", "run a suite of `test` runs into one table"),
    "report": ("matbench.report:main", "rebuild results tables and plots from JSON files"),
    "describe": (
        "matbench.vlm.describe:main",
        "VLM appearance descriptions of regions (sidecar), or zero-shot VLM classes",
    ),
    "data": ("matbench.datamodules.streaming:main", "export a split to LitData streaming shards"),
}


def _tools_epilog() -> str:
    if not TOOL_COMMANDS:
        return ""
    lines = ["other commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in sorted(TOOL_COMMANDS.items())]
    return "\n".join(lines)


def run_tool(name: str, argv: Sequence[str]) -> int:
    target, _ = TOOL_COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(list(argv)) or 0)


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of ``matbench`` and ``python -m matbench``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in ("--version", "-V"):
        print(f"matbench {matbench.__version__}")
        return 0
    if argv and argv[0] in TOOL_COMMANDS:
        code = run_tool(argv[0], argv[1:])
        if args is None:
            sys.exit(code)
        return code
    from matbench.lightning_cli import run  # Lightning is imported only from here on

    # From the console LightningCLI reads sys.argv itself (args=None): no "args and argv" warning.
    cli = run(None if args is None else argv, epilog=_tools_epilog())
    # From the console script the return value is the exit status; from Python, the CLI.
    return 0 if args is None else cli
