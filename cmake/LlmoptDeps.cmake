# Every dependency comes from a Debian 12 package (scripts/install-deps.sh).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(CLI11 CONFIG QUIET)
find_package(hwy REQUIRED)
find_package(Protobuf REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)

if(LLMOPT_CUDA)
  # Point CMAKE_PREFIX_PATH at a CUDA-enabled libtorch (e.g. torch.utils.cmake_prefix_path).
  find_package(Torch REQUIRED)
else()
  find_package(Torch REQUIRED)
endif()
# Torch's exported flags carry -D_GLIBCXX_USE_CXX11_ABI; keep them on every torch target.
set(LLMOPT_TORCH_LIBS ${TORCH_LIBRARIES})
# Torch's headers, behind the headers of our own fmt/spdlog/protobuf: PyPI's libtorch (the CUDA
# one) ships its own fmt 12 and protobuf in its include folder, which would otherwise shadow the
# Debian versions we link against (spdlog 1.10 does not compile with fmt 12).
add_library(llmopt_torch_headers INTERFACE)
foreach(dep fmt::fmt spdlog::spdlog)
  get_target_property(_inc ${dep} INTERFACE_INCLUDE_DIRECTORIES)
  if(_inc)
    target_include_directories(llmopt_torch_headers SYSTEM INTERFACE ${_inc})
  endif()
endforeach()
target_include_directories(llmopt_torch_headers SYSTEM INTERFACE ${Protobuf_INCLUDE_DIRS} ${TORCH_INCLUDE_DIRS})

# libstdc++ first among every binary's shared libraries: PyPI's libtorch_cpu.so exports its own
# statically linked copy of std::filesystem, which would otherwise interpose on the system's and
# crash our path handling (seen on the GPU machine with torch 2.11: every test that touched
# std::filesystem::path segfaulted). Harmless with Debian's libtorch. (Not under sanitizers:
# their runtime must stay first.)
# The shared libstdc++ is named by its path: a toolchain whose -lstdc++ finds a static archive
# first would otherwise leave the references to libtorch's copy.
if(NOT LLMOPT_SANITIZE)
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libstdc++.so
                  OUTPUT_VARIABLE LLMOPT_LIBSTDCXX OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT IS_ABSOLUTE "${LLMOPT_LIBSTDCXX}" OR NOT EXISTS "${LLMOPT_LIBSTDCXX}")
    find_file(LLMOPT_LIBSTDCXX_SYS libstdc++.so.6 PATHS /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /usr/lib64 /lib64)
    set(LLMOPT_LIBSTDCXX "${LLMOPT_LIBSTDCXX_SYS}")
  endif()
  if(LLMOPT_LIBSTDCXX)
    add_link_options("LINKER:--push-state,--no-as-needed,${LLMOPT_LIBSTDCXX},--pop-state")
  endif()
  message(STATUS "libstdc++ linked first: ${LLMOPT_LIBSTDCXX}")
endif()

if(LLMOPT_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

add_compile_options(-Wall -Wextra -Wno-unused-parameter)
