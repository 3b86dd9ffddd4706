"""Kept for importers of the old place: the progress style lives in ``iot_mlops.progress``."""

from iot_mlops.progress import Reporter, progress_bar

__all__ = ["Reporter", "progress_bar"]
