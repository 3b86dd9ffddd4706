"""The metadata versioned with every model: what the detector needs to serve it (grid,
horizon, context, quantiles, calibration, which AutoGluon model forecasts) and what training
measured. Stored as ``metadata.json`` next to the predictor; checked when a model loads, so an
older or foreign model fails with a clear error instead of misbehaving."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from iot_mlops.errors import ModelError
from iot_mlops.scoring.calibrate import Calibration

# The layout of metadata.json. Raise it when a field changes meaning or a required one is
# added; loading refuses other versions.
SCHEMA_VERSION = 1
REQUIRED = ("freq", "prediction_length", "context_length", "quantile_levels", "best_model")
RETRAIN_FIX = "retrain it with this version: `iot-mlops train --data …` (then promote it)"


@dataclass(frozen=True)
class ModelMetadata:
    freq: str
    prediction_length: int
    context_length: int
    quantile_levels: tuple[float, ...]
    best_model: str
    calibration: Calibration | None = None  # None only inside training, before calibrating
    models: tuple[str, ...] = ()
    target: str = "target"
    metrics: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # hash and n_series of the training set
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if 0.5 not in self.quantile_levels:
            raise ModelError("quantile_levels must include 0.5 (the forecast median)")
        if self.prediction_length < 1 or self.context_length < 1:
            raise ModelError("prediction_length and context_length must be positive")

    def calibrated(
        self, calibration: Calibration, metrics: dict[str, float], data: dict[str, Any]
    ) -> ModelMetadata:
        return replace(self, calibration=calibration, metrics=dict(metrics), data=dict(data))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.schema_version,
            "freq": self.freq,
            "prediction_length": self.prediction_length,
            "context_length": self.context_length,
            "quantile_levels": list(self.quantile_levels),
            "models": list(self.models),
            "best_model": self.best_model,
            "target": self.target,
            **({"calibration": self.calibration.to_dict()} if self.calibration else {}),
            "metrics": dict(self.metrics),
            "data": dict(self.data),
        }

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], model: str = "the model", require_calibration: bool = True
    ) -> ModelMetadata:
        """Checked metadata of ``model`` (named in errors, e.g. "models:/Name/3")."""
        if not isinstance(d, dict) or not d:
            raise ModelError(f"{model} carries no iot-mlops metadata", fix=RETRAIN_FIX)
        version = d.get("format_version")
        if version != SCHEMA_VERSION:
            raise ModelError(
                f"{model} has model metadata version {version!r}; this iot-mlops reads "
                f"version {SCHEMA_VERSION}",
                fix=RETRAIN_FIX,
            )
        missing = [k for k in REQUIRED if k not in d]
        if require_calibration and "calibration" not in d:
            missing.append("calibration")
        if missing:
            raise ModelError(f"{model}'s metadata lacks {', '.join(missing)}", fix=RETRAIN_FIX)
        try:
            return cls(
                freq=str(d["freq"]),
                prediction_length=int(d["prediction_length"]),
                context_length=int(d["context_length"]),
                quantile_levels=tuple(sorted(float(q) for q in d["quantile_levels"])),
                best_model=str(d["best_model"]),
                calibration=Calibration.from_dict(d["calibration"]) if "calibration" in d else None,
                models=tuple(str(m) for m in d.get("models", ())),
                target=str(d.get("target", "target")),
                metrics={str(k): float(v) for k, v in d.get("metrics", {}).items()},
                data=dict(d.get("data", {})),
            )
        except (TypeError, ValueError) as e:
            raise ModelError(f"{model}'s metadata is invalid: {e}", fix=RETRAIN_FIX) from None
