"""The evidence channels' names: what settings validate against, without importing the
scoring code (and numpy) into the settings object."""

CHANNELS = ("residual", "shift", "level", "stuck", "seasonal")
