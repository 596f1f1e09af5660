"""Idefics3 / SmolVLM: an image becomes 512-pixel tiles plus a downscaled global view, 64 tokens each.

The template writes one `<image>` per image. The image processor resizes the image so its longest edge is
`size.longest_edge` (2048 for SmolVLM: small images are scaled up), cuts it into a grid of
`max_image_size` tiles and adds the whole image at tile size; `pixel_values` is [1, tiles, 3, 512, 512] with a
`pixel_attention_mask`. The processor's prompt for it (Idefics3Processor, reproduced here) is, per row,
`<fake_token_around_image><row_r_col_c>` + 64 x `<image>` for each tile and a newline, then
`\\n<fake_token_around_image><global-img>` + 64 x `<image>` + `<fake_token_around_image>`; an image that fits
one tile is only the global part. The token budget picks the resize edge: 2048, 1536, 1024 or 512 pixels
(the last is one tile, 64 tokens).
"""

from __future__ import annotations

import torch
from PIL import Image

from .family import EncodedImage, VisionFamily


class Idefics3Family(VisionFamily):
    """Idefics3 and SmolVLM (v1) checkpoints: tiles of a fixed token cost, their count set by the budget."""

    name = "idefics3"
    model_types = ("idefics3",)
    fake_token = "<fake_token_around_image>"
    global_token = "<global-img>"

    @property
    def placeholder(self) -> str:
        return "<image>"

    @property
    def tile(self) -> int:
        return self.image_processor.max_image_size["longest_edge"]

    @property
    def longest_edge(self) -> int:
        return self.image_processor.size["longest_edge"]

    @property
    def seq_len(self) -> int:
        """Image tokens per tile (the config's image_seq_len)."""
        return self.config.image_seq_len

    def _grid(self, width: int, height: int, longest_edge: int) -> tuple[int, int, int]:
        kwargs = {"size": {"longest_edge": longest_edge}}
        return self.image_processor.get_number_of_image_patches(height, width, kwargs)

    def natural_tokens(self, width: int, height: int) -> int:
        patches, _, _ = self._grid(width, height, self.longest_edge)
        return max(patches, 1) * self.seq_len

    def _edge_for(self, width: int, height: int, max_image_tokens: int) -> int:
        edge = self.longest_edge
        while edge > self.tile:
            patches, _, _ = self._grid(width, height, edge)
            if max(patches, 1) * self.seq_len <= max_image_tokens:
                return edge
            edge -= self.tile
        return self.tile  # one tile: the least this family can do

    def prompt_for(self, rows: int, cols: int) -> str:
        """The text Idefics3Processor puts where the image's `<image>` was."""
        tile_tokens = self.placeholder * self.seq_len
        global_view = f"{self.fake_token}{self.global_token}{tile_tokens}{self.fake_token}"
        if rows == 0 and cols == 0:
            return global_view
        grid = "".join(
            "".join(f"{self.fake_token}<row_{r + 1}_col_{c + 1}>{tile_tokens}" for c in range(cols)) + "\n"
            for r in range(rows)
        )
        return f"{grid}\n{global_view}"

    def encode(self, image: Image.Image, max_image_tokens: int) -> EncodedImage:
        edge = self._edge_for(*image.size, max_image_tokens)
        out = self.image_processor(
            images=[[image]], return_tensors="pt", return_row_col_info=True, size={"longest_edge": edge}
        )
        rows, cols = out["rows"][0][0], out["cols"][0][0]
        tokens = tuple(self.tokenizer(self.prompt_for(rows, cols), add_special_tokens=False)["input_ids"])
        count = sum(1 for token in tokens if token == self.placeholder_id)
        tensors = {"pixel_values": out["pixel_values"], "pixel_attention_mask": out["pixel_attention_mask"]}
        return EncodedImage(tensors, tokens, count)

    def collate(self, images: list[EncodedImage]) -> dict[str, torch.Tensor]:
        # One image per prompt here, with its own tile count: pad every image to the most tiles with all-zero
        # tiles (and masks), as the processor pads a batch; the model drops all-zero tiles before its encoder.
        most = max(image.tensors["pixel_values"].shape[1] for image in images)

        def padded(tensor: torch.Tensor) -> torch.Tensor:
            pad = torch.zeros((tensor.shape[0], most - tensor.shape[1], *tensor.shape[2:]), dtype=tensor.dtype)
            return torch.cat([tensor, pad], dim=1)

        return {
            key: torch.cat([padded(image.tensors[key]) for image in images])
            for key in ("pixel_values", "pixel_attention_mask")
        }
