"""The captioner's repetition penalty: transformers' arithmetic, each row's own tokens only."""

import torch
from transformers import RepetitionPenaltyLogitsProcessor

from services.vision_engine.captioner.penalty import UnpaddedRepetitionPenalty

PAD = 0


def test_it_equals_transformers_penalty_on_rows_without_padding():
    ids = torch.tensor([[3, 5, 5, 2], [1, 4, 2, 6]])
    scores = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    expected = RepetitionPenaltyLogitsProcessor(1.05)(ids, scores.clone())
    torch.testing.assert_close(UnpaddedRepetitionPenalty(1.05, [0, 0])(ids, scores.clone()), expected)


def test_a_padded_row_is_penalized_as_if_it_were_alone():
    alone = torch.tensor([[3, 5, 2]])
    padded = torch.tensor([[PAD, PAD, 3, 5, 2], [7, 1, 4, 6, 1]])  # batched with a longer prompt
    scores = torch.tensor([[2.0, -1.0, 0.5, 1.0, 0.0, 3.0, 0.0, 1.0]])
    solo = UnpaddedRepetitionPenalty(1.05, [0])(alone, scores.clone())
    batched = UnpaddedRepetitionPenalty(1.05, [2, 0])(padded, torch.cat([scores, scores]).clone())
    torch.testing.assert_close(batched[0], solo[0])
    assert batched[0, PAD] == scores[0, PAD]  # the pad (a stop token) is not penalized for being padding
    # transformers' own penalizes it, which is what made captions depend on their batch
    assert RepetitionPenaltyLogitsProcessor(1.05)(padded, torch.cat([scores, scores]))[0, PAD] < scores[0, PAD]
