"""llama.cpp's own tools (built by make-llama-tools.sh, linked as tests/peer/.llama-tools) for the
peer checks: running them with a readable failure, llama-perplexity with an f32 KV cache, and
reading the figures they print."""
import re
import subprocess
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent / ".llama-tools"
PERPLEXITY = TOOLS / "llama-perplexity"
QUANTIZE = TOOLS / "llama-quantize"
IMATRIX = TOOLS / "llama-imatrix"
THREADS = 2


def run_tool(exe, *args, timeout=600):
    cmd = [str(exe), *[str(a) for a in args]]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    out = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
    if p.returncode != 0:
        raise AssertionError(f"{exe.name} failed (exit {p.returncode}): {' '.join(cmd)}\n{out[-4000:]}")
    return out


def llama_perplexity(model, ctx, *args):
    # -b CTX: one sequence per batch; -ctk/-ctv f32: an f32 KV cache instead of the default f16.
    return run_tool(PERPLEXITY, "-m", model, "-c", ctx, "-b", ctx, "-t", THREADS,
                    "-ctk", "f32", "-ctv", "f32", *args)


def grab(pattern, text, what):
    m = re.search(pattern, text)
    assert m, f"llama-perplexity printed no {what} line:\n{text[-3000:]}"
    return float(m.group(1))


@pytest.fixture(scope="module", autouse=True)
def llama_tools():
    """Exit 77 (ctest: skipped) without the tools, as run-pytest.sh does without the venv."""
    if not (PERPLEXITY.is_file() and QUANTIZE.is_file()):
        pytest.exit(f"[peer] {TOOLS}/llama-perplexity or llama-quantize missing: run "
                    "tests/peer/make-venv.sh (skipping)", returncode=77)
