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


# CI runs the README's set-up and test lines as written: .ci/readme_commands.py extracts them, .ci/run runs them.
def readme_commands():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / ".ci" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_ci_runs_the_readmes_install_and_test_lines_and_nothing_else():
    commands = readme_commands()
    blocks = commands.setup_blocks((ROOT / "README.md").read_text())
    ran = [line for block in blocks if block.skip is None for line in block.lines]
    assert 'pip install -e ".[dev]"' in ran and "python -m pytest" in ran
    assert any(line.startswith("apt-get") and "dataset-fashion-mnist" in line for line in ran)
    assert all(block.skip for block in blocks if any("git clone" in line for line in block.lines))
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_commands.py README.md" in ci
    assert not re.search(r"^\s*(python -m )?pip |^\s*apt-get|pytest", ci, flags=re.MULTILINE)  # only the README's


def test_readme_commands_run_in_one_shell_and_skip_only_marked_blocks(tmp_path):
    commands = readme_commands()
    text = ("## Set-up\n\n<!-- ci: run -->\n```bash\nexport X=1\n```\n\n<!-- ci: skip: not here -->\n```bash\n"
            "exit 3\n```\n\n## Tests\n\n<!-- ci: run -->\n```bash\ntest \"$X\" = 1 && echo ok > out.txt\n```\n\n"
            "## Other\n\n```bash\nexit 4\n```\n")
    blocks = commands.setup_blocks(text)
    assert [(block.section, block.line, block.skip) for block in blocks] == [
        ("Set-up", 5, None), ("Set-up", 10, "not here"), ("Tests", 17, None)]
    script = commands.ci_script(blocks)
    process = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    assert (tmp_path / "out.txt").read_text() == "ok\n" and "skipped, not here" in process.stdout


@pytest.mark.parametrize("text, message", [
    ("## Tests\n\n```bash\npython -m pytest\n```\n", "has no marker"),
    ("## Tests\n\n<!-- ci: run -->\n```bash\npython -m pytest\n", "never closed"),
    ("## Tests\n\n<!-- ci: skip: no -->\n```bash\npython -m pytest\n```\n", "no <!-- ci: run -->"),
])
def test_an_unmarked_or_unclosed_setup_block_is_an_error(text, message):
    commands = readme_commands()
    with pytest.raises(commands.ReadmeError, match=message):
        commands.setup_blocks(text)


def test_a_failing_readme_line_fails_ci(tmp_path):
    commands = readme_commands()
    blocks = commands.setup_blocks("## Set-up\n\n<!-- ci: run -->\n```bash\nfalse\ntouch never\n```\n")
    process = subprocess.run(["bash", "-c", commands.ci_script(blocks)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
    assert process.returncode == 1 and not (tmp_path / "never").exists()
