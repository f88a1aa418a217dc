"""The ``matbench`` command: LightningCLI's fit/validate/test/predict plus a few tools.

Help, ``--version``, tool commands and errors in the command line itself are answered here,
before Lightning (seconds to import) is loaded.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matbench

DESCRIPTION = (
    "matbench: open-vocabulary material recognition as a benchmarkable, trainable, "
    "reproducible task (CLIP material embeddings, two-stream DINOv2+text classification, "
    "MatSeg descriptors on LVIS-materials, FMD, DMS and the MatSeg benchmark)."
)

#: Lightning subcommands: name -> one-line help.
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train a task on a datamodule (checkpoints, logs, LR schedule)",
    "validate": "run the validation loop once",
    "test": "evaluate and write a results JSON and the results table",
    "predict": "write predictions (embeddings, class probabilities, descriptor maps); "
    "`predict --images DIR --ckpt_path CKPT` on a folder of photos",
}

#: Subcommands that are not Lightning runs: name -> ("module:function", one-line help).
#: Each function takes the remaining argv and returns an exit code.
TOOL_COMMANDS: dict[str, tuple[str, str]] = {
    "materials": ("matbench.materials.cli:main", "LVIS-materials sidecars, vocabulary and prior"),
    "embed-text": ("matbench.embed_text:main", "text embeddings of material queries"),
    "synth": (
        "matbench.synth.cli:main",
        "MatSeg scenes (2D, 3D), PBR materials, a benchmark; diffusion material sets",
    ),
    "demo": ("matbench.demo:main", "MatSeg end to end on generated data, on CPU (make demo)"),
    "benchmark": ("matbench.benchmark:main", "run a suite of `test` runs into one table"),
    "report": ("matbench.report:main", "rebuild results tables and plots from JSON files"),
    "leaderboard": (
        "matbench.leaderboard.cli:main",
        "every model on every material benchmark: runs, HTML/Markdown/CSV leaderboard",
    ),
    "describe": (
        "matbench.vlm.describe:main",
        "VLM appearance descriptions of regions (sidecar), or zero-shot VLM classes",
    ),
    "export": ("matbench.api_cli:export_main", "save_pretrained folder, open_clip file, Hub push"),
    "data": (
        "matbench.download:main",
        "download public datasets (SHA-256 checked, resumable); export LitData shards",
    ),
}

DEBUG_HELP = "show the traceback of errors (or set MATBENCH_DEBUG=1)"


def _tools_epilog() -> str:
    if not TOOL_COMMANDS:
        return ""
    lines = ["other commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in sorted(TOOL_COMMANDS.items())]
    return "\n".join(lines)


def help_text() -> str:
    """The top-level ``matbench --help``."""
    import textwrap

    lines = [
        "usage: matbench [--version] [--debug] COMMAND [ARGS]",
        "",
        textwrap.fill(DESCRIPTION, 90),
        "",
        "runs (PyTorch Lightning; `matbench COMMAND --help` for the options):",
    ]
    for name, help_ in LIGHTNING_COMMANDS.items():
        wrapped = textwrap.wrap(help_, 75)
        lines.append(f"  {name:<12} {wrapped[0]}")
        lines += [f"  {'':<12} {more}" for more in wrapped[1:]]
    lines += ["", _tools_epilog(), "", "options:"]
    lines += [
        f"  {'-h, --help':<16} show this help and exit",
        f"  {'-V, --version':<16} print matbench's version and exit",
        f"  {'--debug':<16} {DEBUG_HELP}",
        "",
        "example: matbench fit --config configs/two_stream/fmd.yaml --data.root /data/fmd",
    ]
    return "\n".join(lines)


def run_tool(name: str, argv: Sequence[str]) -> int:
    target, _ = TOOL_COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(list(argv)) or 0)


def debug_requested(argv: list[str]) -> bool:
    """``--debug`` in ``argv`` or ``MATBENCH_DEBUG`` set to a true value."""
    env = os.environ.get("MATBENCH_DEBUG", "").strip().lower()
    return "--debug" in argv or env not in ("", "0", "false", "no", "off")


def known_error(err: BaseException) -> BaseException | None:
    """The `MatbenchError` behind ``err`` (itself, or a cause: jsonargparse wraps errors raised
    while it builds the classes of a config; or one raised in a DataLoader worker, see
    :func:`worker_error`), or None."""
    from matbench.errors import MatbenchError

    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        from_worker = worker_error(current)
        if from_worker is not None:
            return from_worker
        if isinstance(current, MatbenchError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


#: How PyTorch re-raises an exception of a DataLoader worker in the main process.
_WORKER_ERROR = re.compile(r"Caught (\w+) in (DataLoader worker process \d+)\.\nOriginal ")


def worker_error(err: BaseException) -> BaseException | None:
    """A `MatbenchError` raised in a DataLoader worker, rebuilt from what PyTorch hands the main
    process (its class name and the worker's whole traceback flattened into the message of a
    RuntimeError, or of the same class when it takes one argument), or None.

    The rebuilt error has the original message, the worker's name and the class's hint, so a
    bad file found in a worker is reported like one found in the main process."""
    from matbench.errors import MatbenchError

    text = str(err)
    match = _WORKER_ERROR.match(text)
    if match is None:
        return None
    name, where = match.groups()
    classes, todo = {}, [MatbenchError]
    while todo:
        cls = todo.pop()
        classes[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    if name not in classes:
        return None
    # the traceback ends with "<module>.<Name>: <message>" (the message may span lines)
    start = max(text.rfind(f".{name}: "), text.rfind(f"\n{name}: "))
    if start < 0:
        return None
    message = text[start + len(name) + 3 :].rstrip("\n")
    rebuilt = MatbenchError(f"{message} (raised in {where})")
    rebuilt.hint = classes[name].hint
    return rebuilt


def report_error(err: BaseException) -> None:
    """Print a known error as ``error: …`` and its hint, without a traceback."""
    message = " ".join(str(err).split("\n"))
    print(f"error: {message}", file=sys.stderr)
    hint = getattr(err, "hint", "")
    if hint and hint not in message:
        print(f"hint: {hint}", file=sys.stderr)
    print("(--debug or MATBENCH_DEBUG=1 shows the traceback)", file=sys.stderr)


def unknown_command(name: str) -> str:
    """The message for a mistyped subcommand, with the closest names and every command."""
    commands = [*LIGHTNING_COMMANDS, *sorted(TOOL_COMMANDS)]
    close = difflib.get_close_matches(name, commands, n=2)
    lines = [
        f"error: unknown command '{name}'"
        + (f"; did you mean {' or '.join(close)}?" if close else "")
    ]
    lines.append("commands: " + ", ".join(commands))
    lines.append("(matbench --help describes them)")
    return "\n".join(lines)


def suite_config_error(argv: list[str]) -> str | None:
    """A message when ``--config`` names a benchmark suite file rather than a run config."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg in ("--config", "-c") and i + 1 < len(argv) else None
        if arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value is None or not value.endswith((".yaml", ".yml")) or not Path(value).is_file():
            continue
        import yaml

        try:
            data = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return None  # the run's own parser reports it
        if isinstance(data, dict) and isinstance(data.get("runs"), list) and "model" not in data:
            return (
                f"error: {value} is a benchmark suite (a list of runs), not a run config: "
                f"run it with `matbench benchmark --config {value}`"
            )
    return None


