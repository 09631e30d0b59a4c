"""Stand-ins for the two antelopev2 ONNX models (their real files are not available to the benchmarks): graphs
with the real networks' multiply-adds and the real input/output layout, whose outputs are constants that
place one face at a known spot. Built with the `onnx` package, run by the pack's own onnxruntime loaders."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from face_migration.face.detection import ANCHORS_PER_CELL, DETECT_SIZE, STRIDES

IRESNET100 = ((64, 3), (128, 13), (256, 30), (512, 3))  # (width, blocks) per stage; 2 3x3 convs per block
SCRFD_PROXY = ((32, 1, 2), (64, 4, 2), (128, 4, 2), (256, 5, 2), (512, 3, 2))  # (width, convs, first stride)
# The face the SCRFD stand-in reports, in letterbox (640) pixels: an anchor centre of stride 32, the box
# half-size and the 5 keypoints as offsets from the centre, in stride units.
FACE_CELL, FACE_STRIDE, FACE_HALF = (10, 10), 32, 2.0
FACE_KEYPOINTS = ((-0.7, -0.5), (0.7, -0.5), (0.0, 0.1), (-0.55, 0.8), (0.55, 0.8))


class ConvStack:
    """Builds Conv (+ Relu) nodes with random weights and counts their multiply-adds."""

    def __init__(self, prefix: str, seed: int):
        self.prefix, self.rng = prefix, np.random.default_rng(seed)
        self.nodes, self.inits, self.macs, self.n = [], [], 0, 0

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, size: int, relu: bool = True) -> tuple[str, int]:
        name = f"{self.prefix}{self.n}"
        self.n += 1
        weight = self.rng.standard_normal((cout, cin, k, k), np.float32) * (2.0 / (cin * k * k)) ** 0.5
        self.inits.append(numpy_helper.from_array(weight.astype(np.float32), name + "_w"))
        self.nodes.append(helper.make_node("Conv", [x, name + "_w"], [name], kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[k // 2] * 4))
        out = (size + stride - 1) // stride
        self.macs += out * out * cout * cin * k * k
        if relu:
            self.nodes.append(helper.make_node("Relu", [name], [name + "_r"]))
            name += "_r"
        return name, out


def _finish(nodes, name, inputs, outputs, inits) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def arcface_proxy() -> tuple[onnx.ModelProto, float]:
    """IResNet-100's convolutions (input 112, stem 64, stages of 3/13/30/3 blocks, stride 2 at each stage's
    first block, 1x1 projection shortcuts) -> flatten 512x7x7 -> 512. Returns the model and its GMAC."""
    s = ConvStack("ir", seed=1)
    (x, size), cin = s.conv("input.1", 3, 64, 3, 1, 112), 64
    for width, blocks in IRESNET100:
        for b in range(blocks):
            stride = 2 if b == 0 else 1
            y, _ = s.conv(x, cin, width, 3, 1, size)
            y, out = s.conv(y, width, width, 3, stride, size, relu=False)
            shortcut = x if stride == 1 and cin == width else s.conv(x, cin, width, 1, stride, size, relu=False)[0]
            s.nodes.append(helper.make_node("Add", [y, shortcut], [y + "_add"]))
            x, size, cin = y + "_add", out, width
    fc = np.random.default_rng(2).standard_normal((512 * 7 * 7, 512), np.float32) * (1.0 / (512 * 49)) ** 0.5
    s.inits.append(numpy_helper.from_array(fc.astype(np.float32), "fc_w"))
    s.nodes += [helper.make_node("Flatten", [x], ["flat"]), helper.make_node("MatMul", ["flat", "fc_w"], ["embedding"])]
    s.macs += 512 * 49 * 512
    model = _finish(s.nodes, "arcface_proxy",
                    [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
                    [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 512])], s.inits)
    return model, s.macs / 1e9


def scrfd_maps() -> list[np.ndarray]:
    """The 9 SCRFD outputs (scores, boxes, keypoints at strides 8, 16, 32) holding one face."""
    scores, boxes, points = [], [], []
    for stride in STRIDES:
        rows = (DETECT_SIZE // stride) ** 2 * ANCHORS_PER_CELL
        s, b, k = np.zeros((rows, 1), np.float32), np.zeros((rows, 4), np.float32), np.zeros((rows, 10), np.float32)
        if stride == FACE_STRIDE:
            row = (FACE_CELL[1] * (DETECT_SIZE // stride) + FACE_CELL[0]) * ANCHORS_PER_CELL
            s[row], b[row], k[row] = 0.9, FACE_HALF, np.asarray(FACE_KEYPOINTS, np.float32).reshape(-1)
        scores.append(s), boxes.append(b), points.append(k)
    return scores + boxes + points


def scrfd_proxy() -> tuple[onnx.ModelProto, float]:
    """A ~13 GMAC ResNet-like stack at 640 px (SCRFD-10G is quoted as 10 GFLOPs at 640x480, counted as
    multiply-adds) whose mean, times 0, is added to constant output maps: one face, real compute."""
    s = ConvStack("bb", seed=3)
    x, size, cin = "input.1", DETECT_SIZE, 3
    for width, convs, stride in SCRFD_PROXY:
        for c in range(convs):
            x, size = s.conv(x, cin, width, 3, stride if c == 0 else 1, size)
            cin = width
    s.inits.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    s.nodes += [helper.make_node("ReduceMean", [x], ["bb_mean"], keepdims=0),
                helper.make_node("Mul", ["bb_mean", "zero"], ["bb_zero"])]
    outputs = []
    for i, value in enumerate(scrfd_maps()):
        s.inits.append(numpy_helper.from_array(value, f"map{i}"))
        s.nodes.append(helper.make_node("Add", [f"map{i}", "bb_zero"], [f"out{i}"]))
        outputs.append(helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, list(value.shape)))
    model = _finish(s.nodes, "scrfd_proxy",
                    [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "H", "W"])], outputs, s.inits)
    return model, s.macs / 1e9
