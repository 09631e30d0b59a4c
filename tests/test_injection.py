"""The call plan, block patches and gating, driven the way ComfyUI's FLUX drives them (dicts and tensors)."""
import copy
import logging
import re
import sys
import threading
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode

from face_migration.errors import BatchMismatchError, FaceMigrationError, IncompatibleModelError, InvalidInputError
from face_migration.injection import (MAX_STEP, PLAN_KEY, RUN_KEY, CallInfo, Injection, PercentRange, PulidBlockPatch,
                                      PulidCallWrapper, PulidEvaluationWrapper, PulidRunWrapper, RunRecord, SigmaRange,
                                      StepRange, UncondMode, block_patches, check_mask, find_plan, mask_to_tokens,
                                      step_indices)
from face_migration.pulid.identity import PulidIdentity
from face_migration.pulid.model import FP8_CAST_TO, PulidConfig, PulidFlux, widen_fp8
from face_migration.pulid.weights import expected_layout, load_pulid_flux

CFG = PulidConfig(encoder_dim=64, encoder_depth=5, id_mapping_dim=32, vit_dim=16, vit_mapping_dim=32,
                  token_dim=48, flux_hidden=32, ca_inner_dim=128, num_ca=3)
SCHEDULE = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
GRID = (2, 3)  # 6 generated-image tokens
TXT = 4
ALWAYS = StepRange(0, 100)


