"""Training: split the collected series, fit and backtest the forecaster, calibrate the decision
rule by replaying the holdout through the scoring engine, report precision and recall, and log
the model to MLflow.
"""
