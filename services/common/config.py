"""The one typed schema of `models.yaml`, shared by the gateway and both engines.

The product brief's file loads exactly as written; everything else has a default. A bad file fails at
start-up with a `ConfigError` whose message names the file, the key path and what is wrong, e.g.
`models.yaml: models[1].params.mem: Input should be a valid integer`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

# Text in screenshots and documents is what users ask about most, and a description alone paraphrases it away:
# the default asks for the visible text verbatim first, then the description (the brief's own example sets
# "Describe this image in detail:", which still works as written).
DEFAULT_VISION_PROMPT = (
    "First transcribe any text visible in the image exactly as written (verbatim, line by line), or say there is "
    "none. Then describe the image in detail:"
)

DType = Literal["auto", "bf16", "bfloat16", "f16", "fp16", "float16", "f32", "fp32", "float32"]
VisionMode = Literal["disabled", "proxy", "native"]
ToolCallParser = Literal["auto", "mistral", "hermes", "none"]
ReasoningParser = Literal["auto", "mistral", "deepseek_r1", "none"]
# Clients disagree on the field's name (vLLM renamed `reasoning_content` to `reasoning`; Open WebUI and
# Dify read the old one), so the gateway can send either or both.
ReasoningField = Literal["reasoning_content", "reasoning", "both"]
RoutingPolicy = Literal["round_robin", "affinity"]
# What runs a model's forward passes under our engine: transformers' continuous batching (the default, in the
# project's venv) or vLLM's engine core (its own environment: `make install-vllm`, services/common/backends.py).
Backend = Literal["transformers", "vllm"]


class ConfigError(ValueError):
    """A models.yaml that cannot be used; the message is meant for the operator as is."""


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in an operator's file must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelParams(_Strict):
    """Resources of one engine (the brief's `params`)."""

    mem: int = Field(
        2048,
        gt=0,
        description="Memory budget in MiB: the KV cache of a text engine, the image batch of a vision engine.",
    )
    dtype: DType = Field("bf16", description="Weight dtype.")
    max_num_seqs: int = Field(16, gt=0, description="Sequences in flight at once; the rest wait in a FIFO queue.")
    prefill_chunk_size: int = Field(1024, gt=0, description="Tokens per forward pass (prefill is chunked to this).")
    block_size: int = Field(64, gt=0, description="Tokens per KV cache block (page).")
    prefix_caching: bool = Field(
        True,
        description="Text engines: reuse the KV blocks of a prompt prefix another request already computed "
        "(a conversation's earlier turns, a shared system prompt) instead of prefilling it again.",
    )
    max_queue: int | None = Field(
        None,
        ge=0,
        description="Requests that may wait for a slot; beyond it the engine answers "
        "RESOURCE_EXHAUSTED (HTTP 503 + Retry-After). Default 4 x max_num_seqs.",
    )

    @property
    def queue_limit(self) -> int:
        """`max_queue`, or its default."""
        return 4 * self.max_num_seqs if self.max_queue is None else self.max_queue


class SharedCaptionCache(_Strict):
    """A second caption cache level behind each vision engine's in-process LRU: a Redis (or Valkey) server that
    every vision replica reads and writes, so replicas share captions and a restarted one starts warm.

    Keys are the in-process cache's (image hash, detail, instruction and caption limit, checkpoint and revision)
    under `key_prefix`; values expire after `ttl_secs`. The memory bound is the server's own (`maxmemory` with an
    LRU eviction policy; the chart's bundled Redis sets both). A Redis that is down, slow or refusing is a miss,
    never an error: the engine falls back to its in-process cache and tries Redis again `retry_secs` later."""

    url: str = Field(min_length=1, description="redis://[:password@]host:port/db (rediss:// for TLS).")
    ttl_secs: int = Field(7 * 24 * 3600, gt=0, description="Seconds a shared caption lives.")
    timeout_ms: int = Field(100, gt=0, description="Deadline of one Redis call; past it the call counts as a miss.")
    retry_secs: float = Field(5.0, gt=0, description="After a failed call, Redis is not tried again for this long.")
    key_prefix: str = Field("proxyvision:caption:", description="Prefix of every key this cache writes.")


class VisionProxy(_Strict):
    """The vision model that describes images for a text-only model.

    `hf_id` / `local_path` name the checkpoint that captions; unset, the entry's own `hf_id` / `local_path`
    is used (the brief's example sets both to the same repo). When both are set and differ, these win and
    the vision engine logs which checkpoint it loads."""

    hf_id: str | None = None
    local_path: str | None = None
    prompt_template: str = DEFAULT_VISION_PROMPT
    max_image_tokens: int = Field(1280, gt=0, description="Image tokens per image at detail=high.")
    max_caption_tokens: int = Field(256, gt=0, description="Tokens generated per caption.")
    cache_max_entries: int = Field(1024, ge=0, description="Caption cache entries (0 disables the cache).")
    cache_max_bytes: int = Field(8 * 1024 * 1024, ge=0, description="Caption cache size in bytes of caption text.")
    shared_cache: SharedCaptionCache | None = Field(
        None, description="Redis/Valkey shared by every vision replica, behind the in-process cache; absent: none."
    )


class NativeVision(_Strict):
    """How a `vision_mode: native` model looks at images itself (its own vision encoder, in the text engine)."""

    max_image_tokens: int = Field(1280, gt=0, description="Image tokens per image at detail=high.")


class Capabilities(_Strict):
    """What a model can do with images (the brief's `capabilities`).

    - `disabled`: a text-only model; images sent to it are captioned by the `proxy` model when there is one,
      else refused with a 400.
    - `proxy`: this entry is the vision model that captions images for the others (at most one).
    - `native`: the model answers images itself (a VLM checkpoint served by the text engine with its vision
      weights, e.g. Mistral3 with its Pixtral tower, Qwen2-VL); images go to it over gRPC, never to the proxy.
    """

    vision_mode: VisionMode = "disabled"
    vision_proxy: VisionProxy | None = None
    native_vision: NativeVision | None = None


class SamplingDefaults(_Strict):
    """Sampling defaults of a model, used when a request leaves a parameter out.

    Every field is optional: unset (None) means "not set here". The effective default of each parameter is
    resolved once per load by `resolve_sampling`: models.yaml first, then the checkpoint's
    `generation_config.json`, then `BUILTIN_SAMPLING`.
    """

    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, description="0 disables top-k.")
    max_tokens: int | None = Field(
        None, gt=0, description="Completion budget when a request gives none; unset: up to the context."
    )
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0, description="1 disables it.")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="0 disables it.")


