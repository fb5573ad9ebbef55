"""Triton python-backend model serving one ONNX file with ONNX Runtime.

Copied as ``<model>/1/model.py`` into the local mirror repository; Triton's stub imports it.
Its dynamic batcher hands ``execute`` several requests at once: they run as one batch.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = config["parameters"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters["intra_op_threads"]["string_value"])
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(parameters["onnx_path"]["string_value"], options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                 for name in self.inputs}
        counts = [len(array) for array in feeds[self.inputs[0]]]
        results = self.session.run(self.outputs, {name: np.concatenate(arrays)
                                                  for name, arrays in feeds.items()})
        responses, start = [], 0
        for count in counts:
            stop = start + count
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, result[start:stop])
                 for name, result in zip(self.outputs, results, strict=True)]))
            start = stop
        return responses
