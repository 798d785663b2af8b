"""litedet: a TFX pipeline that trains a compact MobileNetV2 object detector and ships TFLite."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent


def _requirements(path: str):
    lines = (HERE / path).read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


setup(
    name="litedet",
    version="0.1.0",
    description=__doc__,
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.11",  # TFX 1.16 (see shared STACK.md)
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*",
                                    "schemas"]),
    package_data={"schemas": ["*.pbtxt"]},
    # Loose here, exact in requirements.lock: `make` installs the lock, then this package.
    install_requires=[r for r in _requirements("requirements.in")
                      if not r.startswith(("pytest", "hypothesis", "kubernetes-validate"))],
    extras_require={"test": ["pytest", "hypothesis", "kubernetes-validate"]},
    entry_points={"console_scripts": ["litedet=pipeline.cli:main"]},
)
