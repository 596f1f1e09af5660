"""Each family adapter against what the family's own processor produces (where transformers can build that
processor without torchvision: Idefics3Processor, Gemma3Processor), or against the image processor and the
hub's token arithmetic (Qwen2.5-VL, Qwen3-VL: their processors insist on a video processor)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, Gemma3Processor, Idefics3Processor

from services.common.multimodal import family_for
from services.model_builder import build_all
from services.vision_engine.captioner.loader import load_vision_model
from services.vision_engine.captioner.prompts import render_prompt
from tests.support.processes import REPO_ROOT

KINDS = {
    "vision": "qwen2_vl",
    "qwen25_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
    "smolvlm": "idefics3",
    "gemma3": "gemma3",
}


@pytest.fixture(scope="module")
def paths(tiny_models):
    return {**tiny_models, **build_all(REPO_ROOT / "models" / "tiny", only=set(KINDS) - {"vision"})}


@pytest.fixture(scope="module")
def loaded(paths):
    cache = {}

    def load(kind):
        if kind not in cache:
            cache[kind] = load_vision_model(str(paths[kind]), dtype="f32", device="cpu")
        return cache[kind]

    return load


def picture(size=(700, 300)) -> Image.Image:
    """Not uniform, so a resize or a tile in the wrong place shows in the pixels."""
    image = Image.new("RGB", size, (10, 200, 30))
    image.paste((240, 20, 90), (0, 0, size[0] // 3, size[1] // 2))
    return image


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_stand_in_is_served_by_its_adapter(paths, kind):
    assert family_for(AutoConfig.from_pretrained(paths[kind])).name == KINDS[kind]


def test_an_unknown_model_type_names_the_supported_ones():
    class Config:
        model_type = "llava"

    with pytest.raises(ValueError, match="no vision adapter for model_type 'llava'") as info:
        family_for(Config())
    assert all(name in str(info.value) for name in KINDS.values())


@pytest.mark.parametrize("budget", [64, 200, 256, 600, 100_000])
def test_idefics3_matches_idefics3processor_at_the_edge_its_budget_allows(loaded, budget):
    model = loaded("smolvlm")
    family, image = model.family, picture()
    processor = Idefics3Processor(image_processor=family.image_processor, tokenizer=model.tokenizer, image_seq_len=64)
    prompt = render_prompt(model.tokenizer, family.placeholder, "Describe.")
    encoded = family.encode(image, budget)
    fits = []
    for edge in (2048, 1536, 1024, 512):
        out = processor(
            text=[prompt], images=[[image]], return_tensors="pt", add_special_tokens=False, size={"longest_edge": edge}
        )
        count = int((out["input_ids"] == family.placeholder_id).sum())
        if count <= budget or edge == 512:
            fits.append((edge, out, count))
    _, expected, count = fits[0]  # the largest edge within the budget (one tile when none is)
    assert family.prompt_ids(prompt, [encoded]) == expected["input_ids"][0].tolist()
    assert encoded.image_tokens == count and (count <= budget or count == 64)
    for key in ("pixel_values", "pixel_attention_mask"):
        assert torch.equal(encoded.tensors[key], expected[key])


def test_idefics3_collate_pads_tiles_and_masks_like_a_processor_batch(loaded):
    model = loaded("smolvlm")
    family = model.family
    big, small = family.encode(picture((1200, 500)), 100_000), family.encode(picture((60, 40)), 64)
    batch = family.collate([big, small])
    tiles = big.tensors["pixel_values"].shape[1]
    assert small.tensors["pixel_values"].shape[1] == 1 < tiles
    assert batch["pixel_values"].shape == (2, tiles, 3, 512, 512)
    assert torch.equal(batch["pixel_values"][0], big.tensors["pixel_values"][0])
    assert torch.equal(batch["pixel_values"][1, :1], small.tensors["pixel_values"][0])
    assert not batch["pixel_values"][1, 1:].any() and not batch["pixel_attention_mask"][1, 1:].any()
    assert batch["pixel_attention_mask"][1, 0].all()


def test_gemma3_matches_gemma3processor(loaded):
    model = loaded("gemma3")
    family, image = model.family, picture()
    processor = Gemma3Processor(image_processor=family.image_processor, tokenizer=model.tokenizer, image_seq_length=256)
    prompt = render_prompt(model.tokenizer, family.placeholder, "Describe.")
    expected = processor(text=[prompt], images=[[image]], return_tensors="pt", add_special_tokens=False)
    encoded = family.encode(image, 64)  # a fixed cost: the budget does not change it
    ids = family.prompt_ids(prompt, [encoded])
    assert ids == expected["input_ids"][0].tolist() and encoded.image_tokens == 256
    assert torch.equal(encoded.tensors["pixel_values"], expected["pixel_values"])
    mask = torch.ones(1, len(ids), dtype=torch.long)
    assert torch.equal(family.text_inputs(torch.tensor([ids]), mask)["token_type_ids"], expected["token_type_ids"])


@pytest.mark.parametrize(("kind", "pixels_per_token"), [("qwen25_vl", 28), ("qwen3_vl", 32)])
def test_qwen_families_match_their_image_processor_and_token_arithmetic(loaded, kind, pixels_per_token):
    model = loaded(kind)
    family = model.family
    image = picture((pixels_per_token * 20, pixels_per_token * 10))  # exactly 200 tokens at its own size
    encoded = family.encode(image, 10_000)
    assert encoded.image_tokens == family.natural_tokens(*image.size) == 200
    assert encoded.tokens == (model.tokenizer.convert_tokens_to_ids("<|image_pad|>"),) * 200
    assert torch.equal(encoded.tensors["image_grid_thw"], torch.tensor([[1, 20, 40]]))
    reference = family.image_processor(images=[image], return_tensors="pt")  # the repo's own pixel range
    assert torch.equal(encoded.tensors["pixel_values"], reference["pixel_values"])
    assert family.encode(image, 50).image_tokens <= max(50, family.min_pixels // pixels_per_token**2)


def test_qwen3_vl_keeps_its_pixel_floor(loaded):
    """Qwen3-VL's preprocessor_config.json asks for at least 65,536 pixels (64 tokens of 32x32)."""
    family = loaded("qwen3_vl").family
    assert family.encode(picture((40, 40)), 4).image_tokens >= 64


