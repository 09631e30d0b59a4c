"""The call plan, block patches and gating, driven the way ComfyUI's FLUX drives them (dicts and tensors)."""
import copy
import logging
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode

from face_migration.errors import BatchMismatchError, FaceMigrationError, InvalidInputError
from face_migration.injection import (PLAN_KEY, RUN_KEY, CallInfo, Injection, PulidBlockPatch, PulidCallWrapper,
                                      PulidRunWrapper, RunRecord, SigmaRange, StepRange, UncondMode, block_patches,
                                      check_mask, mask_to_tokens, step_indices)
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
    """One diffusion-model call through the wrapper, `body(transformer_options)` standing in for FLUX."""
    x = torch.zeros(batch, 16, 2 * grid[0], 2 * grid[1], device=device, dtype=dtype)
    executor = Executor(body)
    wrapper = PulidCallWrapper(applies_in(opts) if injections is None else injections)
    return wrapper(executor, x, None, None, None, None, refs, None, opts), executor


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


def single_block_call(patch, x, opts, refs):
    opts = {**opts, "patches_replace": {"dit": {("single_block", 0): patch}}}
    out, _ = model_call(opts, lambda o: patch({"img": x, "vec": None, "pe": None, "transformer_options": o},
                                              {"original_block": lambda a: {"img": a["img"] + 1}}), x.shape[0],
                        refs=refs)
    return out["img"]


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
    assert (plan.image_tokens, plan.reference_tokens) == (30, 4)
    assert plan.image_start("single", 40 + 30 + 4) == 40
    assert set(caller) == keys
    executor = Executor(lambda o: None)
    PulidCallWrapper(applies_in(caller))(executor, torch.zeros(1, 16, 9, 12), transformer_options=caller)  # odd height
    assert executor.seen[0][PLAN_KEY].image_tokens == 5 * 6 and PLAN_KEY not in caller


def sample(run_wrapper, schedule, patch, sigmas_called):
    """A stand-in sampler run: the SAMPLER_SAMPLE wrapper around model calls at the given sigmas."""
    def sampler(guider, sigmas, extra_args, *rest):
        opts = {**extra_args["model_options"]["transformer_options"], "cond_or_uncond": [0]}
        for s in sigmas_called:
            model_call({**opts, "sigmas": torch.tensor([s])}, lambda o: None, 1)
        return "samples"
    base_opts = {"patches_replace": {"dit": {("double_block", 0): patch}}}
    return run_wrapper(sampler, "guider", schedule, {"model_options": {"transformer_options": base_opts}})


def test_run_record_names_the_active_steps_and_warns_when_never_active(model, caplog):
    late = Injection(model, make_identity(), 1.0, StepRange(2, 100))
    never = Injection(model, make_identity(), 1.0, StepRange(5, 100))
    patch = PulidBlockPatch("double", 0, (late, never))
    with caplog.at_level(logging.INFO, logger="face_migration.injection"):
        assert sample(PulidRunWrapper(), SCHEDULE, patch, [1.0, 0.75, 0.5, 0.25]) == "samples"
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(info) == 1 and "active on steps [2, 3] of this run's 4 steps (2 model calls)" in info[0].getMessage()
    assert len(warnings) == 1
    assert "never active" in warnings[0].getMessage() and "steps 5-100" in warnings[0].getMessage()


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