class CastLinear(torch.nn.Linear):
    """Like comfy.ops.manual_cast: the weights are cast to the input's dtype at each call."""
    def forward(self, x):
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class CastLayerNorm(torch.nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


CAST_OPS = SimpleNamespace(Linear=CastLinear, LayerNorm=CastLayerNorm)


def random_model(ops=torch.nn):
    torch.manual_seed(0)
    m = PulidFlux(CFG, ops).eval().requires_grad_(False)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return m


@pytest.fixture(scope="module")
def model():
    return random_model()


def make_identity(n=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return PulidIdentity(torch.randn(n, 32, CFG.token_dim, generator=g),
                         torch.randn(n, 32, CFG.token_dim, generator=g), "fp")


def options(sigmas, cond_or_uncond=(0,), patches=None):
    opts = {"sigmas": torch.tensor(sigmas), "sample_sigmas": SCHEDULE, "cond_or_uncond": list(cond_or_uncond)}
    if patches:
        opts["patches_replace"] = {"dit": patches}
    return opts


class Executor:
    """What ComfyUI hands a DIFFUSION_MODEL wrapper: a callable with the model as class_obj."""
    class_obj = SimpleNamespace(patch_size=2)

    def __init__(self, body):
        self.body, self.seen = body, []

    def __call__(self, *args, **kwargs):
        opts = kwargs["transformer_options"] if "transformer_options" in kwargs else args[7]
        self.seen.append(opts)
        return self.body(opts)


def applies_in(opts) -> tuple:
    """The Applies of the PuLID patches in opts, as apply_pulid hands them to the wrapper."""
    patches = opts.get("patches_replace", {}).get("dit", {}).values()
    return tuple({i: None for p in patches if isinstance(p, PulidBlockPatch) for i in p.injections})


def model_call(opts, body, batch, grid=GRID, refs=None, device="cpu", dtype=torch.float32, injections=None):
    """One diffusion-model call through the wrapper (TXT text tokens), `body(transformer_options)` standing in
    for FLUX."""
    x = torch.zeros(batch, 16, 2 * grid[0], 2 * grid[1], device=device, dtype=dtype)
    context = torch.zeros(batch, TXT, 8, device=device, dtype=dtype)
    executor = Executor(body)
    wrapper = PulidCallWrapper(applies_in(opts) if injections is None else injections)
    return wrapper(executor, x, None, context, None, None, refs, None, opts), executor


def run_double(patch, img, txt, opts, block=None):
    """A double block with `patch` at index 0 (registered in opts), called through the wrapper."""
    block = block or (lambda a: {"img": a["img"] * 2, "txt": a["txt"] * 2})  # a stand-in FLUX block
    opts = {**opts, "patches_replace": {"dit": {("double_block", 0): patch}}}
    out, _ = model_call(opts, lambda o: patch({"img": img, "txt": txt, "vec": None, "pe": None, "attn_mask": None,
                                               "transformer_options": o}, {"original_block": block}),
                        img.shape[0], device=img.device, dtype=img.dtype)
    return out


def ca_direct(model, index, tokens, x, weight=1.0):
    return weight * model.pulid_ca[index](tokens, x)


def test_placement_follows_official_intervals():
    placed = block_patches(19, 38)
    assert len(placed) == 20
    assert [b for k, b, _ in placed if k == "double"] == list(range(0, 19, 2))
    assert [b for k, b, _ in placed if k == "single"] == list(range(0, 38, 4))
    assert [c for *_, c in placed] == list(range(20))
    assert block_patches(1, 1) == [("double", 0, 0), ("single", 0, 1)]


def test_call_info_expands_sigmas_per_chunk_on_the_cpu():
    call = CallInfo.from_options({"sigmas": torch.tensor([0.5, 0.25]), "cond_or_uncond": [1, 0]},
                                 torch.zeros(4, 16, 4, 6), GRID, SCHEDULE)
    assert call.sigmas.tolist() == [0.5, 0.25, 0.5, 0.25]
    assert call.steps.tolist() == [2, 3, 2, 3]
    assert call.is_uncond.tolist() == [True, True, False, False]
    assert call.latent_index.tolist() == [0, 1, 0, 1]
    assert call.batch == 2


def test_step_indices_count_in_the_schedule_and_intermediate_sigmas():
    sig = torch.tensor([1.2, 1.0, 0.75, 0.6, 0.5, 0.25, 0.1])
    # above the first sigma (restart noise) counts as step 0; in-between sigmas belong to the step they fall in
    assert step_indices(sig, SCHEDULE).tolist() == [0, 0, 1, 1, 2, 3, 3]
    rng = StepRange(start=1, end=3)
    call = CallInfo.from_options({"sigmas": sig}, torch.zeros(7, 16, 4, 6), GRID, SCHEDULE)
    assert rng.active(call).tolist() == [False, False, True, True, True, False, False]
    with pytest.raises(FaceMigrationError, match="percent mode"):
        rng.active(CallInfo.from_options({"sigmas": sig}, torch.zeros(7, 16, 4, 6), GRID, None))


def test_sigma_range_is_inclusive():
    call = CallInfo.from_options({"sigmas": torch.tensor([1.0, 0.75, 0.5, 0.25, 0.1])}, torch.zeros(5, 1, 2, 2),
                                 (1, 1), None)
    assert SigmaRange(high=0.75, low=0.25).active(call).tolist() == [False, True, True, True, False]


def test_double_block_adds_weighted_ca_to_image_tokens_only(model):
    ident = make_identity()
    patch = PulidBlockPatch("double", 0, (Injection(model, ident, 0.7, ALWAYS),))
    img, txt = torch.randn(1, 6 + 5, 32), torch.randn(1, TXT, 32)  # 6 image tokens then 5 Kontext reference tokens
    out = run_double(patch, img, txt, options([1.0]))
    base = img * 2
    expected = base[:, :6] + ca_direct(model, 0, ident.cond, base[:, :6], 0.7)
    torch.testing.assert_close(out["img"][:, :6], expected)
    torch.testing.assert_close(out["img"][:, 6:], base[:, 6:])
    torch.testing.assert_close(out["txt"], txt * 2)


def single_block_call(patch, x, opts, refs, img_slice=None, txt=None):
    """Single block 0 with `patch`; `img_slice` is put in its transformer_options as 0.33's FLUX does; with
    `txt`, a double block with an unrelated PuLID patch runs first on that text."""
    opts = {**opts, "patches_replace": {"dit": {("single_block", 0): patch}}}
    double = PulidBlockPatch("double", 0, patch.injections)

    def body(o):
        if txt is not None:
            double({"img": torch.zeros(x.shape[0], 6, 32), "txt": txt, "transformer_options": o},
                   {"original_block": lambda a: dict(a)})
        o = o if img_slice is None else {**o, "img_slice": img_slice}
        return patch({"img": x, "vec": None, "pe": None, "transformer_options": o},
                     {"original_block": lambda a: {"img": a["img"] + 1}})
    out, _ = model_call(opts, body, x.shape[0], refs=refs)
    return out["img"]


def assert_ca_on(out, x, start, model, ca_index, tokens):
    """Single block 0 (+1) then the CA on exactly the 6 image tokens from `start`."""
    base = x + 1
    image = base[:, start:start + 6]
    torch.testing.assert_close(out[:, start:start + 6], image + ca_direct(model, ca_index, tokens, image))
    torch.testing.assert_close(out[:, :start], base[:, :start])
    torch.testing.assert_close(out[:, start + 6:], base[:, start + 6:])


@pytest.mark.parametrize("layout", ["img_slice", "double_block_txt"])
def test_single_blocks_find_the_image_when_the_references_leave_img(model, layout):
    """0.33's FluxKVCache: the call has a 2-token reference latent, but after the first step a post_input
    patch removes its tokens from img. The image used to be placed 2 tokens too early (onto text)."""
    ident = make_identity()
    patch = PulidBlockPatch("single", 2, (Injection(model, ident, 1.0, ALWAYS),))
    x = torch.randn(1, TXT + 6, 32)  # text, generated image; no reference tokens left
    refs = [torch.zeros(1, 16, 2, 4)]
    out = single_block_call(patch, x, options([1.0]), refs, img_slice=[TXT, TXT + 6] if layout == "img_slice" else None,
                            txt=torch.zeros(1, TXT, 32) if layout == "double_block_txt" else None)
    assert_ca_on(out, x, TXT, model, 2, ident.cond)


def test_single_blocks_find_the_image_when_a_later_wrapper_adds_a_reference(model):
    """A DIFFUSION_MODEL wrapper after Apply appends a 2-token reference latent our wrapper never sees: the CA
    used to change the reference tokens instead of the last 2 image tokens."""
    ident = make_identity()
    patch = PulidBlockPatch("single", 1, (Injection(model, ident, 1.0, ALWAYS),))
    x = torch.randn(1, TXT + 6 + 2, 32)
    out = single_block_call(patch, x, options([1.0]), refs=None)
    assert_ca_on(out, x, TXT, model, 1, ident.cond)


def test_a_block_too_short_for_the_image_is_a_named_error(model):
    """A foreign layout that leaves fewer tokens than text + image used to die in a reshape inside the CA."""
    patch = PulidBlockPatch("single", 0, (Injection(model, make_identity(), 1.0, ALWAYS),))
    with pytest.raises(IncompatibleModelError, match="holds 7 tokens, fewer than the 4 text and 6 image"):
        single_block_call(patch, torch.randn(1, 7, 32), options([1.0]), refs=None)


def test_single_block_finds_the_image_without_any_double_block_patch(model):
    """The text length comes from the call's token counts: a foreign pack replacing ("double_block", 0)
    without chaining (so no PuLID double patch runs) must not break the single blocks."""
    ident = make_identity()
    patch = PulidBlockPatch("single", 2, (Injection(model, ident, 1.0, ALWAYS),))
    refs = [torch.zeros(1, 16, 2, 4)]  # one Kontext reference latent: 1 x 2 = 2 tokens
    x = torch.randn(1, TXT + 6 + 2, 32)  # text, generated image, reference tokens
    out = single_block_call(patch, x, options([1.0]), refs)
    base = x + 1
    torch.testing.assert_close(out[:, :TXT], base[:, :TXT])
    torch.testing.assert_close(out[:, TXT + 6:], base[:, TXT + 6:])
    image = base[:, TXT:TXT + 6]
    torch.testing.assert_close(out[:, TXT:TXT + 6], image + ca_direct(model, 2, ident.cond, image))


def test_gating_per_row_and_uncond_tokens(model):
    ident = make_identity()
    patch = PulidBlockPatch("double", 1, (Injection(model, ident, 1.0, StepRange(1, 100)),))
    img, txt = torch.randn(4, 6, 32), torch.randn(4, TXT, 32)
    # rows: [uncond latent0, uncond latent1, cond latent0, cond latent1]; latent 0 at step 0, latent 1 at step 1
    out = run_double(patch, img, txt, options([1.0, 0.75], cond_or_uncond=(1, 0)))["img"]
    base = img * 2
    torch.testing.assert_close(out[[0, 2]], base[[0, 2]])  # step 0 < start: untouched
    torch.testing.assert_close(out[1], base[1] + ca_direct(model, 1, ident.uncond, base[1:2])[0])
    torch.testing.assert_close(out[3], base[3] + ca_direct(model, 1, ident.cond, base[3:4])[0])


@pytest.mark.parametrize("mode, expect", [(UncondMode.SAME_ID, "cond"), (UncondMode.NO_ID, None)])
def test_uncond_choices(model, mode, expect):
    ident = make_identity()
    patch = PulidBlockPatch("double", 0, (Injection(model, ident, 1.0, ALWAYS, mode),))
    img, txt = torch.randn(2, 6, 32), torch.randn(2, TXT, 32)
    out = run_double(patch, img, txt, options([1.0], cond_or_uncond=(1, 0)))["img"]
    base = img * 2
    uncond_row = base[0] if expect is None else base[0] + ca_direct(model, 0, ident.cond, base[:1])[0]
    torch.testing.assert_close(out[0], uncond_row)
    torch.testing.assert_close(out[1], base[1] + ca_direct(model, 0, ident.cond, base[1:])[0])


def test_one_identity_per_batch_image_and_mismatch_error(model):
    ident = make_identity(n=2)
    patch = PulidBlockPatch("double", 0, (Injection(model, ident, 1.0, ALWAYS),))
    img, txt = torch.randn(2, 6, 32), torch.randn(2, TXT, 32)
    out = run_double(patch, img, txt, options([1.0, 1.0]))["img"]
    for row in range(2):
        expected = img[row] * 2 + ca_direct(model, 0, ident.cond[row:row + 1], img[row:row + 1] * 2)[0]
        torch.testing.assert_close(out[row], expected)
    with pytest.raises(BatchMismatchError, match="face identity holds 2 entries but the latent batch has 3"):
        run_double(patch, torch.randn(3, 6, 32), torch.randn(3, TXT, 32), options([1.0] * 3))


def test_mask_resized_to_token_grid_any_aspect():
    mask = torch.zeros(1, 40, 90)
    mask[:, :, :30] = 1.0  # left third
    tokens = mask_to_tokens(mask, (2, 3))
    assert tokens.shape == (1, 6, 1)
    assert tokens.flatten().tolist() == [1, 0, 0, 1, 0, 0]
    assert mask_to_tokens(torch.ones(16, 16), (4, 5)).shape == (1, 20, 1)


@pytest.mark.parametrize("masks, images", [(2, 3), (3, 1)])
def test_a_mask_batch_that_does_not_fit_the_latent_batch_is_named(model, masks, images):
    """Used to wrap silently (row 2 of 3 got mask 0) or drop masks."""
    injection = Injection(model, make_identity(), 1.0, ALWAYS, mask=torch.ones(masks, 8, 8))
    patch = PulidBlockPatch("double", 0, (injection,))
    with pytest.raises(BatchMismatchError, match=f"mask holds {masks} entries but the latent batch has {images}"):
        run_double(patch, torch.randn(images, 6, 32), torch.randn(images, TXT, 32), options([1.0]))


@pytest.mark.parametrize("mask, problem", [(torch.ones(1, 1, 8, 8), "shape"), (torch.ones(1, 0, 8), "shape"),
                                           (torch.full((8, 8), float("nan")), "NaN")])
def test_bad_masks_are_refused_at_apply(model, mask, problem):
    with pytest.raises(InvalidInputError, match=f"'mask'.*{problem}"):
        Injection(model, make_identity(), 1.0, ALWAYS, mask=mask)
    assert check_mask(torch.ones(8, 8)).shape == (1, 8, 8)


@pytest.mark.parametrize("weight", [float("nan"), float("inf")])
def test_non_finite_weight_is_refused_at_apply(model, weight):
    with pytest.raises(InvalidInputError, match="'weight'"):
        Injection(model, make_identity(), weight, ALWAYS)


def test_two_masked_identities_add_up_on_the_same_input(model):
    left, right = torch.zeros(1, 20, 30), torch.zeros(1, 20, 30)
    left[..., :10], right[..., 20:] = 1, 1
    a, b = make_identity(seed=2), make_identity(seed=3)
    inj_a = Injection(model, a, 1.0, ALWAYS, mask=left)
    inj_b = Injection(model, b, 0.5, ALWAYS, mask=right)
    patch = PulidBlockPatch("double", 0, (inj_a,)).extended(inj_b)
    img, txt = torch.randn(1, 6, 32), torch.randn(1, TXT, 32)
    out = run_double(patch, img, txt, options([1.0]))["img"]
    base = img * 2
    ca_a, ca_b = ca_direct(model, 0, a.cond, base), ca_direct(model, 0, b.cond, base, 0.5)
    torch.testing.assert_close(out[0, [0, 3]], base[0, [0, 3]] + ca_a[0, [0, 3]])  # left column: A only
    torch.testing.assert_close(out[0, [2, 5]], base[0, [2, 5]] + ca_b[0, [2, 5]])  # right column: B only
    torch.testing.assert_close(out[0, [1, 4]], base[0, [1, 4]])  # middle: nobody


def count_ca_calls(model):
    calls = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.pulid_ca]
    return calls, handles


@pytest.mark.parametrize("injection_kwargs", [{"weight": 0.0}, {"timing": StepRange(3, 4)}],
                         ids=["weight0", "inactive"])
def test_a_call_without_active_identity_runs_no_ca_and_passes_no_plan(model, injection_kwargs):
    """Weight 0 used to run every CA module (and fp16 inf * 0 gave NaN)."""
    kwargs = {"weight": 1.0, "timing": ALWAYS, **injection_kwargs}
    patch = PulidBlockPatch("double", 0, (Injection(model, make_identity(), **kwargs),))
    img = torch.full((1, 6, 32), float("inf"))
    calls, handles = count_ca_calls(model)
    try:
        opts = {**options([1.0]), "patches_replace": {"dit": {("double_block", 0): patch}}}
        out, executor = model_call(opts, lambda o: patch({"img": img, "txt": torch.zeros(1, TXT, 32),
                                                          "transformer_options": o},
                                                         {"original_block": lambda a: dict(a)}), 1)
    finally:
        for h in handles:
            h.remove()
    assert calls == []
    assert executor.seen == [opts]  # the caller's own dict: nothing planned, nothing copied
    assert out["img"] is img


def test_foreign_patch_is_chained_and_kept_in_model_management(model):
    calls = []

    class Foreign:
        def __call__(self, args, extra):
            calls.append("foreign")
            return extra["original_block"](args)

        def models(self):
            return ["foreign-model"]

    patch = PulidBlockPatch("double", 0, (Injection(model, make_identity(), 1.0, ALWAYS),),
                            previous=Foreign(), managed_models=("pulid-ca",))
    img, txt = torch.randn(1, 6, 32), torch.randn(1, TXT, 32)
    out = run_double(patch, img, txt, options([1.0]))
    assert calls == ["foreign"]
    torch.testing.assert_close(out["img"], img * 2 + ca_direct(model, 0, patch.injections[0].identity.cond, img * 2))
    assert patch.models() == ["pulid-ca", "foreign-model"]
    assert patch.extended(patch.injections[0], ("pulid-ca",)).models() == ["pulid-ca", "foreign-model"]


def test_an_apply_hidden_under_another_packs_patch_still_gets_its_plan(model):
    """Another pack replaces PuLID's patch on the only patched block and calls it from its own: the dit dict
    then holds no PuLID patch, yet the Apply must still be planned and applied."""
    ident = make_identity()
    ours = PulidBlockPatch("double", 0, (Injection(model, ident, 1.0, ALWAYS),))

    def foreign(args, extra):
        return ours(args, extra)
    img, txt = torch.randn(1, 6, 32), torch.randn(1, TXT, 32)
    opts = {**options([1.0]), "patches_replace": {"dit": {("double_block", 0): foreign}}}
    out, _ = model_call(opts, lambda o: foreign({"img": img, "txt": txt, "transformer_options": o},
                                                {"original_block": lambda a: {"img": a["img"] * 2, "txt": a["txt"]}}),
                        1, injections=ours.injections)
    torch.testing.assert_close(out["img"], img * 2 + ca_direct(model, 0, ident.cond, img * 2))


def test_patch_objects_are_shared_not_deep_copied(model):
    patch = PulidBlockPatch("double", 0, (Injection(model, make_identity(), 1.0, ALWAYS),))
    options_copy = copy.deepcopy({"patches_replace": {"dit": {("double_block", 0): patch}}})
    assert options_copy["patches_replace"]["dit"][("double_block", 0)] is patch


@pytest.mark.parametrize("activations", [torch.float16, torch.float32])
def test_ca_computes_in_the_activations_dtype_not_the_files(activations):
    """bf16 weights (the official file) on an fp16 or fp32 FLUX: the CA must run in fp16 / fp32. It used to
    run in the file's bf16, which fp16-only GPUs cannot do fast or at all."""
    fp32 = random_model(CAST_OPS)
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    seen = []
    hooks = [m.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].dtype))
             for ca in bf16.pulid_ca for m in (ca.to_q, ca.to_kv, ca.to_out)]
    ident = make_identity()
    patch = PulidBlockPatch("double", 0, (Injection(bf16, ident, 1.0, ALWAYS),))
    img = torch.randn(1, 6, 32).to(activations)
    out = run_double(patch, img, torch.randn(1, TXT, 32).to(activations), options([1.0]))["img"]
    for h in hooks:
        h.remove()
    assert out.dtype == activations
    assert seen and set(seen) == {activations}
    widened = copy.deepcopy(bf16).float()  # the same bf16 values, in fp32
    expected = img.float() * 2 + widened.pulid_ca[0](ident.cond, img.float() * 2)
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