@pytest.mark.parametrize("kind", ["vision", "qwen25_vl", "qwen3_vl"])
def test_qwen_families_give_generate_the_image_token_types_mrope_needs(loaded, kind):
    """Without `mm_token_type_ids` transformers gives image tokens plain 1-D positions; with the family's, the
    image's tokens get M-RoPE's 2-D grid (height and width components differ) and the text after it resumes."""
    model = loaded(kind)
    family = model.family
    encoded = family.encode(picture((family.patch_factor * 4, family.patch_factor * 2)), 10_000)
    prompt = render_prompt(model.tokenizer, family.placeholder, "Describe")
    ids = torch.tensor([[model.pad_token_id] * 3 + family.prompt_ids(prompt, [encoded])])
    mask = torch.tensor([[0] * 3 + [1] * (ids.shape[1] - 3)])
    types = family.text_inputs(ids, mask)["mm_token_type_ids"]
    assert int(types.sum()) == encoded.image_tokens and not types[0, :3].any()  # image tokens only, no padding
    grid = encoded.tensors["image_grid_thw"]
    positions, _ = model.model.model.get_rope_index(
        input_ids=ids, mm_token_type_ids=types, image_grid_thw=grid, attention_mask=mask
    )
    image = positions[:, 0, types[0].bool()]  # (temporal, height, width) of the image tokens
    assert not torch.equal(image[1], image[2])  # a 2-D grid, not one running position


@pytest.mark.parametrize("kind", ["vision", "qwen25_vl", "qwen3_vl"])
@pytest.mark.parametrize("budget", [4, 64, 300, 5000])
def test_an_image_handed_over_encodes_as_ours_in_another_processor(loaded, kind, budget):
    # What vLLM gets (handed_over's image, kept_as_they_are's arguments) through the checkpoint's processor must be
    # what `encode` feeds the vision tower: the same grid, token count and pixels. The sizes include ones where
    # the processor's rounding is not its own fixed point under the budget's range (700x300 at 4 tokens).
    family = loaded(kind).family
    for size in [(700, 300), (64, 48), (33, 900), (2000, 1500)]:
        image = picture(size)
        ours, handed = family.encode(image, budget), family.handed_over(image, budget)
        assert handed.tensors == {} and (handed.tokens, handed.image_tokens) == (ours.tokens, ours.image_tokens)
        theirs = family.image_processor(
            images=[handed.image], return_tensors="pt", **family.kept_as_they_are([handed.image, picture((28, 28))])
        )
        assert torch.equal(theirs["image_grid_thw"], ours.tensors["image_grid_thw"])
        assert torch.allclose(theirs["pixel_values"], ours.tensors["pixel_values"], atol=1e-6)


def test_families_that_size_images_themselves_hand_over_nothing(loaded):
    assert all(loaded(kind).family.handed_over(picture(), 64) is None for kind in ("smolvlm", "gemma3"))
    assert [loaded(kind).family.hands_over for kind in ("smolvlm", "gemma3", "vision", "qwen25_vl", "qwen3_vl")] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_collapsing_the_placeholders_undoes_their_expansion():
    from services.common.multimodal import EncodedImage
    from services.common.multimodal.family import collapse_placeholders, expand_placeholders

    images = [EncodedImage({}, (9, 9, 9), 3), EncodedImage({}, (7, 9, 8, 9), 4)]
    prompt = [1, 9, 2, 3, 9, 4]
    expanded = expand_placeholders(prompt, 9, images)
    assert expanded == [1, 9, 9, 9, 2, 3, 7, 9, 8, 9, 4]
    assert collapse_placeholders(expanded, 9, images) == prompt
    with pytest.raises(ValueError, match="in order"):
        collapse_placeholders([1, 9, 2], 9, images)
