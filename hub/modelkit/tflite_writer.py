"""Write TFLite flatbuffers for a :class:`DenseNet` (float32), a :class:`QuantizedNet` (int8) or
a :class:`~hub.modelkit.cnn.QuantizedConvNet` (int8).

The files are built with the ``tflite`` package's generated schema functions and a
``flatbuffers.Builder``; no TensorFlow is involved. Both graphs have one input tensor named
``input`` of shape ``[1, F]`` with shape signature ``[-1, F]`` (resize it to run batches) and one
output named ``probabilities``; a ``serving_default`` signature maps the same names.

Float graph (raw sensor values in, probabilities out)::

    input f32 -> SUB mean, MUL 1/std (the net's standardizer, if any)
        -> FULLY_CONNECTED (+RELU) ... -> FULLY_CONNECTED -> SOFTMAX -> probabilities f32

Int8 graph with ``io_dtype="float32"`` (the same contract as the float graph)::

    input f32 -> SUB, MUL (f32) -> QUANTIZE -> FULLY_CONNECTED int8 per-channel (+RELU) ...
        -> SOFTMAX int8 -> DEQUANTIZE -> probabilities f32

With ``io_dtype="int8"`` the SUB/MUL/QUANTIZE head and the DEQUANTIZE tail are left out: the
input is the standardized, quantized features (see :func:`hub.modelkit.quantize.quantize_input`)
and the output is the int8 softmax (scale 1/256, zero point -128). Every compute-heavy op is
int8 in both variants.

A ``"linear"``-head network (a regressor) has no SOFTMAX: its output, named ``output``, is the
last FULLY_CONNECTED's (followed by a DEQUANTIZE for float32 I/O).
:func:`write_cnn_int8` writes the 1-D CNN of :mod:`hub.modelkit.cnn` as the converter writes a
Keras Conv1D (RESHAPE + CONV_2D + MAX_POOL_2D + RESHAPE + FULLY_CONNECTED + SOFTMAX).

Operator versions are the ones TFLite's converter assigns for these type combinations
(FULLY_CONNECTED 1 float / 4 int8, SOFTMAX 1 / 2, QUANTIZE 1, DEQUANTIZE 2, SUB 1, MUL 1);
tflite-runtime 2.14 and ai-edge-litert 2.3 both load and run them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import flatbuffers
import numpy as np
import tflite

from hub.modelkit.cnn import QuantizedConvNet
from hub.modelkit.errors import InvalidDataError
from hub.modelkit.quantize import QuantizedNet, QuantParams
from hub.modelkit.train import DenseNet, Standardizer

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
DESCRIPTION = "edgefleet-modelkit"
SIGNATURE_KEY = "serving_default"
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
REGRESSION_OUTPUT_NAME = "output"

_BUFFER_ALIGNMENT = 16
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127

IoDtype = Literal["int8", "float32"]

# (builtin operator, version) pairs; versions follow TFLite's op_version.cc for these types.
_FC_FLOAT = (tflite.BuiltinOperator.FULLY_CONNECTED, 1)
_FC_INT8 = (tflite.BuiltinOperator.FULLY_CONNECTED, 4)
_SOFTMAX_FLOAT = (tflite.BuiltinOperator.SOFTMAX, 1)
_SOFTMAX_INT8 = (tflite.BuiltinOperator.SOFTMAX, 2)
_QUANTIZE = (tflite.BuiltinOperator.QUANTIZE, 1)
_DEQUANTIZE_INT8 = (tflite.BuiltinOperator.DEQUANTIZE, 2)
_SUB_FLOAT = (tflite.BuiltinOperator.SUB, 1)
_MUL_FLOAT = (tflite.BuiltinOperator.MUL, 1)
_CONV_INT8 = (tflite.BuiltinOperator.CONV_2D, 3)
_MAX_POOL_INT8 = (tflite.BuiltinOperator.MAX_POOL_2D, 2)
_RESHAPE = (tflite.BuiltinOperator.RESHAPE, 1)

_ACTIVATIONS = {
    "relu": tflite.ActivationFunctionType.RELU,
    "none": tflite.ActivationFunctionType.NONE,
}


def write_float(net: DenseNet) -> bytes:
    """Serialize a float32 network; the model takes raw inputs and returns probabilities
    (for a ``"linear"`` head: the last layer's outputs, in a tensor named ``output``).

    Raises:
        InvalidDataError: the network has no layers or inconsistent layer shapes.
    """
    _check_float(net)
    graph = _Graph()
    h = graph.activation(INPUT_NAME, tflite.TensorType.FLOAT32, net.n_inputs)
    graph.inputs.append(h)
    if net.standardizer is not None:
        h = _standardize(graph, h, net.standardizer)
    last_name = REGRESSION_OUTPUT_NAME if net.head == "linear" else "logits"
    for i, layer in enumerate(net.layers):
        last = i == len(net.layers) - 1
        weights = graph.constant(
            f"dense_{i}/weights", tflite.TensorType.FLOAT32, layer.weights.T.astype(np.float32)
        )
        bias = graph.constant(f"dense_{i}/bias", tflite.TensorType.FLOAT32, layer.bias)
        out = graph.activation(
            last_name if last else f"dense_{i}/output", tflite.TensorType.FLOAT32, layer.n_outputs
        )
        graph.operator(
            _FC_FLOAT, [h, weights, bias], [out], *_fully_connected_options(layer.activation)
        )
        h = out
    if net.head == "linear":
        graph.outputs.append(h)
        return graph.serialize()
    probabilities = graph.activation(OUTPUT_NAME, tflite.TensorType.FLOAT32, net.n_classes)
    graph.operator(_SOFTMAX_FLOAT, [h], [probabilities], *_softmax_options())
    graph.outputs.append(probabilities)
    return graph.serialize()


def write_int8(qnet: QuantizedNet, *, io_dtype: IoDtype = "int8") -> bytes:
    """Serialize a full-integer int8 network with per-channel weights.

    Args:
        qnet: the quantized network.
        io_dtype: ``"int8"``: int8 standardized input and int8 softmax output;
            ``"float32"``: raw float32 input (standardized and quantized inside the model) and
            float32 probabilities. For a ``"linear"`` head (a regressor) the softmax is left
            out: the output, named ``output``, is the last layer's int8 values (scale and zero
            point of :attr:`QuantizedNet.output`), dequantized for ``"float32"``.

    Raises:
        InvalidDataError: ``io_dtype`` is unknown or the network's shapes are inconsistent.
    """
    if io_dtype not in ("int8", "float32"):
        raise InvalidDataError(f"io_dtype must be 'int8' or 'float32', got {io_dtype!r}")
    _check_quantized(qnet)
    graph = _Graph()
    int8 = tflite.TensorType.INT8
    f32 = tflite.TensorType.FLOAT32
    if io_dtype == "float32":
        raw = graph.activation(INPUT_NAME, f32, qnet.n_inputs)
        graph.inputs.append(raw)
        standardized = _standardize(graph, raw, qnet.standardizer)
        h = graph.activation("input_quantized", int8, qnet.n_inputs, quant=qnet.input)
        graph.operator(_QUANTIZE, [standardized], [h], *_no_options())
    else:
        h = graph.activation(INPUT_NAME, int8, qnet.n_inputs, quant=qnet.input)
        graph.inputs.append(h)
    linear = qnet.head == "linear"
    if linear:
        last_name = REGRESSION_OUTPUT_NAME if io_dtype == "int8" else "output_quantized"
    else:
        last_name = "logits"
    for i, layer in enumerate(qnet.layers):
        last = i == len(qnet.layers) - 1
        weights = graph.constant(
            f"dense_{i}/weights",
            int8,
            layer.weights,
            per_channel=(layer.weight_scales, np.zeros(layer.weights.shape[0], np.int64)),
        )
        bias = graph.constant(
            f"dense_{i}/bias",
            tflite.TensorType.INT32,
            layer.bias,
            per_channel=(layer.bias_scales, np.zeros(layer.bias.shape[0], np.int64)),
        )
        out = graph.activation(
            last_name if last else f"dense_{i}/output",
            int8,
            int(layer.weights.shape[0]),
            quant=layer.output,
        )
        graph.operator(
            _FC_INT8, [h, weights, bias], [out], *_fully_connected_options(layer.activation)
        )
        h = out
    if linear:
        if io_dtype == "float32":
            output = graph.activation(REGRESSION_OUTPUT_NAME, f32, qnet.n_classes)
            graph.operator(_DEQUANTIZE_INT8, [h], [output], *_no_options())
            h = output
        graph.outputs.append(h)
        return graph.serialize()
    if io_dtype == "float32":
        probabilities_q = graph.activation(
            "probabilities_quantized", int8, qnet.n_classes, quant=qnet.output
        )
        graph.operator(_SOFTMAX_INT8, [h], [probabilities_q], *_softmax_options())
        probabilities = graph.activation(OUTPUT_NAME, f32, qnet.n_classes)
        graph.operator(_DEQUANTIZE_INT8, [probabilities_q], [probabilities], *_no_options())
    else:
        probabilities = graph.activation(OUTPUT_NAME, int8, qnet.n_classes, quant=qnet.output)
        graph.operator(_SOFTMAX_INT8, [h], [probabilities], *_softmax_options())
    graph.outputs.append(probabilities)
    return graph.serialize()


def write_cnn_int8(qnet: QuantizedConvNet, *, io_dtype: IoDtype = "float32") -> bytes:
    """Serialize a full-integer int8 1-D CNN the way TensorFlow's converter expresses Conv1D.

    The graph, for windows ``[L, C]`` with a dynamic batch dimension::

        input [1, L, C] -> QUANTIZE (float32 io only) -> RESHAPE [1, 1, L, C]
            -> CONV_2D int8 per-channel, filter [F, 1, k, C], VALID, stride 1, fused RELU
            -> MAX_POOL_2D 1 x (L - k + 1) -> RESHAPE [1, F] -> FULLY_CONNECTED int8
            -> SOFTMAX int8 -> DEQUANTIZE (float32 io only) -> probabilities

    Operator versions as the converter assigns them for int8 (CONV_2D 3, MAX_POOL_2D 2,
    RESHAPE 1, FULLY_CONNECTED 4, SOFTMAX 2, QUANTIZE 1, DEQUANTIZE 2); tflite-runtime 2.14
    and ai-edge-litert run them. The RESHAPE shape tensors have -1 for the batch dimension.

    Args:
        qnet: the quantized network.
        io_dtype: ``"float32"``: raw float32 windows in, probabilities out; ``"int8"``:
            int8 windows quantized with the input's scale and zero point (see
            :func:`hub.modelkit.cnn.quantize_windows`) in, int8 softmax out.

    Raises:
        InvalidDataError: ``io_dtype`` is unknown or the network's shapes are inconsistent.
    """
    if io_dtype not in ("int8", "float32"):
        raise InvalidDataError(f"io_dtype must be 'int8' or 'float32', got {io_dtype!r}")
    _check_cnn(qnet)
    graph = _Graph()
    int8 = tflite.TensorType.INT8
    f32 = tflite.TensorType.FLOAT32
    int32 = tflite.TensorType.INT32
    length, channels = qnet.sample_shape
    k, filters, positions = qnet.kernel_size, qnet.n_filters, qnet.out_length
    if io_dtype == "float32":
        raw = graph.tensor(INPUT_NAME, f32, (length, channels))
        graph.inputs.append(raw)
        h = graph.tensor("input_quantized", int8, (length, channels), quant=qnet.input)
        graph.operator(_QUANTIZE, [raw], [h], *_no_options())
    else:
        h = graph.tensor(INPUT_NAME, int8, (length, channels), quant=qnet.input)
        graph.inputs.append(h)
    image_shape = graph.constant("conv/image_shape", int32, np.array([-1, 1, length, channels]))
    image = graph.tensor("conv/image", int8, (1, length, channels), quant=qnet.input)
    graph.operator(_RESHAPE, [h, image_shape], [image], *_no_options())
    kernel = graph.constant(
        "conv/kernel",
        int8,
        qnet.conv.weights.reshape(filters, 1, k, channels),
        per_channel=(qnet.conv.weight_scales, np.zeros(filters, np.int64)),
    )
    bias = graph.constant(
        "conv/bias",
        int32,
        qnet.conv.bias,
        per_channel=(qnet.conv.bias_scales, np.zeros(filters, np.int64)),
    )
    conv = graph.tensor("conv/output", int8, (1, positions, filters), quant=qnet.conv.output)
    graph.operator(_CONV_INT8, [image, kernel, bias], [conv], *_conv_options())
    pooled = graph.tensor("pool/output", int8, (1, 1, filters), quant=qnet.conv.output)
    graph.operator(_MAX_POOL_INT8, [conv], [pooled], *_pool_options(1, positions))
    flat_shape = graph.constant("pool/flat_shape", int32, np.array([-1, filters]))
    flat = graph.activation("pool/flat", int8, filters, quant=qnet.conv.output)
    graph.operator(_RESHAPE, [pooled, flat_shape], [flat], *_no_options())
    weights = graph.constant(
        "dense/weights",
        int8,
        qnet.dense.weights,
        per_channel=(qnet.dense.weight_scales, np.zeros(qnet.n_classes, np.int64)),
    )
    dense_bias = graph.constant(
        "dense/bias",
        int32,
        qnet.dense.bias,
        per_channel=(qnet.dense.bias_scales, np.zeros(qnet.n_classes, np.int64)),
    )
    logits = graph.activation("logits", int8, qnet.n_classes, quant=qnet.logits)
    graph.operator(
        _FC_INT8, [flat, weights, dense_bias], [logits], *_fully_connected_options("none")
    )
    if io_dtype == "float32":
        probabilities_q = graph.activation(
            "probabilities_quantized", int8, qnet.n_classes, quant=qnet.output
        )
        graph.operator(_SOFTMAX_INT8, [logits], [probabilities_q], *_softmax_options())
        probabilities = graph.activation(OUTPUT_NAME, f32, qnet.n_classes)
        graph.operator(_DEQUANTIZE_INT8, [probabilities_q], [probabilities], *_no_options())
    else:
        probabilities = graph.activation(OUTPUT_NAME, int8, qnet.n_classes, quant=qnet.output)
        graph.operator(_SOFTMAX_INT8, [logits], [probabilities], *_softmax_options())
    graph.outputs.append(probabilities)
    return graph.serialize()


def _standardize(graph: _Graph, raw: int, standardizer: Standardizer) -> int:
    """Append ``(raw - mean) * scale`` (float32 SUB and MUL); returns the output tensor."""
    f32 = tflite.TensorType.FLOAT32
    width = standardizer.n_features
    mean = graph.constant("standardize/mean", f32, standardizer.mean, rank=1)
    scale = graph.constant("standardize/scale", f32, standardizer.scale, rank=1)
    centered = graph.activation("standardize/centered", f32, width)
    standardized = graph.activation("standardize/output", f32, width)
    graph.operator(_SUB_FLOAT, [raw, mean], [centered], *_sub_options())
    graph.operator(_MUL_FLOAT, [centered, scale], [standardized], *_mul_options())
    return standardized


# --- graph assembly --------------------------------------------------------------------------

OptionsWriter = Callable[[flatbuffers.Builder], int]


@dataclass
class _Tensor:
    name: str
    dtype: int
    shape: tuple[int, ...]
    signature: tuple[int, ...] | None
    data: bytes | None
    quant: tuple[np.ndarray, np.ndarray, int] | None  # scales, zero points, quantized dim


@dataclass
class _Operator:
    opcode: tuple[int, int]
    inputs: list[int]
    outputs: list[int]
    options_type: int
    options: OptionsWriter | None


@dataclass
class _Graph:
    """Tensors and operators of one subgraph, serialized into a whole model."""

    tensors: list[_Tensor] = field(default_factory=list)
    operators: list[_Operator] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def activation(
        self, name: str, dtype: int, width: int, *, quant: QuantParams | None = None
    ) -> int:
        """Add a ``[1, width]`` activation tensor with a dynamic batch dimension."""
        return self.tensor(name, dtype, (width,), quant=quant)

    def tensor(
        self,
        name: str,
        dtype: int,
        sample_shape: tuple[int, ...],
        *,
        quant: QuantParams | None = None,
    ) -> int:
        """Add a ``[1, *sample_shape]`` activation tensor with a dynamic batch dimension."""
        params = None
        if quant is not None:
            params = (
                np.array([quant.scale], np.float32),
                np.array([quant.zero_point], np.int64),
                0,
            )
        self.tensors.append(
            _Tensor(name, dtype, (1, *sample_shape), (-1, *sample_shape), None, params)
        )
        return len(self.tensors) - 1

    def constant(
        self,
        name: str,
        dtype: int,
        values: np.ndarray,
        *,
        rank: int | None = None,
        per_channel: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> int:
        """Add a constant tensor holding ``values`` (little-endian, C order)."""
        array = np.ascontiguousarray(values, dtype=_NUMPY_TYPES[dtype])
        if rank is not None and array.ndim != rank:
            raise InvalidDataError(f"constant {name} must have rank {rank}, got {array.shape}")
        params = None
        if per_channel is not None:
            scales, zero_points = per_channel
            params = (np.asarray(scales, np.float32), np.asarray(zero_points, np.int64), 0)
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        self.tensors.append(_Tensor(name, dtype, array.shape, None, data, params))
        return len(self.tensors) - 1

    def operator(
        self,
        opcode: tuple[int, int],
        inputs: list[int],
        outputs: list[int],
        options_type: int,
        options: OptionsWriter | None,
    ) -> None:
        self.operators.append(_Operator(opcode, inputs, outputs, options_type, options))

    def serialize(self) -> bytes:
        """The complete model flatbuffer, with the ``TFL3`` file identifier."""
        size_hint = sum(len(t.data or b"") for t in self.tensors) + 4096
        builder = flatbuffers.Builder(size_hint)
        buffers = [_write_buffer(builder, None)]  # buffer 0: the empty sentinel
        buffer_index: list[int] = []
        for tensor in self.tensors:
            if tensor.data is None:
                buffer_index.append(0)
            else:
                buffer_index.append(len(buffers))
                buffers.append(_write_buffer(builder, tensor.data))
        tensor_offsets = [
            _write_tensor(builder, tensor, index)
            for tensor, index in zip(self.tensors, buffer_index, strict=True)
        ]
        opcodes = sorted({op.opcode for op in self.operators}, key=self._first_use)
        opcode_index = {code: i for i, code in enumerate(opcodes)}
        operator_offsets = [_write_operator(builder, op, opcode_index) for op in self.operators]
        subgraph = _write_subgraph(
            builder, tensor_offsets, operator_offsets, self.inputs, self.outputs
        )
        opcode_offsets = [_write_opcode(builder, code) for code in opcodes]
        signature = _write_signature(
            builder,
            (self.tensors[self.inputs[0]].name, self.inputs[0]),
            (self.tensors[self.outputs[0]].name, self.outputs[0]),
        )
        description = builder.CreateString(DESCRIPTION)

        tflite.ModelStartOperatorCodesVector(builder, len(opcode_offsets))
        for offset in reversed(opcode_offsets):
            builder.PrependUOffsetTRelative(offset)
        opcodes_vector = builder.EndVector()
        tflite.ModelStartSubgraphsVector(builder, 1)
        builder.PrependUOffsetTRelative(subgraph)
        subgraphs_vector = builder.EndVector()
        tflite.ModelStartBuffersVector(builder, len(buffers))
        for offset in reversed(buffers):
            builder.PrependUOffsetTRelative(offset)
        buffers_vector = builder.EndVector()
        tflite.ModelStartSignatureDefsVector(builder, 1)
        builder.PrependUOffsetTRelative(signature)
        signatures_vector = builder.EndVector()

        tflite.ModelStart(builder)
        tflite.ModelAddVersion(builder, SCHEMA_VERSION)
        tflite.ModelAddOperatorCodes(builder, opcodes_vector)
        tflite.ModelAddSubgraphs(builder, subgraphs_vector)
        tflite.ModelAddDescription(builder, description)
        tflite.ModelAddBuffers(builder, buffers_vector)
        tflite.ModelAddSignatureDefs(builder, signatures_vector)
        model = tflite.ModelEnd(builder)
        builder.Finish(model, file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())

    def _first_use(self, code: tuple[int, int]) -> int:
        return next(i for i, op in enumerate(self.operators) if op.opcode == code)


_NUMPY_TYPES: dict[int, type[np.generic]] = {
    tflite.TensorType.FLOAT32: np.float32,
    tflite.TensorType.INT8: np.int8,
    tflite.TensorType.INT32: np.int32,
}


def _int_vector(builder: flatbuffers.Builder, start: Callable[..., Any], values: list[int]) -> int:
    start(builder, len(values))
    for value in reversed(values):
        builder.PrependInt32(value)
    result: int = builder.EndVector()
    return result


def _write_buffer(builder: flatbuffers.Builder, data: bytes | None) -> int:
    data_offset = None
    if data:
        # Like CreateByteVector, but 16-byte aligned as TFLite's converter writes weights.
        builder.StartVector(1, len(data), _BUFFER_ALIGNMENT)
        builder.head = builder.Head() - len(data)
        builder.Bytes[builder.head : builder.head + len(data)] = data
        data_offset = builder.EndVector()
    tflite.BufferStart(builder)
    if data_offset is not None:
        tflite.BufferAddData(builder, data_offset)
    result: int = tflite.BufferEnd(builder)
    return result


def _write_tensor(builder: flatbuffers.Builder, tensor: _Tensor, buffer: int) -> int:
    name = builder.CreateString(tensor.name)
    shape = _int_vector(builder, tflite.TensorStartShapeVector, list(tensor.shape))
    signature = None
    if tensor.signature is not None:
        signature = _int_vector(
            builder, tflite.TensorStartShapeSignatureVector, list(tensor.signature)
        )
    quantization = None
    if tensor.quant is not None:
        scales, zero_points, dimension = tensor.quant
        scale_vector = builder.CreateNumpyVector(scales.astype("<f4"))
        zero_point_vector = builder.CreateNumpyVector(zero_points.astype("<i8"))
        tflite.QuantizationParametersStart(builder)
        tflite.QuantizationParametersAddScale(builder, scale_vector)
        tflite.QuantizationParametersAddZeroPoint(builder, zero_point_vector)
        tflite.QuantizationParametersAddQuantizedDimension(builder, dimension)
        quantization = tflite.QuantizationParametersEnd(builder)
    tflite.TensorStart(builder)
    tflite.TensorAddShape(builder, shape)
    tflite.TensorAddType(builder, tensor.dtype)
    tflite.TensorAddBuffer(builder, buffer)
    tflite.TensorAddName(builder, name)
    if quantization is not None:
        tflite.TensorAddQuantization(builder, quantization)
    if signature is not None:
        tflite.TensorAddShapeSignature(builder, signature)
    result: int = tflite.TensorEnd(builder)
    return result


def _write_operator(
    builder: flatbuffers.Builder, op: _Operator, opcode_index: dict[tuple[int, int], int]
) -> int:
    inputs = _int_vector(builder, tflite.OperatorStartInputsVector, op.inputs)
    outputs = _int_vector(builder, tflite.OperatorStartOutputsVector, op.outputs)
    options = op.options(builder) if op.options is not None else None
    tflite.OperatorStart(builder)
    tflite.OperatorAddOpcodeIndex(builder, opcode_index[op.opcode])
    tflite.OperatorAddInputs(builder, inputs)
    tflite.OperatorAddOutputs(builder, outputs)
    if options is not None:
        tflite.OperatorAddBuiltinOptionsType(builder, op.options_type)
        tflite.OperatorAddBuiltinOptions(builder, options)
    result: int = tflite.OperatorEnd(builder)
    return result


def _write_subgraph(
    builder: flatbuffers.Builder,
    tensors: list[int],
    operators: list[int],
    inputs: list[int],
    outputs: list[int],
) -> int:
    tflite.SubGraphStartTensorsVector(builder, len(tensors))
    for offset in reversed(tensors):
        builder.PrependUOffsetTRelative(offset)
    tensors_vector = builder.EndVector()
    tflite.SubGraphStartOperatorsVector(builder, len(operators))
    for offset in reversed(operators):
        builder.PrependUOffsetTRelative(offset)
    operators_vector = builder.EndVector()
    inputs_vector = _int_vector(builder, tflite.SubGraphStartInputsVector, inputs)
    outputs_vector = _int_vector(builder, tflite.SubGraphStartOutputsVector, outputs)
    name = builder.CreateString("main")
    tflite.SubGraphStart(builder)
    tflite.SubGraphAddTensors(builder, tensors_vector)
    tflite.SubGraphAddInputs(builder, inputs_vector)
    tflite.SubGraphAddOutputs(builder, outputs_vector)
    tflite.SubGraphAddOperators(builder, operators_vector)
    tflite.SubGraphAddName(builder, name)
    result: int = tflite.SubGraphEnd(builder)
    return result


def _write_opcode(builder: flatbuffers.Builder, code: tuple[int, int]) -> int:
    builtin, version = code
    tflite.OperatorCodeStart(builder)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(
        builder, min(builtin, _PLACEHOLDER_FOR_GREATER_OP_CODES)
    )
    tflite.OperatorCodeAddBuiltinCode(builder, builtin)
    tflite.OperatorCodeAddVersion(builder, version)
    result: int = tflite.OperatorCodeEnd(builder)
    return result


def _write_signature(
    builder: flatbuffers.Builder, model_input: tuple[str, int], model_output: tuple[str, int]
) -> int:
    maps = []
    for name, index in (model_input, model_output):
        name_offset = builder.CreateString(name)
        tflite.TensorMapStart(builder)
        tflite.TensorMapAddName(builder, name_offset)
        tflite.TensorMapAddTensorIndex(builder, index)
        maps.append(tflite.TensorMapEnd(builder))
    tflite.SignatureDefStartInputsVector(builder, 1)
    builder.PrependUOffsetTRelative(maps[0])
    inputs_vector = builder.EndVector()
    tflite.SignatureDefStartOutputsVector(builder, 1)
    builder.PrependUOffsetTRelative(maps[1])
    outputs_vector = builder.EndVector()
    key = builder.CreateString(SIGNATURE_KEY)
    tflite.SignatureDefStart(builder)
    tflite.SignatureDefAddInputs(builder, inputs_vector)
    tflite.SignatureDefAddOutputs(builder, outputs_vector)
    tflite.SignatureDefAddSignatureKey(builder, key)
    tflite.SignatureDefAddSubgraphIndex(builder, 0)
    result: int = tflite.SignatureDefEnd(builder)
    return result


# --- builtin options -------------------------------------------------------------------------


def _fully_connected_options(activation: str) -> tuple[int, OptionsWriter]:
    def write(builder: flatbuffers.Builder) -> int:
        tflite.FullyConnectedOptionsStart(builder)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(builder, _ACTIVATIONS[activation])
        tflite.FullyConnectedOptionsAddWeightsFormat(
            builder, tflite.FullyConnectedOptionsWeightsFormat.DEFAULT
        )
        tflite.FullyConnectedOptionsAddKeepNumDims(builder, False)
        result: int = tflite.FullyConnectedOptionsEnd(builder)
        return result

    return tflite.BuiltinOptions.FullyConnectedOptions, write


def _softmax_options() -> tuple[int, OptionsWriter]:
    def write(builder: flatbuffers.Builder) -> int:
        tflite.SoftmaxOptionsStart(builder)
        tflite.SoftmaxOptionsAddBeta(builder, 1.0)
        result: int = tflite.SoftmaxOptionsEnd(builder)
        return result

    return tflite.BuiltinOptions.SoftmaxOptions, write


def _mul_options() -> tuple[int, OptionsWriter]:
    def write(builder: flatbuffers.Builder) -> int:
        tflite.MulOptionsStart(builder)
        tflite.MulOptionsAddFusedActivationFunction(builder, tflite.ActivationFunctionType.NONE)
        result: int = tflite.MulOptionsEnd(builder)
        return result

    return tflite.BuiltinOptions.MulOptions, write


def _sub_options() -> tuple[int, OptionsWriter]:
    def write(builder: flatbuffers.Builder) -> int:
        tflite.SubOptionsStart(builder)
        tflite.SubOptionsAddFusedActivationFunction(builder, tflite.ActivationFunctionType.NONE)
        result: int = tflite.SubOptionsEnd(builder)
        return result

    return tflite.BuiltinOptions.SubOptions, write


def _conv_options() -> tuple[int, OptionsWriter]:
    """VALID padding, stride 1, no dilation, fused RELU."""

    def write(builder: flatbuffers.Builder) -> int:
        tflite.Conv2DOptionsStart(builder)
        tflite.Conv2DOptionsAddPadding(builder, tflite.Padding.VALID)
        tflite.Conv2DOptionsAddStrideW(builder, 1)
        tflite.Conv2DOptionsAddStrideH(builder, 1)
        tflite.Conv2DOptionsAddFusedActivationFunction(builder, _ACTIVATIONS["relu"])
        tflite.Conv2DOptionsAddDilationWFactor(builder, 1)
        tflite.Conv2DOptionsAddDilationHFactor(builder, 1)
        result: int = tflite.Conv2DOptionsEnd(builder)
        return result

    return tflite.BuiltinOptions.Conv2DOptions, write


def _pool_options(height: int, width: int) -> tuple[int, OptionsWriter]:
    """A VALID ``height x width`` pooling window, stride 1, no activation."""

    def write(builder: flatbuffers.Builder) -> int:
        tflite.Pool2DOptionsStart(builder)
        tflite.Pool2DOptionsAddPadding(builder, tflite.Padding.VALID)
        tflite.Pool2DOptionsAddStrideW(builder, 1)
        tflite.Pool2DOptionsAddStrideH(builder, 1)
        tflite.Pool2DOptionsAddFilterWidth(builder, width)
        tflite.Pool2DOptionsAddFilterHeight(builder, height)
        tflite.Pool2DOptionsAddFusedActivationFunction(builder, tflite.ActivationFunctionType.NONE)
        result: int = tflite.Pool2DOptionsEnd(builder)
        return result

    return tflite.BuiltinOptions.Pool2DOptions, write


def _no_options() -> tuple[int, OptionsWriter | None]:
    return tflite.BuiltinOptions.NONE, None


# --- validation ------------------------------------------------------------------------------


def _check_float(net: DenseNet) -> None:
    if not net.layers:
        raise InvalidDataError("the network has no layers")
    for previous, layer in zip(net.layers[:-1], net.layers[1:], strict=True):
        if previous.n_outputs != layer.n_inputs:
            raise InvalidDataError(
                f"layer widths do not chain: {previous.n_outputs} outputs feed {layer.n_inputs}"
            )
    for layer in net.layers:
        if layer.bias.shape != (layer.n_outputs,) or layer.activation not in _ACTIVATIONS:
            raise InvalidDataError("a layer's bias shape or activation is invalid")
    if net.standardizer is not None and net.standardizer.n_features != net.n_inputs:
        raise InvalidDataError("the standardizer's width differs from the first layer's inputs")


def _check_cnn(qnet: QuantizedConvNet) -> None:
    filters, width = qnet.conv.weights.shape
    if qnet.kernel_size < 1 or width % qnet.kernel_size or qnet.out_length < 1:
        raise InvalidDataError(
            f"a kernel of {qnet.kernel_size} taps does not fit patches of {width} values "
            f"over windows of {qnet.length}"
        )
    if qnet.dense.weights.shape[1] != filters:
        raise InvalidDataError(
            f"the dense layer takes {qnet.dense.weights.shape[1]} inputs, the convolution "
            f"has {filters} filters"
        )
    for layer in (qnet.conv, qnet.dense):
        out = layer.weights.shape[0]
        if layer.weights.dtype != np.int8 or layer.bias.dtype != np.int32:
            raise InvalidDataError("quantized weights must be int8 and biases int32")
        if layer.weight_scales.shape != (out,) or layer.bias.shape != (out,):
            raise InvalidDataError("per-channel scales and biases need one value per output")
    if qnet.conv.activation != "relu" or qnet.dense.activation != "none":
        raise InvalidDataError("the convolution must use ReLU and the dense layer none")


def _check_quantized(qnet: QuantizedNet) -> None:
    if not qnet.layers:
        raise InvalidDataError("the quantized network has no layers")
    for previous, layer in zip(qnet.layers[:-1], qnet.layers[1:], strict=True):
        if previous.weights.shape[0] != layer.weights.shape[1]:
            raise InvalidDataError("quantized layer widths do not chain")
    for layer in qnet.layers:
        out = layer.weights.shape[0]
        if layer.weights.dtype != np.int8 or layer.bias.dtype != np.int32:
            raise InvalidDataError("quantized weights must be int8 and biases int32")
        if layer.weight_scales.shape != (out,) or layer.bias.shape != (out,):
            raise InvalidDataError("per-channel scales and biases need one value per output")
        if layer.activation not in _ACTIVATIONS:
            raise InvalidDataError(f"unknown activation {layer.activation!r}")
