"""The GPU check: one call on a CUDA machine runs everything issue 11 asks of the GPU, and prints the figures.

    python3 scripts/gpu_check.py wheels      (here, with network: build the wheelhouse .gpu-wheels/)
    python3 scripts/gpu_check.py             (on the GPU machine, from the repository root, no network)
    python3 scripts/gpu_check.py --dry-run   (anywhere: every step, the CUDA ones skipped with the reason)

The GPU machine's image has torch, timm, triton, pandas, matplotlib, huggingface_hub,
safetensors (and the packages KINDS.md lists) but nothing else of ours: the check
installs our wheel and the missing runtime dependencies from .gpu-wheels/ into a
private folder (--no-index --no-deps), checks that every requirement is met, then
runs, each under a time limit, from a scratch folder (so the installed copy is what runs):

1. ``cc-bench run --all --device cuda`` with a cold Triton cache (issue target: < 60 s);
2. ``cc-bench compare --device cuda`` (ours vs timm CondConv vs timm plain; batch 1 as a CUDA graph);
3. the CUDA parity tests (tests/test_cuda_parity.py);
4. accuracy through ``torchrun --nproc_per_node=1`` (nccl) on generated images and weights.

Output goes to the terminal and, when $OUT is set, to $OUT/gpu_check.log. Exit 0 when every step did what it
should, 1 when one did not, 2 without a wheelhouse or (without --dry-run) without CUDA. Only the standard
library is imported here.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO / ".gpu-wheels"
DEVICE_PYTHON = "3.12"  # the GPU image's python3 (KINDS.md)
# Runtime requirements the GPU image lacks, or has at a version ours do not accept (its huggingface_hub is 1.x),
# carried as wheels at this venv's versions, with what those need (pure-python ones shadow the image's copies).
CARRIED = ("jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "fastjsonschema", "fvcore", "iopath",
           "yacs", "termcolor", "latex2mathml", "huggingface-hub", "httpx2", "httpcore2", "truststore", "click",
           "anyio", "idna", "h11", "filelock", "ninja")
COMPILED = ("rpds-py",)  # no pure-python wheel: downloaded for the image's python and platform
# What the image already holds, as KINDS.md lists it (normalised names; only what our requirements can touch),
# and the versions KINDS.md's pip list gives (others unknown: taken as meeting our lower bounds).
IMAGE = {"torch", "torchvision", "triton", "timm", "numpy", "pandas", "matplotlib", "huggingface-hub", "safetensors",
         "pyyaml", "jinja2", "markupsafe", "pillow", "rich", "tqdm", "portalocker", "tabulate", "attrs",
         "typing-extensions", "packaging", "filelock", "fsspec", "requests", "httpx", "pygments", "markdown-it-py",
         "mdurl", "python-dateutil", "six", "pyparsing", "cycler", "kiwisolver", "contourpy", "fonttools",
         "hf-xet", "shellingham", "typer", "click", "anyio", "idna", "certifi", "h11", "httpcore", "sympy",
         "networkx", "mpmath", "setuptools", "pytest", "pluggy", "iniconfig", "colorama", "hypothesis",
         "sortedcontainers", "charset-normalizer", "urllib3"}
IMAGE_VERSIONS = {"torch": "2.11.0", "torchvision": "0.26.0", "triton": "3.6.0", "numpy": "2.5.2",
                  "huggingface-hub": "1.33.0", "safetensors": "0.8.0"}
DEVICE_MARKERS = {"python_version": DEVICE_PYTHON, "python_full_version": DEVICE_PYTHON + ".3", "os_name": "posix",
                  "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                  "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
STEP_LIMITS_S = {"bench run": 150, "compare": 180, "parity tests": 180, "torchrun accuracy": 90}


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def build_wheels() -> int:
    """Our wheel plus the carried dependencies into .gpu-wheels/ (run where pip can reach PyPI)."""
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    WHEELHOUSE.mkdir()
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(WHEELHOUSE), str(REPO)], check=True)
    for name in CARRIED:
        spec = f"{name}=={importlib.metadata.version(name)}"
        if name in COMPILED:
            subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", DEVICE_PYTHON,
                            "--implementation", "cp", "--platform", "manylinux_2_17_x86_64",
                            "--platform", "manylinux2014_x86_64", "-d", str(WHEELHOUSE), spec], check=True)
        else:  # sdists (fvcore, iopath, yacs) are built into wheels here
            subprocess.run([*pip, "wheel", "--no-deps", "-w", str(WHEELHOUSE), spec], check=True)
    for wheel in sorted(WHEELHOUSE.glob("*.whl")):
        print(f"{wheel.name}  {wheel.stat().st_size / 1024:.0f} KiB")
    return 0


def unmet_requirements(dists: list[tuple[str, str, list[str]]]) -> list[str]:
    """Requirements of ``dists`` (name, version, Requires-Dist lines) that neither another of them nor the GPU
    image meets, evaluated for the image's python and platform."""
    from packaging.requirements import Requirement  # pip's own dependency, on the image too
    from packaging.utils import canonicalize_name

    carried = {canonicalize_name(name): version for name, version, _ in dists}
    unmet = set()
    for name, _, requires in dists:
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(DEVICE_MARKERS):
                continue
            key = canonicalize_name(req.name)
            if key not in carried and key not in IMAGE:
                unmet.add(f"{key} (needed by {name})")
                continue
            version = carried.get(key) or IMAGE_VERSIONS.get(key)
            if version is not None and not req.specifier.contains(version, prereleases=True):
                where = "carried" if key in carried else "on the image"
                unmet.add(f"{key}{req.specifier} (needed by {name}; {version} {where})")
    return sorted(unmet)


