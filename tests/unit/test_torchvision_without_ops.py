"""deploy/vllm/torchvision_without_ops.py on a wheel shaped like the registry's torchvision: the compiled parts are
left out, the two unguarded fake registrations are guarded, the version says so, the RECORD matches the files, and
everything else is byte for byte the same. (`make install-vllm` installs its output; the vLLM captioner's tests
import it there.)"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import zipfile

import pytest

from tests.support.processes import REPO_ROOT

META = """import torchvision
@register_meta("roi_align")
def meta_roi_align(): ...
@torch.library.register_fake("torchvision::nms")
def meta_nms(): ...
@torch.library.register_fake("torchvision::qnms")
def meta_qnms(): ...
"""
FILES = {
    "torchvision/__init__.py": b"from .extension import _HAS_OPS\n",
    "torchvision/_meta_registrations.py": META.encode(),
    "torchvision/version.py": b"__version__ = '0.28.0+cu130'\ngit_version = 'abc'\n",
    "torchvision/transforms/v2/functional/_geometry.py": b"def resize(): ...\n",
    "torchvision/_C.so": b"\x7fELF cuda-linked",
    "torchvision/image.so": b"\x7fELF nvjpeg",
    "torchvision.libs/libcudart.faf08d9a.so.13": b"\x7fELF",
    "torchvision-0.28.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\n",
    "torchvision-0.28.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nTag: cp311-cp311-manylinux_2_28_x86_64\n",
    "torchvision-0.28.0.dist-info/RECORD": b"(the original's)\n",
}


@pytest.fixture
def rewrite():
    spec = importlib.util.spec_from_file_location("twops", REPO_ROOT / "deploy" / "vllm" / "torchvision_without_ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rewrite


def source_wheel(tmp_path, files=FILES):
    path = tmp_path / "torchvision-0.28.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return path


def test_the_wheel_keeps_the_python_and_drops_the_compiled_parts(tmp_path, rewrite):
    out = rewrite(source_wheel(tmp_path), tmp_path)
    assert out.name == "torchvision-0.28.0+noops-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(out) as wheel:
        files = {name: wheel.read(name) for name in wheel.namelist()}
    info = "torchvision-0.28.0+noops.dist-info/"
    assert set(files) == {
        "torchvision/__init__.py",
        "torchvision/_meta_registrations.py",
        "torchvision/version.py",
        "torchvision/transforms/v2/functional/_geometry.py",
        info + "METADATA",
        info + "WHEEL",
        info + "RECORD",
    }
    assert files["torchvision/__init__.py"] == FILES["torchvision/__init__.py"]
    assert files["torchvision/transforms/v2/functional/_geometry.py"] == b"def resize(): ...\n"
    meta = files["torchvision/_meta_registrations.py"].decode()
    assert "register_fake" not in meta and meta.count("@register_meta(") == 3
    assert '@register_meta("nms")' in meta and '@register_meta("qnms")' in meta
    assert files["torchvision/version.py"].startswith(b"__version__ = '0.28.0+noops'\n")
    assert b"Version: 0.28.0+noops\n" in files[info + "METADATA"]
    assert files[info + "WHEEL"] == FILES["torchvision-0.28.0.dist-info/WHEEL"]


def test_its_record_lists_every_file_with_its_hash(tmp_path, rewrite):
    out = rewrite(source_wheel(tmp_path), tmp_path)
    with zipfile.ZipFile(out) as wheel:
        names = wheel.namelist()
        lines = wheel.read("torchvision-0.28.0+noops.dist-info/RECORD").decode().splitlines()
        for line in lines[:-1]:
            name, digest, size = line.split(",")
            data = wheel.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (f"sha256={expected}", len(data))
    assert lines[-1] == "torchvision-0.28.0+noops.dist-info/RECORD,,"
    assert sorted(line.split(",")[0] for line in lines) == sorted(names)


def test_a_release_whose_registrations_changed_stops_the_install(tmp_path, rewrite):
    changed = {**FILES, "torchvision/_meta_registrations.py": b"# nms is registered elsewhere now\n"}
    with pytest.raises(SystemExit, match="no longer has"):
        rewrite(source_wheel(tmp_path, changed), tmp_path)
