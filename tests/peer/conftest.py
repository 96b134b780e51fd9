"""Shared fixtures for the peer checks: where llmopt and ../shared are, and how to run llmopt.

Environment (set by tests/peer/peer.cmake; defaults let `pytest tests/peer` run by hand):
  LLMOPT_BIN         the llmopt executable (default: build/apps/llmopt/llmopt)
  LLMOPT_SHARED_DIR  the shared data directory (default: ../shared next to the repository)
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# CI runs each peer check at a size that keeps `scripts/test.sh` within its 30 minutes (fewer
# documents, formats or cases where they repeat one code path); LLMOPT_PEER_FULL=1 runs the full-size
# versions, with the same references and tolerances (bench/peer_full_size.sh, bench/README.md).
PEER_FULL = os.environ.get("LLMOPT_PEER_FULL", "0") == "1"


def ci_or_full(ci, full):
    """The CI-size value, or the full-size one under LLMOPT_PEER_FULL=1."""
    return full if PEER_FULL else ci

# Transformers and the hub must never try the network: every model here is a local directory.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _llmopt_bin() -> Path:
    return Path(os.environ.get("LLMOPT_BIN", REPO / "build" / "apps" / "llmopt" / "llmopt"))


def _shared_dir() -> Path:
    return Path(os.environ.get("LLMOPT_SHARED_DIR", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    d = _shared_dir()
    if not d.is_dir():
        pytest.fail(f"shared data directory {d} not found (set LLMOPT_SHARED_DIR)")
    return d


@pytest.fixture(scope="session")
def hf17m(shared) -> Path:
    """The 17M-parameter Llama (HF directory: BF16 safetensors, GPT-2 byte-level tokenizer.json)."""
    return shared / "models" / "tinyllama-bpe-17m"


@pytest.fixture(scope="session")
def stories_bin(shared) -> Path:
    return shared / "models" / "stories260K" / "stories260K.bin"


@pytest.fixture(scope="session")
def stories_tok(shared) -> Path:
    return shared / "models" / "stories260K" / "tok512.bin"


class Llmopt:
    """Runs the llmopt CLI; every failure shows the command line and its stderr."""

    def __init__(self, exe: Path):
        self.exe = exe

    def run(self, *args, timeout=900) -> str:
        cmd = [str(self.exe), "-q", *[str(a) for a in args]]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError(
                f"llmopt failed (exit {p.returncode}): {' '.join(cmd)}\nstderr:\n{p.stderr}")
        return p.stdout

    def json(self, *args, **kw):
        return json.loads(self.run(*args, **kw))

    def logits(self, model, tmp: Path, *args):
        """`llmopt logits --full`: {ids, vocab_size, positions: [{logits, ...}]} via a temp file."""
        out = tmp / f"logits-{len(list(tmp.glob('logits-*')))}.json"
        self.run("logits", model, "--full", "--json", out, *args)
        return json.loads(out.read_text())


@pytest.fixture(scope="session")
def llmopt() -> Llmopt:
    exe = _llmopt_bin()
    if not exe.is_file():
        pytest.fail(f"llmopt binary {exe} not found (set LLMOPT_BIN)")
    return Llmopt(exe)


def utf8_prefix(data: bytes, limit: int) -> bytes:
    """The longest prefix of data, at most limit bytes, that ends on a UTF-8 character boundary."""
    if len(data) <= limit:
        return data
    cut = limit
    # Continuation bytes are 0b10xxxxxx; back up to the lead byte of the character cut in two.
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return data[:cut]