# The last resort of every parameter (the OpenAI API's and vLLM's defaults; temperature 0.7 as before).
# max_tokens stays None: a request without one may use the rest of the context.
BUILTIN_SAMPLING = SamplingDefaults(
    temperature=0.7, top_p=1.0, top_k=0, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0, min_p=0.0
)

# Where an effective default came from (shown by GetModelInfo and /v1/models).
SOURCE_CONFIG, SOURCE_CHECKPOINT, SOURCE_BUILTIN = "models.yaml", "generation_config.json", "default"


@dataclass(frozen=True)
class ResolvedSampling:
    """The effective sampling defaults of a loaded model, and where each one came from."""

    values: SamplingDefaults
    sources: dict[str, str]


def resolve_sampling(configured: SamplingDefaults, checkpoint: SamplingDefaults) -> ResolvedSampling:
    """The one place defaults are resolved: models.yaml wins, then the checkpoint, then the built-ins."""
    values, sources = {}, {}
    for name in SamplingDefaults.model_fields:
        for layer, source in (
            (configured, SOURCE_CONFIG),
            (checkpoint, SOURCE_CHECKPOINT),
            (BUILTIN_SAMPLING, SOURCE_BUILTIN),
        ):
            value = getattr(layer, name)
            if value is not None:
                values[name], sources[name] = value, source
                break
        else:
            sources[name] = SOURCE_BUILTIN  # max_tokens: no default anywhere, so up to the context
    return ResolvedSampling(SamplingDefaults(**values), sources)


