"""Help of the Lightning subcommands without importing Lightning.

``matbench fit --help`` is built by LightningCLI's parser, which needs ``import lightning``
(seconds, torch included). The output only depends on what is installed and on the command
line, so it is served from text:

- **shipped**: ``matbench/data/cli_help/<subcommand>.txt``, the plain ``matbench SUB --help``
  pages, generated with ``python -m matbench.cli_help --write`` and used when matbench,
  Lightning, jsonargparse and Python are the versions recorded in ``key.json`` (a test checks
  that the pages equal the live output);
- **cached**: every other help-like command (``--help`` with config files, ``--print_config``,
  ``--model.help CLASS``) is answered by Lightning once and its output kept in
  ``$MATBENCH_CACHE_DIR/cli-help`` (default ``~/.cache/matbench/cli-help``), keyed by the
  versions, the contents of matbench's own sources, the command line, the working directory
  and the contents of the files it names. A repeated command prints the kept text. A command
  that names a class of another package (a user's own task) is not kept: its source is not
  in the key.

Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import matbench
from matbench.utils import cache_root

#: Where the shipped pages live.
SHIPPED_DIR = Path(__file__).parent / "data" / "cli_help"
#: The packages whose versions decide the help text.
VERSIONED = ("lightning", "jsonargparse", "torch")
#: Top-level packages whose classes a cached text may show: matbench (its sources are in the
#: key) and versioned ones. A command that names a class of any other importable package (a
#: user's own task, whose source can change under the same command line) is never cached.
KEYED_PACKAGES = ("matbench", "lightning", "pytorch_lightning", "torch", "jsonargparse")
#: Lightning subcommands (matbench.cli.LIGHTNING_COMMANDS, without importing the CLI module).
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def is_help_request(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (subcommand first) only asks for help or the resolved config: such a
    command runs nothing and prints text that depends on nothing but its inputs."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return False
    for arg in argv[1:]:
        name = arg.split("=", 1)[0]
        if name in ("-h", "--help", "--print_config") or name.endswith(".help"):
            return True
    return False


def versions() -> dict[str, str]:
    """The versions the help text depends on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"matbench": matbench.__version__, "python": "{}.{}".format(*sys.version_info[:2])}
    for name in VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = ""
    return found


def _shipped_page(argv: Sequence[str]) -> Path | None:
    """The shipped page for ``argv`` when it is exactly ``SUB --help`` (or ``-h``)."""
    if len(argv) != 2 or argv[1] not in ("-h", "--help"):
        return None
    return SHIPPED_DIR / f"{argv[0]}.txt"