class OpRecorder(TorchDispatchMode):
    """Every aten op run, with the dtype and device of each tensor it returns."""
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        results = out if isinstance(out, (tuple, list)) else [out]
        self.ops.append((str(func), [(t.dtype, t.device.type) for t in results if isinstance(t, torch.Tensor)]))
        return out


def test_no_float64_on_the_device_and_no_host_sync_in_the_blocks(model):
    """MPS has no float64 (gating used to compute in it on the activations' device), and a block patch that
    reads a device value back (bool(), int(), .item(), nonzero) stalls the GPU at every block. The activations
    live on 'meta' here: any read-back inside the patches raises, and every op's output is recorded."""
    meta_model = copy.deepcopy(model).to("meta")
    inj = Injection(meta_model, make_identity(), 1.0, StepRange(1, 100), mask=torch.ones(1, 8, 8))
    patch = PulidBlockPatch("double", 0, (inj,))
    block_ops = []

    def block(a):
        with OpRecorder() as rec:
            out = patch(a, {"original_block": lambda b: {"img": b["img"] * 2, "txt": b["txt"]}})
        block_ops.extend(rec.ops)
        return out

    img, txt = torch.randn(4, 6, 32, device="meta"), torch.randn(4, TXT, 32, device="meta")
    opts = options([1.0, 0.75], cond_or_uncond=(1, 0), patches={("double_block", 0): patch})
    with OpRecorder() as whole:
        out, _ = model_call(opts, lambda o: block({"img": img, "txt": txt, "transformer_options": o}), 4, device="meta")
    assert out["img"].shape == (4, 6, 32)
    assert any("addmm" in op or "mm" in op or "linear" in op for op, _ in block_ops), "the CA did not run"
    float64_on_device = [op for op, outs in whole.ops if (torch.float64, "meta") in outs]
    assert not float64_on_device
    syncs = [op for op, _ in block_ops if "_local_scalar_dense" in op or "nonzero" in op or "item" in op]
    assert not syncs


