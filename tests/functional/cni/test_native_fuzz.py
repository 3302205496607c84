"""The native shim's JSON reader under a coverage-guided fuzzer, with the Python shim as the oracle.

The reader in ``cni/native/shim.c`` runs as root on every pod start and parses what the
runtime (or whoever can run the binary) hands it. ``cni/native/fuzz/json_fuzz.c`` includes the
shim's source and is built twice:

* with libFuzzer (Debian's clang, ``-fsanitize=fuzzer,address,undefined``): a bounded run
  (``OVNK_FUZZ_SECONDS``, default 60) from the corpus in the repository; any crash, leak,
  undefined behaviour or bad encoding fails the test with the input that caused it;
* as a plain driver that prints what the shim concludes from each input (JSON type, the
  ``cniVersion`` and ``serverSocket`` it would use), compared with what the Python shim
  concludes from the same bytes, over the repository's corpus and everything the run found.

Where the two shims may differ, and why (not compared):

* nesting deeper than 512: the native reader stops there; Python goes on to its recursion
  limit (~1000), and both refuse beyond;
* a value holding U+0000 (``\\u0000``): the native shim uses C strings, so it stops at the NUL.

The committed corpus is ``seeds/`` (hand-written) and ``found/`` (inputs earlier runs found,
minimized with ``-merge=1``). To grow it: run the fuzzer longer into a directory, then
``json_fuzz -merge=1 found/ seeds/ found/ <that directory>``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ovnk.cni import shim

REPO = Path(__file__).resolve().parents[3]
FUZZ_DIR = REPO / "cni" / "native" / "fuzz"
CORPUS = (FUZZ_DIR / "seeds", FUZZ_DIR / "found")
FUZZ_SECONDS = int(os.environ.get("OVNK_FUZZ_SECONDS", "60"))
MAX_LEN = 4096
PYTHON_TYPES = {"dict": "object", "list": "array", "str": "string", "int": "number", "float": "number",
                "bool": "boolean", "NoneType": "null"}

pytestmark = [pytest.mark.slow]


def clang() -> str:
    found = shutil.which("clang")
    assert found, "clang is missing: hack/setup.sh installs clang and libclang-rt-dev (libFuzzer)"
    return found


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("fuzz-build")
    fuzzer, driver = out / "json_fuzz", out / "json_driver"
    source = str(FUZZ_DIR / "json_fuzz.c")
    for argv in ([clang(), "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
                  "-o", str(fuzzer), source],
                 [clang(), "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                  "-DOVNK_FUZZ_DRIVER", "-o", str(driver), source]):
        built = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert built.returncode == 0, f"{' '.join(argv)}:\n{built.stderr}"
    return fuzzer, driver


def python_verdict(data: bytes) -> tuple[str, str, str]:
    """What the Python shim concludes: (JSON type, cniVersion, serverSocket) as the driver prints them."""
    _text, config, problem = shim._read_config(io.BytesIO(data))
    if config is None:
        if "not JSON" in problem:
            return "invalid", "-", "-"
        kind = problem.split("is a JSON ", 1)[1].split(",", 1)[0]
        return PYTHON_TYPES[kind], "-", "-"

    def shown(value: object) -> str:
        if not isinstance(value, str):
            return "-"
        return "=" + value.encode("utf-8", "surrogatepass").split(b"\0", 1)[0].hex()

    return "object", shown(config.get("cniVersion")), shown(config.get("serverSocket"))


def compare_with_python(driver: Path, folders: list[Path]) -> int:
    files = sorted(str(f) for folder in folders for f in folder.iterdir() if f.is_file())
    assert files, f"no inputs in {folders}"
    out = subprocess.run([str(driver), *files], capture_output=True, timeout=600, check=True).stdout.decode()
    differ = []
    for line in out.splitlines():
        path, kind, version, socket, error = line.split("\t")
        if error == "nested too deeply":
            continue
        data = Path(path).read_bytes()
        expected = python_verdict(data)
        if (kind, version, socket) != expected:
            differ.append(f"{path}: native {(kind, version, socket)} ({error}), python {expected}: {data[:120]!r}")
    assert not differ, f"{len(differ)} of {len(files)} inputs read differently:\n" + "\n".join(differ[:20])
    return len(files)


def test_native_and_python_shims_read_the_corpus_alike(binaries: tuple[Path, Path]) -> None:
    compared = compare_with_python(binaries[1], list(CORPUS))
    assert compared > 100  # the committed corpus, seeds and found inputs


def test_fuzzing_the_json_reader_finds_nothing(binaries: tuple[Path, Path], tmp_path: Path) -> None:
    fuzzer, driver = binaries
    new = tmp_path / "new"
    new.mkdir()
    argv = [str(fuzzer), f"-max_total_time={FUZZ_SECONDS}", f"-max_len={MAX_LEN}", f"-dict={FUZZ_DIR / 'json.dict'}",
            f"-artifact_prefix={tmp_path}/", "-print_final_stats=1", str(new), *(str(c) for c in CORPUS)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=FUZZ_SECONDS + 300, check=False, cwd=tmp_path)
    artifacts = [p for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-", "oom-"))]
    assert run.returncode == 0 and not artifacts, (
        f"libFuzzer exited {run.returncode}; inputs: {[(a.name, a.read_bytes()[:200]) for a in artifacts]}\n"
        + "\n".join(run.stderr.splitlines()[-40:]))
    stats = dict(line.strip().partition(": ")[::2] for line in run.stderr.splitlines() if line.startswith("stat::"))
    assert int(stats.get("stat::number_of_executed_units", "0")) > 1000, run.stderr[-2000:]
    # Everything the run found, read by both shims.
    compare_with_python(driver, [*CORPUS, new])
    print(json.dumps({"seconds": FUZZ_SECONDS, **stats, "new_inputs": len(list(new.iterdir()))}))
