#!/bin/sh
# The Compose one-shot trainer (docker-compose.yml, service `trainer`), run in the project image:
#   1. if a version already holds the production alias (and --retrain is not given): done;
#   2. backfill --hours of simulated history into Kafka, 3. collect the topic to parquet,
#   4. train, register and promote it (`train --promote`), 5. list the registered versions.
# With --retrain a new version is trained and registered; it is promoted only when no
# production version exists yet (or with --promote). Usage:
#   docker compose run --rm trainer [--hours N] [--retrain] [--promote]
# Kafka, MLflow and the model name/alias come from the usual settings (KAFKA_BOOTSTRAP_SERVERS,
# MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/PASSWORD, IOT_MLOPS_*); the backfill's Kafka
# principal from TRAINER_BACKFILL_KAFKA_USERNAME/PASSWORD when set.
set -eu

hours=24
retrain=0
promote=0
while [ $# -gt 0 ]; do
  case "$1" in
    --hours) hours="$2"; shift 2 ;;
    --retrain) retrain=1; shift ;;
    --promote) promote=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "trainer: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

data_dir=${TRAINER_DATA_DIR:-/data}
data="$data_dir/history-$(date -u +%Y%m%dT%H%M%SZ).parquet"
mkdir -p "$data_dir"

# Exit 0 with the version when the alias resolves, 1 when it does not exist, 2 on any other
# error (the registry unreachable must fail the trainer, not trigger a retrain).
production_version() {
  python - <<'PY'
import sys

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from iot_mlops.config import Settings

s = Settings()
try:
    v = MlflowClient(s.mlflow_tracking_uri).get_model_version_by_alias(s.model_name, s.model_alias)
except MlflowException as e:
    if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
        sys.exit(1)
    print(f"trainer: cannot query the MLflow registry: {e}", file=sys.stderr)
    sys.exit(2)
print(v.version)
PY
}

set +e
current=$(production_version)
rc=$?
set -e
[ "$rc" -le 1 ] || exit "$rc"

if [ "$rc" -eq 0 ] && [ "$retrain" -eq 0 ]; then
  echo "trainer: version $current already holds the production alias; nothing to do" \
       "(run with --retrain to train a new version)"
  iot-mlops models || true
  exit 0
fi
if [ "$rc" -eq 1 ]; then
  promote=1  # no production version yet: the detectors wait for this one
fi

echo "trainer: backfilling ${hours}h of simulated history into Kafka"
if [ -n "${TRAINER_BACKFILL_KAFKA_USERNAME:-}" ]; then
  # On a secure deployment only a device principal may write readings: the backfill runs as
  # one, everything else as the trainer's own (read-only) Kafka principal.
  if [ -z "${TRAINER_BACKFILL_KAFKA_PASSWORD-}" ]; then
    echo "trainer: TRAINER_BACKFILL_KAFKA_USERNAME is set without its password" >&2
    exit 2
  fi
  IOT_MLOPS_KAFKA_SASL_USERNAME="$TRAINER_BACKFILL_KAFKA_USERNAME" \
  IOT_MLOPS_KAFKA_SASL_PASSWORD="$TRAINER_BACKFILL_KAFKA_PASSWORD" \
    iot-mlops simulate --hours "$hours"
else
  iot-mlops simulate --hours "$hours"
fi
echo "trainer: collecting the input topic into $data"
iot-mlops collect --out "$data"
if [ "$promote" -eq 1 ]; then
  echo "trainer: training, registering and promoting a new version"
  iot-mlops train --data "$data" --promote
else
  echo "trainer: training and registering a new version (production keeps version $current)"
  iot-mlops train --data "$data"
fi
iot-mlops models || true
