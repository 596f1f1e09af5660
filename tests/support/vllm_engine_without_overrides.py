"""The text engine with the vLLM backend's `hf_overrides` left out: vLLM reads the checkpoint's config.json alone,
as it did before services/text_engine/engine/vllm_overrides.py. tests/e2e/test_vllm_ministral3.py runs it to show
that the override is what makes vLLM answer as transformers does.

    start_text_engine(config, tmp, model=name, backend="vllm", module="tests.support.vllm_engine_without_overrides")
"""

import runpy

from services.text_engine.engine import vllm_source

if __name__ == "__main__":
    # vllm_source looks the name up when it builds vLLM's engine args (it imports no vLLM at import time).
    vllm_source.hf_overrides = lambda config: {}
    runpy.run_module("services.text_engine", run_name="__main__", alter_sys=True)
