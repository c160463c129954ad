"""Peer implementations `cci bench` measures the pipeline against."""
