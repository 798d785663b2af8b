"""The curated schemas: the data contract ExampleValidator checks every run against."""

import pathlib

RAW_SCHEMA = pathlib.Path(__file__).with_name("detection_raw.pbtxt")
