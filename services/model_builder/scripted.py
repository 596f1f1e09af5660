"""The scripted reasoning stand-in: weights arranged so greedy decoding always writes the same chain.

After any chat prompt (the Ministral-3 template's prompt ends in `[/INST]`) greedy decoding emits::

    [THINK]Let me think about this first[/THINK]It is four.</s>

so tests can check reasoning vs answer, streaming and usage against a real model through the real engine.
The reasoning has a word the answer lacks ("think") and the answer one the reasoning lacks ("four").

How (a `Ministral3` language model with tied embeddings, checked by tests/integration/test_stand_in_files.py):
- every chain token c_i (the prompt's `[/INST]` is c_0) has embedding e_i, the i-th unit vector; all other
  tokens' embeddings are small random vectors that are zero on those first dimensions;
- attention adds nothing (every `o_proj` is zero), so a position's output depends on its own token only;
- in layer 0, RMSNorm turns e_i into sqrt(hidden) * e_i (norm weights 1); SwiGLU unit i reads dimension i
  in both gate and up (weight 1), so it is silu(s) * s with s = sqrt(hidden) > 0 for token c_i and exactly 0
  for every other token; its down-projection column is (ALPHA * e_{i+1} - e_i) / (silu(s) * s), so the
  residual stream becomes ALPHA * e_{i+1}; later layers add nothing (zero `down_proj` and `o_proj`);
- the final RMSNorm gives sqrt(hidden) * e_{i+1}, and the tied lm_head (the embeddings) scores c_{i+1} at
  sqrt(hidden) and every other token at ~0: the argmax is the next chain token. Each token appears once in
  the chain, so there is no cycle; `</s>` ends generation.
"""

from __future__ import annotations

import torch

SCRIPTED_REASONING = "Let me think about this first"
SCRIPTED_ANSWER = "It is four."
# Token ids in the stand-ins' tekken vocabulary (services/model_builder/tekken.py); the builder checks that
# the tokenizer encodes the two texts to exactly these.
THINK_ID, END_THINK_ID, EOS_ID, END_INST_ID = 34, 35, 2, 4
SCRIPTED_REASONING_IDS = (1076, 1304, 1639, 3648, 2314, 1593, 2158)
SCRIPTED_ANSWER_IDS = (2757, 1395, 3946, 1046)
# What greedy decoding emits after a prompt that ends in [/INST]: 14 tokens, `</s>` included.
SCRIPTED_COMPLETION_IDS = (THINK_ID, *SCRIPTED_REASONING_IDS, END_THINK_ID, *SCRIPTED_ANSWER_IDS, EOS_ID)
SCRIPTED_TEXT = f"[THINK]{SCRIPTED_REASONING}[/THINK]{SCRIPTED_ANSWER}"

ALPHA = 10.0


def check_token_ids(tokenizer) -> None:
    """Fail the build if the tokenizer does not spell the scripted texts with the ids above."""
    for text, ids in ((SCRIPTED_REASONING, SCRIPTED_REASONING_IDS), (SCRIPTED_ANSWER, SCRIPTED_ANSWER_IDS)):
        got = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        if got != ids:
            raise RuntimeError(f"the tokenizer spells {text!r} as {got}, not {ids}")
    specials = tokenizer.convert_tokens_to_ids(["[THINK]", "[/THINK]", "</s>", "[/INST]"])
    if tuple(specials) != (THINK_ID, END_THINK_ID, EOS_ID, END_INST_ID):
        raise RuntimeError(f"unexpected special token ids {specials}")


@torch.no_grad()
def arrange_weights(language_model) -> None:
    """Rewrite a `Ministral3Model`'s weights (in place) so its greedy continuation of `[/INST]` is the chain."""
    chain = (END_INST_ID, *SCRIPTED_COMPLETION_IDS)
    hidden = language_model.config.hidden_size
    layers = language_model.layers
    if len(chain) > hidden or len(chain) - 1 > layers[0].mlp.gate_proj.out_features:
        raise ValueError("the chain needs one hidden dimension and one MLP unit per token")
    embed = language_model.embed_tokens.weight
    embed[:, : len(chain)] = 0.0  # other tokens: nothing on the chain's dimensions
    for i, token in enumerate(chain):
        embed[token] = 0.0
        embed[token, i] = 1.0
    for layer in layers:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        layer.post_attention_layernorm.weight.fill_(1.0)
    language_model.norm.weight.fill_(1.0)
    mlp = layers[0].mlp
    mlp.gate_proj.weight.zero_()
    mlp.up_proj.weight.zero_()
    eps = layers[0].post_attention_layernorm.variance_epsilon
    s = 1.0 / (1.0 / hidden + eps) ** 0.5  # RMSNorm of a unit vector: its one entry becomes s
    unit = torch.nn.functional.silu(torch.tensor(s, dtype=torch.float64)).item() * s
    for i in range(len(chain) - 1):
        mlp.gate_proj.weight[i, i] = 1.0
        mlp.up_proj.weight[i, i] = 1.0
        mlp.down_proj.weight[i + 1, i] = ALPHA / unit
        mlp.down_proj.weight[i, i] = -1.0 / unit
