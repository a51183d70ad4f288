"""What `pip install .` ships: every package folder, its data files, nothing stray."""

from __future__ import annotations

import sys
from pathlib import Path

import setuptools

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def setuptools_config() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def test_the_packages_are_the_folders_with_python_files_and_only_those():
    """namespaces = false: a folder under charlstm/ without an __init__.py (output written
    there, a cache) is not shipped as a namespace package; and no folder of code lacks
    an __init__.py, so nothing is lost by it."""
    find = setuptools_config()["packages"]["find"]
    assert find["namespaces"] is False
    found = set(setuptools.find_packages(str(ROOT), include=find["include"]))
    code = {".".join(p.relative_to(ROOT).parts) for p in [ROOT / "charlstm",
                                                        *(ROOT / "charlstm").rglob("*")]
            if p.is_dir() and "__pycache__" not in p.parts and any(p.glob("*.py"))}
    assert found == code


def test_every_package_data_pattern_names_files():
    for package, patterns in setuptools_config()["package-data"].items():
        for pattern in patterns:
            assert list((ROOT / package.replace(".", "/")).glob(pattern)), pattern


def test_an_editable_install_puts_the_repository_on_sys_path():
    """package-dir {"": "."} makes setuptools' editable install a .pth entry for this
    folder (its flat-layout fallback is a finder that a folder named charlstm in the
    working directory, such as a clone seen from its parent, takes precedence over)."""
    assert setuptools_config()["package-dir"] == {"": "."}
