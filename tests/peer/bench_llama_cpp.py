"""Speed of llama.cpp itself on a GGUF, as llama-bench's pp/tg measure it, to pair with
`llmopt bench` on the same file in the same minutes (not a test: pytest does not collect it).

The peer venv's llama-cpp-python is a portable build (no -march=native); for speed, build one
for this machine:
  /usr/bin/python3 -m venv /tmp/lcpp-venv
  CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" /tmp/lcpp-venv/bin/pip install \
    "numpy<2" llama-cpp-python==0.3.16
  /tmp/lcpp-venv/bin/python tests/peer/bench_llama_cpp.py MODEL.gguf [REPS] [THREADS]
Prefill: one eval of 128 random tokens (pp128). Decode: 128 evals of one token each (tg128);
each eval also copies the logits into Python (~3% of a 15 ms token).
"""
import random
import sys
import time

import llama_cpp


def main():
    path = sys.argv[1]
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512,
                          n_batch=512, verbose=False)
    vocab = llm.n_vocab()
    rng = random.Random(0)
    pp, tg = [], []
    for rep in range(reps + 1):  # the first repetition warms up
        prompt = [rng.randrange(3, vocab) for _ in range(128)]
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        if rep:
            pp.append(128 / (time.perf_counter() - t))
        llm.reset()
        tok = 1
        t = time.perf_counter()
        for _ in range(128):
            llm.eval([tok])
            tok = rng.randrange(3, vocab)
        if rep:
            tg.append(128 / (time.perf_counter() - t))
    print("llama.cpp pp128 %.1f tg128 %.2f (threads %d, %d reps)" % (sum(pp) / len(pp), sum(tg) / len(tg),
                                                                     threads, reps))


if __name__ == "__main__":
    main()
