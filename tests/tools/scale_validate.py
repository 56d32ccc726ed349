"""Generate a large model index and time `cc-registry validate` on it (issue 13.5: 10,000 models in 100 files
in under 10 s and 300 MB on 2 cores).

    python tests/tools/scale_validate.py                 # 10,000 models in 100 files
    python tests/tools/scale_validate.py --models 1000 --files 10 --keep DIR

The index is the packaged one with each model copied under new names (``v00042_tf_efficientnet_cc_b0_4e``:
the experts suffix stays, so every semantic check still runs). Validation runs as a child process
(`python -m registry.cli validate`), so the peak RSS printed is that command's alone.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import model_index


def generate(root: Path, models: int, files: int) -> Path:
    """Write an index of ``models`` models spread over ``files`` files under ``root``; return its root file."""
    shutil.copytree(model_index.INDEX_DIR / "collections", root / "collections")
    templates = []
    for path in sorted((model_index.INDEX_DIR / "models").glob("*.yml")):
        body = path.read_text(encoding="utf-8").split("Models:\n", 1)[1]
        name = path.stem
        templates.append((name, body))
    (root / "models").mkdir(parents=True)
    per_file = -(-models // files)
    imports = []
    for f in range(files):
        items = []
        for i in range(f * per_file, min(models, (f + 1) * per_file)):
            name, body = templates[i % len(templates)]
            items.append(body.replace(name, f"v{i:05d}_{name}"))
        rel = f"models/part{f:03d}.yml"
        (root / rel).write_text("Models:\n" + "".join(items), encoding="utf-8")
        imports.append(rel)
    index = root / "model-index.yml"
    lines = ["Import:", "  - collections/tf-efficientnet-condconv.md"] + [f"  - {rel}" for rel in imports]
    index.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="write the index here and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="cc-scale-"))
    try:
        index = generate(folder, args.models, args.files)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "registry.cli", "validate", str(index)],
                                capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # ru_maxrss: KiB on Linux
        print(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr.strip()[-2000:])
        print(f"validate: {args.models:,} models in {args.files} files: {elapsed:.2f} s wall, "
              f"{usage.ru_utime + usage.ru_stime:.2f} s CPU, peak RSS {usage.ru_maxrss / 1024:.0f} MiB "
              f"(exit {result.returncode}); target < 10 s and < 300 MB")
        return result.returncode
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
