"""Evaluation logic on its own: the pycocotools scorer, the gate's decision, the TFMA
configuration and the class count. The Evaluator and the gate on a real model run in
tests/test_pipeline_local.py."""

import dataclasses
import json

import numpy as np
import pytest

from litedet.components.evaluation import coco, metrics
from litedet.components.evaluation import executor as gate
from litedet.components.example_gen.annotations import AnnotationError, count_classes
from litedet.components.example_gen.config import DatasetConfig
from litedet.pipeline import configs


def _truth(*boxes_and_classes):
    return {
        "boxes": np.array([b for b, _ in boxes_and_classes], np.float32).reshape(-1, 4),
        "classes": np.array([c for _, c in boxes_and_classes], np.int64),
    }


def _found(*rows):
    return {
        "boxes": np.array([b for b, _, _ in rows], np.float32).reshape(-1, 4),
        "classes": np.array([c for _, c, _ in rows], np.float32),
        "scores": np.array([s for _, _, s in rows], np.float32),
    }


A, B = [0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.8]


def _subset(scores, **expected):
    return {k: scores[k] for k in expected} == pytest.approx(expected)


def test_perfect_detections_score_one_and_nothing_scores_zero():
    truth = [_truth((A, 1), (B, 2))]
    scores = coco.coco_map(truth, [_found((A, 1, 0.9), (B, 2, 0.8))], 2)
    assert _subset(
        scores,
        map=1.0,
        map50=1.0,
        map75=1.0,
        **{"ap50/1": 1.0, "ap50/2": 1.0, "map/1": 1.0, "map/2": 1.0},
    )
    empty = coco.coco_map(truth, [_found()], 2)
    assert _subset(empty, map=0.0, map50=0.0) and "ap50/1" not in empty


def test_a_wrong_class_or_a_poor_box_is_a_miss():
    truth = [_truth((A, 1), (B, 2))]
    # Class 2 predicted on A: class 1 has no detection, class 2 has a false positive that
    # outranks its true positive.
    scores = coco.coco_map(truth, [_found((A, 2, 0.9), (B, 2, 0.8))], 2)
    assert scores["ap50/1"] == 0.0
    assert scores["ap50/2"] == pytest.approx(0.5, abs=0.01)  # precision 1/2 at recall 1
    shifted = [A[0] + 0.2, A[1], A[2] + 0.2, A[3]]  # IoU 1/3 with A
    assert coco.coco_map(truth, [_found((shifted, 1, 0.9), (B, 2, 0.8))], 2)["ap50/1"] == 0.0


def test_padding_rows_and_classes_without_truth_are_left_out():
    truth = [_truth((A, 1), ([0, 0, 0, 0], 0))]  # a class-0 row: padding / ignored object
    scores = coco.coco_map(truth, [_found((A, 1, 0.9), ([0, 0, 0, 0], 0, 0.0))], 3)
    assert _subset(scores, map=1.0, map50=1.0, **{"ap50/1": 1.0})
    assert not [k for k in scores if k.endswith(("/2", "/3"))]


def test_object_sizes_are_counted_in_each_images_own_pixels():
    """COCO's buckets: small < 32^2, medium < 96^2, large above. The same normalized box is
    small in a 100 px image and large in a 1000 px one."""
    box = [0.1, 0.1, 0.3, 0.3]  # 0.2 x 0.2 of the image
    truth = [_truth((box, 1)), _truth((box, 1))]
    found = [_found((box, 1, 0.9)), _found()]  # found in the small image only
    scores = coco.coco_map(truth, found, 1, image_sizes=[(100, 100), (1000, 1000)])
    assert scores["ap_small"] == pytest.approx(1.0)  # 20 x 20 px
    assert scores["ap_large"] == 0.0  # 200 x 200 px, missed
    assert scores["ap_medium"] is None  # no object of that size: no figure, not a zero
    assert "ap_small" not in coco.coco_map(truth, found, 1)  # no sizes, no buckets
    with pytest.raises(ValueError, match="1 image sizes for 2 images"):
        coco.coco_map(truth, found, 1, image_sizes=[(100, 100)])


