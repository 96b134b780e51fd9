"""Peer check: llmopt's k-quant and importance-weighted (imatrix) quantizers against llama.cpp's.

For two models whose projections are (mostly) whole 256-value super-blocks -- a random-weight
synth model (`llmopt synth --dim 256 --ffn 512 --layers 2`, every projection) and the trained
tinyllama-bpe-17m (dim 256; its ffn_down rows of 704 fit no super-block) -- the same f32 GGUF
(`llmopt convert --to gguf --type f32`) is quantized by both programs:

(a) without an importance matrix: `llmopt quantize F32.gguf OUT --format q2_k..q6_k` and
    `llama-quantize --tensor-type blk=q2_k.. F32.gguf OUT Q2_K|Q3_K_M|Q4_K_M|Q5_K_M|Q6_K`: the
    override puts every per-layer tensor in the plain type, like --pure, but keeps llama.cpp's
    fallback for rows that fit no super-block (--pure aborts on the 17M ffn_down, "tensor row size
    not divisible by block size"). Every projection that both files store in the requested type
    must be byte-identical: ggml's quantize_row_q*_K_ref is what llama-quantize runs.
(b) with one: an imatrix in llama.cpp's legacy .dat format holding, per projection, log-normal
    importance values (spread over orders of magnitude like real E[a²]; ncall = 3 so the
    division by the call count is exercised), passed to `llama-quantize --imatrix` and to
    `llmopt quantize --imatrix`, for q4_0, q4_1, q5_0, q5_1 and the k-quants: byte-identical
    again (ggml's quantize_row_*_impl with quant_weights). The importance must change the bytes
    (compared with llama-quantize's file without it, the bytes (a) compares), or the check would
    prove nothing about the weighted path.
(b') the same with an importance matrix written by llama.cpp's own `llama-imatrix` (GGUF format,
    in_sum2/counts) from calibration text, on the 17M model (real activations): q4_0, q4_1, q3_k
    and q4_k byte-identical, which also checks llmopt's reading of the GGUF imatrix format.
(c) `gguf.quants.dequantize` (gguf-py, an independent numpy decoder) of every k-quant tensor of
    llmopt's file equals, bit for bit, llmopt's own decoding (`llmopt convert OUT --to hf --type
    f32`, q/k rows permuted to GGUF's rotary layout as in test_llama_quantized.py). Exact because
    both compute f32(f16 d · sub-block scale) · q - f32(f16 dmin · min) in the same order.
Tensors outside the comparison are listed: token_embd (llama-quantize rounds it too, llmopt packs
projections only) and, for the k-quants, the 17M ffn_down (llama.cpp falls back to another type,
llmopt to f16 by default).

Size (CI): the synth model runs every format in (a), (b) and (c) and the quantize stage's
`imatrix:` option; the 17M model, whose 13M-value embedding makes each quantize run several times
dearer, runs the formats whose row quantizers differ (K_FORMATS_17M: q2_k's, q4_k's and q6_k's
scale searches; (b') LLAMA_IMATRIX_FORMATS: q4_0's and q4_1's weighted make_qx/make_qkx paths,
q3_k's and q4_k's) and its 704-column fallback, with llama-imatrix on CALIB_BYTES of text. Every
compared file gets the same checks and the same byte-for-byte standard. LLMOPT_PEER_FULL=1
(bench/peer_full_size.sh) adds the remaining formats on the 17M model, (b) on it, the stage on
it, and 40 kB of calibration text (the sizes this file had before it was cut for CI).
"""
import json

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize
from safetensors.numpy import load_file

from conftest import ci_or_full, utf8_prefix
from llama_tools import IMATRIX, QUANTIZE, THREADS, llama_tools, run_tool  # noqa: F401 (fixture)
from test_llama_quantized import hf_name, is_projection, permute_rope