def test_wrapper_passes_a_plan_in_a_copy_and_leaves_the_callers_dict():
    ident = make_identity()
    patch = PulidBlockPatch("double", 0, (Injection(random_model(), ident, 1.0, ALWAYS),))
    caller = options([1.0], patches={("double_block", 0): patch})
    keys = set(caller)
    _, executor = model_call(caller, lambda o: None, 1, grid=(5, 6), refs=[torch.zeros(1, 16, 3, 3)])
    plan = executor.seen[0][PLAN_KEY]
    assert (plan.image_tokens, plan.text_tokens) == (30, TXT)
    assert set(caller) == keys
    executor = Executor(lambda o: None)
    PulidCallWrapper(applies_in(caller))(executor, torch.zeros(1, 16, 9, 12), transformer_options=caller)  # odd height
    assert executor.seen[0][PLAN_KEY].image_tokens == 5 * 6 and PLAN_KEY not in caller


class ChromaCall:
    """A DIFFUSION_MODEL executor as ComfyUI makes it for Chroma: `original` is the model's `_forward`, whose
    arguments (x, timestep, context, guidance, control, transformer_options) have no y or ref_latents."""

    def __init__(self, patch_size: int):
        self.class_obj = SimpleNamespace(patch_size=patch_size)
        self.original = self._forward
        self.seen = []

    def _forward(self, x, timestep, context, guidance, control=None, transformer_options={}, **kwargs):
        self.seen.append(transformer_options)
        return x

    def __call__(self, *args, **kwargs):
        return self.original(*args, **kwargs)


