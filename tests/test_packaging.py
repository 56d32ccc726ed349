"""A plain (non-editable) install ships the index: `cc-registry validate` works from site-packages."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_non_editable_install_finds_the_index(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("cc_hub-*.whl"))

    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                             capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stderr
    # The runtime dependencies come from this test's environment as a plain path entry, which does not run
    # its .pth files: the editable install of the working tree stays invisible.
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = subprocess.run([python, "-c", "import model_index, registry; print(model_index.root()); print(registry.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    root, module = where.stdout.split()
    assert Path(root).is_relative_to(site) and Path(module).is_relative_to(site), where.stdout
    assert not Path(root).is_relative_to(REPO)

    cli = env_dir / "bin" / "cc-registry"
    result = subprocess.run([cli, "validate"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 models" in result.stdout
    schema = subprocess.run([python, "-c", "import model_index; print(model_index.SCHEMA_FILE.is_file())"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert schema.stdout.strip() == "True"
