"""What an ONNX graph allocates for one image, read from its shapes before it runs, and a bound on it.

A model file's weights are bounded by its size, but its graph is not: a 7.9 MB model that expands its
(batch, 1) answer to (batch, 2**28) and averages it back declares the same inputs and output as the
shipped one, and took 1.2 GB an image, times the batch (probe 13). Here the graph's inputs are fixed to one
image of the card's size, ONNX shape inference (``onnx.shape_inference``, with data propagation) sizes every
tensor a node makes, and a graph is refused when one of them has no static size (it could be as large as
the data makes it), when it has control flow or functions (their inner tensors are not sized here), or when
the tensors together, plus the largest convolution's work buffer, exceed :func:`budget`.

Measured, for one 100x100 image (40 KB as float32), tensors plus the largest convolution work buffer: the
float DenseNet121 (0.5.0) 44 MB, the int8 one (0.4.0, 0.5.0) 97 MB, as it dequantizes its 8 M weights (which
do not grow with the image); at 224x224 with 3 channels (602 KB), ONNX's test copies of ResNet-50 260 MB and
DenseNet121 368 MB. The budget at 100x100 is 412 MiB; the probe's graph needed 1,117 MiB. The check takes
0.03-0.1 s at load (ONNX Runtime's own load of these models: 0.6-1 s).

Shapes bound what a node costs only for some operators: ONNX Runtime's RoiAlign precomputes
``sampling_ratio**2`` entries per output (an attribute, or the roi's values: 4.9 GB for a 1x1 output, and an
abort at 2**32), its DFT of a length that is no power of two takes buffers of twice the next power of two and
minutes, Attention its N x N scores, LRN a padded square, TopK or Det far more work than their outputs show
(probe 15). So a graph may use only the operators of :data:`ALLOWED_OPERATORS`, whose memory and time
follow from the tensors' shapes, and no sparse tensor (ONNX Runtime makes each one dense, up to 2 GiB, when it
builds the session: 50 bytes of file each).

The ``onnx`` package is an inference dependency for this check alone (about 0.2 s to import, once): a
check skipped where it is missing would bound nothing on the machines that lack it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from boneage.errors import InvalidModelError, ModelOutputError

# What does not grow with the image: the int8 DenseNet121's dequantized weights are 33 MB; 256 MiB is
# room for a model eight times larger.
FIXED_BYTES = 256 * 2**20
# Bytes of tensors per byte of input image: DenseNet121 makes about 1,100 (float, 100x100, with its largest
# convolution's work buffer; 600 at 224x224), ResNet-50 about 430. 4,096 leaves room for wider networks:
# at the shipped 100x100 the budget is 256 MiB + 156 MiB, and a DenseNet121 at 1024x1024 (4.6 GB) fits too.
BYTES_PER_INPUT_BYTE = 4096
# Initializers of more elements than this are given to shape inference as inputs of their shape (their values
# are weights, never shapes), so that it does not copy 30 MB of weights: 0.4 s became 0.05 s.
SHAPE_VALUES = 1024
# Work (multiply-adds or element visits, :func:`_work`) per image: 4 G plus 256 K per byte of input image.
# DenseNet121 at 100x100 does 0.54 G (float or int8; about 25 ms here), ResNet-50 at 224x224 about 4 G: the
# budget, 14.5 G at 100x100 (under a second here), leaves room for wider networks and stops a graph built to
# compute for minutes.
FIXED_WORK = 4 * 10**9
WORK_PER_INPUT_BYTE = 2**18
CONVOLUTIONS = ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv")
# The operators (of the default ONNX domain only) a boneage model may use: each one's memory is its output, sized
# here, and its time follows from its input and output shapes and its kernel or inner dimension (:func:`_work`).
# What boneage exports uses 24 of them: DenseNet121 float32 and float16-stored (Cast), int8 QDQ (QuantizeLinear,
# DequantizeLinear; Gemm in 0.4.0 and 0.5.0), ResNet34-CBAM (Sigmoid, ReduceMean, ReduceMax, GlobalMaxPool,
# Shape, Gather, Transpose), the MobileNetV3 plugin (Clip for its hard sigmoid and swish, Pad, ReduceMean);
# the others are common in image CNNs. Left out, since memory or time depends on values or attributes that no
# shape shows: RoiAlign, DFT, STFT, Attention, LRN, TopK, Det, Einsum, NonMaxSuppression, RNN/LSTM/GRU,
# Loop/If/Scan, and every other domain (com.microsoft's contrib operators, custom ones: onnx cannot size their
# outputs either). docs/reliability.md lists them for users.
ALLOWED_OPERATORS = frozenset({
    # elementwise
    "Abs", "Add", "And", "Cast", "Ceil", "Clip", "Div", "Dropout", "Elu", "Equal", "Erf", "Exp", "Floor", "Gelu",
    "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "LeakyRelu", "Less", "LessOrEqual", "Log",
    "Max", "Mean", "Min", "Mish", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "Reciprocal", "Relu", "Round", "Selu",
    "Sigmoid", "Sign", "Softplus", "Softsign", "Sqrt", "Sub", "Sum", "Tanh", "Where",
    # normalization and softmax (over one axis of their input)
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "LogSoftmax", "Softmax",
    # convolutions, products, pooling: work charged per output from their kernels or inner dimension
    "AveragePool", "Conv", "ConvInteger", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "MatMul",
    "MatMulInteger", "MaxPool", "QLinearConv", "QLinearMatMul",
    # quantization (int8 exports are QDQ)
    "DequantizeLinear", "DynamicQuantizeLinear", "QuantizeLinear",
    # reductions: work charged on their input
    "ArgMax", "ArgMin", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum",
    # shapes and copies, their output sized by shape inference
    "Concat", "Constant", "ConstantOfShape", "Expand", "Flatten", "Gather", "Pad", "Reshape", "Shape", "Slice",
    "Split", "Squeeze", "Tile", "Transpose", "Unsqueeze", "DepthToSpace", "SpaceToDepth",
    # resampling: a static output size only (constant sizes or scales), work charged per output from its footprint
    "Resize",
})
# Input elements one output of Resize reads along an axis it resamples: 4 for cubic (2 linear, 1 nearest), times
# the reduction where it shrinks (antialiasing widens the kernel by it): a bound whatever the mode.
RESIZE_TAPS = 4
DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class GraphSize:
    """What one image costs a graph: the bytes of all the tensors its nodes make, the largest convolution
    work buffer (im2col: input channels per group x kernel x output pixels), the largest tensor by name,
    and the bytes of the inputs they were sized for."""

    tensors: int
    workspace: int
    largest: tuple[int, str]
    inputs: int
    work: int = 0

    @property
    def total(self) -> int:
        return self.tensors + self.workspace


def budget(input_bytes: int) -> int:
    """Bytes a graph may allocate for one image whose inputs take ``input_bytes``."""
    return FIXED_BYTES + BYTES_PER_INPUT_BYTE * input_bytes


def _onnx() -> Any:
    import onnx
    import onnx.shape_inference

    return onnx


def _item_bytes(onnx: Any, elem_type: int) -> int | None:
    """Bytes of one element; None for strings (of any length) or an unknown type."""
    if elem_type == onnx.TensorProto.STRING:
        return None
    try:
        return max(int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize), 1)
    except (KeyError, TypeError, ValueError):
        return None


def _size(onnx: Any, value_type: Any) -> int | None:
    """Bytes of a tensor of a static shape, else None."""
    if not value_type.HasField("tensor_type") or not value_type.tensor_type.HasField("shape"):
        return None
    item = _item_bytes(onnx, value_type.tensor_type.elem_type)
    count = 1
    for dim in value_type.tensor_type.shape.dim:
        if not dim.HasField("dim_value") or dim.dim_value < 0:
            return None
        count *= dim.dim_value
    return None if item is None else count * item


def _fix_inputs(graph: Any, what: str, input_size: int | None, image_input: str, batch: int = 1) -> None:
    """``batch`` images (one by default): a symbolic first dimension is ``batch``, the image's height and width the card's ``input_size``
    and its channels 1, as the runtime feeds it; any other symbolic dimension is refused."""
    initialized = {init.name for init in graph.initializer}
    for value in graph.input:
        if value.name in initialized:
            continue
        dims = value.type.tensor_type.shape.dim
        for i, dim in enumerate(dims):
            if i == 0 and dim.HasField("dim_value") and dim.dim_value != batch and batch > 1:
                raise InvalidModelError(f"{what}: its input {value.name[:80]!r} fixes the batch at {dim.dim_value}; a "
                                        "boneage model takes any number of images (export it with a dynamic batch)")
            if dim.HasField("dim_value"):
                continue
            if i == 0:
                dim.dim_value = batch
            elif value.name == image_input and i in (1, 2) and input_size is not None:
                dim.dim_value = input_size
            elif value.name == image_input and i == 3:
                dim.dim_value = 1
            else:
                raise InvalidModelError(f"{what}: its input {value.name!r} has a dimension of no fixed size "
                                        f"({dim.dim_param or 'unnamed'}), so what it allocates cannot be bounded")


def _without_weights(onnx: Any, graph: Any) -> None:
    """Large initializers become inputs of their type and shape: shape inference then need not copy them."""
    listed = {value.name for value in graph.input}
    kept = []
    for init in graph.initializer:
        count = 1
        for dim in init.dims:
            count *= dim
        if count <= SHAPE_VALUES:
            kept.append(init)
        elif init.name not in listed:
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    del graph.initializer[:]
    graph.initializer.extend(kept)


def check_operators(onnx: Any, model: Any, what: str) -> None:
    """Refuse a sparse tensor anywhere in the graph (an initializer or a node's attribute: ONNX Runtime makes it
    dense when it builds the session, up to 2 GiB for 50 bytes of file, outside every budget; boneage never writes
    one), and any operator outside :data:`ALLOWED_OPERATORS`. Called after control flow and functions are refused,
    so the top graph's nodes are all there is."""
    graph = model.graph
    if len(graph.sparse_initializer):
        raise InvalidModelError(f"{what}: its graph has {len(graph.sparse_initializer)} sparse initializer(s), which ONNX "
                                "Runtime makes dense when it loads (up to 2 GiB each); a boneage model has none")
    sparse = (onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS)
    for node in graph.node:
        if any(attr.type in sparse for attr in node.attribute):
            raise InvalidModelError(f"{what}: its {node.op_type[:40]!r} node holds a sparse tensor, which ONNX Runtime "
                                    "makes dense when it loads (up to 2 GiB each); a boneage model has none")
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in ALLOWED_OPERATORS:
            op = f"{node.domain}:{node.op_type}" if node.domain not in DEFAULT_DOMAINS else node.op_type
            raise InvalidModelError(f"{what}: its graph uses the operator {op[:80]!r}, which boneage does not allow: "
                                    "its memory or time need not follow from the tensors' shapes. The operators a "
                                    "boneage model may use are listed in docs/reliability.md")