def _exit(code: int, args: Sequence[str] | None) -> int:
    if args is None:
        sys.exit(code)
    return code


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of ``matbench`` and ``python -m matbench``.

    Known errors (`matbench.errors.MatbenchError`: missing data, bad files, unusable weights,
    settings that do not fit) print one ``error:`` line and a hint and exit with status 2;
    ``--debug`` or ``MATBENCH_DEBUG=1`` raises them with their traceback instead.
    """
    argv = list(sys.argv[1:] if args is None else args)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text(), file=sys.stdout if argv else sys.stderr)
        raise SystemExit(0 if argv else 2)
    if argv[0] in ("--version", "-V"):
        print(f"matbench {matbench.__version__}")
        return 0
    if argv[0] not in LIGHTNING_COMMANDS and argv[0] not in TOOL_COMMANDS:
        print(unknown_command(argv[0]), file=sys.stderr)
        raise SystemExit(2)
    try:
        if argv[0] in TOOL_COMMANDS:
            return _exit(run_tool(argv[0], argv[1:]), args)
        if argv[0] == "predict" and any(a.split("=")[0] == "--images" for a in argv):
            from matbench.api_cli import predict_images_main

            return _exit(predict_images_main(argv[1:]), args)
        suite_error = suite_config_error(argv[1:])
        if suite_error:
            print(suite_error, file=sys.stderr)
            raise SystemExit(2)
        from matbench import cli_help

        recording = contextlib.nullcontext()
        if cli_help.is_help_request(argv):
            text = cli_help.lookup(argv)  # help without importing Lightning
            if text is not None:
                sys.stdout.write(text)
                raise SystemExit(0)
            recording = cli_help.recording(argv)
        from matbench.lightning_cli import run  # Lightning is imported only from here on

        # From the console LightningCLI reads sys.argv itself (args=None): no "args and argv"
        # warning; --debug is not one of its options, so it reads a copy without it.
        if args is None and "--debug" in sys.argv:
            sys.argv = [sys.argv[0], *argv]
        with recording:
            cli = run(None if args is None else argv, epilog=_tools_epilog())
    except (Exception, KeyboardInterrupt) as err:
        known = known_error(err) if isinstance(err, Exception) else None
        if known is None or debug:
            raise
        report_error(known)
        raise SystemExit(2) from None
    # From the console script the return value is the exit status; from Python, the CLI.
    return 0 if args is None else cli
