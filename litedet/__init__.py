"""litedet: train a compact MobileNetV2 object detector in a TFX pipeline and ship it as TFLite.

One installed package, `litedet`, holds everything; its parts live in the repository's top-level
folders (setup.py maps them): `litedet.pipeline` is `pipeline/` (the graph, settings, runners),
`litedet.components` is `components/` (custom TFX components, module files, the detection
library), `litedet.schemas` is `schemas/`, and the product surface (the `litedet` command and its
verbs) is `litedet/` itself.
"""

__version__ = "0.1.0"