def _check_output(name: str, value_type: Any, batch: int, what: str) -> None:
    """An answer of one value per image, (batch,) or (batch, 1), as shape inference gives it: the output is sized
    like any tensor (an Expand to a size read from the image's values, as the final node, took 620 MB before
    the answer was refused)."""
    known = value_type.HasField("tensor_type") and value_type.tensor_type.HasField("shape")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value_type.tensor_type.shape.dim] if known else [None]
    if None in dims:
        raise ModelOutputError(f"{what}: its output {name[:80]!r} has no static shape for {batch} image(s), so what "
                               "it allocates cannot be bounded; a boneage model answers (N,) or (N, 1)")
    if dims not in ([batch], [batch, 1]):
        raise ModelOutputError(f"{what}: its graph answers shape {tuple(dims)} for {batch} image(s), not ({batch},) or "
                               f"({batch}, 1): a boneage model answers one age per image")


def graph_size(data: bytes, what: str, input_size: int | None, image_input: str = "image",
               batch: int = 1) -> GraphSize:
    """The tensors the serialized model ``data`` makes for ``batch`` images (see :class:`GraphSize`). An
    :class:`InvalidModelError` for a graph whose tensors cannot all be sized."""
    onnx = _onnx()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and others: ONNX Runtime read it, onnx could not
        raise InvalidModelError(f"{what}: its graph could not be read to size it: {exc}"[:500]) from exc
    graph = model.graph
    if model.functions:
        raise InvalidModelError(f"{what}: its graph defines functions, whose tensors cannot be sized before it runs")
    for node in graph.node:
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            raise InvalidModelError(f"{what}: its graph has control flow ({node.op_type!r}), whose tensors cannot be "
                                    "sized before it runs; a boneage model has none")
    check_operators(onnx, model, what)
    _fix_inputs(graph, what, input_size, image_input, batch)
    inputs = sum(_size(onnx, v.type) or 0 for v in graph.input if v.name not in {i.name for i in graph.initializer})
    _without_weights(onnx, graph)
    del graph.value_info[:]  # what the file says of its tensors' shapes is not taken: they are inferred,
    for value in graph.output:  # the outputs' too (one that answers another shape than it declares fails when run)
        value.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True).graph
    except Exception as exc:  # noqa: BLE001 - onnx's InferenceError, ValidationError and C++ errors
        raise InvalidModelError(f"{what}: ONNX shape inference failed on its graph: {' '.join(str(exc).split())}"[:500]) from exc
    types = {v.name: v.type for v in [*inferred.value_info, *inferred.output, *inferred.input]}
    tensors, workspace, largest, work = 0, 0, (0, ""), 0
    outputs = {value.name for value in graph.output}
    for node in inferred.node:
        for name in node.output:
            if not name:
                continue
            size: int | None
            if name in outputs:  # an answer of another type (a string) check_signature refuses, once loaded
                _check_output(name, types[name], batch, what)
                size = _elements(types[name]) * (_item_bytes(onnx, types[name].tensor_type.elem_type) or 8)
            else:
                size = _size(onnx, types[name]) if name in types else None
            if size is None:
                raise InvalidModelError(f"{what}: the tensor {name[:80]!r} made by its {node.op_type[:40]!r} node has no "
                                        "static size for one image, so what the graph allocates cannot be bounded")
            tensors += size
            largest = max(largest, (size, name))
        if node.op_type in CONVOLUTIONS:
            workspace = max(workspace, _conv_workspace(onnx, node, types))
        elif node.op_type == "Resize":
            tensors += _resize_scratch(onnx, node, types)
        work += _work(onnx, node, types)
    return GraphSize(tensors=tensors, workspace=workspace, largest=largest, inputs=inputs, work=work)


