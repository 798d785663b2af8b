"""Dataset tools: the generated sample set (sample.py) and conversion to TFRecords (convert.py)."""
