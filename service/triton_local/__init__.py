"""A real Triton server on a CPU machine: the `tritonserver` binary from the nvidia-pytriton
wheel serving a python-backend mirror of model_repository/ (ONNX Runtime inside)."""
