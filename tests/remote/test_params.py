"""Inputs: documented ranges, the form fields they become, and the endpoint URL."""
import pytest

from face_migration.remote import (API_PATH, CUSTOM_ENDPOINT, NO_SEED, RANGES, SIZES, FaceMigrationParams,
                                   InvalidParameterError, api_url, endpoint_url)
from face_migration.remote.params import early_problems, format_number, widget_seed


def test_the_nine_documented_sizes_with_1024_square_first():
    assert SIZES[0] == "1024x1024" and len(set(SIZES)) == 9
    assert {"256x256", "512x512", "1024x768", "768x1024", "1024x576", "576x1024", "1024x683", "683x1024"} < set(SIZES)


def test_defaults_match_the_documented_example():
    assert FaceMigrationParams(prompt="p").form_fields() == [
        ("model", "flux-1-schnell"), ("size", "1024x1024"), ("guidance_scale", "4"), ("num_inference_steps", "4"),
        ("id_weight", "1"), ("id_timestep_start", "0"), ("prompt", "p")]


@pytest.mark.parametrize("value, text", [(4.0, "4"), (4.5, "4.5"), (0.1 + 0.2, "0.3"), (2.9999999999, "3"),
                                         (7, "7"), (0.05, "0.05")])
def test_numbers_are_sent_short(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize("guidance, sent", [(7.33, "7.3"), (7.25, "7.3"), (7.349, "7.3"), (9.96, "10"), (3.5, "3.5"),
                                             (4.0, "4"), (1.04, "1")])
def test_guidance_goes_out_on_the_schemas_0_1_steps(guidance, sent):
    assert dict(FaceMigrationParams(prompt="p", guidance_scale=guidance).form_fields())["guidance_scale"] == sent


def test_id_weight_keeps_its_fractions():
    # The platform's slider steps by 1 but the field is a number; fractions are sent as given.
    assert dict(FaceMigrationParams(prompt="p", id_weight=0.85).form_fields())["id_weight"] == "0.85"


def test_seed_is_sent_only_when_set():
    assert ("seed", "0") in FaceMigrationParams(prompt="p", seed=0).form_fields()
    assert "seed" not in dict(FaceMigrationParams(prompt="p").form_fields())


@pytest.mark.parametrize("change, problem", [
    (dict(prompt=""), "prompt: empty"),
    (dict(prompt=" \n "), "prompt: empty"),
    (dict(size="1000x1000"), "size: '1000x1000' is not offered"),
    (dict(guidance_scale=0.5), "guidance_scale: 0.5 is outside 1.0..10.0"),
    (dict(guidance_scale=float("nan")), "guidance_scale: nan is not a number"),
    (dict(num_inference_steps=0), "num_inference_steps: 0 is outside 1..8"),
    (dict(num_inference_steps=9), "num_inference_steps: 9 is outside 1..8"),
    (dict(num_inference_steps=2.5), "num_inference_steps: 2.5 must be a whole number"),
    (dict(id_weight=3.5), "id_weight: 3.5 is outside 0.0..3.0"),
    (dict(id_weight=True), "id_weight: True is not a number"),
    (dict(id_timestep_start=-1), "id_timestep_start: -1 is outside 0..8"),
    (dict(id_timestep_start=4, num_inference_steps=4), "the face would never be used"),
    (dict(seed=-1), "seed: -1 must be a whole number"),
    (dict(seed=2**31), "seed: 2147483648 must be"),
    (dict(model=""), "model: '' is not a model name"),
    (dict(model="flux 1"), "model: 'flux 1' is not a model name"),
])
def test_each_bad_input_is_named_with_the_fix(change, problem):
    params = FaceMigrationParams(**{"prompt": "p", **change})
    with pytest.raises(InvalidParameterError) as caught:
        params.validated()
    assert problem in str(caught.value)


@pytest.mark.parametrize("name", RANGES)
def test_range_edges_are_valid(name):
    low, high, _, _ = RANGES[name]
    for value in (low, high):
        if name == "id_timestep_start" and value == high:
            value = high - 1  # must stay below the steps (at most 8); covered above
        values = {"num_inference_steps": 8, "id_timestep_start": 0, name: value}
        assert FaceMigrationParams(prompt="p", **values).problems() == [], (name, value)


def test_all_problems_are_reported_at_once():
    problems = FaceMigrationParams(prompt="", size="1x1", guidance_scale=99).problems()
    assert [p.split(":")[0] for p in problems] == ["prompt", "size", "guidance_scale"]


@pytest.mark.parametrize("base, url", [
    ("https://moark.ai", "https://moark.ai" + API_PATH),
    ("https://ai.gitee.com/", "https://ai.gitee.com" + API_PATH),
    ("https://example.com/v1", "https://example.com" + API_PATH),
    ("https://example.com/proxy/v1/", "https://example.com/proxy" + API_PATH),
    ("https://example.com" + API_PATH, "https://example.com" + API_PATH),
    (" http://127.0.0.1:8199 ", "http://127.0.0.1:8199" + API_PATH),
    ("http://localhost:8000", "http://localhost:8000" + API_PATH),
    ("http://LocalHost:8000", "http://LocalHost:8000" + API_PATH),
    ("http://[::1]:8000", "http://[::1]:8000" + API_PATH),
    ("http://10.0.0.7", "http://10.0.0.7" + API_PATH),
    ("http://192.168.1.20:8000", "http://192.168.1.20:8000" + API_PATH),
])
def test_endpoint_urls(base, url):
    assert api_url(base) == url


@pytest.mark.parametrize("base, problem", [
    ("", "is not a URL"), ("moark.ai", "is not a URL"), ("ftp://moark.ai", "is not a URL"),
    ("http://moark.ai", "plain http"), ("http://8.8.8.8", "plain http"),
    # *.localhost names go to the resolver like any other name; only the exact name localhost is trusted
    ("http://api.localhost:8000", "plain http"), ("http://localhost.:8000", "plain http"),
    ("http://localhost.example.com", "plain http"),
    ("https://moark.ai/?key=1", "query or fragment"),
    ("https://user:hunter2@moark.ai", "user name or password"),
])
def test_bad_endpoints_are_refused(base, problem):
    with pytest.raises(InvalidParameterError, match=problem):
        api_url(base)


def test_endpoint_choice_or_custom_base_url():
    assert endpoint_url("https://ai.gitee.com") == "https://ai.gitee.com" + API_PATH
    assert endpoint_url(CUSTOM_ENDPOINT, "http://127.0.0.1:9/") == "http://127.0.0.1:9" + API_PATH
    with pytest.raises(InvalidParameterError, match="custom_base_url: empty while endpoint is 'custom'"):
        endpoint_url(CUSTOM_ENDPOINT, " ")
    with pytest.raises(InvalidParameterError, match="endpoint: 'https://evil.example' is not one of"):
        endpoint_url("https://evil.example")


def test_seed_widget_minus_one_means_not_sent():
    assert widget_seed(NO_SEED) is None and widget_seed(0) == 0 and widget_seed(77) == 77


def test_early_problems_skip_linked_inputs_and_catch_the_rest():
    assert early_problems(prompt=None, endpoint="https://moark.ai") == []
    assert early_problems(prompt="x", num_inference_steps=4, id_timestep_start=4)[0].startswith("id_timestep_start")
    found = early_problems(prompt="", endpoint=CUSTOM_ENDPOINT, custom_base_url="")
    assert [p.split(":")[0] for p in found] == ["prompt", "custom_base_url"]
