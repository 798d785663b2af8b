"""The `transform:` section of a litedet configuration (pipeline/configs.py composes the sections).

No TensorFlow or TFX import here: the CLI reads and checks configurations without them.
"""

import dataclasses

from litedet.components.detection import check_image_size
from litedet.components.features import RESIZE_MODES


@dataclasses.dataclass
class TransformConfig:
    # 256 px: the input size at which MobileNetV2 trains at a usable speed on 2 CPU cores.
    image_size: int = 256
    resize_mode: str = "stretch"  # or "letterbox" (keeps the aspect ratio, pads)
    # Also the ExampleGen's max_objects_per_image: images with more objects are quarantined,
    # never cut.
    max_boxes: int = 100
    # false: Transform analyzes (the label vocabulary) and the Trainer applies its graph to the
    # raw JPEG bytes as it reads them. true: Transform also writes every transformed image, as
    # float pixels (~0.8 MB an image at 256 px; benchmarks/transform_throughput.py measures both).
    materialize: bool = False

    def check(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"transform.resize_mode: {self.resize_mode!r} is not one of "
                f"{', '.join(RESIZE_MODES)}"
            )
        try:
            check_image_size(self.image_size)
        except ValueError as e:
            raise ValueError(f"transform.image_size: {e}") from None
        if self.max_boxes < 1:
            raise ValueError(f"transform.max_boxes: {self.max_boxes} must be >= 1")
