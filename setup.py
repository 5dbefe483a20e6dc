"""Which files make up the ipsb package (metadata and dependencies: setup.cfg).

Besides the ``ipsb`` packages, two data trees ship: the assets (``ipsb/assets/``: toy network
weights, the trained toy stages) and the configs. The configs live at the repository root
(``lightning_configs/``, where a source checkout types ``ipsb fit --config lightning_configs/...``) and
are installed as ``ipsb/lightning_configs/``, so an installed ipsb finds them from any working
directory (:func:`ipsb.assets.config_path`). Every folder of a data tree is listed as a package, so
setuptools copies its files without guessing.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
DATA_FILES = ["*"]   # every file of a data folder


def data_packages(package: str, folder: str) -> list[str]:
    """``package`` and one package per subfolder of ``folder`` (its files are package data)."""
    base = ROOT / folder
    subs = sorted(d for d in base.rglob("*") if d.is_dir() and d.name != "__pycache__")
    return [package] + [".".join([package, *d.relative_to(base).parts]) for d in subs]


CONFIG_PACKAGES = data_packages("ipsb.lightning_configs", "lightning_configs")
ASSET_PACKAGES = data_packages("ipsb.assets", "ipsb/assets")

setup(
    packages=sorted(set(find_packages(include=["ipsb", "ipsb.*"]) + CONFIG_PACKAGES + ASSET_PACKAGES)),
    package_dir={"ipsb.lightning_configs": "lightning_configs"},
    package_data={p: DATA_FILES for p in CONFIG_PACKAGES + ASSET_PACKAGES},
)