@pytest.mark.parametrize("patch_size, pixels, grid", [(2, (10, 14), (5, 7)), (16, (36, 52), (3, 4))],
                         ids=["chroma_latent", "radiance_pixels"])
def test_wrapper_reads_chromas_arguments_by_its_signature(patch_size, pixels, grid):
    """Chroma's transformer_options is its 6th argument (FLUX.1's 8th): the plan reaches it, the caller's dict
    stays as it was, and the token grid is the padded-up one (Radiance: 16-pixel patches, 36 px -> 3)."""
    patch = PulidBlockPatch("double", 0, (Injection(random_model(), make_identity(), 1.0, ALWAYS),))
    caller = options([1.0], patches={("double_block", 0): patch})
    keys = set(caller)
    executor = ChromaCall(patch_size)
    x = torch.zeros(1, 3 if patch_size == 16 else 16, *pixels)
    PulidCallWrapper(applies_in(caller))(executor, x, torch.ones(1), torch.zeros(1, TXT, 8), torch.zeros(1), None,
                                         caller, attention_mask=None)
    [seen] = executor.seen
    plan = seen[PLAN_KEY]
    assert (plan.image_tokens, plan.text_tokens) == (grid[0] * grid[1], TXT)
    assert set(caller) == keys and set(seen) == keys | {PLAN_KEY}


def test_a_call_that_does_not_fit_the_models_signature_is_a_typed_error():
    executor = ChromaCall(2)
    patch = PulidBlockPatch("double", 0, (Injection(random_model(), make_identity(), 1.0, ALWAYS),))
    with pytest.raises(IncompatibleModelError, match="signature of its _forward"):
        PulidCallWrapper(applies_in(options([1.0], patches={("double_block", 0): patch})))(
            executor, torch.zeros(1, 16, 4, 4), ref_latents=None)


class StandInFlux:
    """A FLUX forward with ComfyUI's token layout ([image, references] in double blocks, [text, image,
    references] in single blocks) and cheap blocks, calling the dit patches the way `style` does:
    'core' (ComfyUI: transformer_options in args), 'teacache' (TeaCache's own forward: no transformer_options
    in either dict), 'fbcache' (WaveSpeed's First Block Cache: transformer_options beside original_block) or
    'ignore' (a forward that never calls the patches). A cache reuses the previous call's residual when
    `cached` is true: TeaCache skips every block, First Block Cache all but the first double block."""
    DOUBLE, SINGLE = 3, 2  # PuLID after double 0 and 2 and single 0: CFG's 3 CA modules

    def __init__(self, style: str):
        self.style = style
        self.residual = None

    @staticmethod
    def double_block(i):
        return lambda a: {"img": a["img"] * 1.1 + 0.01 * i, "txt": a["txt"] * 0.9}

    @staticmethod
    def single_block(i):
        return lambda a: {"img": a["img"] * 1.05 + 0.02 * i}

    def call_block(self, key, block, args, opts):
        patch = opts.get("patches_replace", {}).get("dit", {}).get(key)
        if patch is None or self.style == "ignore":
            return block(args)
        if self.style == "core":
            return patch({**args, "transformer_options": opts}, {"original_block": block})
        extra = {"original_block": block}
        if self.style == "fbcache":
            extra["transformer_options"] = opts
        return patch(args, extra)

    def forward(self, opts, img, txt, cached=False):
        first = 1 if self.style == "fbcache" else 0
        start = img
        for i in range(self.DOUBLE if not cached else first):
            out = self.call_block(("double_block", i), self.double_block(i), {"img": img, "txt": txt}, opts)
            img, txt = out["img"], out["txt"]
        if cached:
            return img + self.residual
        x = torch.cat([txt, img], 1)
        for i in range(self.SINGLE):
            x = self.call_block(("single_block", i), self.single_block(i), {"img": x}, opts)["img"]
        img = x[:, txt.shape[1]:]
        self.residual = img - start
        return img


class Done(int):
    """In a stand-in sampler's list of evaluations: the sampler's callback for this step (ComfyUI's samplers
    call it right after the step's first evaluation)."""


class StandInSampler:
    """What ComfyUI hands a SAMPLER_SAMPLE wrapper: a callable with the KSAMPLER as class_obj, whose
    sampler_function is named after the k-diffusion sampler."""

    def __init__(self, name: str, body):
        self.class_obj = SimpleNamespace(sampler_function=SimpleNamespace(__name__=f"sample_{name}"))
        self.body = body

    def __call__(self, *args):
        return self.body(*args)


def sample(run_wrapper, schedule, injections, sigmas_called, style="core", cached_calls=(), seed=0, guider="guider",
           sampler="euler", calls_per_evaluation=1):
    """A stand-in sampler run (`sampler` names it): the SAMPLER_SAMPLE wrapper around one evaluation per sigma,
    through the CALC_COND_BATCH wrapper, of `calls_per_evaluation` StandInFlux calls (cond, uncond: CFG batches
    split by memory; the evaluations numbered in `cached_calls` reuse the cache) and a callback per Done(step).
    Returns the last call's image tokens."""
    flux = StandInFlux(style)
    patches = {(f"{kind}_block", block): PulidBlockPatch(kind, ca, injections)
               for kind, block, ca in block_patches(StandInFlux.DOUBLE, StandInFlux.SINGLE)}
    g = torch.Generator().manual_seed(seed)
    img, txt = torch.randn(1, 6, 32, generator=g), torch.randn(1, TXT, 32, generator=g)

    def run(guider, sigmas, extra_args, callback, *rest):
        model_options = extra_args["model_options"]

        def calc_cond_batch(model, conds, x, timestep, model_options, cached):
            for kind in range(calls_per_evaluation):
                opts = {**model_options["transformer_options"], "cond_or_uncond": [kind], "sigmas": timestep}
                out, _ = model_call(opts, lambda o: flux.forward(o, img.clone(), txt.clone(), cached), 1,
                                    injections=injections)
            return out
        out = None
        for n, s in enumerate(sigmas_called):
            if isinstance(s, Done):
                callback(int(s), None, None, len(sigmas) - 1)
                continue
            out = PulidEvaluationWrapper()(calc_cond_batch, None, None, None, torch.tensor([s]), model_options,
                                           n in cached_calls)
        return out
    base_opts = {"patches_replace": {"dit": patches}}
    preview = lambda *progress: None  # noqa: E731 (ComfyUI passes the preview callback)
    return run_wrapper(StandInSampler(sampler, run), guider, schedule,
                       {"model_options": {"transformer_options": base_opts}}, preview)


