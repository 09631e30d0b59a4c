"""BiSeNet: strict loading of .pth files (tiny variant with the real key layout), label maps,
background labels, and the errors for files of the wrong kind."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from face_migration.errors import ModelFileError
from face_migration.face import bisenet as bs
from devkit import facexlib_data as fd

TINY = bs.BiSeNetConfig(num_class=19, width=8, context=16, fuse=32, head=16, aux_head=8)


def _tiny_state() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in bs.BiSeNet(TINY).state_dict().items()}
    return fd.state_dict_for(shapes)


@pytest.fixture()
def tiny_file(tmp_path):
    path = tmp_path / "parsing_bisenet.pth"
    torch.save(_tiny_state(), path)
    return str(path)


def test_load_reads_sizes_and_labels_follow_the_main_output(tiny_file):
    model = bs.load_bisenet(tiny_file)
    assert model.cfg == TINY and not model.training
    img = fd.bisenet_input()
    labels = bs.parse_labels(model, img)
    assert labels.shape == (1, 64, 80) and labels.dtype == torch.int64
    with torch.no_grad():
        main, aux16, aux32 = model(bs.normalize(img), aux=True)
        assert torch.equal(model(bs.normalize(img)), main)
    assert main.shape == aux16.shape == aux32.shape == (1, 19, 64, 80)
    assert torch.equal(labels, main.argmax(1))
    assert not torch.equal(main, aux16)


def test_normalize_is_imagenet():
    x = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1) + torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    torch.testing.assert_close(bs.normalize(x), torch.ones(1, 3, 1, 1))


def test_background_labels_are_the_official_set():
    labels = torch.arange(19)
    assert bs.background_mask(labels).nonzero().flatten().tolist() == [0, 7, 8, 9, 14, 15, 16, 18]


def test_parse_rejects_wrong_layout(tiny_file):
    with pytest.raises(ValueError, match="B, 3, H, W"):
        bs.parse_labels(bs.load_bisenet(tiny_file), torch.zeros(1, 64, 64, 3))


def _error(path) -> str:
    with pytest.raises(ModelFileError) as exc:
        bs.load_bisenet(str(path))
    msg = str(exc.value)
    assert "parsing_bisenet.pth" in msg and "models/facexlib" in msg  # names the expected file and folder
    return msg


def test_pulid_safetensors_given_as_parsing_model(tmp_path):
    path = tmp_path / "pulid_flux_v0.9.1.safetensors"
    save_file({"pulid_encoder.latents": torch.zeros(1, 2, 4), "pulid_ca.0.to_q.weight": torch.zeros(2, 2)}, str(path))
    msg = _error(path)
    assert "pulid_flux_v0.9.1.safetensors" in msg and "PuLID-FLUX" in msg and "models/pulid" in msg


def test_detector_file_given_as_parsing_model(tmp_path):
    from face_migration.face import retinaface as rf
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in rf.RetinaFace(rf.RetinaFaceConfig(8, (1, 1, 1, 1), 16)).state_dict().items()}
    torch.save(fd.state_dict_for(shapes), tmp_path / "detection_Resnet50_Final.pth")
    assert "RetinaFace-ResNet50" in _error(tmp_path / "detection_Resnet50_Final.pth")


def test_missing_key_and_wrong_class_count(tmp_path):
    state = _tiny_state()
    del state["cp.arm32.bn_atten.running_mean"]
    torch.save(state, tmp_path / "a.pth")
    assert "cp.arm32.bn_atten.running_mean" in _error(tmp_path / "a.pth")
    state = _tiny_state()
    state["conv_out16.conv_out.weight"] = torch.zeros(18, 8, 1, 1)
    torch.save(state, tmp_path / "b.pth")
    assert "conv_out16.conv_out.weight: [18, 8, 1, 1] instead of [19, 8, 1, 1]" in _error(tmp_path / "b.pth")


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "c.pth")
    assert "plain state dict" in _error(tmp_path / "c.pth")
    (tmp_path / "d.pth").write_bytes(b"")
    assert "could not be read" in _error(tmp_path / "d.pth")