GT = gguf.GGMLQuantizationType
K_FORMATS = {"q2_k": "Q2_K", "q3_k": "Q3_K_M", "q4_k": "Q4_K_M", "q5_k": "Q5_K_M", "q6_k": "Q6_K"}
IMATRIX_FORMATS = {"q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1", **K_FORMATS}
NCALL = 3
MODELS = ["synth", "17m"]
K_FORMATS_17M = ci_or_full(["q2_k", "q4_k", "q6_k"], list(K_FORMATS))
IMATRIX_FORMATS_17M = ci_or_full([], list(IMATRIX_FORMATS))  # (b) with the synthetic .dat
DECODE_FORMATS_17M = ci_or_full(["q4_k"], list(K_FORMATS))
STAGE_MODELS = ci_or_full(["synth"], MODELS)
LLAMA_IMATRIX_FORMATS = ["q4_0", "q4_1", "q3_k", "q4_k"]
CALIB_BYTES = ci_or_full(10_000, 40_000)


def cases(formats, formats_17m=None):
    """(model, format) pairs: every format on synth, formats_17m (default: the same) on the 17M."""
    return [("synth", f) for f in formats] + [("17m", f) for f in (formats if formats_17m is None else formats_17m)]


def tensors(path):
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


class Setup:
    def __init__(self, name, llmopt, hf17m, tmp):
        self.name, self.llmopt, self.tmp = name, llmopt, tmp
        if name == "synth":
            src = tmp / "synth"
            llmopt.run("synth", src, "--dim", 256, "--ffn", 512, "--layers", 2, "--heads", 4,
                       "--kv-heads", 2, "--vocab", 512, "--tied", "--seed", 7)
        else:
            src = hf17m
        self.f32 = tmp / f"{name}-f32.gguf"
        llmopt.run("convert", src, self.f32, "--to", "gguf", "--type", "f32")
        # One importance vector per projection (length = ggml ne[0], the input columns), stored
        # as sums over NCALL calls as llama-imatrix's legacy writer does.
        rng = np.random.default_rng(17)
        self.imatrix = tmp / f"{name}.imatrix.dat"
        entries = [(t.name, int(t.shape[0])) for t in gguf.GGUFReader(str(self.f32)).tensors
                   if is_projection(t.name)]
        with open(self.imatrix, "wb") as f:
            f.write(np.int32(len(entries)).tobytes())
            for tname, cols in entries:
                sums = (rng.lognormal(0.0, 1.5, cols) * NCALL).astype(np.float32)
                f.write(np.int32(len(tname)).tobytes() + tname.encode())
                f.write(np.int32(NCALL).tobytes() + np.int32(cols).tobytes() + sums.tobytes())
            f.write(np.int32(10).tobytes() + np.int32(9).tobytes() + b"synthetic")
        self.files = {}

    def quantized(self, who, fmt, imatrix):
        """llmopt's (who="llmopt") or llama-quantize's (who="llama") file for fmt, made once;
        imatrix: False, True (the synthetic .dat) or the path of another imatrix file."""
        path = self.imatrix if imatrix is True else imatrix
        key = (who, fmt, str(path))
        if key not in self.files:
            out = self.tmp / f"{who}-{fmt}-{path.stem if path else 'plain'}.gguf"
            extra = ["--imatrix", path] if path else []
            if who == "llmopt":
                self.llmopt.run("quantize", self.f32, out, "--format", fmt, *extra)
            else:
                run_tool(QUANTIZE, "--tensor-type", f"blk={fmt}", *extra, self.f32, out,
                         IMATRIX_FORMATS[fmt], THREADS)
            self.files[key] = out
        return self.files[key]

    def pair(self, fmt, imatrix):
        """(llmopt's file, llama-quantize's file) for fmt and imatrix (see quantized)."""
        return self.quantized("llmopt", fmt, imatrix), self.quantized("llama", fmt, imatrix)