def test_run_record_names_the_active_steps_and_warns_when_never_active(model, caplog):
    late = Injection(model, make_identity(), 1.0, StepRange(2, 100))
    never = Injection(model, make_identity(), 1.0, StepRange(5, 100))
    with caplog.at_level(logging.INFO, logger="face_migration.injection"):
        sample(PulidRunWrapper(), SCHEDULE, (late, never), [1.0, 0.75, 0.5, 0.25])
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(info) == 1 and "Apply 1" in info[0]
    assert "active on steps [2, 3] of this run's 4 steps (2 model calls, 6 blocks)." in info[0]
    assert len(warnings) == 1
    assert "Apply 2" in warnings[0] and "never active" in warnings[0] and "steps 5-100" in warnings[0]


@pytest.mark.parametrize("style", ["teacache", "fbcache"])
def test_the_identity_reaches_blocks_that_a_cache_packs_forward_calls(model, style):
    """TeaCache's forward calls the patches without transformer_options; First Block Cache passes it beside
    original_block. Both used to leave the output bit-identical to no Apply."""
    injection = (Injection(model, make_identity(), 1.0, ALWAYS),)
    expected = sample(PulidRunWrapper(), SCHEDULE, injection, [1.0, 0.75])
    assert not torch.equal(expected, sample(PulidRunWrapper(), SCHEDULE, (), [1.0, 0.75]))
    torch.testing.assert_close(sample(PulidRunWrapper(), SCHEDULE, injection, [1.0, 0.75], style), expected)


@pytest.mark.parametrize("style, partial", [("teacache", ""), ("fbcache", "; on steps [1, 2] only some")])
def test_the_run_record_counts_the_blocks_that_ran_not_the_calls_planned(model, caplog, style, partial):
    """Calls 1 and 2 come from the cache: TeaCache runs no block there, First Block Cache only the first."""
    injection = Injection(model, make_identity(), 1.0, ALWAYS)
    with caplog.at_level(logging.INFO, logger="face_migration.injection"):
        sample(PulidRunWrapper(), SCHEDULE, (injection,), [1.0, 0.75, 0.5, 0.25], style, cached_calls=(1, 2))
    [info] = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    blocks = 2 * 3 + (2 if style == "fbcache" else 0)
    calls = 4 if style == "fbcache" else 2
    assert f"active on steps [0, 3] of this run's 4 steps ({calls} model calls, {blocks} blocks){partial}" in info


def test_an_identity_that_never_reaches_a_block_is_named(model, caplog):
    """A forward that calls FLUX's blocks without their patches: the log used to say the identity was active."""
    injections = (Injection(model, make_identity(), 1.0, ALWAYS), Injection(model, make_identity(), 0.5, ALWAYS))
    with caplog.at_level(logging.INFO, logger="face_migration.injection"):
        sample(PulidRunWrapper(), SCHEDULE, injections, [1.0, 0.75], "ignore")
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == [logging.WARNING] * 2
    for number, (_, text) in enumerate(messages, start=1):
        assert f"Apply {number} (weight {1.0 if number == 1 else 0.5:g}" in text
        assert "never reached a FLUX block" in text and "another node replaced FLUX's forward" in text
        assert "planned for 2 model calls" in text and "cache" not in text


def test_an_identity_whose_window_a_cache_skipped_is_told_to_look_at_the_cache(model, caplog):
    """TeaCache computes steps 0 and 1 and reuses its output on steps 2 and 3, the window of start_step 2: the
    warning used to say that another node replaced FLUX's forward and to move Apply after it, which changes
    nothing. It names the steps computed and the cache settings that decide them."""
    injection = Injection(model, make_identity(), 1.0, StepRange(2, 100))
    order = SAMPLER_ORDERS["euler"]
    messages = logged(caplog, lambda: sample(PulidRunWrapper(), SCHEDULE, (injection,), order, "teacache",
                                             cached_calls=(order.index(0.5), order.index(0.25))))
    [(level, text)] = messages
    assert level == logging.WARNING and "Apply 1 (weight 1, steps 2-100" in text
    assert "never reached a FLUX block" in text and "planned for 2 model calls" in text
    assert "computed on steps [0, 1] only" in text and "replaced FLUX's forward" not in text
    assert "rel_l1_thresh" in text and "reuse_threshold" in text and "start_percent" in text


@pytest.mark.parametrize("start_step, skipped", [(2, True), (5, False)])
def test_an_identity_whose_window_the_model_was_not_called_on_is_told_to_look_at_the_cache(model, caplog,
                                                                                            start_step, skipped):
    """LazyCache answers the sampler on steps 2 and 3 without calling the model: the identity with start_step 2
    is never planned, and the warning used to say to lower start_step. A window past the run still gets that."""
    injection = Injection(model, make_identity(), 1.0, StepRange(start_step, 100))
    [(level, text)] = logged(caplog, lambda: sample(PulidRunWrapper(), SCHEDULE, (injection,),
                                                    [1.0, Done(0), 0.75, Done(1), Done(2), Done(3)]))
    assert level == logging.WARNING and "the identity was never active in this sampling run of 4 steps" in text
    if skipped:
        assert "ran steps [2, 3] of this Apply's window without calling FLUX" in text and "reuse_threshold" in text
        assert "Lower start_step" not in text
    else:
        assert "Lower start_step" in text and "cache" not in text


def test_the_plan_of_one_call_is_not_seen_by_another_thread(model):
    """The context variable is per thread: a MultiGPU work unit's blocks see their own call's plan only."""
    injection = Injection(model, make_identity(), 1.0, ALWAYS)
    patch = PulidBlockPatch("double", 0, (injection,))
    seen = {}

    def other_thread():
        seen["plan"], _ = find_plan({}, {})

    def body(opts):
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        seen["own"], _ = find_plan({}, {})
        return None
    model_call(options([1.0], patches={("double_block", 0): patch}), body, 1)
    assert seen["plan"] is None and seen["own"] is not None and injection in seen["own"].active
    assert find_plan({}, {}) == (None, None)  # reset when the call ends


