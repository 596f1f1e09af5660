"""The one way tests, suites and benchmarks write a models.yaml: a small builder over the real schema.

    config = (ModelsYaml().text(local_path=tiny_models["text"], endpoint=text.address)
              .vision(local_path=tiny_models["vision"]).gateway(api_keys=["k"]).write(tmp / "models.yaml"))

Entries are plain dicts in the shape services/common/config.py parses, so any field the schema knows can be
passed through `**fields`; `write` validates the result with the product's own parser before a process ever
reads it (a typo in a test's config fails at the line that wrote it, not as an engine that never starts).
The `tiny()` and `bench()` presets are the stand-in configurations most tests share.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from services.common.config import ModelEntry

TEXT_MODEL = "ministral-3-3b-reasoning"
VISION_MODEL = "qwen2-vl-7b"
BENCH_MODEL = "bench"

# The tiny stand-ins' engine settings: small caches, f32 on the CPU, room for a test's concurrency.
TINY_TEXT_PARAMS = {"mem": 16, "dtype": "f32", "max_num_seqs": 16, "prefill_chunk_size": 512}
TINY_VISION_PARAMS = {"mem": 64, "dtype": "f32", "max_num_seqs": 4}
BENCH_PARAMS = {"mem": 16, "dtype": "f32", "max_num_seqs": 8, "prefill_chunk_size": 256}
PROXY_PROMPT = "Describe this image in detail:"


@dataclass
class ModelsYaml:
    """A models.yaml under construction: `models` entries and top-level keys (idle_unload_secs, gateway, ...).

    Every method returns the builder, so a config reads as one expression; `write(path)` ends it."""

    models: list[dict[str, Any]] = field(default_factory=list)
    top: dict[str, Any] = field(default_factory=dict)

    # --- models ---------------------------------------------------------------------------------------
    def model(
        self,
        name: str,
        *,
        local_path: str | Path | None = None,
        endpoint: str | None = None,
        params: dict | None = None,
        **fields: Any,
    ) -> ModelsYaml:
        """Any model entry: `local_path`, `hf_id` or `gguf_file` names the weights; `fields` go in as given."""
        entry: dict[str, Any] = {"name": name}
        if local_path is not None:
            entry["local_path"] = str(local_path)
        entry.update(fields)
        if params is not None:
            entry["params"] = dict(params)
        if endpoint is not None:
            entry["endpoint"] = endpoint
        self.models.append(entry)
        return self

    def text(
        self, name: str = TEXT_MODEL, *, params: dict | None = None, tiny_defaults: bool = True, **fields: Any
    ) -> ModelsYaml:
        """A text model; with `tiny_defaults` its params start from TINY_TEXT_PARAMS and `params` overrides them,
        and vision is disabled (the model answers text only) unless `capabilities` says otherwise."""
        if tiny_defaults:
            params = {**TINY_TEXT_PARAMS, **(params or {})}
            fields.setdefault("capabilities", {"vision_mode": "disabled"})
        return self.model(name, params=params, **fields)

    def native(self, name: str, *, max_image_tokens: int | None = None, **fields: Any) -> ModelsYaml:
        """A text model that answers images itself (`vision_mode: native`), as `text` otherwise."""
        capabilities: dict[str, Any] = {"vision_mode": "native"}
        if max_image_tokens is not None:
            capabilities["native_vision"] = {"max_image_tokens": max_image_tokens}
        return self.text(name, capabilities=capabilities, **fields)

    def vision(
        self,
        name: str = VISION_MODEL,
        *,
        params: dict | None = None,
        tiny_defaults: bool = True,
        prompt_template: str | None = PROXY_PROMPT,
        **fields: Any,
    ) -> ModelsYaml:
        """A vision model in proxy mode (it captions images for the text model); `prompt_template=None`
        keeps the product's default prompt. With `tiny_defaults` its params start from TINY_VISION_PARAMS."""
        if tiny_defaults:
            params = {**TINY_VISION_PARAMS, **(params or {})}
        proxy = {"vision_mode": "proxy"}
        if prompt_template is not None:
            proxy["vision_proxy"] = {"prompt_template": prompt_template}
        fields.setdefault("capabilities", proxy)
        return self.model(name, params=params, **fields)

    def copy_model(self, of: str, name: str, **overrides: Any) -> ModelsYaml:
        """Another entry like `of`'s (params, capabilities...) but for its name and the `overrides`."""
        template = copy.deepcopy(self.entry(of))
        if "local_path" in overrides:
            overrides["local_path"] = str(overrides["local_path"])
        self.models.append({**template, **overrides, "name": name})
        return self

    def entry(self, name: str) -> dict[str, Any]:
        """The entry of model `name`, to edit in place before `write`."""
        return next(m for m in self.models if m["name"] == name)

    def endpoints(self, endpoints: dict[str, str]) -> ModelsYaml:
        """Set the gRPC target of each named model (names not configured are ignored)."""
        for model in self.models:
            if model["name"] in endpoints:
                model["endpoint"] = endpoints[model["name"]]
        return self

    # --- top level --------------------------------------------------------------------------------------
    def gateway(self, **settings: Any) -> ModelsYaml:
        """Keys of the `gateway:` section (request_timeout_secs, images, api_keys, limits...), merged."""
        self.top.setdefault("gateway", {}).update(settings)
        return self

    def set(self, **keys: Any) -> ModelsYaml:
        """Other top-level keys (idle_unload_secs, ...)."""
        self.top.update(keys)
        return self

    # --- output -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"models": copy.deepcopy(self.models), **copy.deepcopy(self.top)}

    def write(self, path: Path, *, validate: bool = True) -> Path:
        """Write the file and return its path; `validate=False` for a test that means to write a bad one."""
        data = self.to_dict()
        if validate:
            from services.common.config import parse_models_config

            parse_models_config(copy.deepcopy(data))
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


def tiny(
    tiny_models: dict[str, Path],
    *,
    vision: bool = False,
    text_params: dict | None = None,
    endpoints: dict[str, str] | None = None,
) -> ModelsYaml:
    """The tiny stand-ins: TEXT_MODEL (and VISION_MODEL, proxying for it, with `vision`), idle unload at 300 s."""
    config = ModelsYaml().text(local_path=tiny_models["text"], params=text_params)
    if vision:
        config.vision(local_path=tiny_models["vision"])
    return config.endpoints(endpoints or {}).set(idle_unload_secs=300)


def bench(
    bench_model: Path, *, params: dict | None = None, idle_unload_secs: int = 300, endpoint: str | None = None
) -> ModelsYaml:
    """The bench checkpoint as the only text model (BENCH_MODEL), for lifecycle tests."""
    return ModelsYaml().model(
        BENCH_MODEL,
        local_path=bench_model,
        endpoint=endpoint,
        idle_unload_secs=idle_unload_secs,
        params={**BENCH_PARAMS, **(params or {})},
    )


def entry_for(local_path: str | Path, params: dict, *, vision: bool = False, **fields: Any) -> ModelEntry:
    """One parsed models.yaml entry, for a test that builds an engine or server in its own process (no file): the
    text model "m", or with `vision` the proxy vision model "v" (beside a text model "t", which the schema requires of
    a proxy). `params` are the entry's params as given (no tiny defaults); `fields` go into the entry too."""
    from services.common.config import parse_models_config

    config = ModelsYaml()
    if vision:
        config.model("t", hf_id="unused")
        config.vision("v", local_path=local_path, params=params, tiny_defaults=False, prompt_template=None, **fields)
    else:
        config.model("m", local_path=local_path, params=params, **fields)
    return parse_models_config(config.to_dict()).model("v" if vision else "m")