def test_the_confusion_matrix_counts_right_wrong_missed_and_background():
    C_BOX = [0.1, 0.6, 0.3, 0.9]
    truth = [_truth((A, 1), (B, 2), (C_BOX, 2))]
    found = [
        _found(
            (A, 1, 0.9),  # right
            (B, 1, 0.8),  # the right place, the wrong class
            ([0.7, 0.0, 0.9, 0.2], 2, 0.7),  # nothing there: background
            ([0.7, 0.0, 0.9, 0.2], 1, 0.1),  # below the score threshold: not counted
        )
    ]  # C_BOX is found by nothing: missed
    matrix = coco.confusion_matrix(truth, found, 2)
    assert matrix == [
        [1, 0, 0],  # true 1: predicted 1, predicted 2, missed
        [1, 0, 1],  # true 2
        [0, 1, 0],  # background
    ]
    total_truth = sum(sum(row) for row in matrix[:2])
    assert total_truth == 3  # every true object is counted once


def test_images_must_line_up():
    with pytest.raises(ValueError, match="2 ground truths but 1 detections"):
        coco.coco_map([_truth((A, 1))] * 2, [_found()], 1)


SCORES = {
    "saved_model": {"map50": 0.70},
    "float16": {"map50": 0.695, "latency_ms": 12.0, "size_bytes": 1.3e6},
    "int8": {"map50": 0.66, "latency_ms": 8.0, "size_bytes": 0.9e6},
}


BUDGETS = gate.GateBudgets(min_map50=0.5, max_tflite_map_drop=0.05, ship_format="int8")


def _decide(map50=0.70, baseline_map50=None, **budgets):
    return gate.decide(map50, SCORES, dataclasses.replace(BUDGETS, **budgets), baseline_map50)


def test_the_gate_blesses_when_every_check_passes():
    assert _decide() == []
    assert _decide(max_latency_ms=8.5, max_size_mb=1.0) == []
    assert _decide(baseline_map50=0.70) == []  # the same score is no regression
    assert _decide(baseline_map50=0.72, max_map_drop=0.03) == []


def test_the_gate_names_every_failed_check():
    assert _decide(map50=0.4) == ["mAP@0.5 0.4000 is below the bound min_map50=0.5000"]
    assert _decide(max_tflite_map_drop=0.015) == [
        "TFLite int8 mAP@0.5 0.6600 is 0.0400 below the SavedModel's 0.7000 (budget 0.0150)"
    ]
    assert _decide(max_latency_ms=5) == ["int8 latency 8.0 ms exceeds the budget 5.0 ms"]
    assert _decide(max_size_mb=0.5) == ["int8 size 0.90 MB exceeds the budget 0.50 MB"]
    assert _decide(ship_format="float32") == [
        "ship_format 'float32' was not converted (converted: float16, int8)"
    ]
    assert _decide(baseline_map50=0.71) == [
        "regression against the latest pushed model: mAP@0.5 0.7000 < 0.7100 (allowed drop 0.0000)"
    ]
    assert len(_decide(baseline_map50=0.9, map50=0.1, max_latency_ms=1)) == 3


def test_a_metric_that_is_not_a_number_fails_the_gate_closed():
    # NaN compares false with every bound: without the check it would pass them all.
    assert _decide(map50=float("nan")) == ["not a finite number: mAP@0.5 (TFMA)"]
    assert _decide(baseline_map50=float("inf"))[0].startswith("not a finite number")
    # The device budgets compare the shipped format's latency and size: a NaN there would pass.
    broken = dict(SCORES, int8=dict(SCORES["int8"], latency_ms=float("nan")))
    reasons = gate.decide(0.70, broken, dataclasses.replace(BUDGETS, max_latency_ms=5))
    assert reasons == ["not a finite number: int8 latency_ms"]


