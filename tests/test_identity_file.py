"""Face identity files: bit-exact round trip, atomic writes with the umask's mode, no pickle, a size limit,
key-by-key checks, short errors whose advice fits a file saved here or shared."""
import os
import pickle
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from face_migration import __main__ as cli
from face_migration import __version__
from face_migration.errors import IdentityFileError, IncompatibleModelError
from face_migration.pulid import identity_file
from face_migration.pulid.identity import PulidIdentity
from face_migration.pulid.identity_file import (face_thumbnail, identity_file_name, load_identity, matches,
                                               save_identity)

FINGERPRINT = "0123456789abcdef"


def identity(shape=(1, 32, 16), seed=0, info=None) -> PulidIdentity:
    g = torch.Generator().manual_seed(seed)
    return PulidIdentity(torch.randn(shape, generator=g), torch.randn(shape, generator=g), FINGERPRINT,
                         {"references": 3, "faces_used": 2, "combine": "mean"} if info is None else info)


def thumbnail(value=200):
    return np.full((8, 8, 3), value, np.uint8)


def good_parts():
    ident = identity()
    tensors = {"cond": ident.cond, "uncond": ident.uncond, "thumbnail": torch.from_numpy(thumbnail())}
    metadata = {"format": "face_migration.pulid_identity", "format_version": "1", "model_fingerprint": FINGERPRINT,
                "references": "3", "combine": "mean", "pack_version": "0.1.0"}
    return tensors, metadata


def test_round_trip_is_bit_identical(tmp_path):
    original = identity(shape=(1, 64, 16), info={"references": 2, "faces_used": 2, "combine": "concat"})
    path = tmp_path / "face.safetensors"
    save_identity(original, str(path), thumbnail())
    saved = load_identity(str(path))
    assert saved.identity.cond.dtype == torch.float32
    assert torch.equal(saved.identity.cond, original.cond) and torch.equal(saved.identity.uncond, original.uncond)
    assert saved.identity.model_fingerprint == FINGERPRINT
    assert saved.identity.info == {"references": 2, "faces_used": 2, "combine": "concat", "file": "face.safetensors"}
    assert np.array_equal(saved.thumbnail, thumbnail())
    assert saved.metadata["pack_version"] == __version__
    assert matches(saved, original, thumbnail())
    assert not matches(saved, identity(shape=(1, 64, 16), seed=1), thumbnail())
    assert not matches(saved, original, None)


def test_thumbnail_is_optional(tmp_path):
    path = tmp_path / "face.safetensors"
    save_identity(identity(), str(path))
    assert load_identity(str(path)).thumbnail is None


