"""TFLite -> ONNX with a dynamic batch dimension and stable tensor names."""

from __future__ import annotations

import tempfile
from pathlib import Path

import flatbuffers
import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as tfl
from onnx import helper, numpy_helper

BATCH_DIM = "batch"


def dequantize_fp16_weights(tflite_model: bytes) -> bytes:
    """Rewrite fp16 constant weights as float32 constants, dropping their DEQUANTIZE ops.

    tflite2onnx cannot convert fp16 tensors; the float32 copy computes the same values.
    """
    model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(tflite_model, 0))
    for subgraph in model.subgraphs:
        kept = []
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            source = subgraph.tensors[op.inputs[0]]
            data = model.buffers[source.buffer].data
            if (builtin == tfl.BuiltinOperator.DEQUANTIZE and source.type == tfl.TensorType.FLOAT16
                    and data is not None and len(data)):
                weights = np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float16)
                buffer = tfl.BufferT()
                buffer.data = np.frombuffer(weights.astype(np.float32).tobytes(), np.uint8)
                model.buffers.append(buffer)
                subgraph.tensors[op.outputs[0]].buffer = len(model.buffers) - 1
                continue
            kept.append(op)
        subgraph.operators = kept
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflite_to_onnx(tflite_model: bytes) -> onnx.ModelProto:
    import tflite2onnx

    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch, "model.tflite"), Path(scratch, "model.onnx")
        source.write_bytes(dequantize_fp16_weights(tflite_model))
        tflite2onnx.convert(str(source), str(target))
        return onnx.load(str(target))


def _static_shape(model: onnx.ModelProto, name: str) -> list[int]:
    infos = [*model.graph.value_info, *model.graph.input, *model.graph.output]
    for info in infos:
        if info.name == name:
            return [d.dim_value for d in info.type.tensor_type.shape.dim]
    raise KeyError(f"no shape recorded for {name}")


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn the converter's batch of 1 into a symbolic batch dimension everywhere.

    Reshape targets keep their batch entry as 0 (copy the input's), and Resize ops that were
    given absolute sizes get the equivalent scales, so no constant pins the batch.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Reshape":
            shape = numpy_helper.to_array(initializers[node.input[1]]).copy()
            if shape[0] == 1:
                shape[0] = 0
                name = f"{node.name or node.output[0]}_batch_agnostic_shape"
                graph.initializer.append(numpy_helper.from_array(shape.astype(np.int64), name))
                node.input[1] = name
        elif node.op_type == "Resize" and len(node.input) == 4 and node.input[3]:
            sizes = numpy_helper.to_array(initializers[node.input[3]]).astype(np.float64)
            scales = sizes / np.array(_static_shape(model, node.input[0]), np.float64)
            name = f"{node.name or node.output[0]}_scales"
            graph.initializer.append(numpy_helper.from_array(scales.astype(np.float32), name))
            node.input[2] = name
            del node.input[3]
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    # Recorded intermediate shapes still say batch 1; ONNX Runtime would trust them.
    del graph.value_info[:]
    return model


def flatten_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Outputs shaped (B, C, 1, 1) by the NCHW conversion become (B, C)."""
    graph = model.graph
    for output in graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[2].dim_value == 1 and dims[3].dim_value == 1:
            inner = f"{output.name}_unflattened"
            for node in graph.node:
                node.output[:] = [inner if o == output.name else o for o in node.output]
            graph.node.append(helper.make_node("Flatten", [inner], [output.name], axis=1))
            del dims[2:]
    return model


def rename_tensors(model: onnx.ModelProto, names: dict[str, str]) -> onnx.ModelProto:
    """Rename graph inputs and outputs (and every use of them)."""
    graph = model.graph
    for node in graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = names.get(value.name, value.name)
    return model


def output_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Values per batch item of each graph output."""
    return {
        o.name: int(np.prod([d.dim_value for d in o.type.tensor_type.shape.dim[1:]]))
        for o in model.graph.output
    }