class ModelEntry(_Strict):
    """One model and the engine that serves it."""

    name: str = Field(min_length=1)
    aliases: list[str] = Field(
        default_factory=list,
        description="Other names requests may use for this model (e.g. its hub id), listed in /v1/models.",
    )
    hf_id: str | None = None
    local_path: str | None = None
    revision: str | None = None
    # A GGUF file (llama.cpp's and Ollama's format; text models only): alone, a local file (relative to the
    # yaml); with hf_id, a file name in that hub repo; with local_path, a file name in that directory.
    # Tokenizer and chat template come from the file's metadata (services/common/gguf.py).
    gguf_file: str | None = Field(None, min_length=1)
    description: str | None = None
    trust_remote_code: bool = False
    params: ModelParams = ModelParams()
    capabilities: Capabilities = Capabilities()
    sampling: SamplingDefaults = SamplingDefaults()
    max_model_len: int | None = Field(None, gt=0, description="Context cap; default: the model's own maximum.")
    backend: Backend = Field(
        "transformers",
        description="What runs the model under the engine: 'transformers' (continuous batching, the default) or "
        "'vllm' (vLLM's engine core; needs `make install-vllm`).",
    )
    idle_unload_secs: int | None = Field(None, ge=0, description="Overrides the top-level value; 0 never unloads.")
    endpoint: str | None = Field(None, description="gRPC target of this model's engine, e.g. 127.0.0.1:50051.")
    reasoning_parser: ReasoningParser = Field(
        "auto",
        description="How reasoning is split from the answer: 'auto' "
        "picks 'mistral' ([THINK]...[/THINK]) or 'deepseek_r1' (<think>...</think>) "
        "from the tokenizer's special tokens; 'none' leaves all output as answer.",
    )
    tool_call_parser: ToolCallParser = Field(
        "auto",
        description="How tool calls are read from the answer: 'auto' "
        "picks 'mistral' ([TOOL_CALLS]name[ARGS]{...}) or 'hermes' "
        "(<tool_call>{...}</tool_call>) from the tokenizer's special tokens and "
        "the chat template; 'none' refuses requests with tools.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        proxy = self.capabilities.vision_proxy
        proxy_source = self.is_vision_proxy and proxy is not None and (proxy.hf_id or proxy.local_path)
        if not self.hf_id and not self.local_path and not self.gguf_file and not proxy_source:
            raise ValueError("needs either hf_id or local_path (or a gguf_file)")
        if proxy is not None and proxy.hf_id and proxy.local_path:
            raise ValueError("capabilities.vision_proxy: set only one of hf_id and local_path")
        if self.gguf_file and self.capabilities.vision_mode != "disabled":
            raise ValueError("gguf_file: GGUF files are supported for text-only models (vision_mode 'disabled')")
        if self.hf_id and self.local_path:
            raise ValueError("set only one of hf_id and local_path")
        if self.backend == "vllm" and self.gguf_file:
            raise ValueError(
                "backend: vllm does not load gguf_file here; convert it (as `make models` does for "
                "SmolLM2) or use backend: transformers"
            )
        return self

    @property
    def source(self) -> str:
        """What `from_pretrained` is given: the local path or the hub id (a lone gguf_file: the file). For the
        proxy vision model, `vision_proxy.local_path` / `hf_id` when set (they name the captioning checkpoint)."""
        return self._source_and_field()[0]

    @property
    def pretrained_options(self) -> dict:
        """How `source` is read, as the loaders' `revision` and `trust_remote_code` keyword arguments."""
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code}

    @property
    def source_field(self) -> str:
        """The models.yaml field `source` comes from ("local_path", "capabilities.vision_proxy.hf_id", ...), for
        messages that name what to fix."""
        return self._source_and_field()[1]

    def _source_and_field(self) -> tuple[str, str]:
        proxy = self.capabilities.vision_proxy
        if self.is_vision_proxy and proxy is not None and (proxy.local_path or proxy.hf_id):
            field = "local_path" if proxy.local_path else "hf_id"
            return getattr(proxy, field), f"capabilities.vision_proxy.{field}"
        field = "local_path" if self.local_path else "hf_id" if self.hf_id else "gguf_file"
        return getattr(self, field), field

    @property
    def is_vision_proxy(self) -> bool:
        """True for the model that describes images for the others."""
        return self.capabilities.vision_mode == "proxy"

    @property
    def is_native_vision(self) -> bool:
        """True for a model that answers images itself (served by a text engine with its vision weights)."""
        return self.capabilities.vision_mode == "native"

    @property
    def native_vision(self) -> NativeVision:
        """Native-vision settings, defaults included."""
        return self.capabilities.native_vision or NativeVision()

    @property
    def vision_proxy(self) -> VisionProxy:
        """Vision settings, defaults included, of a proxy vision model."""
        return self.capabilities.vision_proxy or VisionProxy()


