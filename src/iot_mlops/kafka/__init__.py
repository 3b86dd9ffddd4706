"""Kafka plumbing: creating and checking the pipeline's topics, and the embedded local stack
(a single-node KRaft broker, an MLflow server, Prometheus) that the commands, the tests and the
benchmarks start on this machine.
"""
