"""Peer check: the generate_until metric `rougeL` of `llmopt eval --tasks` equals Google's
rouge-score package (rouge_scorer.RougeScorer(["rougeL"]), no stemmer: its default) on the same
strings, the generations llmopt logged.

The task (written here) continues the first sentences of TinyStories stories with stories260K,
greedy, until a blank line or 48 tokens; the references are each story's next sentences (two
references per document, so the best-of-references rule is exercised too). Stories share words
("the", "she", "was"), so most scores are neither 0 nor 1. Tolerance: both compute the same
rational number in float64 (LCS / lengths), TOL = 1e-12.
"""
import json
import re
import textwrap

import pytest

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer",
                                   reason="rouge-score not in the peer venv (tests/peer/requirements.txt)")

TOL = 1e-12
N_DOCS = 60


def test_rouge_l_matches_rouge_score(llmopt, shared, stories_bin, stories_tok, tmp_path):
    stories = [s.strip() for s in (shared / "text" / "tinystories_val.txt").read_text().split("\n\n") if s.strip()]
    docs = []
    for s in stories:
        sents = re.split(r"(?<=[.!?])\s+", s)
        if len(sents) < 5:
            continue
        docs.append({"prompt": " ".join(sents[:2]), "refs": [" ".join(sents[2:4]), sents[4]]})
        if len(docs) == N_DOCS:
            break
    (tmp_path / "cont.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "cont.yaml").write_text(textwrap.dedent("""\
        task: story_continuation
        data: ./cont.jsonl
        output_type: generate_until
        doc_to_text: "{{prompt}}"
        doc_to_target: "{{refs}}"
        generation: {until: ["\\n\\n"], max_gen_toks: 48}
        metrics: [rougeL]
        """))
    samples = tmp_path / "samples"
    samples.mkdir()
    res = llmopt.json("eval", stories_bin, "--tokenizer", stories_tok, "--tasks", tmp_path / "cont.yaml",
                      "--log-samples", samples, "--json", "-")
    logs = [json.loads(l) for l in (samples / "story_continuation.jsonl").read_text().splitlines()]
    assert len(logs) == len(docs)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    theirs = []
    for log in logs:
        # rouge_score's score(target, prediction); best F over the references.
        best = max(scorer.score(ref, log["generation"])["rougeL"].fmeasure for ref in log["references"])
        assert log["metrics"]["rougeL"] == pytest.approx(best, abs=TOL), (log["generation"], log["references"])
        theirs.append(best)
    nontrivial = sum(1 for v in theirs if 0 < v < 1)
    assert nontrivial >= len(docs) // 2, f"only {nontrivial} scores strictly between 0 and 1: a weak check"
    mean = sum(theirs) / len(theirs)
    assert res["tasks"]["story_continuation"]["rougeL"] == pytest.approx(mean, abs=TOL)
    print(f"rougeL: {len(docs)} documents, mean {mean:.4f}, {nontrivial} strictly between 0 and 1")
