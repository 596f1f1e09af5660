"""The engine's own logits pipeline: processors (penalties, logit bias, min tokens), grammar masks, the
sampler and logprobs. Plain torch, tested without a model; batcher.py adapts it to transformers' manager."""
