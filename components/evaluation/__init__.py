"""Evaluation and blessing: TFMA's COCO mAP of the SavedModel (metrics.py builds the Evaluator's
EvalConfig and reads its results), the same mAP with pycocotools (coco.py) for the converted
TFLite models, and the ModelGate that blesses a model only when every check passes (gate.py)."""
