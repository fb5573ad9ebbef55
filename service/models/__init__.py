"""Building the model repository: fetch pinned packages, convert TFLite to ONNX, verify."""
