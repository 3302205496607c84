"""Regenerate the "Sections and keys" part of docs/configuration.md from core/config.py."""

from __future__ import annotations

from pathlib import Path

from ovnk.core import config
from ovnk.core.settings import describe
from ovnk.core.settings import env_name

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
MARKER = "## Sections and keys\n"


def table() -> str:
    out = []
    for name, cls in config.CORE_SECTIONS.items():
        out += [f"\n### [{name}]\n", "| key | default | environment | meaning |", "|---|---|---|---|"]
        for key, value, help_text in describe(cls()):
            out.append(f"| `{key}` | `{value}` | `{env_name(name, key)}` | {help_text} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    text = DOC.read_text()
    DOC.write_text(text[: text.index(MARKER) + len(MARKER)] + table())
