"""The `training:` section: the Trainer's settings with their defaults.

One carrier takes them to `run_fn`: RunParameters (components/trainer/component.py) writes the
whole section, with a run's run-time values merged in, as the Trainer's `hyperparameters`
input; `run_fn` reads it back with `from_hyperparameters` and hands it to the model factory
(components/detection/model.py, `DetectorConfig.from_training`). No TensorFlow import here."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Optional

from litedet.components.detection import (
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_NMS_IOU_THRESHOLD,
    DEFAULT_SCORE_THRESHOLD,
    check_alpha,
    check_finest_head_depth,
)

DISTRIBUTIONS = ("auto", "one_device", "mirrored", "multi_worker")


@dataclasses.dataclass
class TrainingConfig:
    # MobileNetV2 depth multiplier: 0.35, 0.5, 0.75, 1.0, 1.3 or 1.4 (components/detection/model.py)
    alpha: float = 0.35
    feature_pyramid: bool = True
    # Width of the FPN neck and the box/class towers. 64 (SSDLite's) underfit the sample data at
    # stride 16 (mAP@0.5 0.21 after 600 steps, 0.47 with 128); with the stride-8 level 96 keeps
    # the quality of 128 (mAP@[.5:.95] 0.649 vs 0.651 at equal training time) at a lower device
    # cost (int8 latency 1.22x the stride-16 model's instead of 1.36x; docs/training.md).
    head_channels: int = 96
    head_depth: int = 1  # separable conv layers in each tower before the predictor
    # The towers' depth at the finest level alone (-1: head_depth). That level holds 3/4 of the
    # locations at stride 8, so its tower is most of the head's device cost.
    finest_head_depth: int = -1
    # true: the stride-32 level reads MobileNetV2's top conv (1280 channels, out_relu); false:
    # the last block's expansion (block_16_expand_relu), and the backbone stops there.
    backbone_top_conv: bool = True
    # The finest feature map: 8 (a stride-8 level from block_6, 16 px smallest anchors) or 16
    # (32 px smallest anchors). 8 took the sample split from mAP@[.5:.95] 0.507 to 0.649 and AP
    # small from 0.22 to 0.57 in the same training time (docs/training.md, learning curves).
    finest_stride: int = 8
    # GIoU joins the box loss at this weight (0: Huber on the box codes alone).
    giou_weight: float = 0.0
    # Anchor sizes per octave at each location (times 3 aspect ratios): 2 gives 6 anchors per
    # location, 1 gives 3 (half the predictor outputs and the post-process work on the device).
    scales_per_octave: int = 2
    batch_size: int = 16
    augment: bool = True  # flip, scale/crop and brightness/contrast jitter on the training split
    # 1400 steps of 16 images: the demo's training budget on 2 cores (about 8.5 minutes with the
    # stride-8 level; benchmarks/demo_time.py measures it).
    train_steps: int = 1400
    eval_steps: int = 0  # 0: the whole evaluation split
    # Adam, linear warm-up then cosine decay to zero. From random init 3e-3 learned faster than
    # 1e-3 (mAP@0.5 0.17 vs 0.12 after 300 steps, 0.21 vs 0.17 after 600; docs/training.md).
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    # Where the backbone starts (components/detection/weights.py): "imagenet" (Keras' file for
    # this alpha, from its cache or downloaded), "none" (random init; what the sample dataset
    # gets unless set), or a path / gs:// / s3:// URI of a Keras .h5 MobileNetV2 no-top file.
    backbone_weights: str = "imagenet"
    # Freeze-then-fine-tune, for pretrained weights: this many steps train the head with the
    # backbone frozen (its BatchNormalization in inference mode), then the backbone is unfrozen
    # (from block `fine_tune_from_block`, 0: all of it) at learning_rate *
    # fine_tune_learning_rate_factor. -1: a fifth of train_steps when pretrained, none from
    # random init (there is nothing to keep).
    freeze_backbone_steps: int = -1
    fine_tune_learning_rate_factor: float = 0.1
    fine_tune_from_block: int = 0  # MobileNetV2's blocks 1..16
    # false: the backbone's BatchNormalization keeps its pretrained statistics while it
    # fine-tunes (small batches estimate them poorly); true: they adapt to the new data.
    fine_tune_batchnorm: bool = False
    # Validation mAP (COCO, on the evaluation split) after every checkpoint; the best
    # checkpoint's weights are exported. Stop after this many validations without a better
    # mAP@[.5:.95] (0: never stop early).
    early_stopping_patience: int = 0
    log_every_steps: int = 50  # progress lines in logs (a terminal gets one refreshing line)
    # Checkpoints (a killed training resumes from the last one) and TensorBoard points.
    # Each is also a pass over the evaluation split for the validation loss.
    checkpoint_every_steps: int = 280  # 5 checkpoints of the default 1400 steps
    distribution: str = "auto"  # auto: TF_CONFIG workers -> multi_worker, several GPUs -> mirrored
    # Detections kept by the exported model's non-max suppression.
    max_detections: int = DEFAULT_MAX_DETECTIONS
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    nms_iou_threshold: float = DEFAULT_NMS_IOU_THRESHOLD
    # true: NMS over all classes at once, each box keeping its best class: what the shipped TFLite
    # models run (per-class NMS repeats a box once per class, which MediaPipe Tasks before 0.10.20
    # crashes on; docs/clients.md), so the SavedModel and the validation mAP run it too and the
    # gate compares like with like. false: per-class NMS everywhere, for runtimes that take
    # repeated boxes (the TFLite models then use the op's regular NMS).
    class_agnostic_nms: bool = True

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        check_alpha(self.alpha)
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"training.distribution: {self.distribution!r} is not one of "
                f"{', '.join(DISTRIBUTIONS)}"
            )
        for name in (
            "batch_size",
            "train_steps",
            "checkpoint_every_steps",
            "max_detections",
            "head_channels",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"training.{name}: {getattr(self, name)} must be >= 1")
        if self.freeze_backbone_steps < -1 or self.freeze_backbone_steps > self.train_steps:
            raise ValueError(
                "training.freeze_backbone_steps: must be in [0, train_steps], or -1 (auto)"
            )
        if self.scales_per_octave not in (1, 2, 3):
            raise ValueError(
                f"training.scales_per_octave: {self.scales_per_octave} must be 1, 2 or 3"
            )
        try:
            check_finest_head_depth(self.finest_head_depth, self.head_depth)
        except ValueError as e:
            raise ValueError(f"training.{e}") from None
        if self.finest_stride not in (8, 16):
            raise ValueError(f"training.finest_stride: {self.finest_stride} must be 8 or 16")
        if not 0 <= self.giou_weight <= 10:
            raise ValueError(f"training.giou_weight: {self.giou_weight} must be in [0, 10]")
        if not 0 <= self.fine_tune_from_block <= 16:
            raise ValueError("training.fine_tune_from_block: must be in [0, 16] (0: all)")
        if self.early_stopping_patience < 0 or self.log_every_steps < 1:
            raise ValueError(
                "training.early_stopping_patience must be >= 0, training.log_every_steps >= 1"
            )

    def freeze_steps(self, pretrained: bool) -> int:
        """Steps of the frozen-backbone phase."""
        if self.freeze_backbone_steps >= 0:
            return self.freeze_backbone_steps
        return self.train_steps // 5 if pretrained else 0

    def to_hyperparameters(self) -> Dict[str, Any]:
        """The section as the Trainer's `hyperparameters` input holds it (a KerasTuner
        HyperParameters config: TFX's format for that channel)."""
        return {"values": dataclasses.asdict(self)}

    @classmethod
    def from_hyperparameters(cls, hyperparameters: Optional[Dict[str, Any]]) -> TrainingConfig:
        """The section back from the Trainer's `hyperparameters` input; checked."""
        values = (hyperparameters or {}).get("values")
        if not isinstance(values, dict):
            raise ValueError(
                "the Trainer's hyperparameters input holds no training settings: it must come "
                "from RunParameters (components/trainer/component.py)"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"training: unknown setting(s) {', '.join(unknown)}")
        return cls(**values)


