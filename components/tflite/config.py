"""The `tflite:` section of a litedet configuration (pipeline/configs.py composes the sections).

No TensorFlow or TFX import here: the CLI reads and checks configurations without them.
"""

import dataclasses
from typing import List

from litedet.components.tflite import DEFAULT_NUM_CALIBRATION_IMAGES, FORMATS


@dataclasses.dataclass
class TFLiteConfig:
    # float32 (float input in [-1, 1]), float16 (half-size weights), int8 (full-integer, uint8
    # input). Every format carries TFLite Task / MediaPipe ObjectDetector metadata.
    formats: List[str] = dataclasses.field(default_factory=lambda: list(FORMATS))
    num_calibration_images: int = DEFAULT_NUM_CALIBRATION_IMAGES  # int8: training images
    # The format a device gets (the manifest's "ship_format"), checked against the device
    # budgets; every converted format is pushed. int8: with the stock interpreter (XNNPACK) it
    # measured fastest at every alpha (1.15-1.8x float32) and smallest, at the same mAP
    # (docs/tflite_sweep.md). Without XNNPACK it is the slowest: check your runtime.
    ship_format: str = "int8"

    def check(self) -> None:
        unknown = set(self.formats) - set(FORMATS)
        if unknown or not self.formats:
            raise ValueError(
                f"tflite.formats: {self.formats} must be a non-empty list of {', '.join(FORMATS)}"
            )
        if self.ship_format not in self.formats:
            raise ValueError(
                f"tflite.ship_format: {self.ship_format!r} is not among the converted "
                f"tflite.formats {self.formats}"
            )
