#!/usr/bin/env python3
"""Encode latency per reference photo, after load (issue 4: <= 3 s on 2 CPU cores, <= 0.1 s on a GPU).

What runs is the library's encode path (face_migration.face.pipeline.encode_identity, as Encode Face calls
it) on one photo, with FULL-SIZE networks and random weights:
- EVA02-CLIP-L-14-336 (EvaVisionConfig defaults: 1024 wide, 24 blocks, 577 tokens),
- BiSeNet (facexlib's size) on the 512 crop, RetinaFace-ResNet50 on the photo at its own resolution
  (official alignment only; its class head is set to "no face" so random weights do not feed thousands of
  boxes to NMS: the network cost is all there, the real model finds one or a few faces),
- the PuLID IDFormer (PulidConfig defaults; cond and uncond passes; the 20 CA modules are not built: the
  encoder does not use them).
The real antelopev2 ONNX files are absent here, so SCRFD and ArcFace are stand-ins built with the `onnx`
package: by default FLOP proxies (--onnx proxy) = the tiny graphs of tests/face/onnx_graphs.py (which find
the red-square "face" of the test photo) plus a convolution stack with the real network's multiply-adds
whose result is added with weight 0: ArcFace = IResNet-100's convolutions at 112 px (~12 GMAC, its 260 MB
of weights); SCRFD = a ResNet-like stack of ~13 GMAC at 640 px (SCRFD-10G is quoted as 10 GFLOPs at 640x480,
counted as multiply-adds by mmcv). --onnx tiny uses the tiny graphs alone (pipeline overhead only).

Per alignment mode (fast = SCRFD keypoints, official = RetinaFace landmarks) it prints the time of each
stage and of the whole encode (least disturbed of --repeats runs, or --stat median), and the ratio to the
target:

    python benchmarks/bench_encode_cpu.py                      # CPU, 2 threads, photo 1024 px
    python benchmarks/bench_encode_cpu.py --device cuda        # bf16 EVA / IDFormer as the node on a GPU

Needs torch, numpy, onnx, onnxruntime (onnxruntime-gpu for CUDA ONNX), scikit-image. ~4 GB of RAM.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from face_migration.face import pipeline  # noqa: E402
from face_migration.face.align import arcface_crop, ffhq_crop  # noqa: E402
from face_migration.face.bisenet import BiSeNet  # noqa: E402
from face_migration.face.detection import load_scrfd  # noqa: E402
from face_migration.face.eva_clip import EvaVisionConfig, EvaVisionTower, preprocess  # noqa: E402
from face_migration.face.recognition import load_arcface  # noqa: E402
from face_migration.face.resample import limit_long_edge  # noqa: E402
from face_migration.face.retinaface import RetinaFace, detect_faces  # noqa: E402
from face_migration.pulid.model import PulidConfig, PulidFlux  # noqa: E402
from tests.face import onnx_graphs  # noqa: E402
from tests.tiny_face_models import FACE, SCRFD_BOX, SCRFD_KEYPOINTS, red_face_photo  # noqa: E402

TARGETS = {"cpu": 3.0, "cuda": 0.1}
IRESNET100 = ((64, 3), (128, 13), (256, 30), (512, 3))  # (width, blocks) per stage; 2 3x3 convs per block
SCRFD_PROXY = ((32, 1, 2), (64, 4, 2), (128, 4, 2), (256, 5, 2), (512, 3, 2))  # (width, convs, first stride)


# ------------------------------------------------------------------------------ ONNX FLOP proxies

class _ConvStack:
    """Builds Conv (+ Relu) nodes with random weights and counts their multiply-adds."""

    def __init__(self, prefix: str, seed: int):
        self.prefix, self.rng = prefix, np.random.default_rng(seed)
        self.nodes, self.inits, self.macs, self.n = [], [], 0, 0

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, size: int, relu: bool = True) -> tuple[str, int]:
        name = f"{self.prefix}{self.n}"
        self.n += 1
        weight = (self.rng.standard_normal((cout, cin, k, k), np.float32) * (2.0 / (cin * k * k)) ** 0.5)
        self.inits.append(numpy_helper.from_array(weight.astype(np.float32), name + "_w"))
        self.nodes.append(helper.make_node("Conv", [x, name + "_w"], [name], kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[k // 2] * 4))
        out = (size + stride - 1) // stride
        self.macs += out * out * cout * cin * k * k
        if relu:
            self.nodes.append(helper.make_node("Relu", [name], [name + "_r"]))
            name += "_r"
        return name, out


def arcface_proxy() -> tuple[onnx.ModelProto, float]:
    """IResNet-100's convolutions (input 112, stem 64, stages of 3/13/30/3 blocks, stride 2 at each stage's
    first block, 1x1 projection shortcuts) -> flatten 512x7x7 -> 512. Returns the model and its GMAC."""
    s = _ConvStack("ir", seed=1)
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
    s.inits += [numpy_helper.from_array(fc.astype(np.float32), "fc_w")]
    s.nodes += [helper.make_node("Flatten", [x], ["flat"]), helper.make_node("MatMul", ["flat", "fc_w"], ["embedding"])]
    s.macs += 512 * 49 * 512
    graph = helper.make_graph(s.nodes, "arcface_proxy",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 512])], s.inits)
    return _finish(graph), s.macs / 1e9


def scrfd_proxy() -> tuple[onnx.ModelProto, float]:
    """The tiny SCRFD graph (finds the test photo's red square) + a ~13 GMAC stack at 640 px whose mean,
    times 0, is added to the stride-8 score map: same outputs, real compute."""
    light = onnx_graphs.scrfd_model(score_gain={32: 100.0}, score_bias={32: -95.0}, box=SCRFD_BOX,
                                    kps=SCRFD_KEYPOINTS)
    first = onnx_graphs.SCRFD_OUTPUTS[0]
    for node in light.graph.node:
        node.output[:] = [first + "_light" if o == first else o for o in node.output]
    s = _ConvStack("bb", seed=3)
    x, size, cin = onnx_graphs.SCRFD_INPUT, 640, 3
    for width, convs, stride in SCRFD_PROXY:
        for c in range(convs):
            x, size = s.conv(x, cin, width, 3, stride if c == 0 else 1, size)
            cin = width
    s.inits.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    s.nodes += [helper.make_node("ReduceMean", [x], ["bb_mean"], keepdims=0),
                helper.make_node("Mul", ["bb_mean", "zero"], ["bb_zero"]),
                helper.make_node("Add", [first + "_light", "bb_zero"], [first])]
    graph = light.graph
    graph.node.extend(s.nodes)
    graph.initializer.extend(s.inits)
    return _finish(graph), s.macs / 1e9


def _finish(graph) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# ------------------------------------------------------------------------------ models

def _random_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights N(0, 0.02), norm scales 1, biases 0: finite activations through deep stacks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return module.eval().requires_grad_(False)


def build_models(device: torch.device, dtype: torch.dtype, onnx_kind: str, providers: str, folder: str):
    paths = {"scrfd": os.path.join(folder, "scrfd_10g_bnkps.onnx"), "arcface": os.path.join(folder, "glintr100.onnx")}
    if onnx_kind == "proxy":
        (scrfd, scrfd_gmac), (arcface, arcface_gmac) = scrfd_proxy(), arcface_proxy()
    else:
        scrfd = onnx_graphs.scrfd_model(score_gain={32: 100.0}, score_bias={32: -95.0}, box=SCRFD_BOX,
                                        kps=SCRFD_KEYPOINTS)
        arcface, scrfd_gmac, arcface_gmac = onnx_graphs.arcface_model(), 0.0, 0.0
    onnx.save(scrfd, paths["scrfd"])
    onnx.save(arcface, paths["arcface"])
    eva = _random_(EvaVisionTower(EvaVisionConfig()), 1).to(device, dtype)
    parser = _random_(BiSeNet(), 2).to(device)
    landmarker = _random_(RetinaFace(), 3)
    with torch.no_grad():  # "no face" everywhere (see the module docstring)
        for head in landmarker.ClassHead:
            head.conv1x1.weight.zero_()
            head.conv1x1.bias.copy_(torch.tensor([5.0, -5.0]).repeat(2))
    landmarker.to(device)
    pulid = _random_(PulidFlux(PulidConfig(num_ca=0)), 4).to(device, dtype)
    detector, recognizer = load_scrfd(paths["scrfd"], providers), load_arcface(paths["arcface"], providers)
    common = (detector, recognizer, eva, parser)
    models = {"fast": pipeline.FaceModels(*common, None, device, dtype),
              "official": pipeline.FaceModels(*common, landmarker, device, dtype)}
    return models, pulid, {"SCRFD": scrfd_gmac, "ArcFace": arcface_gmac}


# ------------------------------------------------------------------------------ timing

def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


@torch.no_grad()
def stage_times(models: pipeline.FaceModels, pulid: PulidFlux, photo: np.ndarray, dtype) -> dict[str, float]:
    """One pass through the stages of encode_reference + the IDFormer, each timed on its own."""
    dev = models.device
    t = {}
    (image, t["pre-resize to 1024"]) = timed(lambda: limit_long_edge(photo, pipeline.MAX_EDGE), dev)
    (boxes, kps), t["SCRFD detect"] = timed(lambda: models.detector.detect(image), dev)
    assert len(boxes), "the stand-in SCRFD found no face in the test photo"
    landmarks = kps[0]
    if models.landmarker is not None:
        _, t["RetinaFace landmarks"] = timed(lambda: detect_faces(models.landmarker, image), dev)
    _, t["ArcFace embed"] = timed(lambda: models.recognizer.embed(arcface_crop(image, kps[0])[0][None]), dev)
    (crop, _), t["FFHQ 512 alignment"] = timed(lambda: ffhq_crop(image, landmarks), dev)
    view, t["BiSeNet parse + grey"] = timed(lambda: pipeline.eva_input(models.parser, crop, dev), dev)
    (head, hidden), t["EVA02-CLIP-L 336"] = timed(
        lambda: models.eva(preprocess(view, models.eva.cfg.image_size).to(dev, dtype)), dev)
    id_vector = torch.cat([torch.zeros(1, 512, device=dev), head.float()], dim=1)
    _, t["IDFormer cond + uncond"] = timed(lambda: pulid.encode(id_vector, [h.float() for h in hidden], dtype), dev)
    _, t["preview"] = timed(lambda: pipeline.make_preview(image, boxes, 0, view), dev)
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime CPU threads (default 2)")
    ap.add_argument("--photo-size", type=int, default=1024, help="square photo side in pixels (default 1024)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (default 3)")
    ap.add_argument("--onnx", default="proxy", choices=("proxy", "tiny"), help="SCRFD/ArcFace stand-ins")
    ap.add_argument("--stat", default="min", choices=("min", "median"),
                    help="per stage over the runs: min = least disturbed run (default; the machine may be shared)")
    args = ap.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure for --device cuda")
        return 0
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    device = torch.device(args.device)
    # As Encode Face: bf16 EVA and IDFormer on a GPU, fp32 on the CPU; parsing nets always fp32.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    providers = "CUDA" if device.type == "cuda" else "CPU"

    side = args.photo_size
    photo = red_face_photo()
    photo = np.asarray(torch.nn.functional.interpolate(
        torch.from_numpy(photo).permute(2, 0, 1)[None].float(), size=(side, side), mode="nearest")[0]
        .permute(1, 2, 0).byte())
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        models, pulid, gmac = build_models(device, dtype, args.onnx, providers, folder)
        load_s = time.perf_counter() - t0
    ort_threads = models["fast"].detector.session.get_session_options().intra_op_num_threads
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{args.threads} torch threads"
    print(f"device {args.device} ({where}), "
          f"compute dtype {str(dtype).split('.')[-1]}, photo {side}x{side} (red square 'face' at "
          f"{FACE[0] * side // 512},{FACE[1] * side // 512}), torch {torch.__version__}")
    print(f"ONNX stand-ins: {args.onnx}" + (f" (SCRFD proxy {gmac['SCRFD']:.1f} GMAC, ArcFace proxy "
                                          f"{gmac['ArcFace']:.1f} GMAC)" if args.onnx == "proxy" else "")
          + f"; onnxruntime intra-op threads {ort_threads or 'default'}; models built in {load_s:.1f} s")
    target = TARGETS[args.device]
    for mode, m in models.items():
        # warm-up: first-call allocations, oneDNN / cuDNN plan selection
        stage_times(m, pulid, photo, dtype)
        pipeline.encode_identity(m, pulid, "bench", [photo], encoder_dtype=dtype)
        runs = [stage_times(m, pulid, photo, dtype) for _ in range(args.repeats)]
        ends = [timed(lambda: pipeline.encode_identity(m, pulid, "bench", [photo], encoder_dtype=dtype),
                      device)[1] for _ in range(args.repeats)]
        stat = min if args.stat == "min" else statistics.median
        print(f"\n[{mode} alignment] {args.stat} of {args.repeats} runs")
        for stage in runs[0]:
            print(f"  {stage:26s} {stat(r[stage] for r in runs) * 1000:9.1f} ms")
        total = stat(sum(r.values()) for r in runs)
        end = stat(ends)
        print(f"  {'sum of stages':26s} {total * 1000:9.1f} ms")
        print(f"  {'encode_identity (1 photo)':26s} {end * 1000:9.1f} ms   ratio to the {target:g} s target: "
              f"{end / target:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
