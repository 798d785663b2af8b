"""Detection internals for the litedet SSD-style detector, as small pure TF functions.

Modules:
  anchors    -- anchor grid generation and corner <-> center-size conversion.
  box_coder  -- center-size box encoding / decoding (TF OD API scale factors).
  matcher    -- IoU, anchor-to-ground-truth matching and per-anchor training targets.
  losses     -- sigmoid focal classification loss, Huber box loss, total detection loss.

Conventions (kept by every function in this package):
  * Boxes are float32 ``(ymin, xmin, ymax, xmax)`` normalized to [0, 1] relative to
    the model input image. Anchors use the same corner form; the TFLite
    post-process op wants ``(ycenter, xcenter, h, w)``, see ``anchors.to_center_size``.
  * Class labels are int, 1-based for objects; 0 means background.
  * Ground truth is padded to a fixed number of rows per image. Padded rows have
    label 0 and an all-zero box and are marked invalid by a per-image count
    ``num_boxes``: rows ``[0, num_boxes)`` are real, the rest are padding.
  * Crowd / ignore ground truths are flagged by an int or bool ``is_crowd`` tensor
    aligned with the boxes; anchors matched to them are neither positive nor negative.
  * Class logits have ``num_classes + 1`` columns with background at index 0, the
    layout ``TFLite_Detection_PostProcess`` expects; see ``losses`` for how the
    background column is treated in training.
"""
