"""The block patches and gating, driven the way ComfyUI's FLUX drives them (dicts and tensors)."""
import copy

import pytest
import torch

from face_migration.errors import FaceMigrationError
from face_migration.injection import (CALL_CONTEXT_KEY, CallContext, Injection, PulidBlockPatch, SigmaRange,
                                      StepRange, TokenGridWrapper, UncondMode, block_patches, mask_to_tokens,
                                      plan_rows)
from face_migration.pulid.identity import PulidIdentity
from face_migration.pulid.model import PulidConfig, PulidFlux

CFG = PulidConfig(encoder_dim=64, encoder_depth=5, id_mapping_dim=32, vit_dim=16, vit_mapping_dim=32,
                  token_dim=48, flux_hidden=32, ca_inner_dim=128, num_ca=3)
SCHEDULE = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
GRID = (2, 3)  # 6 generated-image tokens
TXT = 4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = PulidFlux(CFG).eval().requires_grad_(False)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return m


def make_identity(n=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return PulidIdentity(torch.randn(n, 32, CFG.token_dim, generator=g),
                         torch.randn(n, 32, CFG.token_dim, generator=g), "fp")


def options(sigmas, cond_or_uncond=(0,), grid=GRID):
    return {"sigmas": torch.tensor(sigmas), "sample_sigmas": SCHEDULE, "cond_or_uncond": list(cond_or_uncond),
            CALL_CONTEXT_KEY: CallContext(grid)}


def run_double(patch, img, txt, transformer_options):
    block = lambda a: {"img": a["img"] * 2, "txt": a["txt"] * 2}  # noqa: E731 - a stand-in FLUX block
    return patch({"img": img, "txt": txt, "vec": None, "pe": None, "attn_mask": None,
                  "transformer_options": transformer_options}, {"original_block": block})


def ca_direct(model, index, tokens, x, weight=1.0):
    return weight * model.pulid_ca[index](tokens, x)


def test_placement_follows_official_intervals():
    placed = block_patches(19, 38)
    assert len(placed) == 20
    assert [b for k, b, _ in placed if k == "double"] == list(range(0, 19, 2))
    assert [b for k, b, _ in placed if k == "single"] == list(range(0, 38, 4))
    assert [c for *_, c in placed] == list(range(20))
    assert block_patches(1, 1) == [("double", 0, 0), ("single", 0, 1)]


def test_plan_rows_expands_sigmas_per_chunk():
    plan = plan_rows({"sigmas": torch.tensor([0.5, 0.25]), "cond_or_uncond": [1, 0]}, 4, torch.device("cpu"))
    assert plan.sigmas.tolist() == [0.5, 0.25, 0.5, 0.25]
    assert plan.is_uncond.tolist() == [True, True, False, False]
    assert plan.latent_index.tolist() == [0, 1, 0, 1]


def test_step_range_decides_per_row_and_handles_intermediate_sigmas():
    rng = StepRange(start=1, end=3)
    sig = torch.tensor([1.0, 0.75, 0.6, 0.5, 0.25, 0.0])
    assert rng.active(sig, {"sample_sigmas": SCHEDULE}).tolist() == [False, True, True, True, False, False]
    with pytest.raises(FaceMigrationError, match="percent mode"):
        rng.active(sig, {})


def test_sigma_range_is_inclusive():
    assert SigmaRange(high=0.75, low=0.25).active(torch.tensor([1.0, 0.75, 0.5, 0.25, 0.1]), {}).tolist() == \
        [False, True, True, True, False]


def test_double_block_adds_weighted_ca_to_image_tokens_only(model):
    ident = make_identity()
    inj = Injection(model, ident, 0.7, StepRange(0, 100))
    patch = PulidBlockPatch("double", 0, (inj,))
    img, txt = torch.randn(1, 6, 32), torch.randn(1, TXT, 32)
    opts = options([1.0])
    out = run_double(patch, img, txt, opts)
    expected = img * 2 + ca_direct(model, 0, ident.cond, img * 2, 0.7)
    torch.testing.assert_close(out["img"], expected)
    torch.testing.assert_close(out["txt"], txt * 2)
    assert opts[CALL_CONTEXT_KEY].txt_len == TXT  # recorded for the single blocks


def test_single_block_skips_text_and_kontext_reference_tokens(model):
    ident = make_identity()
    patch = PulidBlockPatch("single", 2, (Injection(model, ident, 1.0, StepRange(0, 100)),))
    ctx = CallContext(GRID, txt_len=TXT)
    opts = {**options([1.0]), CALL_CONTEXT_KEY: ctx}
    x = torch.randn(1, TXT + 6 + 5, 32)  # text, generated image, 5 Kontext reference tokens
    out = patch({"img": x, "vec": None, "pe": None, "transformer_options": opts},
                {"original_block": lambda a: {"img": a["img"] + 1}})["img"]
    base = x + 1
    torch.testing.assert_close(out[:, :TXT], base[:, :TXT])
    torch.testing.assert_close(out[:, TXT + 6:], base[:, TXT + 6:])
    torch.testing.assert_close(out[:, TXT:TXT + 6], base[:, TXT:TXT + 6] + ca_direct(model, 2, ident.cond, base[:, TXT:TXT + 6]))


def test_single_block_without_text_length_fails_clearly(model):
    patch = PulidBlockPatch("single", 0, (Injection(model, make_identity(), 1.0, StepRange(0, 100)),))
    with pytest.raises(FaceMigrationError, match="text length"):
        patch({"img": torch.randn(1, 10, 32), "transformer_options": options([1.0])},
              {"original_block": lambda a: {"img": a["img"]}})


def test_gating_per_row_and_uncond_tokens(model):
    ident = make_identity()
    inj = Injection(model, ident, 1.0, StepRange(1, 100))
    patch = PulidBlockPatch("double", 1, (inj,))
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
    patch = PulidBlockPatch("double", 0, (Injection(model, ident, 1.0, StepRange(0, 100), mode),))
    img, txt = torch.randn(2, 6, 32), torch.randn(2, TXT, 32)
    out = run_double(patch, img, txt, options([1.0], cond_or_uncond=(1, 0)))["img"]
    base = img * 2
    uncond_row = base[0] if expect is None else base[0] + ca_direct(model, 0, ident.cond, base[:1])[0]
    torch.testing.assert_close(out[0], uncond_row)
    torch.testing.assert_close(out[1], base[1] + ca_direct(model, 0, ident.cond, base[1:])[0])


def test_one_identity_per_batch_image_and_mismatch_error(model):
    ident = make_identity(n=2)
    patch = PulidBlockPatch("double", 0, (Injection(model, ident, 1.0, StepRange(0, 100)),))
    img, txt = torch.randn(2, 6, 32), torch.randn(2, TXT, 32)
    out = run_double(patch, img, txt, options([1.0, 1.0]))["img"]
    for row in range(2):
        torch.testing.assert_close(out[row], img[row] * 2 + ca_direct(model, 0, ident.cond[row:row + 1], img[row:row + 1] * 2)[0])
    with pytest.raises(FaceMigrationError, match="2 separate identities but the batch has 3"):
        run_double(patch, torch.randn(3, 6, 32), torch.randn(3, TXT, 32), options([1.0] * 3))


def test_mask_resized_to_token_grid_any_aspect():
    mask = torch.zeros(1, 40, 90)
    mask[:, :, :30] = 1.0  # left third
    tokens = mask_to_tokens(mask, (2, 3))
    assert tokens.shape == (1, 6, 1)
    assert tokens.flatten().tolist() == [1, 0, 0, 1, 0, 0]
    assert mask_to_tokens(torch.ones(16, 16), (4, 5)).shape == (1, 20, 1)


def test_two_masked_identities_add_up_on_the_same_input(model):
    left, right = torch.zeros(1, 20, 30), torch.zeros(1, 20, 30)
    left[..., :10], right[..., 20:] = 1, 1
    a, b = make_identity(seed=2), make_identity(seed=3)
    inj_a = Injection(model, a, 1.0, StepRange(0, 100), mask=left)
    inj_b = Injection(model, b, 0.5, StepRange(0, 100), mask=right)
    patch = PulidBlockPatch("double", 0, (inj_a,)).extended(inj_b)
    img, txt = torch.randn(1, 6, 32), torch.randn(1, TXT, 32)
    out = run_double(patch, img, txt, options([1.0]))["img"]
    base = img * 2
    ca_a, ca_b = ca_direct(model, 0, a.cond, base), ca_direct(model, 0, b.cond, base, 0.5)
    torch.testing.assert_close(out[0, [0, 3]], base[0, [0, 3]] + ca_a[0, [0, 3]])  # left column: A only
    torch.testing.assert_close(out[0, [2, 5]], base[0, [2, 5]] + ca_b[0, [2, 5]])  # right column: B only
    torch.testing.assert_close(out[0, [1, 4]], base[0, [1, 4]])  # middle: nobody


def test_foreign_patch_is_chained_and_kept_in_model_management(model):
    calls = []

    class Foreign:
        def __call__(self, args, extra):
            calls.append("foreign")
            return extra["original_block"](args)

        def models(self):
            return ["foreign-model"]

    patch = PulidBlockPatch("double", 0, (Injection(model, make_identity(), 0.0, StepRange(0, 100)),),
                            previous=Foreign(), managed_models=("pulid-model",))
    img = torch.randn(1, 6, 32)
    out = run_double(patch, img, torch.randn(1, TXT, 32), options([1.0]))
    assert calls == ["foreign"]
    torch.testing.assert_close(out["img"], img * 2)  # weight 0 adds nothing
    assert patch.models() == ["pulid-model", "foreign-model"]
    assert patch.extended(patch.injections[0], ("pulid-model",)).models() == ["pulid-model", "foreign-model"]


def test_patch_objects_are_shared_not_deep_copied(model):
    patch = PulidBlockPatch("double", 0, (Injection(model, make_identity(), 1.0, StepRange(0, 100)),))
    options_copy = copy.deepcopy({"patches_replace": {"dit": {("double_block", 0): patch}}})
    assert options_copy["patches_replace"]["dit"][("double_block", 0)] is patch


def test_follows_activation_dtype(model):
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    ident = make_identity()
    patch = PulidBlockPatch("double", 0, (Injection(bf16, ident, 1.0, StepRange(0, 100)),))
    img = torch.randn(1, 6, 32, dtype=torch.bfloat16)
    out = run_double(patch, img, torch.randn(1, TXT, 32, dtype=torch.bfloat16), options([1.0]))["img"]
    assert out.dtype == torch.bfloat16
    expected = img * 2 + bf16.pulid_ca[0](ident.cond.bfloat16(), img * 2)
    torch.testing.assert_close(out, expected)


def test_token_grid_wrapper_passes_a_copy_with_the_grid():
    seen = {}

    class Executor:
        class_obj = type("FakeFlux", (), {"patch_size": 2})()

        def __call__(self, *args, **kwargs):
            seen.update(kwargs["transformer_options"] if "transformer_options" in kwargs else args[-1])
            return "done"

    caller = {"patches_replace": {}}
    x = torch.zeros(1, 16, 9, 12)  # odd height pads up to 5 tokens
    assert TokenGridWrapper()(Executor(), x, None, None, None, None, None, None, caller) == "done"
    assert seen[CALL_CONTEXT_KEY].grid == (5, 6)
    assert CALL_CONTEXT_KEY not in caller
    TokenGridWrapper()(Executor(), x, transformer_options=caller)
    assert CALL_CONTEXT_KEY not in caller