@pytest.fixture(scope="module")
def setups(llama_tools, llmopt, hf17m, tmp_path_factory):
    """Setup per model name, made on first use and shared by every test of this file."""
    made = {}

    def get(name):
        if name not in made:
            made[name] = Setup(name, llmopt, hf17m, tmp_path_factory.mktemp(name))
        return made[name]
    return get


def assert_importance_changed(setup, weighted, fmt, what):
    """The weighted file must differ from llama-quantize's unweighted one (byte-identical to
    llmopt's where (a) compares them), or the check proves nothing about the weighted path."""
    plain = tensors(setup.quantized("llama", fmt, False))
    want = GT[fmt.upper()]
    changed = 0
    for n, t in weighted.items():
        if not is_projection(n) or t.tensor_type != want:
            continue
        assert plain[n].tensor_type == want, f"{n}: llama-quantize wrote {plain[n].tensor_type.name} without an imatrix"
        changed += not np.array_equal(np.asarray(t.data), np.asarray(plain[n].data))
    print(f"{setup.name} {fmt}: {what} changed {changed} projections' bytes")
    assert changed > 0


def compare_bytes(setup, fmt, imatrix):
    ours, theirs = setup.pair(fmt, imatrix)
    a, b = tensors(ours), tensors(theirs)
    want = GT[fmt.upper()]
    block = gguf.GGML_QUANT_SIZES[want][0]
    same, outside = [], []
    for name, t in a.items():
        if not is_projection(name):
            outside.append(f"{name} (ours {t.tensor_type.name}, llama.cpp {b[name].tensor_type.name})")
            continue
        if int(t.shape[0]) % block != 0:
            assert t.tensor_type != want, f"{name}: {int(t.shape[0])} columns cannot be {want.name}"
            outside.append(f"{name} (ours {t.tensor_type.name}, llama.cpp {b[name].tensor_type.name}: "
                           f"{int(t.shape[0])} columns)")
            continue
        assert t.tensor_type == want, f"{name}: ours {t.tensor_type.name}, expected {want.name}"
        assert b[name].tensor_type == want, f"{name}: llama-quantize wrote {b[name].tensor_type.name}"
        x, y = np.asarray(t.data).view(np.uint8), np.asarray(b[name].data).view(np.uint8)
        assert x.shape == y.shape, f"{name}: {x.shape} vs {y.shape} bytes"
        diff = int((x != y).sum())
        assert diff == 0, f"{name} {want.name}{' imatrix' if imatrix else ''}: {diff} of {x.size} bytes differ"
        same.append(name)
    print(f"{setup.name} {fmt}{' --imatrix' if imatrix else ''}: {len(same)} projections byte-identical "
          f"to llama-quantize; not compared: {outside}")
    assert len(same) >= (14 if setup.name == "synth" else 36)
    return a


@pytest.mark.parametrize("model,fmt", cases(list(K_FORMATS), K_FORMATS_17M))
def test_k_quants_equal_llama_quantize(setups, model, fmt):
    compare_bytes(setups(model), fmt, imatrix=False)


@pytest.mark.parametrize("model,fmt", cases(list(IMATRIX_FORMATS), IMATRIX_FORMATS_17M))
def test_imatrix_quantization_equals_llama_quantize(setups, model, fmt):
    setup = setups(model)
    weighted = compare_bytes(setup, fmt, imatrix=True)
    assert_importance_changed(setup, weighted, fmt, "the imatrix")


@pytest.fixture(scope="module")
def llama_imatrix_file(setups, shared):
    """llama-imatrix's GGUF imatrix of the 17M model (real activations) on CALIB_BYTES of
    tinystories_val.txt (from byte 100,000)."""
    if not IMATRIX.is_file():
        pytest.skip(f"{IMATRIX} missing: rerun tests/peer/make-llama-tools.sh (it builds llama-imatrix)")
    setup = setups("17m")
    text = setup.tmp / "calibration.txt"
    text.write_bytes(utf8_prefix((shared / "text" / "tinystories_val.txt").read_bytes()[100_000:], CALIB_BYTES))
    out = setup.tmp / "llama-imatrix.gguf"
    run_tool(IMATRIX, "-m", setup.f32, "-f", text, "-o", out, "-c", 128, "-t", THREADS)
    return out


