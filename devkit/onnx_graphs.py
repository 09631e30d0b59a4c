"""Tiny ONNX graphs with antelopev2's interfaces, built with the `onnx` package for the face tests.

SCRFD stand-in: one input "input.1" [1, 3, ?, ?] and 9 outputs in the real model's order and names
(scores, boxes, keypoints at strides 8, 16, 32; names as the released scrfd_10g_bnkps / det_10g
graph has them), shapes [2K, 1], [2K, 4], [2K, 10]. Each map comes from a stride x stride convolution
with stride s, so cell (row i, col j) sees input pixels [i*s, (i+1)*s) x [j*s, (j+1)*s):
  score = sigmoid(gain * mean of the cell's R channel + bias) per anchor;
  box and keypoint distances are constants (the conv biases), in stride units.
Painting a red square over one cell therefore "detects a face" there, with a box known in advance.

ArcFace stand-in: input [N, 3, 112, 112] -> output [N, 512]: the per-channel means of the input
times a fixed matrix whose first 3 columns are the identity (so embedding[:3] = mean R, G, B of the
normalised blob).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SCRFD_INPUT = "input.1"
SCRFD_OUTPUTS = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
STRIDES = (8, 16, 32)
_OPSET = 13


def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8  # readable by any onnxruntime of the last years
    onnx.checker.check_model(model)
    return model


def scrfd_model(score_gain: dict | None = None, score_bias: dict | None = None, box=(1.5, 1.5, 1.5, 1.5),
                kps=None, anchors: int = 2, with_kps: bool = True, input_channels: int = 3) -> onnx.ModelProto:
    """score_gain / score_bias: {stride: value} (default: only stride 32 sees the image, gain 20,
    bias -5; the others never fire). Anchor 1's bias is 1 lower than anchor 0's, so anchor 0 wins.
    box: (left, top, right, bottom) distances, or {stride: distances}; kps: 10 offsets (x, y per
    point); both in stride units and the same for every anchor of a stride."""
    score_gain = {32: 20.0} if score_gain is None else score_gain
    score_bias = {32: -5.0} if score_bias is None else score_bias
    kps = np.linspace(-1.0, 1.0, 10) if kps is None else np.asarray(kps, np.float64)
    nodes, inits = [], []
    groups = [("score", 1), ("bbox", 4)] + ([("kps", 10)] if with_kps else [])
    names = iter(SCRFD_OUTPUTS)
    outputs = []
    for kind, width in groups:
        for s in STRIDES:
            out_name = next(names)
            channels = anchors * width
            weight = np.zeros((channels, input_channels, s, s), np.float32)
            if kind == "score":
                weight[:, 0] = score_gain.get(s, 0.0) / (s * s)
                bias = np.array([score_bias.get(s, -20.0) - a for a in range(anchors)], np.float32)
            else:
                values = (box.get(s, (1.0,) * 4) if isinstance(box, dict) else box) if kind == "bbox" else kps
                bias = np.tile(np.asarray(values, np.float32), anchors)
            tag = f"{kind}{s}"
            inits += [numpy_helper.from_array(weight, f"{tag}_w"), numpy_helper.from_array(bias, f"{tag}_b"),
                      numpy_helper.from_array(np.array([-1, width], np.int64), f"{tag}_shape")]
            nodes.append(helper.make_node("Conv", [SCRFD_INPUT, f"{tag}_w", f"{tag}_b"], [f"{tag}_conv"],
                                          kernel_shape=[s, s], strides=[s, s]))
            last = f"{tag}_conv"
            if kind == "score":
                nodes.append(helper.make_node("Sigmoid", [last], [f"{tag}_sig"]))
                last = f"{tag}_sig"
            # NCHW -> rows ordered (y, x, anchor), as the real head's permute + reshape.
            nodes.append(helper.make_node("Transpose", [last], [f"{tag}_t"], perm=[0, 2, 3, 1]))
            nodes.append(helper.make_node("Reshape", [f"{tag}_t", f"{tag}_shape"], [out_name]))
            outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [f"n{tag}", width]))
    inputs = [helper.make_tensor_value_info(SCRFD_INPUT, TensorProto.FLOAT, [1, input_channels, "?", "?"])]
    return _model(nodes, inputs, outputs, inits)


def arcface_model(size: int = 112, dim: int = 512, batch="None") -> onnx.ModelProto:
    """[N, 3, size, size] -> [N, dim]: channel means times a fixed matrix (identity first 3 columns)."""
    weight = np.random.default_rng(7).normal(size=(3, dim)).astype(np.float32)
    weight[:, :3] = np.eye(3, dtype=np.float32)
    inits = [numpy_helper.from_array(weight, "fc_w")]
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["pooled"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["pooled", "fc_w"], ["embedding"])]
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, size, size])]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dim])]
    return _model(nodes, inputs, outputs, inits)


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)