def test_gate_json_lists_the_budgets_as_it_always_has():
    # In this order: gate.json is written as the dict is ordered.
    assert list(BUDGETS.as_report().items()) == [
        ("min_map50", 0.5),
        ("max_map_drop", 0.0),
        ("max_tflite_map_drop", 0.05),
        ("max_latency_ms", 0.0),
        ("max_size_mb", 0.0),
        ("ship_format", "int8"),
    ]


@pytest.mark.parametrize("name", ["max_latency_ms", "max_size_mb"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_a_device_budget_that_is_not_a_number_is_refused(name, value):
    with pytest.raises(ValueError, match=f"{name}: .* must be a finite number >= 0"):
        dataclasses.replace(BUDGETS, **{name: value}).check()
    with pytest.raises(configs.ConfigError, match=f"evaluation.{name}"):
        configs.validate(configs.load_config(None, [f"evaluation.{name}={value}"]))


@pytest.mark.parametrize(
    "name, value",
    [
        ("min_map50", 1.5),
        ("min_map50", float("nan")),
        ("min_map50", -0.1),
        ("max_map_drop", float("inf")),
    ],
)
def test_run_time_gate_parameters_are_checked_where_they_are_used(name, value):
    BUDGETS.check()
    with pytest.raises(ValueError, match=f"{name}: .* must be a number in \\[0, 1\\]"):
        dataclasses.replace(BUDGETS, **{name: value}).check()
    with pytest.raises(ValueError, match="ship_format: 'bfloat16'"):
        dataclasses.replace(BUDGETS, ship_format="bfloat16").check()


def test_the_eval_config_scores_coco_map50_of_the_candidate():
    config = metrics.eval_config(num_classes=3)
    (spec,) = config.model_specs
    assert spec.signature_name == "detect_examples"
    assert list(spec.preprocessing_function_names) == ["eval_labels"]
    (metric_spec,) = config.metrics_specs
    (metric,) = metric_spec.metrics  # the rest is the gate's pycocotools pass
    settings = json.loads(metric.config)
    assert metric.class_name == "COCOMeanAveragePrecision"
    assert settings["name"] == "map50" and settings["iou_thresholds"] == [0.5]
    assert settings["class_ids"] == [1, 2, 3]
    assert settings["labels_to_stack"] == ["gt_xmin", "gt_ymin", "gt_xmax", "gt_ymax", "gt_class"]
    assert settings["predictions_to_stack"] == [
        "xmin",
        "ymin",
        "xmax",
        "ymax",
        "class_id",
        "scores",
    ]
    assert not metric.HasField("threshold")  # the gate decides (see metrics.py)
    with pytest.raises(ValueError, match="num_classes: 0"):
        metrics.eval_config(num_classes=0)


def test_classes_are_counted_from_class_names_or_coco_categories(tmp_path):
    (tmp_path / "a.json").write_text(
        json.dumps({"categories": [{"id": 3, "name": "x"}, {"id": 9, "name": "y"}]})
    )
    (tmp_path / "b.json").write_text(
        json.dumps({"categories": [{"id": 9, "name": "y"}, {"id": 12, "name": "z"}]})
    )
    coco_config = DatasetConfig(
        root=str(tmp_path), format="coco", sources={"train": "a.json", "eval": "b.json"}
    )
    assert count_classes(coco_config) == 3
    voc = DatasetConfig(root=str(tmp_path), format="voc", sources={"train": "train.txt"})
    with pytest.raises(AnnotationError, match="dataset.class_names: needed for a voc dataset"):
        count_classes(voc)
    named = DatasetConfig(
        root=str(tmp_path), format="voc", sources={"train": "train.txt"}, class_names=["cat", "dog"]
    )
    assert count_classes(named) == 2
