#!/usr/bin/env python3
"""Writes small valid seed inputs for the fuzz targets (docs/fuzzing.md):
  OUT/gguf/        a tiny llama GGUF model (every metadata value type) and a vocab-only file
  OUT/safetensors/ a two-tensor file with __metadata__
  OUT/llama2c/     tiny legacy, v1 and v2 models (dim 8, 1 layer, 2 heads, 1 KV head, vocab 4)
  OUT/tokenizer_json/ a shrunken byte-level BPE tokenizer.json (when TOKENIZER_JSON is given)
Usage: make_seeds.py OUT [TOKENIZER_JSON]"""
import os
import struct
import sys

out = sys.argv[1]
for d in ("gguf", "safetensors", "llama2c"):
    os.makedirs(os.path.join(out, d), exist_ok=True)

DIM, HID, LAYERS, HEADS, KV, VOCAB, SEQ = 8, 8, 1, 2, 1, 4, 4
HS = DIM // HEADS


def floats(n, base=0.01):
    return struct.pack(f"<{n}f", *[base * ((i % 7) - 3) for i in range(n)])


# ---- GGUF ----
def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return gstr(key) + struct.pack("<I", vtype) + payload


def gguf(kvs, tensors):
    """tensors: (name, ne list, ggml type, bytes)."""
    head = struct.pack("<IIQQ", 0x46554747, 3, len(tensors), len(kvs)) + b"".join(kvs)
    infos, data, off = b"", b"", 0
    for name, ne, t, raw in tensors:
        infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", t, off)
        pad = (-len(raw)) % 32
        data += raw + b"\0" * pad
        off += len(raw) + pad
    blob = head + infos
    blob += b"\0" * ((-len(blob)) % 32)
    return blob + data


kvs = [
    kv("general.architecture", 8, gstr("llama")),
    kv("llama.context_length", 4, struct.pack("<I", SEQ)),
    kv("llama.embedding_length", 4, struct.pack("<I", DIM)),
    kv("llama.block_count", 4, struct.pack("<I", LAYERS)),
    kv("llama.feed_forward_length", 4, struct.pack("<I", HID)),
    kv("llama.attention.head_count", 4, struct.pack("<I", HEADS)),
    kv("llama.attention.head_count_kv", 4, struct.pack("<I", KV)),
    kv("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5)),
    kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
    kv("llama.rope.dimension_count", 4, struct.pack("<I", HS)),
    kv("t.u8", 0, b"\x07"), kv("t.i8", 1, b"\xff"), kv("t.u16", 2, struct.pack("<H", 9)),
    kv("t.i16", 3, struct.pack("<h", -9)), kv("t.i32", 5, struct.pack("<i", -3)),
    kv("t.bool", 7, b"\x01"), kv("t.u64", 10, struct.pack("<Q", 5)), kv("t.i64", 11, struct.pack("<q", -5)),
    kv("t.f64", 12, struct.pack("<d", 0.5)),
    kv("t.nested", 9, struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 5, 1) + struct.pack("<i", 1)
       + struct.pack("<IQ", 8, 1) + gstr("x")),
    kv("tokenizer.ggml.model", 8, gstr("llama")),
    kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, VOCAB) + b"".join(gstr(t) for t in ["<unk>", "<s>", "</s>", "a"])),
    kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, VOCAB) + struct.pack(f"<{VOCAB}f", 0, 0, 0, -1)),
    kv("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, VOCAB) + struct.pack(f"<{VOCAB}i", 2, 3, 3, 1)),
]
tensors = [("token_embd.weight", [DIM, VOCAB], 0, floats(DIM * VOCAB)), ("output_norm.weight", [DIM], 0, floats(DIM))]
for name, ne in [("attn_norm", [DIM]), ("attn_q", [DIM, DIM]), ("attn_k", [DIM, KV * HS]), ("attn_v", [DIM, KV * HS]),
                 ("attn_output", [DIM, DIM]), ("ffn_norm", [DIM]), ("ffn_gate", [DIM, HID]), ("ffn_up", [DIM, HID]),
                 ("ffn_down", [HID, DIM])]:
    n = 1
    for d in ne:
        n *= d
    tensors.append((f"blk.0.{name}.weight", ne, 0, floats(n)))
