# Extra test targets beyond the per-layer binaries of tests/CMakeLists.txt.
include(${CMAKE_CURRENT_SOURCE_DIR}/pipeline/report/report.cmake)
# Kernels data tests that read GGUF files through the io layer's reader (test_kernels_data links
# only llmopt_kernels, so these live in tests/kernels/gguf/ outside its glob).
llmopt_test(test_kernels_gguf_data
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/kernels/gguf/quant_gguf_data_test.cpp
  DEPS llmopt_io LABELS data)
