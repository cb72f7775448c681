"""The README's and the docs' Python blocks run as written: each file's ```python blocks, in order, in one
namespace, in a fresh interpreter on the CPU (no GPU visible), in an empty directory."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", flags=re.MULTILINE | re.DOTALL)

# Runs the blocks of one document in order; a failing block is named by its line and the document, exit code 1.
RUNNER = """
import json, sys, traceback
name, blocks = sys.argv[1], json.load(open(sys.argv[2]))
namespace = {"__name__": "__main__"}
for line, code in blocks:
    try:
        exec(compile(code, f"{name}:{line}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"the python block of {name} at line {line} failed", file=sys.stderr)
        sys.exit(1)
print(f"ran {len(blocks)} python blocks of {name}")
"""


def python_blocks(text):
    """``[(line, code), ...]``: every fenced ```python block of a Markdown text, ``line`` that of its first code line."""
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1)) for match in FENCE.finditer(text)]


def run_blocks(name, blocks, workdir):
    """Run ``blocks`` in a fresh interpreter in ``workdir`` with no GPU visible; returns the completed process."""
    listing = workdir / "blocks.json"
    listing.write_text(json.dumps(blocks))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", RUNNER, name, str(listing)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("document", [path for path in DOCUMENTS if python_blocks(path.read_text())],
                         ids=lambda path: str(path.relative_to(ROOT)))
def test_every_python_block_runs_as_written(document, tmp_path):
    blocks = python_blocks(document.read_text())
    process = run_blocks(document.name, blocks, tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    assert f"ran {len(blocks)} python blocks of {document.name}" in process.stdout


def test_the_readme_has_its_api_blocks():
    blocks = python_blocks((ROOT / "README.md").read_text())
    code = "".join(code for _, code in blocks)
    assert len(blocks) >= 3 and all(name in code for name in ("SECInfoNCE", "WithSEC", "MultiView", "EvalTransform"))
    assert ".cuda()" not in code  # the snippets run on whatever device is there


def test_a_broken_block_fails_and_names_its_line(tmp_path):
    text = "# Doc\n\n```python\nx = 1\n```\n\nprose\n\n```python\nassert x == 2, 'x is 1'\n```\n\n```bash\nexit 1\n```\n"
    blocks = python_blocks(text)
    assert blocks == [(4, "x = 1\n"), (10, "assert x == 2, 'x is 1'\n")]  # bash blocks are not python
    process = run_blocks("DOC.md", blocks, tmp_path)
    assert process.returncode == 1
    assert "AssertionError: x is 1" in process.stderr and "DOC.md at line 10 failed" in process.stderr


def test_no_document_points_outside_the_repository():
    for path in [*DOCUMENTS, *ROOT.glob("configs/*.yaml")]:
        assert "../shared" not in path.read_text(), path.name