@pytest.mark.parametrize("fmt", LLAMA_IMATRIX_FORMATS)
def test_llama_imatrix_gguf_equals_llama_quantize(setups, llama_imatrix_file, fmt):
    setup = setups("17m")
    weighted = compare_bytes(setup, fmt, imatrix=llama_imatrix_file)
    assert_importance_changed(setup, weighted, fmt, "llama-imatrix's importance")


@pytest.mark.parametrize("model,fmt", cases(list(K_FORMATS), DECODE_FORMATS_17M))
def test_gguf_package_decodes_like_llmopt(setups, model, fmt):
    setup = setups(model)
    ours = setup.quantized("llmopt", fmt, False)
    hf_dir = setup.tmp / f"{fmt}-deq-hf"
    setup.llmopt.run("convert", ours, hf_dir, "--to", "hf", "--type", "f32")
    cfg = json.loads((hf_dir / "config.json").read_text())
    values = load_file(str(hf_dir / "model.safetensors"))
    checked = 0
    for name, t in tensors(ours).items():
        if t.tensor_type != GT[fmt.upper()]:
            continue
        got = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        ref = values[hf_name(name)].astype(np.float32)
        if name.endswith("attn_q.weight"):
            ref = permute_rope(ref, cfg["num_attention_heads"])
        elif name.endswith("attn_k.weight"):
            ref = permute_rope(ref, cfg["num_key_value_heads"])
        assert got.shape == ref.shape, f"{name}: {got.shape} vs {ref.shape}"
        bad = int((got != ref).sum())
        assert bad == 0, f"{name} ({fmt}): {bad} of {ref.size} values differ, max |diff| {np.abs(got - ref).max():.3g}"
        checked += 1
    print(f"{setup.name} {fmt}: gguf.quants.dequantize == llmopt's decoding for {checked} tensors")
    assert checked > 0


@pytest.mark.parametrize("model", STAGE_MODELS)
def test_quantize_stage_imatrix_equals_llama_quantize(setups, model):
    """The quantize stage's `imatrix:` option (a recipe, exported to GGUF) writes the bytes
    llama-quantize --imatrix writes with the same importance matrix."""
    setup = setups(model)
    fmt = "q4_0"
    theirs = setup.quantized("llama", fmt, True)
    run = setup.tmp / "stage-imatrix-run"
    recipe = setup.tmp / "stage-imatrix.yaml"
    recipe.write_text(
        "name: stage_imatrix\n"
        f"model: {{path: {setup.f32}}}\n"
        f"output: {{dir: {run}, cache: false}}\n"
        "pipeline:\n"
        f"  - {{type: quantize, method: rtn, format: {fmt}, imatrix: {setup.imatrix}}}\n"
        "  - {type: export, name: export, formats: [gguf], dtype: f32, basename: m, verify: false}\n")
    setup.llmopt.run("run", recipe)
    a, b = tensors(run / "artifacts" / "m.gguf"), tensors(theirs)
    want = GT[fmt.upper()]
    same = 0
    for name, t in a.items():
        if not is_projection(name) or t.tensor_type != want:
            continue
        x, y = np.asarray(t.data).view(np.uint8), np.asarray(b[name].data).view(np.uint8)
        assert b[name].tensor_type == want and (x == y).all(), f"{name}: stage with imatrix differs from llama-quantize"
        same += 1
    print(f"{setup.name}: quantize stage with imatrix: {same} projections byte-identical to llama-quantize --imatrix")
    assert same >= (14 if setup.name == "synth" else 36)
