# Eval layer extras: task files are YAML (yaml-cpp), regex extraction uses PCRE2 (as the tokenizer).
target_link_libraries(llmopt_eval PUBLIC yaml-cpp PkgConfig::PCRE2)
