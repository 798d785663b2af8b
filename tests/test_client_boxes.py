"""The clients' whole-pixel box conventions (tests/detector_clients.py, docs/clients.md), which
the client parity test uses to explain their mAP@[.5:.95] against the interpreter's."""

import numpy as np
import pytest

from tests import detector_clients as clients


def test_mediapipe_truncates_origin_and_size_and_clamps_them_inside_the_image():
    # 100 x 200 (height, width): xmin 0.1234 -> 24.68 px, width 0.4766 -> 95.32 px.
    assert clients.PIXEL_BOXES[clients.MEDIAPIPE]([0.2, 0.1234, 0.7391, 0.6], 100, 200) == [
        24,
        20,
        95,
        53,  # 53.91 truncated
    ]
    # Crossing the left edge: the origin clamps to 0 and the width is kept (moved inside).
    assert clients.PIXEL_BOXES[clients.MEDIAPIPE]([-0.05, -0.1, 0.5, 0.3], 100, 200) == [
        0,
        0,
        80,
        55,
    ]
    assert clients.PIXEL_BOXES[clients.MEDIAPIPE_OLDEST] is clients.PIXEL_BOXES[clients.MEDIAPIPE]


def test_task_library_truncates_the_origin_rounds_the_size_and_does_not_clip():
    assert clients.PIXEL_BOXES[clients.TASK_LIBRARY]([0.2, 0.1234, 0.7391, 0.6], 100, 200) == [
        24,
        20,
        95,
        54,  # 53.91 rounded
    ]
    box = clients.PIXEL_BOXES[clients.TASK_LIBRARY]([-0.05, -0.1, 0.5, 0.3], 100, 200)
    assert box[0] == -20 and box[2] == 80 and box[3] == 55


@pytest.mark.parametrize("client", clients.CLIENTS)
def test_boxes_already_on_whole_pixels_are_unchanged(client):
    found = [
        {
            "boxes": np.array([[0.25, 0.125, 0.75, 0.5]], np.float32),  # 50/200 px multiples
            "classes": np.array([1.0], np.float32),
            "scores": np.array([0.9], np.float32),
        }
    ]
    (out,) = clients.in_client_pixels(client, found, [(200, 400)])
    np.testing.assert_allclose(out["boxes"], found[0]["boxes"], atol=1e-6)
    assert out["scores"] is found[0]["scores"] and out["classes"] is found[0]["classes"]
