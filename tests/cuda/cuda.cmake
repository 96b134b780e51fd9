# GPU tests: built only with -DLLMOPT_CUDA=ON (CI has no GPU, so they are not part of its suite;
# docs/engine.md says how to run them). Label "cuda" (+ "data" for those reading ../shared).
llmopt_test(test_cuda TORCH SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cuda_test.cpp DEPS llmopt_eval LABELS cuda)
llmopt_test(test_cuda_data TORCH SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cuda_data_test.cpp DEPS llmopt_eval
  LABELS "cuda;data")
