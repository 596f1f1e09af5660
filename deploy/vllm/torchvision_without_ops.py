"""Write a torchvision wheel that loads beside the CPU torch: the registry's own release, less its compiled ops.

vLLM's vision-language path needs torchvision: transformers' image processors for Qwen2-VL, Qwen3-VL, Pixtral...
resize and normalize with `torchvision.transforms.v2`, and their processors refuse to build without it. The
package registry's only torchvision for torch 2.13 (0.28.0) is a CUDA build: its `_C.so` links
`libtorch_cuda.so`, which the CPU torch does not have, so the extension fails to load and `import torchvision`
then fails at `register_fake("torchvision::nms")`, an operator only that extension defines (the other fake
registrations already check `_has_ops()`). PyTorch's own CPU wheel (download.pytorch.org/whl/cpu) is the
real fix where that index can be reached; this machine reaches only the registry.

So `make install-vllm` runs this on the registry's wheel: the same Python package, byte for byte, except
- the compiled parts are left out (`_C.so`, the CUDA image decoders `image.so`, and `torchvision.libs/` with
  libcudart and nvjpeg): torchvision's detection ops (nms, roi_align, deform_conv2d...) and its own image
  decoding are unavailable, and raise torchvision's "Couldn't load custom C++ ops" if called. vLLM and
  transformers use neither for the models served here (they decode images with PIL);
- the two fake registrations of nms/qnms go through torchvision's own `register_meta`, which skips them when
  the ops are absent, as it does for every other op;
- its version gains the local label `+noops`, so `pip list` says what it is.

Usage: `python torchvision_without_ops.py SOURCE_WHEEL OUT_DIR` prints the path of the wheel it wrote.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

LABEL = "noops"
DROPPED = re.compile(r"^torchvision/[^/]+\.so$|^torchvision\.libs/")
FAKES = ('@torch.library.register_fake("torchvision::nms")', '@torch.library.register_fake("torchvision::qnms")')
GUARDED = ('@register_meta("nms")', '@register_meta("qnms")')


def _patched_meta_registrations(text: str) -> str:
    for fake, guarded in zip(FAKES, GUARDED):
        if text.count(fake) != 1:
            raise SystemExit(f"torchvision/_meta_registrations.py no longer has {fake}: check this script")
        text = text.replace(fake, guarded)
    return text


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def rewrite(source: Path, out_dir: Path) -> Path:
    """The wheel without compiled ops, written to `out_dir`; returns its path."""
    name, version, *tags = source.name.removesuffix(".whl").split("-")
    base = version.split("+")[0]
    new_version = f"{base}+{LABEL}"
    old_info, new_info = f"{name}-{version}.dist-info/", f"{name}-{new_version}.dist-info/"
    target = out_dir / ("-".join([name, new_version, *tags]) + ".whl")
    records: list[str] = []
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            path = item.filename
            if DROPPED.search(path) or path == old_info + "RECORD":
                continue
            data = src.read(item)
            if path == "torchvision/_meta_registrations.py":
                data = _patched_meta_registrations(data.decode()).encode()
            elif path == "torchvision/version.py":
                data = re.sub(rb"__version__ = '[^']*'", f"__version__ = '{new_version}'".encode(), data)
            elif path == old_info + "METADATA":
                data = re.sub(rb"(?m)^Version: .*$", f"Version: {new_version}".encode(), data)
            path = path.replace(old_info, new_info, 1)
            dst.writestr(path, data)
            records.append(_record_line(path, data))
        records.append(f"{new_info}RECORD,,")
        dst.writestr(new_info + "RECORD", "\n".join(records) + "\n")
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.rsplit("Usage: ", 1)[1])
    print(rewrite(Path(sys.argv[1]), Path(sys.argv[2])))