def test_two_threads_planning_at_once_on_one_injection_get_their_own_tokens(model):
    """MultiGPU work units: cond and uncond chunks are planned at once by threads with their own device (here:
    dtype) and token grid, on one Apply, while its cache of device tensors evicts (more keys than MAX_CACHED).
    Each plan holds its chunk's identity rows and mask in its own dtype."""
    mask = torch.rand(2, 12, 12)
    injection = Injection(model, make_identity(n=2), 1.0, ALWAYS, mask=mask)
    grids = [(2, 3), (3, 3), (4, 2), (2, 2), (1, 3), (3, 1)]
    barrier, failures = threading.Barrier(2), []

    def work(kind: int, dtypes: tuple):
        barrier.wait()
        for i in range(300):
            grid, dtype = grids[i % len(grids)], dtypes[i % len(dtypes)]
            x = torch.zeros(2, 16, 2 * grid[0], 2 * grid[1], dtype=dtype)
            try:
                call = CallInfo.from_options(options([1.0], cond_or_uncond=(kind,)), x, grid, SCHEDULE)
                planned = injection.plan(call, ALWAYS)
            except Exception as exc:  # noqa: BLE001 - a thread's exception would not fail the test
                failures.append((kind, i, repr(exc)))
                continue
            ident = injection.identity.uncond if kind else injection.identity.cond
            if not (planned.tokens.dtype == dtype and torch.equal(planned.tokens, ident.to(dtype))
                    and torch.equal(planned.mask, mask_to_tokens(mask, grid).to(dtype))):
                failures.append((kind, i, grid, dtype))
    threads = [threading.Thread(target=work, args=(0, (torch.float32, torch.bfloat16))),
               threading.Thread(target=work, args=(1, (torch.float64, torch.float16)))]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[:5]


def test_run_record_keeps_the_schedule_on_the_cpu():
    record = RunRecord(SCHEDULE)
    call = CallInfo.from_options({"sigmas": torch.tensor([0.75]), RUN_KEY: record}, torch.zeros(1, 1, 2, 2), (1, 1),
                                 record.schedule)
    assert call.steps.tolist() == [1] and record.schedule.device.type == "cpu"


def test_fp8_pulid_file_is_widened_to_bf16(tmp_path):
    """fp8 storage: the IDFormer cannot compute in it and MPS has no fp8, so the loader widens it once."""
    layout = expected_layout(CFG)
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "pulid_fp8.safetensors"
    save_file({k: (torch.randn(shape, generator=g) * 0.2).to(torch.float8_e4m3fn) for k, shape in layout.items()},
              str(path))
    loaded, _ = load_pulid_flux(str(path), ops=CAST_OPS)
    assert widen_fp8(loaded) is True
    assert {p.dtype for p in loaded.parameters()} == {FP8_CAST_TO}
    assert widen_fp8(loaded) is False
    stored = load_file(str(path))
    assert torch.equal(loaded.pulid_ca[0].to_q.weight.float(), stored["pulid_ca.0.to_q.weight"].float())
    out = loaded.pulid_ca[0](torch.randn(1, 32, CFG.token_dim), torch.randn(1, 6, 32))
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


def logged(caplog, run) -> list[tuple[int, str]]:
    with caplog.at_level(logging.INFO, logger="face_migration.injection"):
        run()
    return [(r.levelno, r.getMessage()) for r in caplog.records]


# The evaluations of ComfyUI's samplers over SCHEDULE, in their order (k_diffusion/sampling.py, 0.3.64 and 0.33.0):
# each step's first evaluation, its callback, then the step's correctors. The last step (to sigma 0) has none.
MID = [float((a * b) ** 0.5) for a, b in zip(SCHEDULE[:-2].tolist(), SCHEDULE[1:-1].tolist())]  # dpm_2's sigma_mid
SAMPLER_ORDERS = {
    "euler": [1.0, Done(0), 0.75, Done(1), 0.5, Done(2), 0.25, Done(3)],
    # corrector at sigma[i+1]: the sigma step i+1 starts at
    "heun": [1.0, Done(0), 0.75, 0.75, Done(1), 0.5, 0.5, Done(2), 0.25, 0.25, Done(3)],
    "dpm_2": [1.0, Done(0), MID[0], 0.75, Done(1), MID[1], 0.5, Done(2), MID[2], 0.25, Done(3)],
    # correctors at sigma[i+1] and sigma[i+2]; one at the step before last
    "heunpp2": [1.0, Done(0), 0.75, 0.5, 0.75, Done(1), 0.5, 0.25, 0.5, Done(2), 0.25, 0.25, Done(3)],
}
# Per sampler, the model evaluations of steps 2-3 and of steps 0-1.
EVALUATIONS = {"euler": (2, 2), "heun": (3, 4), "dpm_2": (3, 4), "heunpp2": (3, 6)}


@pytest.mark.parametrize("calls_per_evaluation", [1, 2])
@pytest.mark.parametrize("sampler", sorted(SAMPLER_ORDERS))
def test_a_correctors_call_belongs_to_the_step_the_sampler_is_in(model, caplog, sampler, calls_per_evaluation):
    """The identity with start_step 2, and with end_step 2, on each sampler's order of evaluations, one or two
    model calls each (cond and uncond split by memory). Heun's corrector of step 1, called after step 1's
    callback at step 2's sigma, used to be counted in step 2 (start_step 2: 4 calls with the identity instead of
    3; end_step 2: 2 instead of 4 model calls); heunpp2's second corrector in step i+1."""
    late, early = (Injection(model, make_identity(), 1.0, window) for window in (StepRange(2, 100), StepRange(0, 2)))
    records = {}
    for injection in (late, early):
        caplog.clear()
        [(_, info)] = logged(caplog, lambda: sample(PulidRunWrapper(), SCHEDULE, (injection,), SAMPLER_ORDERS[sampler],
                                                    sampler=sampler, calls_per_evaluation=calls_per_evaluation))
        records[injection] = info
    late_calls, early_calls = (n * calls_per_evaluation for n in EVALUATIONS[sampler])
    assert f"active on steps [2, 3] of this run's 4 steps ({late_calls} model calls" in records[late]
    assert f"active on steps [0, 1] of this run's 4 steps ({early_calls} model calls" in records[early]


