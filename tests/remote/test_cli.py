"""`python -m face_migration generate` end to end against the fake API, and the command dispatcher."""
import argparse
import base64
import io
import os
import re
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import face_migration.__main__ as entry
from face_migration.remote import cli
from tests.remote.conftest import SECRET
from tests.remote.fake_moark import Reply, b64_png, gradient_image, png_bytes

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "face.jpg"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (60, 40, 3), dtype=np.uint8)).save(path)
    return path


def run_cli(*args, key=SECRET, extra_env=None):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "moark_api_key", "gitee_ai_api_key")}
    env["NO_PROXY"] = "127.0.0.1"
    if key:
        env["MOARK_API_KEY"] = key
    env.update(extra_env or {})
    result = subprocess.run([sys.executable, "-m", "face_migration", *map(str, args)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert SECRET not in result.stdout and SECRET not in result.stderr
    return result


def test_generate_writes_the_image_and_sends_every_parameter(fake, photo, tmp_path):
    served = gradient_image(48, 32)
    fake.queue(Reply.image_b64(served))
    out = tmp_path / "out.png"
    result = run_cli("generate", "--image", photo, "--prompt", "a knight", "--out", out, "--endpoint", fake.base_url,
                     "--size", "512x512", "--guidance-scale", "3.5", "--steps", "6", "--id-weight", "0.8",
                     "--id-timestep-start", "1", "--seed", "42", "--model", "flux-1-schnell", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), served)
    (request,) = fake.requests
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.fields == [("model", "flux-1-schnell"), ("size", "512x512"), ("guidance_scale", "3.5"),
                              ("num_inference_steps", "6"), ("id_weight", "0.8"), ("id_timestep_start", "1"),
                              ("seed", "42"), ("prompt", "a knight")]
    with Image.open(photo) as original:
        assert Image.open(io.BytesIO(request.files["image"][2])).size == original.size


def test_a_transparent_photo_is_uploaded_on_white(fake, tmp_path):
    photo = tmp_path / "cutout.png"
    pixels = np.zeros((10, 12, 4), np.uint8)  # black, fully transparent...
    pixels[2:8, 3:9] = [30, 60, 90, 255]  # ...around an opaque face
    Image.fromarray(pixels, "RGBA").save(photo)
    result = run_cli("generate", "--image", photo, "--prompt", "x", "--out", tmp_path / "o.png",
                     "--endpoint", fake.base_url)
    assert result.returncode == 0, result.stderr
    sent = np.asarray(Image.open(io.BytesIO(fake.requests[0].files["image"][2])).convert("RGB"))
    assert sent[0, 0].tolist() == [255, 255, 255] and sent[4, 5].tolist() == [30, 60, 90]


def test_key_file_and_several_result_images(fake, photo, tmp_path):
    key_file = tmp_path / "token.txt"
    key_file.write_text("FROMFILE\n")
    key_file.chmod(0o600)
    fake.queue(Reply.json({"data": [{"b64_json": b64_png(gradient_image(8, 8))}] * 2}))
    out = tmp_path / "pic.webp"
    result = run_cli("generate", "--image", photo, "--prompt", "x", "--out", out, "--endpoint", fake.base_url,
                     "--key-file", key_file, key=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(out), str(tmp_path / "pic_2.webp")]
    assert fake.requests[0].headers["authorization"] == "Bearer FROMFILE"


def test_api_error_exits_1_with_the_servers_message(fake, photo, tmp_path):
    fake.queue(Reply.json({"message": f"token {SECRET} invalid"}, status=401))
    result = run_cli("generate", "--image", photo, "--prompt", "x", "--out", tmp_path / "o.png",
                     "--endpoint", fake.base_url)
    assert result.returncode == 1
    assert "HTTP 401: token <API key> invalid" in result.stderr and "MOARK_API_KEY" in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_retries_are_logged_and_exhaustion_exits_1(fake, photo, tmp_path):
    fake.queue(*[Reply.json({"message": "down"}, status=503, headers={"Retry-After": "0"})] * 2)
    result = run_cli("generate", "--image", photo, "--prompt", "x", "--out", tmp_path / "o.png",
                     "--endpoint", fake.base_url, "--max-attempts", "2")
    assert result.returncode == 1
    assert "Try 1 of 2 failed" in result.stderr and "Gave up after 2 tries" in result.stderr


def test_a_slow_server_is_asked_once_unless_timeouts_are_to_be_retried(fake, photo, tmp_path):
    fake.queue(*[Reply(200, b"{}", {}, delay=3.0)] * 3)
    base = ["generate", "--image", photo, "--prompt", "x", "--out", tmp_path / "o.png", "--endpoint", fake.base_url,
            "--timeout", "0.5", "--max-attempts", "2"]
    result = run_cli(*base)
    assert result.returncode == 1 and len(fake.api_requests()) == 1
    assert "may have been billed" in result.stderr and "--retry-timeouts" in result.stderr

    result = run_cli(*base, "--retry-timeouts")
    assert result.returncode == 1 and len(fake.api_requests()) == 3
    assert "Try 1 of 2 failed" in result.stderr and "may have been billed" in result.stderr
    assert "--retry-timeouts" in run_cli("generate", "--help").stdout


def test_help_says_fractional_id_weights_are_unverified():
    text = " ".join(run_cli("generate", "--help").stdout.split())
    assert "--id-weight" in text and "the hosted service's handling of fractions is unverified" in text


@pytest.mark.parametrize("args, message", [
    (["--steps", "9"], "num_inference_steps: 9 is outside 1..8"),
    (["--prompt", " "], "prompt: empty"),
    (["--out", "{tmp}/o.txt"], "unknown image extension"),
    (["--out", "{tmp}/missing/o.png"], "does not exist; create it first"),
    (["--image", "{tmp}/none.jpg"], "--image"),
    (["--endpoint", "http://example.com"], "plain http"),
    (["--size", "100x100"], "invalid choice"),
])
def test_usage_errors_exit_2_before_any_request(fake, photo, tmp_path, args, message):
    base = {"--image": str(photo), "--prompt": "x", "--out": str(tmp_path / "o.png"), "--endpoint": fake.base_url}
    base.update(dict(zip(args[::2], [a.format(tmp=tmp_path) for a in args[1::2]])))
    result = run_cli("generate", *[x for pair in base.items() for x in pair])
    assert result.returncode == 2
    assert message in result.stderr
    assert fake.requests == []


@pytest.mark.parametrize("option", ["--timeout", "--max-total-time"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-5", "0", "soon"])
def test_a_time_that_is_not_a_positive_number_exits_2_without_a_traceback(fake, photo, tmp_path, option, value):
    result = run_cli("generate", "--image", photo, "--prompt", "x", "--out", tmp_path / "o.png",
                     "--endpoint", fake.base_url, f"{option}={value}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{option}: {value!r} is not a positive, finite number of seconds" in result.stderr
    assert fake.requests == []


@pytest.mark.parametrize("args, message", [(["--max-attempts", "0"], "--max-attempts: '0' is not a whole number >= 1"),
                                           (["--max-upload-side", "32"], "--max-upload-side: '32' is not a whole "
                                                                         "number >= 64")])
def test_counts_out_of_range_exit_2(fake, photo, tmp_path, args, message):
    result = run_cli("generate", "--image", photo, "--prompt", "x", "--out", tmp_path / "o.png",
                     "--endpoint", fake.base_url, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def out_dir_named_like_an_image(tmp_path):
    folder = tmp_path / "pictures.png"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("out, message", [
    ("{tmp}/pictures.png", "is a folder; give a file name"),
    ("{tmp}/note.txt/o.png", "is not a folder"),
    pytest.param("/proc/o.png", "cannot write in the folder /proc", marks=pytest.mark.skipif(
        not os.path.isdir("/proc/self"), reason="/proc: a folder nobody can create files in, root included")),
])
def test_an_output_that_cannot_be_written_is_found_before_the_request(fake, photo, tmp_path,
                                                                       out_dir_named_like_an_image, out, message):
    (tmp_path / "note.txt").write_text("x")
    result = run_cli("generate", "--image", photo, "--prompt", "x", "--out", out.format(tmp=tmp_path),
                     "--endpoint", fake.base_url)
    assert result.returncode == 2 and message in result.stderr
    assert fake.requests == []


def test_an_existing_output_is_kept_unless_overwrite_is_given(fake, photo, tmp_path):
    out = tmp_path / "o.png"
    out.write_bytes(b"earlier work")
    args = ["generate", "--image", photo, "--prompt", "x", "--out", out, "--endpoint", fake.base_url]
    result = run_cli(*args)
    assert result.returncode == 2 and "exists; pass --overwrite to replace it" in result.stderr
    assert fake.requests == [] and out.read_bytes() == b"earlier work"

    served = gradient_image(8, 8)
    fake.queue(Reply.image_b64(served))
    result = run_cli(*args, "--overwrite")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(out)), served)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.jpg", "o.png"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # a new file's usual mode, not the temp file's 0600


def test_more_images_never_replace_a_file_without_overwrite(fake, photo, tmp_path):
    (tmp_path / "o_2.png").write_bytes(b"earlier work")
    images = [gradient_image(8, 8), gradient_image(8, 8)[::-1].copy(), gradient_image(8, 8)[:, ::-1].copy()]
    fake.queue(Reply.json({"data": [{"b64_json": b64_png(a)} for a in images]}))
    out = tmp_path / "o.png"
    args = ["generate", "--image", photo, "--prompt", "x", "--out", out, "--endpoint", fake.base_url]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(out), str(tmp_path / "o_3.png"), str(tmp_path / "o_4.png")]
    assert f"{tmp_path / 'o_2.png'} exists; wrote {tmp_path / 'o_3.png'} instead" in result.stderr
    assert (tmp_path / "o_2.png").read_bytes() == b"earlier work"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o_4.png")), images[2])

    fake.queue(Reply.json({"data": [{"b64_json": b64_png(a)} for a in images[:2]]}))
    result = run_cli(*args, "--overwrite")
    assert result.stdout.split() == [str(out), str(tmp_path / "o_2.png")]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o_2.png")), images[1])


def test_a_failed_write_leaves_the_old_file_whole(fake, photo, tmp_path, monkeypatch, capsys):
    out = tmp_path / "o.png"
    out.write_bytes(b"earlier work")

    original_save = Image.Image.save

    def save_half_then_fail(image, target, *args, **kwargs):
        if not isinstance(target, (str, os.PathLike)):  # the upload, encoded in memory
            return original_save(image, target, *args, **kwargs)
        with open(target, "wb") as file:
            file.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    served = png_bytes(gradient_image(8, 8))
    fake.queue(Reply.json({"data": [{"b64_json": base64.b64encode(served).decode()}]}))
    monkeypatch.setenv("MOARK_API_KEY", SECRET)
    monkeypatch.setattr(Image.Image, "save", save_half_then_fail)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--image", str(photo), "--prompt", "x", "--out", str(out), "--endpoint", fake.base_url,
                              "--overwrite"])
    assert cli.run(args) == cli.EXIT_API
    assert out.read_bytes() == b"earlier work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.jpg", "o.png", "o.received.png"]
    err = capsys.readouterr().err
    assert "No space left on device" in err and len(fake.requests) == 1
    assert f"the billed image was saved as received (PNG, {len(served)} bytes) to {tmp_path / 'o.received.png'}" in err
    assert (tmp_path / "o.received.png").read_bytes() == served