def wheel_metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) of a wheel file."""
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    field = lambda key: re.search(rf"^{key}: (.+)$", meta, re.M)[1].strip()  # noqa: E731
    return field("Name"), field("Version"), [r.strip() for r in re.findall(r"^Requires-Dist: (.+)$", meta, re.M)]


def image_like_python(folder: Path) -> str:
    """(Dry run) a python that sees only the image's packages: a venv whose one .pth file points to links to
    this environment's copies of IMAGE (and what they require), plus stand-ins for the COMPILED wheels built
    for another python. The wheelhouse must supply the rest, as on the GPU machine."""
    site = folder / "image-site"
    site.mkdir(parents=True)
    todo, seen = [*IMAGE, *COMPILED], set()
    while todo:
        name = _name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        root = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or ()} - {".."}:
            if (root / top).exists() and not (site / top).exists():
                (site / top).symlink_to(root / top)
        if name not in COMPILED:
            todo += [re.match(r"[A-Za-z0-9_.\-]+", r)[0] for r in dist.requires or () if "extra ==" not in r]
    venv = folder / "image-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "image.pth").write_text(str(site) + "\n")
    return str(python)


class Check:
    def __init__(self, dry: bool):
        self.dry = dry
        self.failures: list[str] = []
        self.no_wheelhouse = False
        self.figures: list[str] = []
        out = os.environ.get("OUT")
        self.log_file = open(Path(out) / "gpu_check.log", "w", encoding="utf-8") if out else None
        self.work = Path(tempfile.mkdtemp(prefix="cc-gpu-check-"))
        self.site = self.work / "site"
        self.python = image_like_python(self.work) if dry else sys.executable
        self.env = {**os.environ, "PYTHONPATH": str(self.site), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                    "TRITON_CACHE_DIR": str(self.work / "triton-cache"), "HF_HOME": str(self.work / "hf"),
                    "TORCH_HOME": str(self.work / "torch"), "MPLBACKEND": "Agg"}

    def log(self, text: str) -> None:
        print(text, flush=True)
        if self.log_file:
            self.log_file.write(text + "\n")
            self.log_file.flush()

    def step(self, name: str, cmd: list[str], ok_codes=(0,), timeout: float | None = None) -> tuple[int, str, float]:
        self.log(f"\n=== {name}: {' '.join(cmd)}")
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=self.work, env=self.env, capture_output=True, text=True,
                                  timeout=timeout or STEP_LIMITS_S.get(name, 120))
            code, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            code = -1
            output = f"{exc.stdout or ''}{exc.stderr or ''}\nTIMED OUT after {exc.timeout:.0f} s"
            output = output if isinstance(output, str) else output.decode(errors="replace")
        seconds = time.perf_counter() - started
        self.log(output.rstrip()[-6000:])
        self.log(f"=== {name}: exit {code} in {seconds:.1f} s")
        if code not in ok_codes:
            self.failures.append(f"{name}: exit {code}")
        return code, output, seconds

    def install(self) -> bool:
        wheels = sorted(WHEELHOUSE.glob("*.whl"))
        if not any(w.name.startswith("cc_hub-") for w in wheels):
            self.log(f"no wheelhouse at {WHEELHOUSE}: run `make gpu-wheels` (or scripts/gpu_check.py wheels) first, "
                     "where pip can reach PyPI")
            self.failures.append("install: no wheelhouse")
            self.no_wheelhouse = True
            return False
        unmet = unmet_requirements([wheel_metadata(w) for w in wheels])
        if unmet:
            self.failures.append("install: requirements the image and the wheelhouse lack: " + ", ".join(unmet))
            self.log(self.failures[-1])
        here = f"cp{sys.version_info.major}{sys.version_info.minor}"
        usable = [w for w in wheels if "-cp" not in w.name or f"-{here}-" in w.name]
        for skipped in sorted(set(wheels) - set(usable)):
            self.log(f"(dry run, python {sys.version.split()[0]}: {skipped.name} is for the GPU image's python; "
                     "this environment's copy stands in)")
        code, _, _ = self.step("install", [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                           "--no-compile", "--target", str(self.site), *map(str, usable)],
                               timeout=120)
        if code == 0:
            code, _, _ = self.step("imports", [self.python, "-c",
                                               "import cc_models, cc_models.kernels, bench.cli, registry, fvcore.nn, "
                                               "jsonschema, latex2mathml.converter, triton; registry.load(); "
                                               "print('kernels available:', cc_models.kernels.available(), "
                                               "'from', cc_models.__file__)"], timeout=120)
        return code == 0

    def bench_run(self) -> None:
        results = self.work / "results-run"
        cmd = [self.python, "-m", "bench", "run", "--all", "--device", "cuda", "--results", str(results),
               "--format", "json"]
        code, output, seconds = self.step("bench run", cmd)
        report = _json_tail(output)
        if report is None:
            return
        rows = [r for r in report["results"] if r["check"] == "throughput"]
        if self.dry:
            if not all(r["status"] == "skip" for r in rows):
                self.failures.append("bench run: without CUDA the throughput rows should be skips")
            return
        bad = [r for r in report["results"] if r["status"] == "error"]
        if bad:
            self.failures.append(f"bench run: {len(bad)} error rows: {bad[0]['reason']}")
        self.figures.append(f"cc-bench run --all --device cuda: {seconds:.1f} s wall (target < 60 s, cold Triton "
                            f"cache), exit {code}")
        for r in rows:
            self.figures.append(f"  {r['model_id']} bs={r['batch_size']} {r['dtype']}: {r['measured']} img/s "
                                f"(peak {r['extra'].get('peak_memory_mib') or 0:.0f} MiB, {r['status']})")

    def compare(self) -> None:
        cmd = [self.python, "-m", "bench", "compare", "--device", "cuda", "--results",
               str(self.work / "results-compare"), "--repeats", "10"]
        code, output, seconds = self.step("compare", cmd, ok_codes=(2,) if self.dry else (0,))
        if not self.dry:
            summary = output[output.rfind("\nmodel "):] if "\nmodel " in output else output[-3000:]
            self.figures.append(f"cc-bench compare --device cuda ({seconds:.0f} s):" + summary.rstrip())
            self.figures += [line for line in output.splitlines() if "target" in line]

    def parity_tests(self) -> None:
        cmd = [self.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO),
               str(REPO / "tests" / "test_cuda_parity.py")]
        code, output, _ = self.step("parity tests", cmd, ok_codes=(0,))
        last = output.strip().splitlines()[-1] if output.strip() else ""
        self.figures.append(f"CUDA parity tests: {last}")
        if not self.dry and "skipped" in last and "passed" not in last:
            self.failures.append("parity tests: skipped on a CUDA machine")

    def torchrun_accuracy(self) -> None:
        data, ckpt = self.work / "imagenet", self.work / "checkpoints"
        model_id = "tf_efficientnet_cc_b0_4e"
        code, _, _ = self.step("generate data", [self.python, "-c", GENERATE, str(data), str(ckpt), model_id],
                               timeout=120)
        if code != 0:
            return
        device = "cpu" if self.dry else "cuda"
        cmd = [self.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
               "bench", "run", model_id, "--checks", "accuracy", "--imagenet", str(data), "--checkpoint-dir",
               str(ckpt), "--device", device, "--workers", "0", "--eval-batch-size", "16", "--results",
               str(self.work / "results-acc"), "--format", "json"]
        # exit 1 expected: random weights fail the index's accuracy claims; what matters is that it measured
        code, output, seconds = self.step("torchrun accuracy", cmd, ok_codes=(0, 1))
        report = _json_tail(output)
        rows = [r for r in (report or {}).get("results", []) if r["check"] == "accuracy"]
        measured = rows and all(r["measured"] is not None and r["status"] in ("pass", "fail") for r in rows)
        backend = "gloo" if self.dry else "nccl"
        if not measured or (report or {}).get("environment", {}).get("processes") != 1:
            self.failures.append(f"torchrun accuracy ({backend}): no measured rows")
        else:
            self.figures.append(f"torchrun --nproc_per_node=1 accuracy ({backend}, {device}): "
                                f"{rows[0]['extra']['images']} generated images evaluated in {seconds:.0f} s")

    def run(self) -> int:
        try:
            return self._run()
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    def _run(self) -> int:
        started = time.perf_counter()
        if not self.dry:
            probe = subprocess.run([self.python, "-c", "import torch; print(torch.cuda.is_available())"],
                                   capture_output=True, text=True)
            if probe.stdout.strip() != "True":
                self.log("no CUDA device here: run with --dry-run to exercise the steps without one")
                return 2
        else:
            self.log("dry run: no CUDA parts (bench rows skip, compare exits 2, parity tests skip, accuracy on gloo)")
        if self.install():
            self.bench_run()
            self.compare()
            self.parity_tests()
            self.torchrun_accuracy()
        total = time.perf_counter() - started
        self.log("\n=== figures")
        for line in self.figures:
            self.log(line)
        self.log(f"\ngpu check: {total:.0f} s in all (target < 360 s); "
                 + ("OK" if not self.failures else "FAILED: " + "; ".join(self.failures)))
        return 2 if self.no_wheelhouse else 0 if not self.failures else 1


GENERATE = r"""
import sys, numpy as np, torch
from pathlib import Path
from PIL import Image
from safetensors.torch import save_file
import cc_models
data, ckpt, model_id = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
data.mkdir(parents=True); (ckpt / model_id).mkdir(parents=True)
rng = np.random.default_rng(0)
lines = ["filename,label"]
for i in range(48):
    Image.fromarray(rng.integers(0, 256, (256, 288, 3), dtype=np.uint8)).save(data / f"img{i:03d}.png")
    lines.append(f"img{i:03d}.png,{int(rng.integers(0, 1000))}")
(data / "labels.csv").write_text("\n".join(lines) + "\n")
torch.manual_seed(0)
state = cc_models.from_index(model_id).state_dict()
save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt / model_id / "model.safetensors"))
print("generated", len(lines) - 1, "images and random weights for", model_id)
"""


def _json_tail(output: str) -> dict | None:
    """The JSON report a step printed (stdout comes first in its output; whatever follows is ignored)."""
    start = output.find("{\n")
    try:
        return json.JSONDecoder().raw_decode(output[start:])[0] if start >= 0 else None
    except json.JSONDecodeError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", choices=("check", "wheels"), default="check")
    parser.add_argument("--dry-run", action="store_true", help="without CUDA: every step, CUDA parts skipped")
    args = parser.parse_args(argv)
    if args.mode == "wheels":
        return build_wheels()
    return Check(dry=args.dry_run).run()


if __name__ == "__main__":
    sys.exit(main())