def _dims(value: Any) -> list[int]:
    return [d.dim_value for d in value.tensor_type.shape.dim]


def _elements(value: Any) -> int:
    return math.prod(max(d, 1) for d in _dims(value))


def _conv_weight(node: Any, types: dict[str, Any]) -> Any:
    """The type of a convolution's weight input (QLinearConv's fourth: x, x_scale, x_zero_point, w), or None."""
    at = 3 if node.op_type == "QLinearConv" else 1
    return types.get(node.input[at]) if len(node.input) > at else None


def _work(onnx: Any, node: Any, types: dict[str, Any]) -> int:
    """Multiply-adds (or element visits) a node costs, from its shapes: each output element of a convolution
    costs its kernel (input channels per group x kernel size), of a pooling its window, of a matrix product its
    inner dimension, of any other node one visit; and every node visits each element of its inputs once (a
    reduction's work is its input, not its one output). A 14.7 MB graph of large max-pooling windows took 40
    minutes an image within the memory budget (probe 14)."""
    read = sum(_elements(types[name]) for name in node.input if name in types)
    out = types.get(node.output[0]) if node.output and node.output[0] else None
    if out is None:
        return read
    elements = _elements(out)
    per_output = 1
    if node.op_type in CONVOLUTIONS:
        weight = _conv_weight(node, types)
        if weight is not None:
            per_output = math.prod(max(d, 1) for d in _dims(weight)[1:])
    elif node.op_type in ("MaxPool", "AveragePool", "LpPool"):
        for attr in node.attribute:
            if attr.name == "kernel_shape":
                for k in attr.ints:
                    per_output *= max(int(k), 1)
    elif node.op_type == "Resize" and node.input and node.input[0] in types:
        for before, after in zip(_dims(types[node.input[0]]), _dims(out), strict=False):
            if before != after:
                per_output *= RESIZE_TAPS * max(1, -(-before // max(after, 1)))
    elif node.op_type in ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul") and node.input:
        a = types.get(node.input[0])
        dims = a.tensor_type.shape.dim if a is not None else []
        if dims:
            transposed = node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
            per_output = max((dims[0] if transposed else dims[-1]).dim_value, 1)
    return read + elements * per_output


def _resize_scratch(onnx: Any, node: Any, types: dict[str, Any]) -> int:
    """The tensor between the axes of a Resize, which ONNX Runtime resamples one axis at a time: at most the larger
    side on every axis (a 64x64 image resized antialiased to 1x7 M took 2.2 GB of a 28 MiB charge, review)."""
    source, out = types.get(node.input[0]), types.get(node.output[0])
    if source is None or out is None:
        return 0
    sides = [max(before, after, 1) for before, after in zip(_dims(source), _dims(out), strict=False)]
    return math.prod(sides) * (_item_bytes(onnx, out.tensor_type.elem_type) or 4)


def _conv_workspace(onnx: Any, node: Any, types: dict[str, Any]) -> int:
    """The im2col buffer a convolution may take: input channels per group x kernel elements x output pixels
    (for ConvTranspose, whose col2im buffer is output channels per group x kernel x input pixels, this bounds it
    from above), in the weights' element size."""
    weight = _conv_weight(node, types)
    output = types.get(node.output[0])
    if weight is None or output is None:
        return 0
    kernel, out = _dims(weight), _dims(output)
    if len(kernel) < 3 or len(out) < 3:
        return 0
    return math.prod(kernel[1:]) * math.prod(out[2:]) * (_item_bytes(onnx, weight.tensor_type.elem_type) or 4)


def check_graph_size(data: bytes, what: str, input_size: int | None, image_input: str = "image") -> GraphSize:
    """Refuse (:class:`InvalidModelError`) a graph that allocates more than :func:`budget` for one image, whose
    second image costs more than its first (memory that grows faster than the batch: a tensor of N**27
    elements for N images passed at one image), that computes more than the work budget for one image, or
    whose tensors cannot be sized; else its sizes for one image."""
    size = graph_size(data, what, input_size, image_input)
    limit = budget(size.inputs)
    if size.total > limit:
        largest, name = size.largest
        raise InvalidModelError(
            f"{what}: its graph allocates {size.total / 2**20:,.0f} MiB for one image (its largest tensor, "
            f"{name[:80]!r}, {largest / 2**20:,.0f} MiB), more than the {limit / 2**20:,.0f} MiB boneage allows a model "
            "of this input size; a boneage model needs a fraction of that")
    work_limit = FIXED_WORK + WORK_PER_INPUT_BYTE * size.inputs
    if size.work > work_limit:
        raise InvalidModelError(f"{what}: its graph computes {size.work / 1e9:,.1f} G operations for one image, more than "
                                f"the {work_limit / 1e9:,.1f} G boneage allows a model of this input size (DenseNet121 "
                                "at 100 px: 0.5 G)")
    pair = graph_size(data, what, input_size, image_input, batch=2)
    if pair.total - size.total > size.total:
        raise InvalidModelError(f"{what}: its graph allocates {size.total / 2**20:,.0f} MiB for one image but "
                                f"{pair.total / 2**20:,.0f} MiB for two: its memory grows faster than the batch")
    return size
