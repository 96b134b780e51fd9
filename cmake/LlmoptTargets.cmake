# llmopt_layer(NAME DIR [TORCH] DEPS ...): one static library per layer of DESIGN.md, built
# from every .cpp under src/DIR (globbed, so adding a file needs no CMake edit).
# Torch layers share one precompiled header (torch/torch.h) built once in llmopt_torch_pch.
function(llmopt_layer name dir)
  cmake_parse_arguments(L "TORCH" "" "DEPS" ${ARGN})
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${dir}/*.cpp ${PROJECT_SOURCE_DIR}/src/${dir}/*.cc)
  if(NOT srcs)
    set(srcs ${PROJECT_SOURCE_DIR}/cmake/empty.cpp)
  endif()
  add_library(${name} STATIC ${srcs})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/src ${PROJECT_BINARY_DIR}/generated)
  target_link_libraries(${name} PUBLIC ${L_DEPS})
  if(L_TORCH)
    llmopt_use_torch(${name})
    # Torch layers only: Highway's foreach_target kernels re-include themselves per SIMD target.
    if(LLMOPT_UNITY_BUILD)
      set_target_properties(${name} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 16)
    endif()
  endif()
endfunction()

function(llmopt_use_torch target)
  target_link_libraries(${target} PUBLIC llmopt_torch_headers ${LLMOPT_TORCH_LIBS})
  target_compile_options(${target} PUBLIC ${TORCH_CXX_FLAGS})
  if(TARGET llmopt_torch_pch)
    target_precompile_headers(${target} REUSE_FROM llmopt_torch_pch)
  endif()
endfunction()

# A test binary from a list of sources; LABELS become ctest labels of every test in it.
function(llmopt_test name)
  cmake_parse_arguments(T "TORCH" "" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT T_SOURCES)
    return()
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE LLMOPT_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    LLMOPT_SHARED_DIR="${LLMOPT_SHARED_DIR}" LLMOPT_BINARY_DIR="${PROJECT_BINARY_DIR}")
  if(T_TORCH)
    llmopt_use_torch(${name})
  endif()
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
    # One thread per test process: ctest -j2 on 2 cores would otherwise oversubscribe them.
    PROPERTIES LABELS "${T_LABELS}" ENVIRONMENT "LLMOPT_BIN=$<TARGET_FILE:llmopt>;LLMOPT_THREADS=1;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endfunction()
