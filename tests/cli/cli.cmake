add_test(NAME cli_contract COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.sh)
set_tests_properties(cli_contract PROPERTIES LABELS "data;cli" ENVIRONMENT
  "LLMOPT_BIN=$<TARGET_FILE:llmopt>;LLMOPT_SHARED=${LLMOPT_SHARED_DIR}" TIMEOUT 600)