def test_identity_without_encoder_info_gets_defaults(tmp_path):
    path = tmp_path / "face.safetensors"
    save_identity(identity(info={}), str(path))
    assert load_identity(str(path)).identity.info == {"references": 1, "combine": "mean", "file": "face.safetensors"}


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "face.safetensors"
    save_identity(identity(seed=0), str(path))
    before = path.read_bytes()

    def crash(*_):
        raise OSError("disk full")
    monkeypatch.setattr(identity_file.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_identity(identity(seed=1), str(path))
    assert path.read_bytes() == before, "a failed save damaged the existing file"
    assert sorted(os.listdir(tmp_path)) == ["face.safetensors"], "a temporary file was left behind"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_saved_file_gets_the_umasks_mode_as_comfyuis_outputs_do(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        save_identity(identity(), str(tmp_path / "face.safetensors"))
        save_identity(identity(seed=1), str(tmp_path / "face.safetensors"))  # a replaced file too
    finally:
        os.umask(previous)
    assert (tmp_path / "face.safetensors").stat().st_mode & 0o777 == mode


def test_save_refuses_non_finite_tokens(tmp_path):
    bad = identity()
    bad.cond[0, 0, 0] = float("nan")
    with pytest.raises(IdentityFileError, match="NaN or infinite"):
        save_identity(bad, str(tmp_path / "face.safetensors"))
    assert not (tmp_path / "face.safetensors").exists()


def test_pickle_is_refused_without_running_it(tmp_path):
    path = tmp_path / "face.safetensors"
    path.write_bytes(pickle.dumps({"cond": [1.0]}, protocol=4))
    with pytest.raises(IdentityFileError, match="face.safetensors.*pickle"):
        load_identity(str(path))


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.safetensors"
    save_identity(identity(), str(path))
    monkeypatch.setattr(identity_file, "MAX_FILE_BYTES", 1000)
    with pytest.raises(IdentityFileError, match=r"big.safetensors.*at most 1,000"):
        load_identity(str(path))


def test_truncated_file_names_itself(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_identity(identity(), str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdentityFileError, match=r"cut.safetensors.*truncated"):
        load_identity(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(IdentityFileError, match="nothing.safetensors does not exist.*models/pulid_identities"):
        load_identity(str(tmp_path / "nothing.safetensors"))


def _drop(mapping, key):
    del mapping[key]


@pytest.mark.parametrize("corrupt, expected", [
    (lambda t, m: t.update(extra=torch.zeros(2)), "unexpected tensor 'extra'"),
    (lambda t, m: _drop(t, "uncond"), "tensor 'uncond' is missing"),
    (lambda t, m: t.update(cond=t["cond"].half()), "tensor 'cond' is F16"),
    (lambda t, m: t.update(cond=t["cond"][0]), "expected F32 [N, T, D]"),
    (lambda t, m: t.update(uncond=t["uncond"][:, :16].contiguous()), "differ in shape"),
    (lambda t, m: t["cond"].__setitem__((0, 1, 2), float("inf")), "'cond' holds NaN or infinite"),
    (lambda t, m: t.update(thumbnail=torch.zeros(8, 8, 4, dtype=torch.uint8)), "tensor 'thumbnail' is U8 [8, 8, 4]"),
    (lambda t, m: t.update(thumbnail=torch.zeros(300, 8, 3, dtype=torch.uint8)), "H, W in 1..256"),
    (lambda t, m: t.update(thumbnail=torch.zeros(8, 8, 3)), "tensor 'thumbnail' is F32"),
    (lambda t, m: _drop(m, "model_fingerprint"), "metadata 'model_fingerprint' is missing"),
    (lambda t, m: m.update(model_fingerprint="xyz"), "'model_fingerprint' is 'xyz', expected 16 hexadecimal"),
    (lambda t, m: m.update(references="0"), "'references' is '0'"),
    (lambda t, m: m.update(combine="sum"), "'combine' is 'sum', expected one of mean, concat"),
    (lambda t, m: m.update(format="something_else"), "metadata 'format' is 'something_else'"),
    (lambda t, m: m.update(format_version="2"), "metadata 'format_version' is '2'"),
    (lambda t, m: m.update(photo="base64..."), "unexpected metadata 'photo'"),
])
def test_each_key_is_checked_and_the_file_is_named(tmp_path, corrupt, expected):
    tensors, metadata = good_parts()
    corrupt(tensors, metadata)
    path = tmp_path / "shared_face.safetensors"
    save_file(tensors, str(path), metadata)
    with pytest.raises(IdentityFileError) as caught:
        load_identity(str(path))
    message = str(caught.value)
    assert str(path) in message and expected in message and "Save Identity" in message


def test_the_good_parts_load(tmp_path):
    """The parametrised corruptions above start from a valid file."""
    tensors, metadata = good_parts()
    save_file(tensors, str(tmp_path / "ok.safetensors"), metadata)
    assert load_identity(str(tmp_path / "ok.safetensors")).identity.model_fingerprint == FINGERPRINT


def test_malformed_header_is_refused(tmp_path):
    path = tmp_path / "odd.safetensors"
    header = b'{"cond": {"dtype": "F32"}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(IdentityFileError, match="odd.safetensors.*damaged safetensors header"):
        load_identity(str(path))


def test_a_model_file_put_among_the_identities_gets_a_short_error(tmp_path):
    path = tmp_path / "flux1-dev.safetensors"
    tensors = {f"double_blocks.{i}.img_attn.qkv.weight_with_a_long_name": torch.zeros(1) for i in range(2000)}
    save_file(tensors, str(path), {f"ss_training_note_{i}": "x" * 500 for i in range(50)})
    with pytest.raises(IdentityFileError) as caught:
        load_identity(str(path))
    message = str(caught.value)
    assert len(message) < 600, message
    assert str(path) in message and "2,000 tensors" in message and "1,997 more" in message
    assert "'double_blocks.0.img_attn.qkv.weight_with_a_long_name'" in message and "models/pulid" in message


def test_many_unexpected_keys_and_long_values_are_summed_up(tmp_path):
    tensors, metadata = good_parts()
    tensors.update({f"extra_{i}": torch.zeros(1) for i in range(500)})
    metadata.update({f"note_{i}": "n" for i in range(500)}, combine="c" * 5000)
    path = tmp_path / "odd_face.safetensors"
    save_file(tensors, str(path), metadata)
    with pytest.raises(IdentityFileError) as caught:
        load_identity(str(path))
    message = str(caught.value)
    assert len(message) < 700, message
    assert "unexpected tensors 'extra_0', 'extra_1', 'extra_10' and 497 more" in message
    assert "unexpected metadata 'note_0', 'note_1', 'note_10' and 497 more" in message
    assert "'combine' is 'ccccc" in message and "...," in message


def cut_off(path):
    path.write_bytes(path.read_bytes()[:-100])


def header_cut(path):
    path.write_bytes(path.read_bytes()[:40])


def empty(path):
    path.write_bytes(b"")


def pickled(path):
    path.write_bytes(pickle.dumps({"cond": [1.0]}, protocol=4))


def edited_header(path):
    header = b'{"cond": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))


@pytest.mark.parametrize("damage", [cut_off, header_cut, empty, pickled, edited_header])
def test_a_damaged_identity_is_not_called_a_download(tmp_path, damage):
    """The file may be the user's own (Save Identity) or shared: the advice fits both."""
    path = tmp_path / "mine.safetensors"
    save_identity(identity(), str(path))
    damage(path)
    with pytest.raises(IdentityFileError) as caught:
        load_identity(str(path))
    message = str(caught.value)
    assert "download" not in message.lower() and "Save Identity" in message and str(path) in message, message


def fake_pulid(token_dim=16):
    return SimpleNamespace(cfg=SimpleNamespace(token_dim=token_dim))


def test_a_loaded_identity_from_another_pulid_model_names_its_file_and_both_fingerprints(tmp_path):
    path = tmp_path / "anna.safetensors"
    save_identity(identity(), str(path))
    loaded = load_identity(str(path)).identity
    with pytest.raises(IncompatibleModelError) as caught:
        loaded.check_against(fake_pulid(), "fedcba9876543210")
    message = str(caught.value)
    assert "anna.safetensors" in message and FINGERPRINT in message and "fedcba9876543210" in message
    assert "Load Identity" in message and "Encode Face" in message  # fits both graphs
    assert "encode node" not in message
    with pytest.raises(IncompatibleModelError) as caught:  # straight from Encode Face: no file to name
        identity().check_against(fake_pulid(), "fedcba9876543210")
    assert "This face identity was made with PuLID weights 0123456789abcdef" in str(caught.value)


def test_thumbnail_keeps_only_the_aligned_crop():
    preview = np.zeros((512, 1024, 3), np.uint8)
    preview[:, :512] = (255, 0, 0)  # the photo
    preview[:, 512:] = (0, 0, 255)  # the aligned face crop
    thumb = face_thumbnail(preview)
    assert thumb.shape == (128, 128, 3) and thumb.dtype == np.uint8
    assert (thumb == (0, 0, 255)).all(), "the thumbnail contains part of the photo"
    with pytest.raises(IdentityFileError, match="Encode Face's preview"):
        face_thumbnail(np.zeros((512, 512, 3), np.uint8))


@pytest.mark.parametrize("name, expected", [("my face", "my face.safetensors"), ("anna_2.safetensors",
                                                                                  "anna_2.safetensors")])
def test_identity_names(name, expected):
    assert identity_file_name(name) == expected


@pytest.mark.parametrize("name", ["../escape", "a/b", "a\\b", ".hidden", "", "x" * 200])
def test_unsafe_identity_names_are_refused(name):
    with pytest.raises(IdentityFileError, match="not allowed"):
        identity_file_name(name)


def test_command_line_info(tmp_path, capsys):
    path = tmp_path / "face.safetensors"
    save_identity(identity(), str(path), thumbnail())
    assert cli.main(["identity", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert FINGERPRINT in out and "references: 3, faces used: 2, combine: mean" in out
    assert "1 x 32 x 16 float32" in out and "8 x 8 aligned face crop" in out
    path.write_bytes(b"not a safetensors file at all")
    assert cli.main(["identity", "info", str(path)]) == 1
    assert str(path) in capsys.readouterr().err
