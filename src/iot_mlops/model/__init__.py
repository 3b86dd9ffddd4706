"""The forecasting model: the AutoGluon forecaster that gives each series a median and an
interval, the MLflow pyfunc it is logged as (models-from-code), and the numpy fast path that
reproduces RecursiveTabular's recursion without AutoGluon's per-call overhead.
"""