class ImageLimits(_Strict):
    """Limits the gateway applies to images in requests."""

    max_images_per_request: int = Field(8, gt=0)
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(50_000_000, gt=0)
    fetch_timeout_secs: float = Field(10.0, gt=0)
    max_redirects: int = Field(3, ge=0)
    allow_private_networks: list[str] = Field(
        default_factory=list, description="CIDRs the fetcher may reach although not public."
    )
    allowed_domains: list[str] = Field(
        default_factory=list, description="If set, only these hosts (and their subdomains)."
    )


class RequestLimits(_Strict):
    """What one chat request may carry, checked before any heavy work (parsing, tokenizing, fetching).

    The body default admits one image of `images.max_image_bytes` as a base64 data URL (4/3 of its bytes);
    to let every one of `images.max_images_per_request` images come inline at full size, raise it to about
    max_images_per_request x max_image_bytes x 4/3 (images by URL do not count)."""

    max_body_bytes: int = Field(
        32 * 1024 * 1024,
        gt=0,
        description="Largest request body; larger is a 413, refused while reading (chunked bodies too).",
    )
    max_messages: int = Field(2048, gt=0, description="Most messages in one chat request (OpenAI's limit).")
    max_text_chars: int = Field(
        1_000_000,
        gt=0,
        description="Most characters of text across a request's messages (content, reasoning, tool call arguments).",
    )
    max_completion_tokens: int = Field(
        32768, gt=0, description="Largest max_tokens / max_completion_tokens a request may ask for; above it is a 400."
    )


_API_KEY = re.compile(r"[\x21-\x7e]+")


def api_key_problem(key: str) -> str | None:
    """Why `key` cannot be an API key (None if it can): it must be printable ASCII without spaces, as a
    Bearer token sent in an HTTP header is. The message never contains the key."""
    if not key:
        return "an API key cannot be empty"
    if not _API_KEY.fullmatch(key):
        return "an API key must be printable ASCII without spaces"
    return None


def _check_api_key(key: str) -> str:
    problem = api_key_problem(key)
    if problem:
        raise ValueError(problem)
    return key


ApiKey = Annotated[str, AfterValidator(_check_api_key)]


