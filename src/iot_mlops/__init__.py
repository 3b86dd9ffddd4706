"""iot-mlops: real-time anomaly detection for IoT sensor streams."""

__version__ = "0.1.0"