def shipped_text(argv: Sequence[str]) -> str | None:
    """The shipped page for ``argv`` if there is one and it was made with these versions."""
    page = _shipped_page(argv)
    if page is None or not page.is_file():
        return None
    try:
        key = json.loads((SHIPPED_DIR / "key.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if key != versions():
        return None
    return page.read_text(encoding="utf-8")


def cache_dir() -> Path:
    """``$MATBENCH_CACHE_DIR/cli-help``, else ``~/.cache/matbench/cli-help``."""
    return cache_root("cli-help")


def source_fingerprint() -> str:
    """SHA-256 over matbench's own Python sources (a checkout edited since the last run gets
    other keys: its help is never served stale)."""
    package = Path(matbench.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _named_files(argv: Sequence[str]) -> list[Path]:
    """Existing files named on the command line (config files, also as ``--opt=FILE``), and
    the files their string values name (nested configs), relative to the config or the cwd."""
    found: list[Path] = []
    todo = [v for a in argv for v in {a, a.split("=", 1)[-1]}]
    while todo and len(found) < 64:
        value = todo.pop(0)
        path = Path(value).expanduser()
        try:
            is_file = len(value) < 4096 and path.is_file()
        except OSError:
            is_file = False
        if not is_file or path.resolve() in found:
            continue
        found.append(path.resolve())
        if path.suffix.lower() in (".yaml", ".yml", ".json"):
            text = path.read_text(encoding="utf-8", errors="replace")
            for token in text.replace(":", " ").replace('"', " ").replace("'", " ").split():
                if token.endswith((".yaml", ".yml", ".json")):
                    todo += [token, str(path.parent / token)]
    return found


_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def names_other_code(argv: Sequence[str], files: Sequence[Path]) -> bool:
    """Whether ``argv`` or its config files name a class of an importable package outside
    `KEYED_PACKAGES` (found without importing it)."""
    from importlib.util import find_spec

    values = [
        a.split("=", 1)[1] if a.startswith("-") else a for a in argv if "=" in a or a[:1] != "-"
    ]
    texts = [*values, *(p.read_text(encoding="utf-8", errors="replace") for p in files)]
    tops = {m.group().split(".")[0] for text in texts for m in _DOTTED.finditer(text)}
    for top in tops - set(KEYED_PACKAGES):
        try:
            spec = find_spec(top)
        except (ImportError, ValueError):
            continue
        # a module or package with code (a folder without __init__, e.g. data/, is none)
        if spec is not None and spec.origin not in (None, "namespace"):
            return True
    return False


def cache_key(argv: Sequence[str]) -> str:
    """The key of ``argv``'s output in the cache (see the module docstring)."""
    files = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in _named_files(argv)}
    env = {k: v for k, v in os.environ.items() if k.startswith(("JSONARGPARSE_", "LIGHTNING_"))}
    material = {
        "versions": versions(),
        "sources": source_fingerprint(),
        "argv": list(argv),
        "cwd": os.getcwd(),
        "files": files,
        "env": env,
        "columns": shutil.get_terminal_size().columns,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def lookup(argv: Sequence[str]) -> str | None:
    """The text ``argv`` prints, from the shipped pages or the cache, or None."""
    text = shipped_text(argv)
    if text is not None:
        return text
    if not cacheable(argv):
        return None
    path = cache_dir() / f"{cache_key(argv)}.txt"
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def cacheable(argv: Sequence[str]) -> bool:
    """Whether the key can cover everything ``argv``'s output depends on."""
    return not names_other_code(argv, [p for p in _named_files(argv) if p.is_file()])


def store(argv: Sequence[str], text: str) -> None:
    """Keep ``argv``'s output in the cache (atomically; a read-only home is no error)."""
    if not cacheable(argv):
        return
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{cache_key(argv)}.txt"
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError:
        pass


class _Tee:
    """Writes to a stream and keeps a copy."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def recording(argv: Sequence[str]) -> Iterator[None]:
    """Run a help-like command live and keep what it printed when it exits with status 0.

    The program is named ``matbench`` meanwhile: jsonargparse names the program of a class's
    help (``--model.help CLASS``) after ``sys.argv[0]`` (``__main__.py`` under ``python -m``).
    """
    tee = _Tee(sys.stdout)
    sys.stdout = tee  # type: ignore[assignment]
    program = sys.argv[:1]
    sys.argv[:1] = ["matbench"]
    try:
        yield
    except SystemExit as done:
        if done.code in (0, None) and tee.parts:
            store(argv, "".join(tee.parts))
        raise
    finally:
        sys.stdout = tee.stream
        sys.argv[:1] = program


def live_text(argv: Sequence[str]) -> str:
    """What ``matbench ARGV`` prints, built by Lightning's parser (imports Lightning)."""
    import io

    from matbench.cli import _tools_epilog
    from matbench.lightning_cli import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        run(list(argv), epilog=_tools_epilog())
    return out.getvalue()


def write_shipped(directory: Path = SHIPPED_DIR) -> list[Path]:
    """Write the shipped pages and their ``key.json`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SUBCOMMANDS:
        path = directory / f"{name}.txt"
        path.write_text(live_text([name, "--help"]), encoding="utf-8")
        written.append(path)
    key = directory / "key.json"
    key.write_text(json.dumps(versions(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return [*written, key]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m matbench.cli_help --write``: regenerate the shipped help pages."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="write the pages")
    parser.add_argument("--dir", type=Path, default=SHIPPED_DIR, help="(default: the package)")
    args = parser.parse_args(argv)
    if not args.write:
        parser.print_help()
        return 0
    for path in write_shipped(args.dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
