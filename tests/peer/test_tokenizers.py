"""Peer check: Hugging Face `tokenizers` on the 17M model's tokenizer.json (GPT-2 byte-level BPE)
gives the same ids as `llmopt tokenize` on the first 20 kB of every text in ../shared/text.

The GPT-2 tokenizer adds no BOS, so llmopt runs with --no-bos and `tokenizers` without special
tokens. The 20 kB cut backs up to a UTF-8 character boundary so both sides see valid text.
"""
import pytest
from tokenizers import Tokenizer

from conftest import utf8_prefix

PREFIX_BYTES = 20_000
TEXTS = ["tinyshakespeare.txt", "tinystories_val.txt", "wikitext2.test.raw",
         "wikitext2.test.tokens.txt", "wikitext2.valid.tokens.txt"]


@pytest.mark.parametrize("name", TEXTS)
def test_17m_tokenizer_matches_tokenizers(llmopt, hf17m, shared, tmp_path, name):
    data = utf8_prefix((shared / "text" / name).read_bytes(), PREFIX_BYTES)
    cut = tmp_path / name
    cut.write_bytes(data)
    ours = llmopt.json("tokenize", hf17m, "--file", cut, "--json", "-", "--no-bos")["ids"]
    ref = Tokenizer.from_file(str(hf17m / "tokenizer.json")).encode(
        data.decode("utf-8"), add_special_tokens=False).ids
    first_diff = next((i for i, (a, b) in enumerate(zip(ours, ref)) if a != b),
                      None if len(ours) == len(ref) else min(len(ours), len(ref)))
    print(f"{name}: {len(data)} bytes -> llmopt {len(ours)} ids, tokenizers {len(ref)} ids, "
          f"first difference at {first_diff}")
    assert first_diff is None, (
        f"{name}: ids differ from index {first_diff}: llmopt {ours[first_diff:first_diff + 8]} "
        f"vs tokenizers {ref[first_diff:first_diff + 8]}")
