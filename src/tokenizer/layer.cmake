# Tokenizer layer extras: compile our own minimal SentencePiece schema with the system protoc
# (never link libsentencepiece here: it bundles its own protobuf and clashes with libtorch/libonnx).
set(llmopt_spm_proto ${CMAKE_CURRENT_LIST_DIR}/sentencepiece_model.proto)
set(llmopt_spm_out ${PROJECT_BINARY_DIR}/generated/tokenizer)
add_custom_command(
  OUTPUT ${llmopt_spm_out}/sentencepiece_model.pb.cc ${llmopt_spm_out}/sentencepiece_model.pb.h
  COMMAND ${CMAKE_COMMAND} -E make_directory ${llmopt_spm_out}
  COMMAND protobuf::protoc --cpp_out=${llmopt_spm_out} -I ${CMAKE_CURRENT_LIST_DIR} ${llmopt_spm_proto}
  DEPENDS ${llmopt_spm_proto}
  COMMENT "protoc sentencepiece_model.proto (tokenizer layer)")
target_sources(llmopt_tokenizer PRIVATE ${llmopt_spm_out}/sentencepiece_model.pb.cc)
set_source_files_properties(${llmopt_spm_out}/sentencepiece_model.pb.cc PROPERTIES
  COMPILE_OPTIONS "-Wno-unused-parameter;-Wno-array-bounds")
