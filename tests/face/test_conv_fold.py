"""BatchNorm folding and in-place activations in RetinaFace and BiSeNet: same outputs as the layer-by-layer
networks, no BatchNorm left in what the loaders return, and no fresh buffer made by an activation, a
BatchNorm or a residual add (each was a fresh tens-of-MiB buffer at 1024 px, faulted in on every call)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from face_migration.face import bisenet as bs
from face_migration.face import retinaface as rf
from face_migration.face.conv_fold import fold_batch_norms
from devkit import facexlib_data as fd

TINY_RETINA = rf.RetinaFaceConfig(width=8, blocks=(1, 2, 1, 1), fpn_channels=16)
TINY_BISENET = bs.BiSeNetConfig(num_class=19, width=8, context=16, fuse=32, head=16, aux_head=8)


def _filled(model: nn.Module) -> nn.Module:
    # fd's values put BatchNorm statistics away from (0, 1), so a fold that drops one shows.
    model.load_state_dict(fd.state_dict_for({k: tuple(v.shape) for k, v in model.state_dict().items()}))
    return model.eval()


def _max_rel(ours, ref) -> float:
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours, ref))


def _pair(build):
    folded = fold_batch_norms(_filled(build()))
    return _filled(build()), folded


def test_folded_retinaface_gives_the_layer_by_layer_outputs():
    plain, folded = _pair(lambda: rf.RetinaFace(TINY_RETINA))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = rf.to_network_input(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8), "cpu",
                            torch.float32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert _max_rel(folded(x), plain(x)) < 1e-5


def test_folded_bisenet_gives_the_layer_by_layer_outputs():
    plain, folded = _pair(lambda: bs.BiSeNet(TINY_BISENET))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = bs.normalize(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        assert _max_rel(folded(x, aux=True), plain(x, aux=True)) < 1e-5


@pytest.mark.parametrize("module, build, config", [(rf, rf.RetinaFace, TINY_RETINA), (bs, bs.BiSeNet, TINY_BISENET)])
def test_loaders_return_folded_networks(tmp_path, module, build, config):
    path = tmp_path / "net.pth"
    torch.save(_filled(build(config)).state_dict(), path)
    loaded = module.load_retinaface(str(path)) if module is rf else module.load_bisenet(str(path))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loaded.modules())


def test_a_batchnorm_without_its_convolution_is_refused():
    odd = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="2"):
        fold_batch_norms(odd)


class _FreshOutputs(TorchDispatchMode):
    """Names of the ops that returned a tensor with storage of its own (not one of their inputs')."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor)}
        if any(isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() not in inputs
               for o in torch.utils._pytree.tree_leaves(out)):
            self.ops.add(func.overloadpacket.__name__)
        return out


@pytest.mark.parametrize("net", ["retinaface", "bisenet"])
def test_activations_batchnorms_and_residual_adds_make_no_fresh_buffer(net):
    if net == "retinaface":
        model = fold_batch_norms(_filled(rf.RetinaFace(TINY_RETINA)))
        run = lambda: rf.detect_faces(model, np.zeros((64, 64, 3), np.uint8))  # noqa: E731
    else:
        model = fold_batch_norms(_filled(bs.BiSeNet(TINY_BISENET)))
        run = lambda: bs.parse_labels(model, torch.rand(1, 3, 64, 64))  # noqa: E731
    with torch.no_grad(), _FreshOutputs() as seen:
        run()
    assert "convolution" in seen.ops  # the mode does see the network's work
    assert not seen.ops & {"relu", "leaky_relu", "native_batch_norm", "_native_batch_norm_legit_no_training"}
