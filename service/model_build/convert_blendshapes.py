"""MediaPipe's face blendshapes model (TFLite) as ONNX with a dynamic batch dimension.

tflite2onnx cannot convert this model (it has no SUM, and it rejects the scalar axes of its
MEAN ops), and its output would pin the batch at 1 anyway. The model is a small MLP-Mixer built
from a dozen op types, so the ONNX graph is written here by walking the TFLite operators: each
one becomes the ONNX ops that compute the same values, in the TFLite layout, with the leading
axis as the batch.

The model takes 146 of FaceMesh V2's 478 landmarks (``BLENDSHAPE_LANDMARKS``), x and y in image
pixels, and gives the 52 ARKit-style blendshape scores named in ``BLENDSHAPE_NAMES``, already
through a sigmoid. It normalises the points itself (centred, divided by their mean distance to
the centre), so any unit will do as long as x and y share it: pixels, not fractions of the
image's width and height.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as tfl
from onnx import helper, numpy_helper

from service.model_build.convert import (
    BATCH_DIM,
    ConversionFailed,
    batch_pinned_tensors,
    dequantize_fp16_weights,
)

INPUT_NAME = "points"
OUTPUT_NAME = "blendshapes"
# ONNX Runtime and TensorRT both take opset 13, the first with ReduceSum's and Squeeze's axes
# as inputs; IR 7 is what opset 13 came with, so older runtimes load the file too.
OPSET = 13
IR_VERSION = 7

_NUMPY_TYPES = {
    tfl.TensorType.FLOAT32: np.float32,
    tfl.TensorType.INT32: np.int32,
    tfl.TensorType.INT64: np.int64,
}
_OP_NAMES = {code: name for name, code in vars(tfl.BuiltinOperator).items()
             if not name.startswith("_")}
_BINARY = {
    tfl.BuiltinOperator.ADD: "Add",
    tfl.BuiltinOperator.SUB: "Sub",
    tfl.BuiltinOperator.MUL: "Mul",
    tfl.BuiltinOperator.DIV: "Div",
}
_UNARY = {
    tfl.BuiltinOperator.SQRT: "Sqrt",
    tfl.BuiltinOperator.NEG: "Neg",
    tfl.BuiltinOperator.LOGISTIC: "Sigmoid",
}


class _Translator:
    """Builds the ONNX graph of one TFLite subgraph, operator by operator.

    Every tensor computed from the input is "batched": its TFLite leading dimension of 1 is the
    ONNX batch. Each op checks that it leaves that axis alone (no reduction, transposition or
    reshaping across it), so that batch items never mix.
    """

    def __init__(self, model: tfl.ModelT, subgraph: tfl.SubGraphT) -> None:
        self.model = model
        self.subgraph = subgraph
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.batched: set[int] = set()
        self.names: dict[int, str] = {}
        self.outputs = set(subgraph.outputs)
        # Graph outputs whose TFLite tensor has lost the batch axis of one (a final squeeze).
        self.dropped_batch: set[int] = set()
        self.batch_size: str | None = None
        self.handlers: dict[int, Callable[[int, tfl.OperatorT], None]] = {
            **dict.fromkeys(_BINARY, self._binary),
            **dict.fromkeys(_UNARY, self._unary),
            tfl.BuiltinOperator.RSQRT: self._rsqrt,
            tfl.BuiltinOperator.SQUARED_DIFFERENCE: self._squared_difference,
            tfl.BuiltinOperator.MEAN: self._reduce,
            tfl.BuiltinOperator.SUM: self._reduce,
            tfl.BuiltinOperator.RESHAPE: self._reshape,
            tfl.BuiltinOperator.TRANSPOSE: self._transpose,
            tfl.BuiltinOperator.CONV_2D: self._conv_1x1,
            tfl.BuiltinOperator.CONCATENATION: self._concatenation,
            tfl.BuiltinOperator.STRIDED_SLICE: self._strided_slice,
        }

    # Tensors

    def shape(self, index: int) -> list[int]:
        shape = self.subgraph.tensors[index].shape
        return [] if shape is None else [int(d) for d in shape]

    def constant(self, index: int) -> np.ndarray | None:
        tensor = self.subgraph.tensors[index]
        data = self.model.buffers[tensor.buffer].data
        if data is None or len(data) == 0:
            return None
        if tensor.type not in _NUMPY_TYPES:
            raise ConversionFailed(f"constant {tensor.name!r} has TFLite type {tensor.type}")
        raw = np.asarray(data, np.uint8).tobytes()
        return np.frombuffer(raw, _NUMPY_TYPES[tensor.type]).reshape(self.shape(index))

    def required_constant(self, index: int, role: str) -> np.ndarray:
        value = self.constant(index)
        if value is None:
            raise ConversionFailed(f"the {role} ({self.subgraph.tensors[index].name!r}) is "
                                   "computed; only constant ones are supported")
        return value

    def name(self, index: int) -> str:
        """The ONNX name of a TFLite tensor; constants become initializers when first used."""
        if index not in self.names:
            # Fused TFLite names list every op folded in, separated by ";"; the first suffices.
            base = self.subgraph.tensors[index].name.decode().split(";")[0]
            taken = set(self.names.values())
            self.names[index] = base if base not in taken else f"{base}_{index}"
        name = self.names[index]
        value = self.constant(index)
        if value is not None and name not in self.initializers:
            self.add_initializer(value, name)
        return name

    def add_initializer(self, value: np.ndarray, name: str) -> str:
        self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str], name: str,
             **attributes: object) -> None:
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, **attributes))

    def batch_axis_size(self) -> str:
        """The batch size as a 1-D int64 tensor, computed once from the graph input."""
        if self.batch_size is None:
            (source,) = self.subgraph.inputs
            shape, self.batch_size = "input_shape", "batch_size"
            self.node("Shape", [self.name(source)], [shape], name="input_shape")
            starts = self.add_initializer(np.array([0], np.int64), "batch_axis_start")
            ends = self.add_initializer(np.array([1], np.int64), "batch_axis_end")
            self.node("Slice", [shape, starts, ends], [self.batch_size], name="batch_size")
        return self.batch_size

    # Operators

    def translate(self) -> None:
        self.batched.update(self.subgraph.inputs)
        for index, op in enumerate(self.subgraph.operators):
            builtin = self.builtin(op)
            handler = self.handlers.get(builtin)
            if handler is None:
                raise ConversionFailed(f"TFLite op {_OP_NAMES.get(builtin, builtin)} (#{index}) "
                                       "is not supported by the blendshapes conversion")
            handler(index, op)
            if any(i in self.batched for i in op.inputs if i >= 0):
                self.batched.update(op.outputs)

    def builtin(self, op: tfl.OperatorT) -> int:
        code = self.model.operatorCodes[op.opcodeIndex]
        # Old files keep the code in the deprecated int8 field, new ones in the int32 field.
        return max(code.builtinCode, code.deprecatedBuiltinCode)

    def op_name(self, index: int, op: tfl.OperatorT) -> str:
        return f"{_OP_NAMES[self.builtin(op)].lower()}_{index}"

    def activation_input(self, index: int, op: tfl.OperatorT) -> str:
        """Where the op's last node writes: its output, or the input of its fused activation."""
        fused = getattr(op.builtinOptions, "fusedActivationFunction",
                        tfl.ActivationFunctionType.NONE)
        if fused == tfl.ActivationFunctionType.NONE:
            return self.name(op.outputs[0])
        if fused == tfl.ActivationFunctionType.RELU:
            return f"{self.op_name(index, op)}_linear"
        raise ConversionFailed(f"{self.op_name(index, op)}: fused activation {fused} is not "
                               "supported")

    def activate(self, index: int, op: tfl.OperatorT, value: str) -> None:
        """The fused activation, where ``activation_input`` asked for one."""
        output = self.name(op.outputs[0])
        if value != output:
            self.node("Relu", [value], [output], name=f"{self.op_name(index, op)}_relu")

    def _binary(self, index: int, op: tfl.OperatorT) -> None:
        op_type = _BINARY[self.builtin(op)]
        a, b = (self.name(i) for i in op.inputs)
        name = self.op_name(index, op)
        value = self.activation_input(index, op)
        self.node(op_type, [a, b], [value], name=name)
        self.activate(index, op, value)

    def _unary(self, index: int, op: tfl.OperatorT) -> None:
        op_type = _UNARY[self.builtin(op)]
        self.node(op_type, [self.name(op.inputs[0])], [self.name(op.outputs[0])],
                  name=self.op_name(index, op))

    def _rsqrt(self, index: int, op: tfl.OperatorT) -> None:
        # ONNX has no Rsqrt; 1 / sqrt(x) is within an ulp or two of it.
        name = self.op_name(index, op)
        root = f"{name}_sqrt"
        self.node("Sqrt", [self.name(op.inputs[0])], [root], name=f"{name}_sqrt")
        self.node("Reciprocal", [root], [self.name(op.outputs[0])], name=name)

    def _squared_difference(self, index: int, op: tfl.OperatorT) -> None:
        name = self.op_name(index, op)
        a, b = (self.name(i) for i in op.inputs)
        difference = f"{name}_difference"
        self.node("Sub", [a, b], [difference], name=f"{name}_sub")
        self.node("Mul", [difference, difference], [self.name(op.outputs[0])], name=name)

    def _reduce(self, index: int, op: tfl.OperatorT) -> None:
        """MEAN and SUM as a MatMul against a constant column (1/n or 1), the reduced axes
        moved last.

        ONNX Runtime's ReduceMean picks its summation order by the input's shape: over the 146
        points of a batch of 7 it gives other roundings than over those of one item, and the
        model amplifies them (4e-5 on the scores). A MatMul sums each row in the same order
        whatever the batch.
        """
        source, axes_tensor = op.inputs
        dims = self.shape(source)
        rank, name = len(dims), self.op_name(index, op)
        # TFLite takes the axes as a scalar or a list, negative or not.
        axes = sorted({int(a) % rank for a in np.atleast_1d(
            self.required_constant(axes_tensor, "reduction axes"))})
        batched = source in self.batched
        if batched and 0 in axes:
            raise ConversionFailed(f"{name} reduces over the batch axis")
        kept = [a for a in range(rank) if a not in axes]
        count = int(np.prod([dims[a] for a in axes]))
        value = self.name(source)
        if kept + axes != list(range(rank)):
            self.node("Transpose", [value], [f"{name}_reduced_last"], name=f"{name}_transpose",
                      perm=kept + axes)
            value = f"{name}_reduced_last"
        if len(axes) > 1:
            # 0 keeps a dim as it is: the batch, and the other kept dims, come first now.
            shape = self.add_initializer(np.array([0] * len(kept) + [count], np.int64),
                                         f"{name}_rows_shape")
            self.node("Reshape", [value, shape], [f"{name}_rows"], name=f"{name}_rows")
            value = f"{name}_rows"
        weight = 1.0 / count if self.builtin(op) == tfl.BuiltinOperator.MEAN else 1.0
        column = self.add_initializer(np.full((count, 1), weight, np.float32), f"{name}_column")
        output = self.name(op.outputs[0])
        keep = bool(op.builtinOptions.keepDims)
        if keep and axes == [rank - 1]:
            self.node("MatMul", [value, column], [output], name=name)
            return
        self.node("MatMul", [value, column], [f"{name}_sum"], name=name)
        target = np.array(self.shape(op.outputs[0]), np.int64)
        if batched:
            target[0] = 0
        shape = self.add_initializer(target, f"{name}_shape")
        self.node("Reshape", [f"{name}_sum", shape], [output], name=f"{name}_reshape")

    def _reshape(self, index: int, op: tfl.OperatorT) -> None:
        source, output = op.inputs[0], op.outputs[0]
        # The new shape is in the output tensor's dims; the shape input may be absent.
        target = np.array(self.shape(output), np.int64)
        name = self.op_name(index, op)
        if source in self.batched:
            if self.shape(source)[:1] != [1] or target[:1].tolist() != [1]:
                raise ConversionFailed(f"{name} reshapes across the batch axis")
            target[0] = 0  # ONNX Reshape: copy the input's dim, the batch size
        shape = self.add_initializer(target, f"{name}_shape")
        self.node("Reshape", [self.name(source), shape], [self.name(output)], name=name)

    def _transpose(self, index: int, op: tfl.OperatorT) -> None:
        source, perm_tensor = op.inputs
        perm = [int(p) for p in self.required_constant(perm_tensor, "permutation")]
        name = self.op_name(index, op)
        if source in self.batched and perm[0] != 0:
            raise ConversionFailed(f"{name} moves the batch axis")
        self.node("Transpose", [self.name(source)], [self.name(op.outputs[0])], name=name,
                  perm=perm)

    def _conv_1x1(self, index: int, op: tfl.OperatorT) -> None:
        """A 1x1 convolution of stride 1 over NHWC is a product over the channels: the
        MLP-Mixer's dense layers. As MatMul the graph needs no layout change."""
        source, weights_tensor, *rest = op.inputs
        name = self.op_name(index, op)
        options = op.builtinOptions
        weights = self.required_constant(weights_tensor, "convolution weights")
        steps = (options.strideH, options.strideW, options.dilationHFactor,
                 options.dilationWFactor)
        if weights.shape[1:3] != (1, 1) or steps != (1, 1, 1, 1):
            raise ConversionFailed(f"{name}: only 1x1 convolutions of stride 1 are supported")
        matrix = self.add_initializer(weights.reshape(weights.shape[0], -1).T,
                                      f"{name}_matrix")
        value = self.activation_input(index, op)
        if rest and rest[0] >= 0:
            product = f"{name}_product"
            self.node("MatMul", [self.name(source), matrix], [product], name=name)
            self.node("Add", [product, self.name(rest[0])], [value], name=f"{name}_bias")
        else:
            self.node("MatMul", [self.name(source), matrix], [value], name=name)
        self.activate(index, op, value)

    def _concatenation(self, index: int, op: tfl.OperatorT) -> None:
        name = self.op_name(index, op)
        rank = len(self.shape(op.outputs[0]))
        axis = op.builtinOptions.axis % rank
        batched = any(i in self.batched for i in op.inputs)
        if batched and axis == 0:
            raise ConversionFailed(f"{name} concatenates along the batch axis")
        inputs = []
        for i in op.inputs:
            value = self.constant(i)
            if not batched or value is None:
                inputs.append(self.name(i))
                continue
            # A constant (a learnt token) has a batch of one: repeat it for every item.
            dims = self.add_initializer(np.array(value.shape[1:], np.int64), f"{name}_{i}_dims")
            shape, repeated = f"{name}_{i}_shape", f"{name}_{i}_batch"
            self.node("Concat", [self.batch_axis_size(), dims], [shape], name=f"{name}_{i}_shape",
                      axis=0)
            self.node("Expand", [self.name(i), shape], [repeated], name=f"{name}_{i}_expand")
            inputs.append(repeated)
        value = self.activation_input(index, op)
        self.node("Concat", inputs, [value], name=name, axis=axis)
        self.activate(index, op, value)

    def _strided_slice(self, index: int, op: tfl.OperatorT) -> None:
        """Slices with static bounds per axis (all dims but the batch are static)."""
        source, begin_tensor, end_tensor, strides_tensor = op.inputs
        name = self.op_name(index, op)
        options = op.builtinOptions
        if options.ellipsisMask or options.newAxisMask or getattr(options, "offset", False):
            raise ConversionFailed(f"{name}: ellipsis, new-axis and offset slices unsupported")
        begins, ends, strides = (
            self.required_constant(t, "slice bounds").tolist()
            for t in (begin_tensor, end_tensor, strides_tensor))
        dims = self.shape(source)
        batched = source in self.batched
        starts, stops, axes, steps, squeezed = [], [], [], [], []
        for axis, dim in enumerate(dims):
            shrink = bool(options.shrinkAxisMask >> axis & 1)
            begin = None if options.beginMask >> axis & 1 else begins[axis]
            end = None if options.endMask >> axis & 1 else ends[axis]
            step = strides[axis]
            if shrink:  # TFLite takes the one element at begin, whatever end and stride say
                start = (begin or 0) % dim
                stop, step = start + 1, 1
            else:
                start, stop, step = slice(begin, end, step).indices(dim)
            if batched and axis == 0:
                if len(range(start, stop, step)) != 1:
                    raise ConversionFailed(f"{name} slices the batch axis")
                # The model ends by dropping its batch of one ([1, 52] -> [52]); here that axis
                # is the batch, and it stays.
                if shrink:
                    if op.outputs[0] not in self.outputs:
                        raise ConversionFailed(f"{name} drops the batch axis inside the graph")
                    self.dropped_batch.add(op.outputs[0])
                continue
            if (start, stop, step) != (0, dim, 1):
                starts.append(start)
                # A negative step's stop of -1 means "through index 0", not "the last one".
                stops.append(stop if stop >= 0 else np.iinfo(np.int64).min)
                axes.append(axis)
                steps.append(step)
            if shrink:
                squeezed.append(axis)
        value = self.name(source)
        if axes:
            sliced = f"{name}_sliced"
            bounds = [self.add_initializer(np.array(values, np.int64), f"{name}_{role}")
                      for role, values in (("starts", starts), ("ends", stops), ("axes", axes),
                                           ("steps", steps))]
            self.node("Slice", [value, *bounds], [sliced], name=name)
            value = sliced
        output = self.name(op.outputs[0])
        if squeezed:
            axes_name = self.add_initializer(np.array(squeezed, np.int64), f"{name}_squeezed")
            self.node("Squeeze", [value, axes_name], [output], name=f"{name}_squeeze")
        else:
            self.node("Identity", [value], [output], name=f"{name}_output")


