"""Issue 17, identity: `edgeproxy --version`, `edgeproxy init`, the shipped example config and
the LICENSE an operator (or a packager) looks for."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from importlib.resources import files
from pathlib import Path

from proxy.cli import main
from proxy.config import load

ROOT = Path(__file__).resolve().parents[1]


def edgeproxy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=30,
    )


def test_version_comes_from_package_metadata() -> None:
    r = edgeproxy("--version")
    assert r.returncode == 0
    assert r.stdout.startswith(f"edgeproxy {metadata.version('edgeproxy')} (Python ")


def test_shipped_example_is_config_example() -> None:
    """The wheel carries proxy/data/; config/ is what the README points at. One text."""
    shipped = files("proxy.data").joinpath("edgeproxy.example.toml").read_text()
    assert shipped == (ROOT / "config" / "edgeproxy.example.toml").read_text()


def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    r = edgeproxy("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = tmp_path / "edgeproxy.toml"
    assert written.read_text() == (ROOT / "config" / "edgeproxy.example.toml").read_text()
    assert len(load(str(written)).sites) == 2
    assert f"check-config {written.name}" in r.stdout


def test_init_refuses_to_overwrite_without_force(tmp_path: Path, capsys) -> None:
    target = tmp_path / "mine.toml"
    target.write_text("# the operator's own\n")
    assert main(["init", str(target)]) == 1
    assert "--force" in capsys.readouterr().err
    assert target.read_text() == "# the operator's own\n"
    assert main(["init", "--force", str(target)]) == 0
    assert target.read_text().startswith("# edgeproxy example config")


def test_license_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()
