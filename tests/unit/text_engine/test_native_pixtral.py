"""The Pixtral/Mistral3 adapter against transformers' own PixtralProcessor and Mistral3 vision tower.

PixtralProcessor's module imports a torchvision-only image processor at import time; its token expansion
(`replace_image_token`) and image geometry do not use it, so the test loads the module with that one import
pointed at the PIL implementation's `get_resize_output_image_size` (the same function, without torchvision)
and calls the processor's own method.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import types
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText

from services.common.multimodal import load_family
from services.common.multimodal.pixtral import PixtralFamily
from services.common.tokenizers import load_tokenizer

SIZES = [(100, 60), (64, 64), (28, 500), (1600, 1200), (37, 29), (3000, 200)]  # (width, height)


@pytest.fixture(scope="module")
def family(tiny_models) -> PixtralFamily:
    path = tiny_models["text"]
    found = load_family(str(path), AutoConfig.from_pretrained(path), load_tokenizer(str(path)))
    assert isinstance(found, PixtralFamily)
    return found


@pytest.fixture(scope="module")
def pixtral_processor():
    """transformers' PixtralProcessor class, imported without torchvision (see the module docstring)."""
    from transformers.models.pixtral import image_processing_pil_pixtral

    with pytest.MonkeyPatch.context() as patch:
        stub = types.ModuleType("transformers.models.pixtral.image_processing_pixtral")
        stub.get_resize_output_image_size = image_processing_pil_pixtral.get_resize_output_image_size
        patch.setitem(sys.modules, stub.__name__, stub)
        name = "transformers.models.pixtral.processing_pixtral"
        patch.delitem(sys.modules, name, raising=False)
        module = importlib.import_module(name)
        patch.delitem(sys.modules, name)  # the stubbed import stays out of every other test
    return module.PixtralProcessor


def processor_tokens(pixtral_processor, family: PixtralFamily, image: Image.Image, edge: int) -> list[int]:
    """What PixtralProcessor writes for `image`: its image processor at patch * merge, then its own expansion."""
    processor = SimpleNamespace(
        patch_size=14,
        spatial_merge_size=2,
        image_token="[IMG]",
        image_break_token="[IMG_BREAK]",
        image_end_token="[IMG_END]",
    )
    inputs = family.image_processor(
        images=[image], return_tensors="pt", size={"longest_edge": edge}, patch_size={"height": 28, "width": 28}
    )
    text = pixtral_processor.replace_image_token(processor, {"image_sizes": inputs["image_sizes"].tolist()}, 0)
    return family.tokenizer.encode(text, add_special_tokens=False)


def test_the_stand_in_ships_the_hub_image_processor(tiny_models):
    processor = AutoImageProcessor.from_pretrained(tiny_models["text"])
    assert type(processor).__name__.startswith("PixtralImageProcessor")
    assert processor.size.longest_edge == 1540 and processor.patch_size == 14


@pytest.mark.parametrize("size", SIZES)
def test_expansion_matches_pixtral_processor_at_full_size(family, pixtral_processor, size):
    image = Image.new("RGB", size, (120, 40, 200))
    encoded = family.encode(image, max_image_tokens=10**6)
    assert list(encoded.tokens) == processor_tokens(pixtral_processor, family, image, 1540)
    assert encoded.image_tokens == encoded.tokens.count(family.placeholder_id) == family.natural_tokens(*size)


@pytest.mark.parametrize("budget", [4, 16, 64, 256])
@pytest.mark.parametrize("size", SIZES[:4])
def test_a_token_budget_is_the_largest_edge_that_fits(family, pixtral_processor, size, budget):
    image = Image.new("RGB", size, (10, 200, 90))
    encoded = family.encode(image, max_image_tokens=budget)
    edge = family.edge_for(*size, budget)
    assert list(encoded.tokens) == processor_tokens(pixtral_processor, family, image, edge)
    rows, cols = family.grid(*size, edge)
    assert encoded.image_tokens == rows * cols
    # Within the budget, and one pixel more of edge would not be (unless a single cell already exceeds it).
    assert encoded.image_tokens <= budget or edge == family.cell
    if edge < family.longest_edge:
        assert family.natural_tokens(*size) > budget and math.prod(family.grid(*size, edge + 1)) > budget


def test_pixel_values_are_the_processors_own(family):
    image = Image.effect_noise((90, 130), 60).convert("RGB")
    encoded = family.encode(image, max_image_tokens=10**6)
    expected = family.image_processor(images=[image], return_tensors="pt", patch_size={"height": 28, "width": 28})
    assert torch.equal(encoded.tensors["pixel_values"], expected["pixel_values"])
    assert encoded.tensors["image_sizes"].tolist() == [[140, 112]]  # 130 -> 5 rows, 90 -> 4 columns of 28 px


def test_collated_images_of_different_sizes_encode_as_each_alone(family, tiny_models):
    model = AutoModelForImageTextToText.from_pretrained(tiny_models["text"], dtype=torch.float32).eval()
    images = [family.encode(Image.effect_noise(size, 70).convert("RGB"), 10**6) for size in [(60, 90), (150, 40)]]
    with torch.inference_mode():
        alone = [model.get_image_features(**image.tensors).pooler_output[0] for image in images]
        together = model.get_image_features(**family.collate(images)).pooler_output
    assert [t.shape[0] for t in together] == [image.image_tokens for image in images]
    for a, b in zip(alone, together):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("budget", [1, 16, 64, 10**6])
@pytest.mark.parametrize("size", SIZES)
def test_an_image_handed_over_encodes_as_ours_in_another_processor(family, size, budget):
    # What vLLM gets (handed_over's image) must be what `encode` feeds the tower: the same grid, tokens and
    # pixels, through PixtralProcessor's image processor (it passes patch * merge) under kept_as_they_are, as
    # at the processor's defaults (patch 14: whole 28 px cells are whole 14 px patches too).
    image = Image.effect_noise(size, 50).convert("RGB")
    ours, handed = family.encode(image, budget), family.handed_over(image, budget)
    assert handed.tensors == {} and (handed.tokens, handed.image_tokens) == (ours.tokens, ours.image_tokens)
    assert [handed.image.height, handed.image.width] == ours.tensors["image_sizes"][0].tolist()
    kept = family.kept_as_they_are([handed.image, Image.new("RGB", (28, 28))])
    for patch in ({"patch_size": {"height": 28, "width": 28}}, {}):
        theirs = family.image_processor(images=[handed.image], return_tensors="pt", **kept, **patch)
        assert torch.equal(theirs["image_sizes"], ours.tensors["image_sizes"])
        assert torch.allclose(theirs["pixel_values"], ours.tensors["pixel_values"], atol=1e-6)


def test_the_tekken_file_carries_the_image_encoders_sizes(family, tiny_models):
    # mistral-common builds its ImageEncoder (vLLM's Pixtral processor for the native format) from this section.
    image = json.loads((tiny_models["text"] / "tekken.json").read_text())["image"]
    assert image == {
        "image_patch_size": family.config.vision_config.patch_size,
        "max_image_size": family.longest_edge,
        "spatial_merge_size": family.config.spatial_merge_size,
    }
