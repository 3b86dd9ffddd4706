"""Scoring: pure per-series logic, no I/O. Deviation and score channels, the calibrated
threshold, alarm hygiene, the per-series state and the engine that batches forecasts over many
series. Training (calibration replay), evaluation and the detector service all run this same
code, so what training measures is what runs live.
"""