class RoutingSettings(_Strict):
    """How the gateway spreads engine calls over the replicas an endpoint resolves to (a headless Service's pods,
    an `ipv4:a,b,c` list).

    - `round_robin`: every call to the next ready replica (gRPC's balancer): even load, caches shared by luck.
    - `affinity`: a call goes to the replica that owns its key on a consistent-hash ring of the ready replicas, so
      caches stay warm: images by their hash (Describe, so a re-sent image finds its caption), conversations by
      the request's `user` or a hash of its first messages (Generate, so a conversation's earlier turns are in
      that replica's prefix cache). A replica that leaves or joins moves only its own share of keys; one that is
      down or draining is skipped for the next on the ring."""

    text: RoutingPolicy = Field("round_robin", description="Text engines: round_robin or affinity (by conversation).")
    vision: RoutingPolicy = Field("affinity", description="The vision engine: round_robin or affinity (by image).")
    load_guard_gap: int = Field(
        8,
        ge=1,
        description="Text affinity's load guard: a conversation goes to the least-loaded replica instead of its own "
        "when its own has at least this many more calls in flight from this gateway than the least-loaded one.",
    )
    resolve_interval_secs: float = Field(
        10.0,
        gt=0,
        description="Affinity: how often a dns:/// endpoint is looked up again for replicas that came or went.",
    )


class ResponseStoreSettings(_Strict):
    """Stored responses of the Responses API (`store: true`, the default, and `previous_response_id`).

    In the gateway's memory by default: bounded by `max_entries` (the oldest go first) and `ttl_secs`, and a
    follow-up must reach the same gateway replica. With `vision_proxy.shared_cache` configured (the chart's shared
    Redis), they live in that Redis under `key_prefix` with the same TTL, so a follow-up may land on any replica."""

    ttl_secs: int = Field(24 * 3600, gt=0, description="Seconds a stored response can be retrieved or continued.")
    max_entries: int = Field(10_000, gt=0, description="Most responses kept in memory (the oldest are dropped).")
    max_bytes: int = Field(
        4 * 1024 * 1024, gt=0, description="Largest stored response (its conversation included); larger: not stored."
    )
    key_prefix: str = Field("proxyvision:response:", description="Prefix of every key the Redis store writes.")


class GatewaySettings(_Strict):
    """Settings of the API gateway."""

    request_timeout_secs: float = Field(
        600.0, gt=0, description="Deadline of one engine call; past it the client gets 504."
    )
    reasoning_field: ReasoningField = Field(
        "reasoning_content",
        description="Name of the reasoning field in answers and stream deltas: reasoning_content, reasoning, or both.",
    )
    max_n: int = Field(8, ge=1, description="Most choices (`n`) one chat request may ask for: each is an engine call.")
    images: ImageLimits = ImageLimits()
    limits: RequestLimits = RequestLimits()
    routing: RoutingSettings = RoutingSettings()
    responses: ResponseStoreSettings = ResponseStoreSettings()
    show_captions: bool = Field(
        True,
        description="Answers to requests with proxied images carry `proxy_vision: {images: [{message, index, caption, "
        "cached, ms}]}` (what the text model was told about each image): in a non-streamed answer and in one "
        "chunk of a stream. SDKs keep it as an extra field.",
    )
    # repr=False: a logged or printed config never shows the keys.
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        repr=False,
        description="Keys a client must send as 'Authorization: Bearer "
        "<key>' on every /v1 route; none here and no api_keys_file: no authentication.",
    )
    api_keys_file: str | None = Field(
        None,
        min_length=1,
        description="A file of keys, one per line ('#' comments and "
        "blank lines ignored), e.g. a mounted Kubernetes Secret; re-read when it changes. "
        "Its keys are accepted as well as api_keys. Relative to models.yaml.",
    )
    api_keys_protect_health: bool = Field(
        False,
        description="With keys set, /health, /ready and /metrics need a key "
        "too (probes and Prometheus must then send one).",
    )


_TLS_FILES = ("ca", "server_cert", "server_key", "client_cert", "client_key")


