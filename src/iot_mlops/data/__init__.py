"""Data in: the IoT fleet simulator (series with seasonality, noise and labelled anomalies, written
to Kafka or to parquet) and the collector that reads the sensor topic back into parquet files for
training.
"""
