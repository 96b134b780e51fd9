# Reference test against SentencePiece itself (label "data"). libsentencepiece carries its own
# protobuf (3.14) and aborts in any process that also loads the system libprotobuf, which our
# tokenizer library links; so SentencePiece runs in a helper executable of its own
# (spm_reference_encode: files in, ids out) and the test binary, linking only our library,
# compares against what the helper prints.
pkg_check_modules(SENTENCEPIECE QUIET IMPORTED_TARGET sentencepiece)
if(SENTENCEPIECE_FOUND)
  add_executable(spm_reference_encode ${CMAKE_CURRENT_LIST_DIR}/spm_reference/spm_reference_encode.cpp)
  target_link_libraries(spm_reference_encode PRIVATE PkgConfig::SENTENCEPIECE)
  add_executable(test_tokenizer_spm_reference
    ${CMAKE_CURRENT_LIST_DIR}/spm_reference/spm_reference_data_check.cpp)
  target_link_libraries(test_tokenizer_spm_reference PRIVATE llmopt_tokenizer
    GTest::gtest GTest::gtest_main)
  add_dependencies(test_tokenizer_spm_reference spm_reference_encode)
  target_compile_definitions(test_tokenizer_spm_reference PRIVATE
    LLMOPT_SHARED_DIR="${LLMOPT_SHARED_DIR}"
    LLMOPT_SPM_REFERENCE_ENCODE="$<TARGET_FILE:spm_reference_encode>")
  target_include_directories(test_tokenizer_spm_reference PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  gtest_discover_tests(test_tokenizer_spm_reference DISCOVERY_MODE PRE_TEST
    DISCOVERY_TIMEOUT 60 PROPERTIES LABELS data)
else()
  message(STATUS "sentencepiece not found: test_tokenizer_spm_reference is not built")
endif()
