# Run reports (src/pipeline/report) are torch-free: their tests get a small binary of their own
# instead of test_pipeline, which links torch and every pipeline test.
file(GLOB llmopt_report_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/pipeline/report/*.cpp)
add_library(llmopt_report_only STATIC ${llmopt_report_sources})
target_include_directories(llmopt_report_only PUBLIC ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(llmopt_report_only PUBLIC llmopt_core)

# Fake run directories shared by the unit tests and the browser test's fixture writer.
add_library(llmopt_report_fixtures STATIC ${CMAKE_CURRENT_LIST_DIR}/fake_run_dir.cpp)
target_link_libraries(llmopt_report_fixtures PUBLIC llmopt_report_only)
target_include_directories(llmopt_report_fixtures PUBLIC ${PROJECT_SOURCE_DIR})

file(GLOB llmopt_report_tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/*_test.cpp)
llmopt_test(test_report SOURCES ${llmopt_report_tests} DEPS llmopt_report_fixtures LABELS unit)

# Browser test: renders a fake sweep run and loads report.html in headless Chromium.
add_executable(report_fixture ${CMAKE_CURRENT_LIST_DIR}/render_fixture_main.cpp)
target_link_libraries(report_fixture PRIVATE llmopt_report_fixtures)
add_test(NAME report_chromium
  COMMAND bash ${PROJECT_SOURCE_DIR}/tests/pipeline/report_chromium.sh
          $<TARGET_FILE:report_fixture> ${CMAKE_CURRENT_BINARY_DIR}/report_chromium $<TARGET_FILE:llmopt>)
set_tests_properties(report_chromium PROPERTIES LABELS browser TIMEOUT 180)
