"""Feature names and preprocessing choices: the raw TF Object Detection API keys and the
transformed model inputs.

Coordinates everywhere: boxes are (ymin, xmin, ymax, xmax), float32, normalized to [0, 1] of the
image they refer to (raw: the original image; transformed: the model input, letterbox included).
Labels are 1-based; 0 marks padding (and background in the model).
"""

# Raw features, as DetectionExampleGen writes them (schemas/detection_raw.pbtxt).
IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_SOURCE_ID = "image/source_id"
BBOX_YMIN = "image/object/bbox/ymin"
BBOX_XMIN = "image/object/bbox/xmin"
BBOX_YMAX = "image/object/bbox/ymax"
BBOX_XMAX = "image/object/bbox/xmax"
BBOX_KEYS = (BBOX_YMIN, BBOX_XMIN, BBOX_YMAX, BBOX_XMAX)
CLASS_LABEL = "image/object/class/label"
CLASS_TEXT = "image/object/class/text"
IS_CROWD = "image/object/is_crowd"
DIFFICULT = "image/object/difficult"

# Transformed features, as the Transform graph emits them (batch dimension first).
IMAGE = "image"  # float32 [S, S, 3] in [-1, 1], MobileNetV2's input range
CONTENT_WINDOW = "content_window"  # float32 [4]: where the image's pixels lie in the input
BOXES = "boxes"  # float32 [max_boxes, 4], zero rows past num_boxes
CLASSES = "classes"  # int64 [max_boxes], 0 past num_boxes
IGNORE = "ignore"  # int64 [max_boxes], 1 for crowd/difficult objects: neither object nor background
NUM_BOXES = "num_boxes"  # int64 scalar
SOURCE_ID = "source_id"  # string scalar, to join predictions with ground truth
ORIGINAL_HEIGHT = "original_height"  # int64 scalar: COCO's small/medium/large areas use pixels
ORIGINAL_WIDTH = "original_width"

# How an image becomes the square model input (components/detection/preprocessing.py).
RESIZE_MODES = ("stretch", "letterbox")
