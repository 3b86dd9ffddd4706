# syntax=docker/dockerfile:1
# One image for the trainer, the anomaly detector and the simulator (docker-compose.yml):
#   docker build -t iot-mlops . && docker run --rm iot-mlops --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# libgomp1: OpenMP for LightGBM/CatBoost (AutoGluon's tabular models).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# CPU-only torch first, from PyTorch's CPU wheel index: PyPI's x86_64 wheels carry the CUDA
# libraries (several GB) that a CPU container never uses. AutoGluon 1.6.3 needs torch
# >=2.10,<2.14; `pip install .` below then finds it satisfied and keeps this build.
# The pip cache mount makes rebuilds after a source change download nothing.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# The package, once, with its runtime dependencies only (no dev extras), not editable.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install . \
 && python -c "import torch; assert torch.version.cuda is None, torch.__version__; print('torch', torch.__version__)"

COPY deploy/trainer.sh /usr/local/bin/iot-mlops-trainer

# Non-root. /data (the trainer's parquet files) and /app/.iot-mlops exist and belong to the
# user, so named volumes mounted there start out writable.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
 && mkdir -p /data /app/.iot-mlops \
 && chown app:app /data /app/.iot-mlops \
 && chmod 0755 /usr/local/bin/iot-mlops-trainer
USER app

EXPOSE 8000
ENTRYPOINT ["iot-mlops"]
CMD ["--help"]
