"""SlicedRNN's GRU rows: many independent GRU sequences (the slices) run as one batch by a fused C++ step
(`fused_cpu`, its own compiled library), and the same rows written for ONNX export (`onnx`)."""
