# Extra test targets beyond the per-layer binaries of tests/CMakeLists.txt.
include(${CMAKE_CURRENT_SOURCE_DIR}/pipeline/report/report.cmake)
