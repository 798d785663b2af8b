"""litedet: a TFX pipeline that trains a compact MobileNetV2 object detector and ships TFLite.

Everything installs under the one name `litedet`: the top-level folders `pipeline/`,
`components/` and `schemas/` become `litedet.pipeline`, `litedet.components` and
`litedet.schemas` (ARCHITECTURE.md, "Packaging", says why no generic top-level names).
"""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
# Import name -> folder in this repository.
FOLDERS = {
    "litedet": "litedet",
    "litedet.pipeline": "pipeline",
    "litedet.components": "components",
    "litedet.schemas": "schemas",
}


def _packages():
    found = []
    for name, folder in FOLDERS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(folder)]
    return found


def _requirements(path: str):
    lines = (HERE / path).read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


TEST_ONLY = ("pytest", "hypothesis", "kubernetes-validate", "ruff", "moto", "flask")

setup(
    name="litedet",
    version="0.1.0",
    description=__doc__.splitlines()[0],
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.11",  # TFX 1.16 (docs/toolchain.md)
    packages=_packages(),
    package_dir=FOLDERS,
    package_data={"litedet.schemas": ["*.pbtxt"]},
    # Loose here, exact in requirements.lock: `make` installs the lock, then this package.
    install_requires=[r for r in _requirements("requirements.in") if not r.startswith(TEST_ONLY)],
    extras_require={
        "test": [r for r in _requirements("requirements.in") if r.startswith(TEST_ONLY)]
    },
    entry_points={"console_scripts": ["litedet=litedet.cli:main"]},
)
