"""GGUF files (llama.cpp's and Ollama's format) as text-model checkpoints.

Where the file is (`models.yaml`'s `gguf_file`, see `ModelEntry`): a local file, a file name in a local
directory, or a file name in a hub repo. `locate()` turns the entry into a `GgufLocation`; `open_gguf()`
finds the file (downloading it from the hub if need be) and checks it is a GGUF, with errors that name it.

How it loads: transformers reads the file with the `gguf` package. For architectures its packed-GGUF path
does not cover (Llama and the other classic ones), and everywhere the optional `kernels` package is not
installed, every quantized tensor is **dequantized at load** by `gguf.dequantize` (numpy, float32) and then
cast to `params.dtype`: the model in memory is an ordinary float model, parameters × 4 bytes in float32
(× 2 in bf16/f16), several times the file (SmolLM2-135M: a 98 MB Q4_1 file becomes 538 MB of float32
weights). Nothing stays quantized, so speed is that of the float model. The tokenizer is rebuilt from the
file's `tokenizer.ggml.*` metadata and the chat template is its `tokenizer.chat_template`.

That rebuild (tokenizer conversion and numpy dequantization) is slow: ~40 s for the 135M model on one
CPU core. `convert_to_checkpoint()` does it once and writes an ordinary checkpoint directory (float32
`model.safetensors`, exactly the dequantized values, plus tokenizer files and the chat template), which then
loads through `from_pretrained` like any other in a second or two.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from .hf_models import ModelLoadError

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GgufLocation:
    """A GGUF file: `filename` in `base` (a local directory or a hub repo id)."""

    base: str
    filename: str
    revision: str | None = None
    local: bool = True

    def __str__(self) -> str:
        return str(Path(self.base) / self.filename) if self.local else f"{self.base}/{self.filename} (hub)"


@dataclass(frozen=True)
class GgufSummary:
    """What a GGUF file holds, read from its header (no tensor data is read)."""

    path: Path
    architecture: str
    name: str
    tensor_types: dict[str, int]  # ggml type name -> number of tensors, e.g. {"Q4_1": 210, "F32": 61}
    parameters: int
    chat_template: str | None
    file_bytes: int

    def dequantized_bytes(self, dtype: torch.dtype) -> int:
        """Weight memory once dequantized to `dtype`."""
        return self.parameters * torch.empty((), dtype=dtype).element_size()

    def describe(self, dtype: torch.dtype) -> str:
        """e.g. 'gguf Q4_1 x210, Q8_0 x1, F32 x61, dequantized to float32 at load: 538 MB of weights (file 98 MB)'."""
        types = ", ".join(
            f"{name} x{count}" for name, count in sorted(self.tensor_types.items(), key=lambda kv: -kv[1])
        )
        return (
            f"gguf {types}, dequantized to {str(dtype).removeprefix('torch.')} at load: "
            f"{self.dequantized_bytes(dtype) / 1e6:.0f} MB of weights (file {self.file_bytes / 1e6:.0f} MB)"
        )


def locate(source: str, gguf_file: str, revision: str | None = None) -> GgufLocation:
    """Where a model entry's GGUF is. `source` is the entry's `source`: the GGUF itself (a lone `gguf_file`),
    a local directory (`local_path`; absolute once the yaml is loaded) or a hub repo id (`hf_id`)."""
    if source == gguf_file or Path(gguf_file).is_absolute():
        path = Path(gguf_file)
        return GgufLocation(str(path.parent), path.name)
    if Path(source).is_absolute() or Path(source).exists():
        return GgufLocation(source, gguf_file)
    return GgufLocation(source, gguf_file, revision, local=False)


def open_gguf(location: GgufLocation) -> Path:
    """The file on disk (downloaded into the hub cache for a hub repo); ModelLoadError naming it otherwise."""
    if location.local:
        path = Path(location.base) / location.filename
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path}: no such file")
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(location.base, location.filename, revision=location.revision))
        except Exception as exc:  # noqa: BLE001 - hub errors are many classes; the message is what matters
            raise ModelLoadError(f"GGUF file {location}: cannot download: {type(exc).__name__}: {exc}") from exc
    with open(path, "rb") as file:
        magic = file.read(4)
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"GGUF file {path}: not a GGUF file (starts with {magic!r}, not {GGUF_MAGIC!r})")
    return path


def _gguf_reader(path: Path):
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise ModelLoadError(
            f"GGUF file {path}: reading it needs the `gguf` package (pip install gguf): {exc}"
        ) from exc
    try:
        return GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file fails anywhere in the parser
        raise ModelLoadError(f"GGUF file {path}: cannot read its header: {type(exc).__name__}: {exc}") from exc


def summarize(path: Path) -> GgufSummary:
    """Architecture, tensor types, parameter count and chat template of a GGUF file."""
    reader = _gguf_reader(path)

    def field(key: str):
        value = reader.fields.get(key)
        return value.contents() if value is not None else None

    return GgufSummary(
        path=path,
        architecture=str(field("general.architecture") or "?"),
        name=str(field("general.name") or ""),
        tensor_types=dict(Counter(t.tensor_type.name for t in reader.tensors)),
        parameters=sum(int(t.n_elements) for t in reader.tensors),
        chat_template=field("tokenizer.chat_template"),
        file_bytes=path.stat().st_size,
    )


def load_gguf(path: Path, *, dtype: torch.dtype):
    """(config, tokenizer, model) from one GGUF file, the model dequantized to `dtype` (see the module doc).

    Every failure is a ModelLoadError that names the file."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    summary = summarize(path)
    directory, name = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(directory, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, config=config, dtype=dtype)
    except ImportError as exc:
        raise ModelLoadError(f"GGUF file {path}: a package is missing: {exc}") from exc
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        # transformers says "GGUF model with architecture X is not supported yet" and the like.
        raise ModelLoadError(f"GGUF file {path} ({summary.architecture}): {type(exc).__name__}: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        if summary.chat_template:
            tokenizer.chat_template = summary.chat_template
        else:
            log.warning("GGUF file %s has no tokenizer.chat_template; chat requests will fail to template", path)
    log.info("GGUF file %s (%s, %s): %s", path, summary.architecture, summary.name, summary.describe(dtype))
    return config, tokenizer, model.eval(), summary


def convert_to_checkpoint(path: Path, out_dir: Path) -> dict:
    """Write the GGUF's model, dequantized to float32 (the exact values the direct load computes), as an
    ordinary checkpoint directory: config, `model.safetensors`, tokenizer files, chat template.

    Returns facts for the checkpoint's marker (the source file, its size and tensor types)."""
    config, tokenizer, model, summary = load_gguf(path, dtype=torch.float32)
    _as_plain_model(model, path)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "converted_from_gguf": path.name,
        "gguf_architecture": summary.architecture,
        "gguf_tensor_types": summary.tensor_types,
        "gguf_file_bytes": summary.file_bytes,
        "parameters": summary.parameters,
        "dtype": "float32",
    }


def _as_plain_model(model, path: Path) -> None:
    """Detach transformers' GGUF quantizer from a fully dequantized model, so `save_pretrained` writes it.

    transformers keeps the quantizer on every GGUF-loaded model and refuses to save one ("not serializable"),
    also when nothing stayed packed. Only a model whose every module is a plain float module may be saved."""
    packed = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith("Gguf")})
    if packed:
        raise ModelLoadError(f"GGUF file {path}: some weights stayed packed ({', '.join(packed)}); cannot convert")
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