def test_a_sampler_not_known_to_correct_after_its_callback_is_followed_by_sigma(model, caplog):
    """A sampler of another pack whose corrector lies between two sigmas of the schedule: counted by sigma in
    the step the callback started."""
    order = [1.0, Done(0), MID[0], 0.75, Done(1), MID[1], 0.5, Done(2), MID[2], 0.25, Done(3)]
    injection = Injection(model, make_identity(), 1.0, StepRange(2, 100))
    [(_, info)] = logged(caplog, lambda: sample(PulidRunWrapper(), SCHEDULE, (injection,), order, sampler="other"))
    assert "active on steps [2, 3] of this run's 4 steps (3 model calls" in info


def test_repeated_sigmas_each_keep_their_step(model, caplog):
    """A schedule that repeats a sigma (ModelSamplingFlux with a large shift at a large size): step 1 used to
    be counted as step 2."""
    schedule = torch.tensor([1.0, 0.75, 0.75, 0.25, 0.0])
    calls = [1.0, Done(0), 0.75, Done(1), 0.75, Done(2), 0.25, Done(3)]
    injection = Injection(model, make_identity(), 1.0, StepRange(2, 3))
    [(_, info)] = logged(caplog, lambda: sample(PulidRunWrapper(), schedule, (injection,), calls))
    assert "active on steps [2] of this run's 4 steps (1 model calls" in info


def test_a_split_schedule_warns_that_a_step_window_counts_per_part(model, caplog):
    first, second = torch.tensor([1.0, 0.75, 0.5]), torch.tensor([0.5, 0.25, 0.0])
    windowed = Injection(model, make_identity(), 1.0, StepRange(1, MAX_STEP))
    everywhere = Injection(model, make_identity(), 1.0, StepRange(0, MAX_STEP))
    for part in (first, second):
        caplog.clear()
        messages = logged(caplog, lambda: sample(PulidRunWrapper(), part, (windowed, everywhere), part[:-1].tolist()))
        warnings = [text for level, text in messages if level == logging.WARNING]
        assert len(warnings) == 1 and "Apply 1 (weight 1, steps 1-10000" in warnings[0]
        assert "part of a split schedule" in warnings[0] and "percent timing" in warnings[0]
    caplog.clear()  # a whole run afterwards: no warning
    messages = logged(caplog, lambda: sample(PulidRunWrapper(), SCHEDULE, (windowed,), [1.0, 0.75]))
    assert [level for level, _ in messages] == [logging.INFO]


class ShiftedSampling:
    """model_sampling stand-in: percent p -> sigma (1 - p) ** shift."""
    def __init__(self, shift):
        self.shift = shift

    def percent_to_sigma(self, percent):
        return (1 - percent) ** self.shift


@pytest.mark.parametrize("shift, steps", [(1.0, "[2, 3]"), (2.0, "[3]")])
def test_percent_timing_follows_the_model_sampling_the_sampler_uses(model, caplog, shift, steps):
    """start_percent 0.5 is sigma 0.5 with shift 1 and 0.25 with shift 2; it used to be converted once, with
    the model as Apply saw it (a ModelSamplingFlux after Apply did not move it)."""
    guider = SimpleNamespace(inner_model=SimpleNamespace(model_sampling=ShiftedSampling(shift)))
    injection = Injection(model, make_identity(), 1.0, PercentRange(0.5, 1.0))
    [(_, info)] = logged(caplog, lambda: sample(PulidRunWrapper(), SCHEDULE, (injection,), [1.0, 0.75, 0.5, 0.25],
                                                guider=guider))
    assert f"active on steps {steps} of this run's 4 steps" in info
    assert "percent 0.5-1" in info


def test_percent_timing_outside_a_sampling_run_is_a_named_error(model):
    injection = Injection(model, make_identity(), 1.0, PercentRange(0.0, 1.0))
    patch = PulidBlockPatch("double", 0, (injection,))
    with pytest.raises(FaceMigrationError, match="outside one"):
        run_double(patch, torch.randn(1, 6, 32), torch.randn(1, TXT, 32), options([1.0]))


@pytest.mark.parametrize("make, inputs", [
    (lambda: StepRange(4, 2), "start_step (4) and end_step (2)"),
    (lambda: PercentRange(0.6, 0.6), "start_percent (0.6) and end_percent (0.6)")])
def test_an_empty_window_is_one_named_error(make, inputs):
    with pytest.raises(InvalidInputError, match=re.escape(inputs)):
        make()


@pytest.mark.parametrize("value", [5.0, -1.0, 1.01])
def test_mask_values_outside_zero_one_are_refused(model, value):
    """5.0 used to amplify the identity and -1.0 to act as weight -1."""
    mask = torch.zeros(8, 8)
    mask[:4] = value
    with pytest.raises(InvalidInputError, match=r"'mask'.*holds values from .*expected values in \[0, 1\]"):
        Injection(model, make_identity(), 1.0, ALWAYS, mask=mask)


def test_mask_resampling_overshoot_is_clamped(model):
    mask = torch.full((8, 8), 1.0004)
    mask[0, 0] = -0.0002
    injection = Injection(model, make_identity(), 1.0, ALWAYS, mask=mask)
    assert float(injection.mask.max()) == 1.0 and float(injection.mask.min()) == 0.0


@pytest.mark.parametrize("weight", [-1.5, 5.5])
def test_weights_outside_the_node_range_are_refused(model, weight):
    with pytest.raises(InvalidInputError, match=r"'weight' is .*from -1 to 5"):
        Injection(model, make_identity(), weight, ALWAYS)
    assert Injection(model, make_identity(), -1.0, ALWAYS).weight == -1.0


def test_a_batch_of_one_is_named_without_an_alternative(model):
    """The message used to read "the latent batch has 1 images; expected 1 or 1"."""
    patch = PulidBlockPatch("double", 0, (Injection(model, make_identity(n=2), 1.0, ALWAYS),))
    with pytest.raises(BatchMismatchError, match=r"holds 2 entries but the latent batch has 1 image; expected 1\. "):
        run_double(patch, torch.randn(1, 6, 32), torch.randn(1, TXT, 32), options([1.0]))
