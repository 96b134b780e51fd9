# Peer checks (label `peer`): Python tests that run llmopt's outputs in the ecosystem's own tools
# (transformers, tokenizers, gguf-py, llama.cpp via llama-cpp-python). The venv comes from
# tests/peer/make-venv.sh (scripts/test.sh runs it first); without it the tests are skipped.
set(LLMOPT_PEER_DIR ${CMAKE_CURRENT_LIST_DIR})
foreach(peer_name transformers tokenizers gguf_package llama_cpp llama_perplexity llama_quantized gptq_layout gptq_transformers
                  llama_kquants lm_eval peft llama_tasks rouge llama_lora chat_template)
  add_test(NAME peer_${peer_name}
           COMMAND ${LLMOPT_PEER_DIR}/run-pytest.sh ${LLMOPT_PEER_DIR}/test_${peer_name}.py)
  set_tests_properties(peer_${peer_name} PROPERTIES
    LABELS peer
    SKIP_RETURN_CODE 77
    TIMEOUT 1500
    ENVIRONMENT "LLMOPT_BIN=$<TARGET_FILE:llmopt>;LLMOPT_SHARED_DIR=${LLMOPT_SHARED_DIR}")
endforeach()
# ONNX export (tests/peer/test_onnx.py): onnx's checker and ONNX Runtime on `llmopt convert --to onnx`.
add_test(NAME peer_onnx COMMAND ${LLMOPT_PEER_DIR}/run-pytest.sh ${LLMOPT_PEER_DIR}/test_onnx.py)
set_tests_properties(peer_onnx PROPERTIES LABELS peer SKIP_RETURN_CODE 77 TIMEOUT 1500
  ENVIRONMENT "LLMOPT_BIN=$<TARGET_FILE:llmopt>;LLMOPT_SHARED_DIR=${LLMOPT_SHARED_DIR}")
# Optimized ONNX graph (tests/peer/test_onnx_optimized.py): ORT's fused contrib ops, onnxruntime-genai.
add_test(NAME peer_onnx_optimized COMMAND ${LLMOPT_PEER_DIR}/run-pytest.sh ${LLMOPT_PEER_DIR}/test_onnx_optimized.py)
set_tests_properties(peer_onnx_optimized PROPERTIES LABELS peer SKIP_RETURN_CODE 77 TIMEOUT 1500
  ENVIRONMENT "LLMOPT_BIN=$<TARGET_FILE:llmopt>;LLMOPT_SHARED_DIR=${LLMOPT_SHARED_DIR}")
# Quantized ONNX export (tests/peer/test_onnx_quant.py): MatMulNBits / DequantizeLinear of packed models in ORT.
add_test(NAME peer_onnx_quant COMMAND ${LLMOPT_PEER_DIR}/run-pytest.sh ${LLMOPT_PEER_DIR}/test_onnx_quant.py)
set_tests_properties(peer_onnx_quant PROPERTIES LABELS peer SKIP_RETURN_CODE 77 TIMEOUT 1500
  ENVIRONMENT "LLMOPT_BIN=$<TARGET_FILE:llmopt>;LLMOPT_SHARED_DIR=${LLMOPT_SHARED_DIR}")
