"""Appearance descriptions of samples, and the label-leak check.

A sample's ``description`` comes from an optional JSON sidecar ``{sample key: description}``
(:func:`load_descriptions`); a sample missing from it (or every sample, without a sidecar) gets
the fixed, class-agnostic :data:`FALLBACK_DESCRIPTION`. The fallback is a constant, so it
cannot depend on the label; a sidecar description that names the sample's own class would hand
the answer to the text stream: by default its class words are redacted
(:data:`LABEL_LEAK_POLICIES`, :func:`assign_descriptions`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matbench.datasets.errors import DatasetFormatError
from matbench.datasets.utils import read_json

#: The description of a sample that has none in the sidecar. A constant: it can never
#: depend on (nor leak) the sample's class.
FALLBACK_DESCRIPTION = "a photo of a material surface"

#: What a dataset does with a sidecar description that names the sample's own class:
#: ``redact`` replaces the class words (and their derived forms) by :data:`REDACTION`,
#: ``fallback`` replaces the whole description by :data:`FALLBACK_DESCRIPTION`, ``keep`` keeps
#: it (the label leaks: for ablations), ``error`` stops with the first such sample.
LABEL_LEAK_POLICIES = ("redact", "fallback", "keep", "error")
#: The word that replaces a class word in a redacted description.
REDACTION = "material"
# Suffixes of the common derived forms: plurals, and adjectives such as wooden, woollen,
# metallic, glassy, stony, leathery, plastics, wood-like.
_DERIVED = r"(?:s|es|en|n|len|y|ey|ic|lic|ish|like|-like)"
# Count key of each policy's outcome ("error" raises before any count is read).
_OUTCOME = {"redact": "redacted", "fallback": "fallback", "keep": "kept", "error": "kept"}


def _class_word_pattern(class_name: str) -> re.Pattern[str] | None:
    """A regex of the words of ``class_name`` (its ``/``-separated parts, before a comma) and
    their derived forms, as whole words, ignoring case; None for a name without such words."""
    head = class_name.lower().split(",")[0]
    forms = []
    for part in (p.strip() for p in head.split("/")):
        if len(part) <= 2:
            continue
        word = re.escape(part)
        forms.append(rf"{word}{_DERIVED}?")
        if part.endswith("e"):  # stone -> stony
            forms.append(rf"{re.escape(part[:-1])}{_DERIVED}")
    if not forms:
        return None
    return re.compile(rf"\b(?:{'|'.join(forms)})\b", re.IGNORECASE)


def names_class(text: str, class_name: str) -> bool:
    """True when ``text`` contains a word of ``class_name`` (one of its ``/``-separated parts,
    or its part before a comma) or a derived form of it (plural, ``wooden``, ``metallic``,
    ``glassy``, ``stony``, ...) as a whole word, ignoring case."""
    pattern = _class_word_pattern(class_name)
    return bool(pattern and pattern.search(text))


def redact_class(text: str, class_name: str) -> str:
    """``text`` with every word of ``class_name`` and its derived forms replaced by
    :data:`REDACTION` (``"a wooden table"`` -> ``"a material table"`` for ``Wood``)."""
    pattern = _class_word_pattern(class_name)
    return pattern.sub(REDACTION, text) if pattern else text


def load_descriptions(path: str | Path) -> dict[str, str]:
    """Read a description sidecar: a JSON object ``{sample key: description}``."""
    path = Path(path).expanduser()
    data = read_json(path, "description sidecar")
    if not isinstance(data, dict):
        raise DatasetFormatError(path, "expected a JSON object {sample key: description}")
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise DatasetFormatError(
            path, f"{len(bad)} descriptions are not non-empty strings (e.g. key '{bad[0]}')"
        )
    return {str(k): v.strip() for k, v in data.items()}


def assign_descriptions(
    keys: Sequence[str],
    labels: Sequence[int],
    class_names: Sequence[str],
    sidecar: str | Path | None,
    on_label_leak: str = "redact",
) -> tuple[list[str], dict[str, Any]]:
    """One description per sample: the sidecar's, or :data:`FALLBACK_DESCRIPTION`; and the
    label-leak counts.

    A sidecar description that names the sample's own class (see :func:`names_class`) gives
    the answer away; ``on_label_leak`` (one of :data:`LABEL_LEAK_POLICIES`) decides what
    happens: ``redact`` (default) replaces the class words by :data:`REDACTION`,
    ``fallback`` the whole description by the fallback, ``keep`` keeps it, ``error`` raises
    :class:`DatasetFormatError` naming the sidecar and the first such key. The labels are used
    for this check only.

    Returns:
        The descriptions, and ``{"policy", "described", "leaks", "redacted", "fallback",
        "kept"}``: how many samples had a sidecar description, how many of those named their
        class, and what became of them.
    """
    if on_label_leak not in LABEL_LEAK_POLICIES:
        raise ValueError(
            f"on_label_leak must be one of {LABEL_LEAK_POLICIES}, got '{on_label_leak}'"
        )
    counts: dict[str, Any] = {"policy": on_label_leak, "described": 0, "leaks": 0}
    counts.update({outcome: 0 for outcome in _OUTCOME.values()})
    if sidecar is None:
        return [FALLBACK_DESCRIPTION] * len(keys), counts
    table = load_descriptions(sidecar)
    if keys and table and not any(key in table for key in keys):
        raise DatasetFormatError(
            Path(sidecar),
            f"none of its {len(table)} keys matches a sample (e.g. key '{next(iter(table))}', "
            f"sample '{keys[0]}'): is it the sidecar of another dataset or split?",
        )
    out = []
    first_leak = None
    for key, label in zip(keys, labels, strict=True):
        text = table.get(key)
        if text is None:
            out.append(FALLBACK_DESCRIPTION)
            continue
        counts["described"] += 1
        name = class_names[label]
        if names_class(text, name):
            counts["leaks"] += 1
            first_leak = first_leak or (key, text, name)
            if on_label_leak == "redact":
                text = redact_class(text, name)
            elif on_label_leak == "fallback":
                text = FALLBACK_DESCRIPTION
            counts[_OUTCOME[on_label_leak]] += 1
        out.append(text)
    missing = [k for k in keys if k not in table]
    if missing:
        warnings.warn(
            f"{sidecar}: {len(missing)} of {len(keys)} samples have no description (e.g. "
            f"'{missing[0]}') and get the fallback",
            stacklevel=2,
        )
    if first_leak is not None:
        key, text, name = first_leak
        msg = (
            f"{counts['leaks']} descriptions name their sample's own class (e.g. '{key}': "
            f"'{text}' for class '{name}'), which leaks the label to the text stream"
        )
        if on_label_leak == "error":
            raise DatasetFormatError(Path(sidecar), msg)
        done = {"redact": "redacted", "fallback": "replaced by the fallback", "keep": "kept"}
        warnings.warn(f"{sidecar}: {msg}; they were {done[on_label_leak]}", stacklevel=2)
    return out, counts
