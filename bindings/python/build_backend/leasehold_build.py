"""The PEP 517 build backend of the Python package: builds the C library with cargo and packs it
into a wheel with the package's sources. No dependency beyond the standard library (of Python
3.11 or newer, for tomllib: building needs 3.11, the wheel runs on 3.9 and newer). The wheel is
tagged for this platform (``linux_x86_64``...), not ``manylinux``: it is for installing here and
on machines like this one, not for PyPI as is.

Environment:
  LEASEHOLD_LIBRARY        pack this libleasehold.so instead of building one;
  LEASEHOLD_CARGO_PROFILE  the cargo profile to build (default ``release``; CI packs the ``dev``
                           build its tests already made);
  CARGO_TARGET_DIR         honoured by cargo as usual.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # bindings/python
REPO = HERE.parent.parent
PACKAGE = HERE / "leasehold"


def _project() -> dict:
    with open(HERE / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _library_file_name() -> str:
    if sys.platform == "darwin":
        return "libleasehold.dylib"
    if sys.platform == "win32":
        return "leasehold.dll"
    return "libleasehold.so"


def _build_library() -> Path:
    """Runs cargo and answers the path of the cdylib it made."""
    explicit = os.environ.get("LEASEHOLD_LIBRARY")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise RuntimeError(f"LEASEHOLD_LIBRARY={explicit} is not a file")
        return path
    profile = os.environ.get("LEASEHOLD_CARGO_PROFILE", "release")
    command = [
        "cargo", "build", "--locked", "-p", "leasehold-ffi", "--profile", profile,
        "--message-format=json-render-diagnostics",
    ]
    print("building the C library:", " ".join(command), file=sys.stderr)
    try:
        out = subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError as err:
        raise RuntimeError("cargo not found: a Rust toolchain is needed to build the wheel") from err
    wanted = _library_file_name()
    for line in out.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact":
            continue
        if message["target"]["name"] != "leasehold" or "cdylib" not in message["target"]["kind"]:
            continue
        for filename in message["filenames"]:
            if Path(filename).name == wanted:
                return Path(filename)
    raise RuntimeError(f"cargo built no {wanted}")


def _platform_tag() -> str:
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _metadata(project: dict) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project['description']}",
        f"License: {project['license']}",
        f"Requires-Python: {project['requires-python']}",
        "Description-Content-Type: text/markdown",
        "",
        (HERE / project["readme"]).read_text(encoding="utf-8"),
    ]
    return "\n".join(lines)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = _project()
    name, version = project["name"], project["version"]
    tag = f"py3-none-{_platform_tag()}"
    library = _build_library()
    dist_info = f"{name}-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    for source in sorted(PACKAGE.iterdir()):
        if source.suffix in (".py", ".typed"):
            files.append((f"leasehold/{source.name}", source.read_bytes()))
    files.append((f"leasehold/{_library_file_name()}", library.read_bytes()))
    files.append((f"{dist_info}/METADATA", _metadata(project).encode()))
    wheel_text = f"Wheel-Version: 1.0\nGenerator: leasehold_build\nRoot-Is-Purelib: false\nTag: {tag}\n"
    files.append((f"{dist_info}/WHEEL", wheel_text.encode()))
    record = [_record_line(n, d) for n, d in files] + [f"{dist_info}/RECORD,,"]
    files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))

    wheel_name = f"{name}-{version}-{tag}.whl"
    Path(wheel_directory).mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(Path(wheel_directory) / wheel_name, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file_name, data in files:
            info = zipfile.ZipInfo(file_name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if file_name.endswith(_library_file_name()) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    return wheel_name


def get_requires_for_build_wheel(config_settings=None):
    return []