class TlsSettings(_Strict):
    """TLS on the gRPC hop between the gateway and the engines (services/common/tls.py builds the credentials).

    Off unless the section is present. Both sides read it and take their part: the engines their certificate
    (and, with require_client_cert, the CA their clients' certificates must chain to), the gateway the CA it
    verifies the engines with (and a client certificate for mTLS). Paths are relative to models.yaml."""

    ca: str | None = Field(
        None,
        min_length=1,
        description="PEM CA bundle. Gateway: verifies the engines' certificates "
        "(unset: gRPC's bundled public roots). Engines: verifies client certificates (require_client_cert).",
    )
    server_cert: str | None = Field(None, min_length=1, description="Engines: PEM certificate chain they serve.")
    server_key: str | None = Field(None, min_length=1, description="Engines: PEM private key of server_cert.")
    client_cert: str | None = Field(None, min_length=1, description="Gateway: PEM certificate it presents (mTLS).")
    client_key: str | None = Field(None, min_length=1, description="Gateway: PEM private key of client_cert.")
    require_client_cert: bool = Field(
        False, description="Engines: refuse clients without a certificate signed by ca (mTLS)."
    )
    server_name: str | None = Field(
        None,
        min_length=1,
        description="Gateway: the name the engines' certificates must "
        "carry, when it is not the host it dials (IP targets, tests).",
    )

    @model_validator(mode="after")
    def _complete(self) -> TlsSettings:
        for cert, key in (("server_cert", "server_key"), ("client_cert", "client_key")):
            if getattr(self, cert) and not getattr(self, key):
                raise ValueError(f"{key} is required when {cert} is set")
            if getattr(self, key) and not getattr(self, cert):
                raise ValueError(f"{cert} is required when {key} is set")
        if self.require_client_cert and not self.ca:
            raise ValueError("require_client_cert needs ca (the CA that signs the clients' certificates)")
        return self

    def relative_to(self, directory: Path) -> TlsSettings:
        """A copy whose relative file paths are resolved against `directory` (the yaml's)."""
        update = {
            key: str((directory / value).resolve())
            for key in _TLS_FILES
            if (value := getattr(self, key)) and not Path(value).is_absolute()
        }
        return self.model_copy(update=update)


