"""Evaluation: labelled corpora, streaming a corpus through a real detector on the embedded stack,
and scoring its alarms against the labels (event-level precision, recall and delay).
"""
