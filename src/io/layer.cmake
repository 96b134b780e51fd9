# io layer extras: the ONNX writer (io/onnx_graph.*) builds on libonnx's protobuf classes, its
# checker and shape inference (Debian libonnx-dev; libtorch links the same libonnx). Public, so the
# layers above and the tests carry ONNX's compile definitions (ONNX_NAMESPACE=onnx, ONNX_ML=1)
# that <onnx/onnx_pb.h> needs; io/onnx_graph.h itself only forward-declares the protobuf classes.
find_package(ONNX CONFIG REQUIRED)
target_link_libraries(llmopt_io PUBLIC onnx onnx_proto protobuf::libprotobuf)