class ModelsConfig(_Strict):
    """The whole `models.yaml`."""

    models: list[ModelEntry] = Field(min_length=1)
    idle_unload_secs: int | None = Field(
        300, ge=0, description="Unload a model after this many idle seconds; 0 or null never."
    )
    default_model: str | None = None
    gateway: GatewaySettings = GatewaySettings()
    tls: TlsSettings | None = Field(None, description="TLS on the gRPC hop; absent: plaintext.")

    @model_validator(mode="after")
    def _consistent(self) -> ModelsConfig:
        names = [m.name for m in self.models]
        called = [*names, *(alias for m in self.models for alias in m.aliases if alias != m.name)]
        duplicates = sorted({n for n in called if called.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate model name(s) or alias(es): {', '.join(duplicates)}")
        if "default" in called:
            raise ValueError("'default' is not a model name or alias: requests use it for default_model")
        if self.default_model is not None and self.default_model not in names:
            raise ValueError(f"default_model {self.default_model!r} is not one of the models: {', '.join(names)}")
        if not self.text_models:
            raise ValueError("needs at least one text model (vision_mode other than 'proxy')")
        if len(self.vision_models) > 1:
            raise ValueError("at most one model may have vision_mode 'proxy'")
        return self

    @property
    def text_models(self) -> list[ModelEntry]:
        """Models that answer chats, in file order."""
        return [m for m in self.models if not m.is_vision_proxy]

    @property
    def vision_models(self) -> list[ModelEntry]:
        """The proxy vision model, if any (a list of at most one)."""
        return [m for m in self.models if m.is_vision_proxy]

    @property
    def vision_model(self) -> ModelEntry | None:
        """The proxy vision model, or None."""
        return self.vision_models[0] if self.vision_models else None

    @property
    def default_model_name(self) -> str:
        """The model used when clients ask for the default: `default_model`, else the first text model."""
        return self.default_model or self.text_models[0].name

    def model(self, name: str) -> ModelEntry:
        """The entry called `name` (or aliased so); KeyError if there is none."""
        for entry in self.models:
            if entry.name == name or name in entry.aliases:
                return entry
        raise KeyError(name)

    def idle_unload_secs_for(self, entry: ModelEntry) -> int:
        """The idle-unload delay of one model (its own value, else the global one)."""
        value = self.idle_unload_secs if entry.idle_unload_secs is None else entry.idle_unload_secs
        return value or 0

    def with_endpoints(self, endpoints: dict[str, str]) -> ModelsConfig:
        """A copy with the engine endpoints of some models replaced (the launcher and env use this)."""
        unknown = set(endpoints) - {m.name for m in self.models}
        if unknown:
            raise ConfigError(f"endpoint given for unknown model(s): {', '.join(sorted(unknown))}")
        models = [
            m.model_copy(update={"endpoint": endpoints[m.name]}) if m.name in endpoints else m for m in self.models
        ]
        return self.model_copy(update={"models": models})

    def with_backend(self, backend: Backend) -> ModelsConfig:
        """A copy whose text-only models run on `backend` (the launcher's --backend); vision models keep the
        file's (a vision model's own `backend: vllm` puts it there: not every checkpoint runs on vLLM's CPU build)."""
        models = [
            m.model_copy(update={"backend": backend}) if m.capabilities.vision_mode == "disabled" else m
            for m in self.models
        ]
        return self.model_copy(update={"models": models})


def _format_loc(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def parse_models_config(data: object, source: str = "models.yaml") -> ModelsConfig:
    """Validate an already-parsed mapping; errors name `source` and the key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with a 'models' list")
    try:
        return ModelsConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(f"{source}: {_format_loc(err['loc'])}: {message}")
        raise ConfigError("\n".join(problems)) from None


def _proxy_path_relative_to(entry: ModelEntry, base: Path) -> ModelEntry:
    """`vision_proxy.local_path`, like `local_path`, is relative to the yaml file."""
    proxy = entry.capabilities.vision_proxy
    if proxy is None or not proxy.local_path or Path(proxy.local_path).is_absolute():
        return entry
    proxy = proxy.model_copy(update={"local_path": str((base / proxy.local_path).resolve())})
    capabilities = entry.capabilities.model_copy(update={"vision_proxy": proxy})
    return entry.model_copy(update={"capabilities": capabilities})


def load_models_config(path: str | Path) -> ModelsConfig:
    """Read and validate a models.yaml file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    config = parse_models_config(data, str(path))
    if config.tls is not None:  # certificate paths, like local_path, are relative to the file
        config = config.model_copy(update={"tls": config.tls.relative_to(path.parent)})
    # A relative local_path is relative to the file, so a config works from any working directory.
    models = [
        m.model_copy(update={"local_path": str((path.parent / m.local_path).resolve())})
        if m.local_path and not Path(m.local_path).is_absolute()
        else m
        for m in config.models
    ]
    models = [_proxy_path_relative_to(m, path.parent) for m in models]
    # So is a lone gguf_file (a local file); beside hf_id or local_path it is a file name in that repo or directory.
    models = [
        m.model_copy(update={"gguf_file": str((path.parent / m.gguf_file).resolve())})
        if m.gguf_file and not m.hf_id and not m.local_path and not Path(m.gguf_file).is_absolute()
        else m
        for m in models
    ]
    # And so is the gateway's key file.
    gateway = config.gateway
    if gateway.api_keys_file and not Path(gateway.api_keys_file).is_absolute():
        gateway = gateway.model_copy(update={"api_keys_file": str((path.parent / gateway.api_keys_file).resolve())})
    return config.model_copy(update={"models": models, "gateway": gateway})
