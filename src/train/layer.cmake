# Data-parallel training (train/distributed.cpp) uses torch's c10d Gloo process group, whose
# symbols libtorch_cpu exports; its header declares the Gloo classes only under USE_C10D_GLOO and
# includes Debian's libgloo-dev headers. Only that file sees c10d.
find_path(LLMOPT_GLOO_INCLUDE gloo/algorithm.h REQUIRED)
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/distributed.cpp PROPERTIES
  COMPILE_DEFINITIONS "USE_C10D_GLOO;USE_DISTRIBUTED" SKIP_UNITY_BUILD_INCLUSION ON)
