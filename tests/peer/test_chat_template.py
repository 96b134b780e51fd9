"""Chat templates: llmopt's built-ins against transformers' apply_chat_template.

For each built-in, a Jinja chat_template of that format written here (our own Jinja implementing
the model family's published format, bos_token / eos_token from the tokenizer) goes into the
tokenizer_config.json of a synth model that carries tinyllama-bpe-17m's GPT-2 tokenizer.
transformers renders conversations with it (`apply_chat_template(..., tokenize=False)`), and
`llmopt data render --template auto` (which must detect the format from that same file) renders
the same rows: the texts must be equal byte for byte, and llmopt's token ids must equal
transformers' tokenization of its own rendering (apply_chat_template(tokenize=True)). The learned
segments must be exactly the assistant contents plus the end-of-turn marker as the format writes
them, and the targets the tokens of those segments.
"""
import json
import shutil

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("jinja2")

# Our own Jinja for each published format (no generation prompt).
TEMPLATES = {
    "chatml": (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"),
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
        "{% set turns = messages[1:] %}{% else %}{% set sys = none %}{% set turns = messages %}{% endif %}"
        "{% for m in turns %}{% if m['role'] == 'user' %}"
        "{% if loop.first and sys is not none %}{% set c = '<<SYS>>\\n' + sys + '\\n<</SYS>>\\n\\n' + m['content'] %}"
        "{% else %}{% set c = m['content'] %}{% endif %}"
        "{{ bos_token + '[INST] ' + c.strip() + ' [/INST]' }}"
        "{% else %}{{ ' ' + m['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}"),
    "llama3": (
        "{{ bos_token }}{% for m in messages %}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"),
    "zephyr": (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ '<|user|>\\n' }}{% elif m['role'] == 'system' %}"
        "{{ '<|system|>\\n' }}{% else %}{{ '<|assistant|>\\n' }}{% endif %}{{ m['content'] + eos_token + '\\n' }}"
        "{% endfor %}"),
    "mistral": (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
        "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] + '\\n\\n' %}"
        "{% set turns = messages[1:] %}{% else %}{% set first = '' %}{% set turns = messages %}{% endif %}"
        "{% for m in turns %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "{% set c = (first + m['content']) if loop.first else m['content'] %}"
        "{{ '<start_of_turn>' + role + '\\n' + c | trim + '<end_of_turn>\\n' }}{% endfor %}"),
    "phi3": (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ '<|system|>\\n' }}{% elif m['role'] == 'user' %}"
        "{{ '<|user|>\\n' }}{% else %}{{ '<|assistant|>\\n' }}{% endif %}{{ m['content'] + '<|end|>\\n' }}"
        "{% endfor %}"),
}

# The end-of-turn marker each format learns after an assistant reply (eos = the tokenizer's).
def end_marker(name, eos):
    return {"chatml": "<|im_end|>", "llama2": " " + eos, "llama3": "<|eot_id|>", "zephyr": eos,
            "mistral": eos, "gemma": "<end_of_turn>", "phi3": "<|end|>"}[name]


CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."}],
    [{"role": "system", "content": "You answer in one word."},
     {"role": "user", "content": "Colour of the sky?"}, {"role": "assistant", "content": "Blue"},
     {"role": "user", "content": " And grass? "}, {"role": "assistant", "content": "Green, mostly.\n"}],
    [{"role": "user", "content": "Say \"hi\" in French"}, {"role": "assistant", "content": "Salut — ça va ?"},
     {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "De rien!"}],
]


@pytest.fixture(scope="module")
def synth(llmopt, hf17m, tmp_path_factory):
    d = tmp_path_factory.mktemp("chat") / "synth"
    llmopt.run("synth", d, "--dim", 32, "--ffn", 64, "--layers", 1, "--heads", 4, "--tokenizer",
               hf17m / "tokenizer.json", "--seed", 3)
    # The 17M's own tokenizer_config.json (bos/eos <|endoftext|>), where the chat_template goes.
    shutil.copy(hf17m / "tokenizer_config.json", d / "tokenizer_config.json")
    return d


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_render_matches_transformers(llmopt, synth, tmp_path, name):
    model = tmp_path / "model"
    shutil.copytree(synth, model)
    cfg_path = model / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = TEMPLATES[name]
    cfg_path.write_text(json.dumps(cfg))
    tok = transformers.AutoTokenizer.from_pretrained(str(model))

    rows = [c for c in CONVERSATIONS if not (name == "mistral" and c[0]["role"] == "system")]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in rows))
    out = [json.loads(line) for line in llmopt.run("data", "render", "--model", model, "--data", data).splitlines()]
    assert len(out) == len(rows)
    for conv, r in zip(rows, out):
        assert r["template"] == name  # detected from our Jinja by its markers
        want = tok.apply_chat_template(conv, tokenize=False)
        assert r["text"] == want, f"{name}:\nllmopt:       {r['text']!r}\ntransformers: {want!r}"
        assert r["ids"] == tok.apply_chat_template(conv, tokenize=True)
        # Learned segments: each assistant reply as the format writes it, plus its end-of-turn marker.
        learned = [s["text"] for s in r["segments"] if s["response"]]
        strip = name in ("llama2", "llama3", "gemma")
        replies = [m["content"].strip() if strip else m["content"] for m in conv if m["role"] == "assistant"]
        assert learned == [a + end_marker(name, tok.eos_token) for a in replies]
        # Targets: the tokens whose character span (transformers' offset mapping) overlaps a learned
        # segment; a token merging across a seam (GPT-2's " Blue" after llama2's "[/INST]") is learned.
        spans, pos = [], 0
        for s in r["segments"]:
            if s["response"]:
                spans.append((pos, pos + len(s["text"])))
            pos += len(s["text"])
        enc = tok(r["text"], add_special_tokens=False, return_offsets_mapping=True)
        assert enc["input_ids"] == r["ids"]
        want_targets = [int(any(a < e and b > s for s, e in spans)) for a, b in enc["offset_mapping"]]
        assert r["targets"] == want_targets
