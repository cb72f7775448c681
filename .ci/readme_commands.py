"""The shell lines of the README's "Set-up" and "Tests" sections, for CI to run exactly as a newcomer would.

Every ```bash block of those sections carries a marker on the line above its fence:

    <!-- ci: run -->                       CI runs every line of the block, as written, in order
    <!-- ci: skip: REASON -->              CI prints the block and the reason, and runs none of it

A bash block in those sections without a marker is an error, so no line is ever skipped silently.
``python .ci/readme_commands.py [README.md]`` prints one bash script (``set -euo pipefail``, then the lines, each
block headed by a comment naming its README line; the skipped blocks as comments) for ``bash`` to run in the
repository root: one shell, so ``. .venv/bin/activate`` holds for the lines after it. Standard library only: it
runs before anything is installed.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

SECTIONS = ("Set-up", "Tests")
MARKER = re.compile(r"^<!--\s*ci:\s*(run|skip:\s*(?P<reason>.*?))\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")
HEADING = re.compile(r"^## +(.*?)\s*$")


class ReadmeError(ValueError):
    """A README whose set-up blocks cannot be told apart: an unmarked or unterminated block, or none at all."""


@dataclass(frozen=True)
class Block:
    """One ```bash block: ``line`` is the README line of its first command; ``skip`` the reason, or None to run."""

    section: str
    line: int
    lines: List[str]
    skip: Optional[str]


def setup_blocks(text: str, sections: Sequence[str] = SECTIONS) -> List[Block]:
    """Every ```bash block of the ``## Set-up`` and ``## Tests`` sections of the Markdown ``text``, in order."""
    rows = text.splitlines()
    blocks, section, index = [], None, 0
    while index < len(rows):
        heading, fence = HEADING.match(rows[index]), FENCE.match(rows[index])
        if heading:
            section = heading.group(1)
        elif fence and fence.group(1):
            end = next((j for j in range(index + 1, len(rows)) if rows[j].strip() == "```"), None)
            if end is None:
                raise ReadmeError(f"README line {index + 1}: the ```{fence.group(1)} block is never closed")
            if section in sections and fence.group(1) in ("bash", "sh", "shell", "console"):
                marker = MARKER.match(rows[index - 1]) if index else None
                if marker is None:
                    raise ReadmeError(
                        f"README line {index + 1}: the bash block in '## {section}' has no marker on the line above; "
                        "add <!-- ci: run --> (CI runs it) or <!-- ci: skip: REASON --> (CI says why it does not)")
                skip = marker.group("reason") if marker.group(1) != "run" else None
                blocks.append(Block(section, index + 2, rows[index + 1:end], skip))
            index = end
        index += 1
    if not any(block.skip is None for block in blocks):
        raise ReadmeError(f"no <!-- ci: run --> bash block in the sections {', '.join(sections)} of the README")
    return blocks


def ci_script(blocks: Sequence[Block]) -> str:
    """A bash script running the lines of the blocks to run, in order; the skipped ones as comments with reason."""
    out = ["set -euo pipefail"]
    for block in blocks:
        where = f"+ README.md line {block.line} ({block.section})"
        if block.skip is None:
            out.append("echo " + shlex.quote(f"{where}: running its {len(block.lines)} line(s)"))
            out.extend(block.lines)
        else:
            out.append("echo " + shlex.quote(f"{where}: skipped, {block.skip}"))
            out.extend(f"#   {line}" for line in block.lines)
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] = ()) -> int:
    path = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "README.md"
    try:
        print(ci_script(setup_blocks(path.read_text())), end="")
    except ReadmeError as error:
        print(f"{path}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
