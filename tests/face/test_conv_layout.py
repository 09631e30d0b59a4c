"""RetinaFace and BiSeNet run their convolutions channels-last on the CPU (faster there) with the results
of the contiguous layout."""
from __future__ import annotations

import numpy as np
import torch

from face_migration.face import bisenet as bs
from face_migration.face import retinaface as rf
from devkit import facexlib_data as fd


def _filled(model: torch.nn.Module) -> torch.nn.Module:
    model.load_state_dict(fd.state_dict_for({k: tuple(v.shape) for k, v in model.state_dict().items()}))
    return model.eval()


def _first_conv_layouts(model: torch.nn.Module) -> list[bool]:
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    return seen


def test_retinaface_detects_channels_last_with_the_contiguous_results():
    model = _filled(rf.RetinaFace(rf.RetinaFaceConfig(width=8, blocks=(1, 1, 1, 1), fpn_channels=16)))
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    seen = _first_conv_layouts(model)
    rf.detect_faces(model, image, conf_threshold=0.0)
    assert seen == [True]
    x = rf.to_network_input(image, "cpu", torch.float32)
    with torch.no_grad():
        reference = model(x)  # contiguous input
        channels_last = model(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(reference, channels_last):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_bisenet_parses_channels_last_with_the_contiguous_labels():
    model = _filled(bs.BiSeNet(bs.BiSeNetConfig(num_class=19, width=8, context=16, fuse=32, head=16, aux_head=8)))
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    seen = _first_conv_layouts(model)
    labels = bs.parse_labels(model, images)
    assert seen == [True]
    with torch.no_grad():
        assert torch.equal(labels, model(bs.normalize(images)).argmax(dim=1))
