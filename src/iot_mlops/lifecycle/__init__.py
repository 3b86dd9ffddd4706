"""Model lifecycle: the MLflow model registry (versions, aliases, the promotion gate) and loading
a registered model as a forecaster.
"""
