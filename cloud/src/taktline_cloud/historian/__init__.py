"""Historian: samples of machine metrics keyed by (machine, metric, timestamp)."""

from taktline_cloud.historian.samples import Sample

__all__ = ["Sample"]