# One Q8_0 tensor (ggml type 8): one block of 32 = f16 scale + 32 int8.
tensors.append(("extra.q8", [32], 8, struct.pack("<e", 0.1) + bytes(range(32))))
open(os.path.join(out, "gguf", "tiny_llama.gguf"), "wb").write(gguf(kvs, tensors))
open(os.path.join(out, "gguf", "vocab_only.gguf"), "wb").write(gguf(kvs[-4:], []))

# ---- safetensors ----
hdr = ('{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
       '"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]}}').encode()
hdr += b" " * ((-len(hdr)) % 8)
open(os.path.join(out, "safetensors", "two.safetensors"), "wb").write(
    struct.pack("<Q", len(hdr)) + hdr + floats(4) + b"\x80\x3f\x00\x40\x00\x00")

# ---- llama2.c ----
sizes = {"emb": VOCAB * DIM, "norm": DIM, "wq": DIM * DIM, "wk": KV * HS * DIM, "wv": KV * HS * DIM, "wo": DIM * DIM,
         "w": HID * DIM}
legacy = struct.pack("<7i", DIM, HID, LAYERS, HEADS, KV, VOCAB, SEQ)
legacy += floats(sizes["emb"]) + floats(sizes["norm"]) + floats(sizes["wq"]) + floats(sizes["wk"]) + floats(sizes["wv"])
legacy += floats(sizes["wo"]) + floats(sizes["norm"]) + floats(sizes["w"]) * 3 + floats(DIM) + floats(SEQ * HS)
open(os.path.join(out, "llama2c", "legacy.bin"), "wb").write(legacy)

hdr1 = struct.pack("<Ii7iB", 0x616b3432, 1, DIM, HID, LAYERS, HEADS, KV, VOCAB, SEQ, 1)
v1 = hdr1 + b"\0" * (256 - len(hdr1))
v1 += floats(DIM) * 3 + floats(sizes["emb"]) + floats(sizes["wq"]) + floats(sizes["wk"]) + floats(sizes["wv"])
v1 += floats(sizes["wo"]) + floats(sizes["w"]) * 3
open(os.path.join(out, "llama2c", "v1.bin"), "wb").write(v1)

GS = 8
hdr2 = struct.pack("<Ii7iBi", 0x616b3432, 2, DIM, HID, LAYERS, HEADS, KV, VOCAB, SEQ, 1, GS)
v2 = hdr2 + b"\0" * (256 - len(hdr2)) + floats(DIM) * 3
for n in [sizes["emb"], sizes["wq"], sizes["wk"], sizes["wv"], sizes["wo"], sizes["w"], sizes["w"], sizes["w"]]:
    v2 += bytes((i * 37) % 256 for i in range(n)) + struct.pack(f"<{n // GS}f", *([0.01] * (n // GS)))
open(os.path.join(out, "llama2c", "v2.bin"), "wb").write(v2)

# ---- tokenizer.json (optional second argument: a real tokenizer.json to shrink) ----
# A byte-level BPE reduced to the 256 byte tokens, the first 200 merges whose parts and result
# are kept, and one special token: small enough for fast fuzzing, same structure as the real file.
if len(sys.argv) > 2:
    import json
    os.makedirs(os.path.join(out, "tokenizer_json"), exist_ok=True)
    j = json.load(open(sys.argv[2]))
    vocab = j["model"]["vocab"]
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    kept = {tok: i for i, (tok, _) in enumerate(by_id[:256])}
    merges = []
    for m in j["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in kept and b in kept and (a + b) in vocab and len(merges) < 200:
            kept.setdefault(a + b, len(kept))
            merges.append(m)
    j["model"]["vocab"] = kept
    j["model"]["merges"] = merges
    for t in j["added_tokens"]:
        t["id"] = len(kept)
    j["added_tokens"] = j["added_tokens"][:1]
    json.dump(j, open(os.path.join(out, "tokenizer_json", "bpe_small.json"), "w"))
