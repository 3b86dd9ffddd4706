"""The command line: ``iot-mlops`` and its subcommands (stack, simulate, collect, train, models,
promote, detect, evaluate), each a thin shell that reads the settings, calls one stage and turns
its errors into a one-line message and an exit code (progress looks the same everywhere:
``iot_mlops.progress``).
"""

from iot_mlops.cli.app import app

__all__ = ["app"]
