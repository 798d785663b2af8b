"""The `evaluation:` section of a litedet configuration (pipeline/configs.py composes the sections).

No TensorFlow or TFX import here: the CLI reads and checks configurations without them.
"""

import dataclasses


@dataclasses.dataclass
class EvaluationConfig:
    """What a model must reach to be blessed (components/evaluation/executor.py)."""

    # Absolute bound on the SavedModel's mAP@0.5 on the evaluation split (TFMA, COCO matching).
    min_map50: float = 0.5
    # Against the latest blessed model: how far mAP@0.5 may drop. 0: any regression blocks.
    max_map_drop: float = 0.0
    # Every converted TFLite format must score within this of the SavedModel (1.5 mAP points).
    max_tflite_map_drop: float = 0.015
    # Device budgets for the shipped format, on the stock interpreter, one thread. 0: no budget.
    max_latency_ms: float = 0.0
    max_size_mb: float = 0.0
    # Classes, for per-class AP: 0 counts them from the dataset when the pipeline is built.
    num_classes: int = 0

    def check(self) -> None:
        # `not (... <= ...)`: a NaN fails every comparison, so it is refused, not let through.
        for name in ("min_map50", "max_map_drop", "max_tflite_map_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"evaluation.{name}: {getattr(self, name)} must be in [0, 1]")
        for name in ("max_latency_ms", "max_size_mb", "num_classes"):
            if not getattr(self, name) >= 0 or getattr(self, name) == float("inf"):
                raise ValueError(f"evaluation.{name}: {getattr(self, name)} must be >= 0 (0: none)")
