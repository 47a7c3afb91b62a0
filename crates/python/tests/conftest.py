"""Shared fixtures: the model (loaded once), the `interplab` CLI binary the bindings are
checked against, and a safetensors reader written out by hand (8-byte little-endian header
length, JSON header, raw little-endian data) so the checks need nothing but numpy."""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

import interplab

REPO = pathlib.Path(__file__).resolve().parents[3]
MODEL = "smollm2-135m"

_DTYPES = {
    "F32": np.float32,
    "F64": np.float64,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "U32": np.uint32,
    "U8": np.uint8,
}


def read_safetensors(path):
    """``{name: array}`` of a .safetensors file."""
    raw = pathlib.Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(data[lo:hi], dtype=dtype).reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    """Write ``{name: float32 array}`` as a .safetensors file."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    pathlib.Path(path).write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


@pytest.fixture(scope="session")
def model():
    return interplab.load(MODEL)


@pytest.fixture(scope="session")
def cli_bin():
    path = pathlib.Path(os.environ.get("INTERPLAB_BIN", REPO / "target" / "debug" / "interplab"))
    if not path.is_file():
        pytest.fail(
            f"the interplab CLI is not at {path}: build it (cargo build -p interplab-cli) or set "
            "INTERPLAB_BIN; crates/python/run_tests.sh does this"
        )
    return path


class Cli:
    """Runs the `interplab` binary."""

    def __init__(self, path):
        self.path = path

    def __call__(self, *args, ok=True):
        p = subprocess.run(
            [str(self.path), *map(str, args)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        if ok and p.returncode != 0:
            raise AssertionError(f"interplab {' '.join(map(str, args))} failed:\n{p.stderr}")
        return p

    def error_line(self, *args):
        """The one-line message after `error: ` of a command that must fail."""
        p = self(*args, ok=False)
        assert p.returncode != 0, f"interplab {' '.join(map(str, args))} succeeded"
        lines = [l for l in p.stderr.splitlines() if l.startswith("error: ")]
        assert len(lines) == 1, p.stderr
        return lines[0][len("error: ") :]


@pytest.fixture(scope="session")
def cli(cli_bin):
    return Cli(cli_bin)
