"""TFLite -> ONNX with the TFLite input layout, a dynamic batch dimension and stable names."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import flatbuffers
import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as tfl
from onnx import helper, numpy_helper, shape_inference

from service.model_build import ModelBuildError
from service.model_build.sources import OutputSpec

BATCH_DIM = "batch"


class ConversionFailed(ModelBuildError):
    pass


def _builtin(model: tfl.ModelT, op: tfl.OperatorT) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    # Old files keep the code in the deprecated int8 field, new ones in the int32 field.
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _is_fp16_constant(model: tfl.ModelT, tensor: tfl.TensorT) -> bool:
    data = model.buffers[tensor.buffer].data
    return tensor.type == tfl.TensorType.FLOAT16 and data is not None and len(data) > 0


def dequantize_fp16_weights(tflite_model: bytes) -> bytes:
    """Rewrite fp16 constant weights as float32 constants, dropping their DEQUANTIZE ops.

    tflite2onnx cannot convert fp16 tensors, and a PRELU whose slope comes out of a DEQUANTIZE
    op (face_landmark.tflite) is not seen as a constant, so its (1, 1, C) slope goes through a
    4-D layout permutation and fails with IndexError. As float32 constants both convert; fp16 to
    float32 is exact, so the rewritten model computes the same values.
    """
    model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(tflite_model, 0))
    for subgraph in model.subgraphs:
        if any(t.sparsity is not None for t in subgraph.tensors):
            raise ConversionFailed("sparse tensors are not supported by this conversion")
        kept = []
        for op in subgraph.operators:
            if _builtin(model, op) == tfl.BuiltinOperator.DEQUANTIZE and _is_fp16_constant(
                    model, subgraph.tensors[op.inputs[0]]):
                source = subgraph.tensors[op.inputs[0]]
                weights = np.frombuffer(np.asarray(model.buffers[source.buffer].data, np.uint8)
                                        .tobytes(), np.float16)
                buffer = tfl.BufferT()
                buffer.data = np.frombuffer(weights.astype(np.float32).tobytes(), np.uint8)
                model.buffers.append(buffer)
                subgraph.tensors[op.outputs[0]].buffer = len(model.buffers) - 1
            else:
                kept.append(op)
        subgraph.operators = kept
        used = {i for op in kept for i in [*op.inputs, *op.outputs]}
        for index, tensor in enumerate(subgraph.tensors):
            if index not in used and _is_fp16_constant(model, tensor):
                model.buffers[tensor.buffer].data = None
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflite_to_onnx(tflite_model: bytes) -> onnx.ModelProto:
    """tflite2onnx's conversion of the fp16-free model: NCHW input, batch fixed at 1."""
    import tflite2onnx

    logging.getLogger("tflite2onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch, "model.tflite"), Path(scratch, "model.onnx")
        source.write_bytes(dequantize_fp16_weights(tflite_model))
        tflite2onnx.convert(str(source), str(target))
        return onnx.load(str(target))


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def _recorded_shape(model: onnx.ModelProto, name: str) -> list[int]:
    graph = model.graph
    for value in [*graph.value_info, *graph.input, *graph.output]:
        if value.name == name:
            return _dims(value)
    raise ConversionFailed(f"no shape recorded for {name}")


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn the converter's batch of 1 into a symbolic batch dimension everywhere.

    Reshape targets get 0 as batch entry (copy the input's: [1, -1, 16] -> [0, -1, 16]), and
    Resize ops given absolute sizes ([1, C, H, W]) get the equivalent scales, so that no
    constant pins the batch. Uses the converter's recorded shapes, then clears them.
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
            scales = sizes / np.array(_recorded_shape(model, node.input[0]), np.float64)
            name = f"{node.name or node.output[0]}_scales"
            graph.initializer.append(numpy_helper.from_array(scales.astype(np.float32), name))
            node.input[2] = name
            del node.input[3]
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    # The recorded intermediate shapes still say batch 1; ONNX Runtime would trust them.
    del graph.value_info[:]
    return model


def uint8_nhwc_input(model: onnx.ModelProto, name: str,
                     value_range: tuple[float, float]) -> onnx.ModelProto:
    """Replace the converter's float NCHW input by a uint8 NHWC one named ``name``.

    The graph gets (batch, H, W, C) pixels as decoded, casts them to float, transposes them to
    the (batch, C, H, W) it computes in and scales them to ``value_range`` (what the TFLite
    model was trained on): a client sends a quarter of the bytes a float32 image takes, and the
    scaling runs where the model does (on a GPU, beside it).
    """
    graph = model.graph
    (old,) = graph.input
    _, channels, height, width = _dims(old)
    image = helper.make_tensor_value_info(name, onnx.TensorProto.UINT8,
                                          [BATCH_DIM, height, width, channels])
    low, high = value_range
    scale = numpy_helper.from_array(np.array((high - low) / 255.0, np.float32),
                                    f"{name}_scale")
    offset = numpy_helper.from_array(np.array(low, np.float32), f"{name}_offset")
    graph.initializer.extend([scale, offset])
    # Cast first: TensorRT takes a uint8 network input only into a cast, and where the input
    # stays the TensorRT subgraph's own, the optimisation profile (named after it) applies.
    nodes = [
        helper.make_node("Cast", [name], [f"{name}_float"], name=f"{name}_to_float",
                         to=onnx.TensorProto.FLOAT),
        helper.make_node("Transpose", [f"{name}_float"], [f"{name}_nchw"],
                         name=f"{name}_to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Mul", [f"{name}_nchw", scale.name], [f"{name}_scaled"],
                         name=f"{name}_scale"),
        helper.make_node("Add", [f"{name}_scaled", offset.name], [old.name],
                         name=f"{name}_shift"),
    ]
    for node in reversed(nodes):
        graph.node.insert(0, node)
    graph.input.remove(old)
    graph.input.append(image)
    return model


def _rename_output(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]


def shape_outputs(model: onnx.ModelProto, outputs: Sequence[OutputSpec],
                  in_order: bool = False) -> onnx.ModelProto:
    """Give each graph output its stable name and per-item dims (from ``outputs``).

    Outputs are matched by their number of values per item, or by their order where
    ``in_order`` (two outputs of one size; the converter keeps the TFLite order, and the check
    against LiteRT would catch a swap); those whose dims differ (the mesh's (1404, 1, 1) from
    the NCHW conversion) go through a batch-agnostic Reshape, which keeps the TFLite value order.
    """
    graph = model.graph
    by_size = {spec.size: spec for spec in outputs}
    if (len(by_size) != len(outputs) and not in_order) or len(graph.output) != len(outputs):
        raise ConversionFailed(f"cannot match outputs {[o.name for o in graph.output]} "
                               f"to {[s.name for s in outputs]}")
    shaped = {}
    for position, value in enumerate(graph.output):
        dims = _dims(value)[1:]
        spec = outputs[position] if in_order else by_size.get(int(np.prod(dims)))
        if spec is None or spec.size != int(np.prod(dims)):
            raise ConversionFailed(f"output {value.name} {dims} matches none of {outputs}")
        if tuple(dims) == spec.dims:
            _rename_output(graph, value.name, spec.name)
        else:
            raw = f"{spec.name}_unshaped"
            _rename_output(graph, value.name, raw)
            shape = numpy_helper.from_array(np.array([0, *spec.dims], np.int64),
                                            f"{spec.name}_shape")
            graph.initializer.append(shape)
            graph.node.append(helper.make_node("Reshape", [raw, shape.name], [spec.name],
                                               name=f"{spec.name}_reshape"))
        shaped[spec.name] = helper.make_tensor_value_info(
            spec.name, onnx.TensorProto.FLOAT, [BATCH_DIM, *spec.dims])
    del graph.output[:]
    graph.output.extend(shaped[spec.name] for spec in outputs)
    return model


def prelu_as_convolutions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each per-channel PRelu(x, a) rewritten as Relu(x) + (-a) * Relu(-x), the two products
    as 1x1 depthwise convolutions (weights -1 and -a).

    ONNX Runtime has no blocked-layout (NCHWc) PRelu: each of them reorders its input out of the
    convolutions' layout and back and runs a slow broadcast kernel. Convolutions, ReLU and Add
    stay in the blocked layout, and it fuses each ReLU and the Add into the convolution before
    them. Measured on one core: face mesh 4.7 -> 1.4 ms, iris 3.7 -> 1.4 ms; outputs within
    5e-5 of the PRelu graph's (as elementwise Neg and Mul: 2.2 and 1.8 ms, Neg and Mul still
    reordering).
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        slope = (numpy_helper.to_array(initializers[node.input[1]])
                 if node.op_type == "PRelu" and node.input[1] in initializers else None)
        if slope is None or slope.ndim not in (3, 4) or slope.size != slope.shape[-3]:
            nodes.append(node)  # not one slope per channel of an NCHW map
            continue
        channels = slope.size
        x, y = node.input[0], node.output[0]
        stem = node.name or y
        flip = numpy_helper.from_array(np.full((channels, 1, 1, 1), -1.0, np.float32),
                                       f"{stem}_flip_weights")
        scale = numpy_helper.from_array((-slope).reshape(channels, 1, 1, 1).astype(np.float32),
                                        f"{stem}_negated_slope_weights")
        graph.initializer.extend([flip, scale])
        depthwise = {"group": channels, "kernel_shape": [1, 1]}
        nodes += [
            helper.make_node("Relu", [x], [f"{stem}_positive"], name=f"{stem}_relu"),
            helper.make_node("Conv", [x, flip.name], [f"{stem}_flipped"], name=f"{stem}_flip",
                             **depthwise),
            helper.make_node("Relu", [f"{stem}_flipped"], [f"{stem}_negative"],
                             name=f"{stem}_relu_flipped"),
            helper.make_node("Conv", [f"{stem}_negative", scale.name], [f"{stem}_scaled"],
                             name=f"{stem}_scale", **depthwise),
            helper.make_node("Add", [f"{stem}_scaled", f"{stem}_positive"], [y],
                             name=f"{stem}_sum"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def sort_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Initializers in name order: tflite2onnx emits them in set order, which changes from run
    to run, and identical builds should give identical files."""
    ordered = sorted(model.graph.initializer, key=lambda init: init.name)
    copies = [onnx.TensorProto.FromString(init.SerializeToString()) for init in ordered]
    del model.graph.initializer[:]
    model.graph.initializer.extend(copies)
    return model


def batch_pinned_tensors(model: onnx.ModelProto) -> list[str]:
    """Tensors whose inferred batch dimension is a fixed number: a constant still pins it.

    1-D int64 tensors are shapes computed from the batch (Shape, Concat of sizes): their one
    dim is the rank, fixed by design."""
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    return [
        value.name for value in [*inferred.graph.value_info, *inferred.graph.output]
        if value.type.tensor_type.shape.dim
        and value.type.tensor_type.shape.dim[0].HasField("dim_value")
        and not (len(value.type.tensor_type.shape.dim) == 1
                 and value.type.tensor_type.elem_type == onnx.TensorProto.INT64)
    ]