def blendshapes_to_onnx(tflite_model: bytes) -> onnx.ModelProto:
    """The blendshapes model as ONNX: ``points`` (batch, 146, 2) float32 landmarks in image
    pixels -> ``blendshapes`` (batch, 52) float32 scores in [0, 1].

    The fp16 weights become float32 first (exact, as in ``dequantize_fp16_weights``), so the
    graph computes in float32 like LiteRT does on CPU.
    """
    model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(dequantize_fp16_weights(tflite_model), 0))
    if len(model.subgraphs) != 1:
        raise ConversionFailed(f"expected one subgraph, found {len(model.subgraphs)}")
    (subgraph,) = model.subgraphs
    if len(subgraph.inputs) != 1 or len(subgraph.outputs) != 1:
        raise ConversionFailed("expected one input and one output")
    translator = _Translator(model, subgraph)
    (source,), (result,) = subgraph.inputs, subgraph.outputs
    translator.names[source] = INPUT_NAME
    translator.names[result] = OUTPUT_NAME
    input_dims = translator.shape(source)
    if input_dims[:1] != [1]:
        raise ConversionFailed(f"expected an input with a batch of 1, got {input_dims}")
    translator.translate()
    output_dims = translator.shape(result)
    if result not in translator.dropped_batch:
        output_dims = output_dims[1:]
    graph = helper.make_graph(
        translator.nodes, "face_blendshapes",
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT,
                                       [BATCH_DIM, *input_dims[1:]])],
        [helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT,
                                       [BATCH_DIM, *output_dims])],
        list(translator.initializers.values()),
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   ir_version=IR_VERSION)
    onnx_model.doc_string = ("MediaPipe face blendshapes: 146 FaceMesh V2 landmarks (x, y in "
                             "image pixels) -> 52 blendshape scores")
    onnx.checker.check_model(onnx_model, full_check=True)
    pinned = batch_pinned_tensors(onnx_model)
    if pinned:
        raise ConversionFailed(f"blendshapes: batch still fixed at {pinned[:5]}")
    return onnx_model
