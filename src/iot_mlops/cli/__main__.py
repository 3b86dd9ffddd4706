"""``python -m iot_mlops.cli``: the same as the ``iot-mlops`` command."""

import sys

from iot_mlops.cli.app import app

sys.exit(app())