@pytest.mark.parametrize("name, message", [
    ("x.psd", "Pillow reads PSD images but cannot write them; use .png, .jpg or .webp"),
    ("x.FLI", "Pillow reads FLI images but cannot write them"),
    ("x.xbm", "Pillow cannot write a colour image as XBM (OSError: cannot write mode RGB as XBM)"),
])
def test_a_format_pillow_cannot_write_is_refused_before_the_request(fake, photo, tmp_path, name, message):
    result = run_cli("generate", "--image", photo, "--prompt", "x", "--out", tmp_path / name,
                     "--endpoint", fake.base_url)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert fake.requests == []


def parse(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def test_any_failure_to_write_keeps_the_billed_image_as_received(fake, photo, tmp_path, monkeypatch, capsys):
    served = png_bytes(gradient_image(8, 8))
    fake.queue(Reply.json({"data": [{"b64_json": base64.b64encode(served).decode()}]}))
    original_save = Image.Image.save

    def save_unknown_format(image, target, *args, **kwargs):  # what Pillow does for a format it cannot write
        if not isinstance(target, (str, os.PathLike)):  # the upload and the pre-check, in memory
            return original_save(image, target, *args, **kwargs)
        raise KeyError("PSD")

    monkeypatch.setenv("MOARK_API_KEY", SECRET)
    monkeypatch.setattr(Image.Image, "save", save_unknown_format)
    out = tmp_path / "o.png"
    assert cli.run(parse("--image", photo, "--prompt", "x", "--out", out, "--endpoint", fake.base_url)) == cli.EXIT_API
    err = capsys.readouterr().err
    assert f"cannot write {out} (KeyError: 'PSD'); the billed image was saved as received (PNG, {len(served)} " \
           f"bytes) to {tmp_path / 'o.received.png'}" in err
    assert (tmp_path / "o.received.png").read_bytes() == served and not out.exists()
    assert len(fake.api_requests()) == 1


def test_an_unreadable_image_from_the_server_is_kept_as_received(fake, photo, tmp_path):
    good, broken = png_bytes(gradient_image(8, 8)), b"\x00\x01 an image in a format Pillow cannot read"
    fake.queue(Reply.json({"data": [{"b64_json": base64.b64encode(data).decode()} for data in (good, broken)]}))
    out = tmp_path / "o.webp"
    result = run_cli("generate", "--image", photo, "--prompt", "x", "--out", out, "--endpoint", fake.base_url)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "data[1].b64_json is not a readable image" in result.stderr
    kept = [tmp_path / "o.received.png", tmp_path / "o.received.bin"]
    assert f"The 2 image(s) received were billed; saved as received to {kept[0]}, {kept[1]}." \
        in result.stderr
    assert [path.read_bytes() for path in kept] == [good, broken] and not out.exists()
    assert len(fake.api_requests()) == 1


def test_no_key_exits_2_and_says_where_to_put_one(fake, photo, tmp_path):
    result = run_cli("generate", "--image", photo, "--prompt", "x", "--out", tmp_path / "o.png",
                     "--endpoint", fake.base_url, key=None)
    assert result.returncode == 2 and "No MoArk / Gitee AI API key found" in result.stderr
    assert fake.requests == []


def test_dispatcher_usage_and_unknown_commands(capsys):
    assert entry.main([]) == 2
    assert "generate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        entry.main(["frobnicate"])
    assert caught.value.code == 2 and "unknown command 'frobnicate'" in capsys.readouterr().err
    assert entry.main(["--help"]) == 0 and "check-models" in capsys.readouterr().out


def test_a_command_whose_module_is_missing_gives_a_clean_error(monkeypatch, capsys):
    monkeypatch.setitem(entry.COMMANDS, "future", (".not_written_yet", "later"))
    assert entry.main(["future"]) == 2
    assert "the 'future' command is not part of this version" in capsys.readouterr().err


def test_a_missing_dependency_is_named(monkeypatch, capsys, tmp_path):
    (tmp_path / "fm_needs_dep.py").write_text("import surely_not_installed_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(entry.COMMANDS, "dep", ("fm_needs_dep", "x"))
    assert entry.main(["dep"]) == 2
    assert "needs the Python package 'surely_not_installed_pkg'" in capsys.readouterr().err


def option_help(help_text: str, option: str) -> str:
    """The help of one option in `--help` output, its wrapped lines joined."""
    words = " ".join(help_text.split())
    start = words.rindex(f"{option} ")  # past the usage line
    following = re.search(r" --[a-z-]+", words[start + len(option):])
    return words[start:start + len(option) + (following.start() if following else len(words))]


def test_generate_help_says_502_and_504_are_sent_again_only_with_retry_timeouts():
    text = run_cli("generate", "--help").stdout
    attempts, timeouts = option_help(text, "--max-attempts"), option_help(text, "--retry-timeouts")
    assert "408, 429 and 503" in attempts and "502" not in attempts and "504" not in attempts, attempts
    assert "502 or 504" in timeouts, timeouts