# The Kubernetes resource name of one NVIDIA GPU (the device plugin's).
GPU_RESOURCE = "nvidia.com/gpu"


@dataclasses.dataclass
class WorkersConfig:
    """`kubeflow.trainer_workers`: the compiled Trainer step trains on this many workers, as a
    Kubeflow Training Operator TFJob it creates, waits for and deletes
    (components/trainer/tfjob.py, docs/distributed-training.md). count 1: the step trains in its
    own pod, as always. Locally the section is ignored: the local runner trains in process."""

    count: int = 1
    # Each worker's CPU and memory (request = limit), as the Trainer step's own RESOURCES.
    cpu: float = 4.0
    memory_gb: float = 16.0
    # GPUs per worker (0: CPU workers) and their Kubernetes resource name; a GPU worker also
    # fails at once when TensorFlow sees no GPU (build the GPU image).
    gpu: int = 0
    gpu_resource: str = GPU_RESOURCE
    node_selector: Dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    # The longest the step waits for the job (also the job's activeDeadlineSeconds); then the
    # job is deleted and the step fails.
    timeout_s: int = 6 * 3600
    # Pod restarts the operator may make before it fails the job (runPolicy.backoffLimit).
    backoff_limit: int = 0
    # The operator deletes a finished job after this long even if the step could not
    # (runPolicy.ttlSecondsAfterFinished); the step deletes it itself on the way out.
    ttl_s: int = 3600

    def check(self) -> None:
        where = "kubeflow.trainer_workers"
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"{where}.count: {self.count!r} must be an integer >= 1")
        if not self.cpu > 0 or not self.memory_gb > 0:
            raise ValueError(f"{where}.cpu and .memory_gb must be > 0")
        if self.gpu < 0:
            raise ValueError(f"{where}.gpu: {self.gpu} must be >= 0")
        if not re.fullmatch(r"[a-z0-9.-]+/[a-z0-9.-]+", self.gpu_resource or ""):
            raise ValueError(
                f"{where}.gpu_resource: {self.gpu_resource!r} must be a Kubernetes resource "
                "name such as nvidia.com/gpu"
            )
        for name in ("timeout_s", "ttl_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{where}.{name}: {getattr(self, name)} must be >= 1")
        if self.backoff_limit < 0:
            raise ValueError(f"{where}.backoff_limit: {self.backoff_limit} must be >= 0")
        if not isinstance(self.node_selector, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.node_selector.items()
        ):
            raise ValueError(f"{where}.node_selector: {self.node_selector!r}: give label: value")
        for toleration in self.tolerations:
            unknown = (
                set(toleration) - {"key", "operator", "value", "effect", "tolerationSeconds"}
                if isinstance(toleration, dict)
                else {"?"}
            )
            if unknown:
                raise ValueError(
                    f"{where}.tolerations: {toleration!r}: give Kubernetes tolerations "
                    "(key, operator, value, effect, tolerationSeconds)"
                )
