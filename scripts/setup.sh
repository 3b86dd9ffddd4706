#!/usr/bin/env bash
# make setup: idempotent, quiet when nothing changed. Creates .venv, installs the package with
# dev extras, fetches the Kafka jars with Maven, installs Prometheus when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '%s\n' "setup: $*"; }
die() { printf '%s\n' "setup: error: $*" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
  || die "Python 3.11+ is required (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11"

command -v java >/dev/null || die "Java 17+ is required for Kafka; fix: apt-get install -y openjdk-17-jre-headless"
java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
[ "${java_major%%.*}" -ge 17 ] 2>/dev/null || die "Java 17+ is required for Kafka (found $java_major); fix: apt-get install -y openjdk-17-jdk-headless"
command -v mvn >/dev/null || die "Maven is required to fetch the Kafka jars; fix: apt-get install -y maven"

# 1. Python environment. A stamp of pyproject.toml skips pip when nothing changed.
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.iot-mlops-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing the package and its dependencies into .venv (first run downloads torch: a few GB)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --progress-bar on -e '.[dev]'
  echo "$want" > "$stamp"
fi

# 2. Kafka broker jars from Maven Central (git-ignored cache).
libs=.cache/kafka-libs
pom_hash=$(sha256sum deploy/kafka/pom.xml | cut -d' ' -f1)
if [ "$(cat "$libs/.pom-hash" 2>/dev/null)" != "$pom_hash" ]; then
  say "fetching the Kafka broker jars with Maven into $libs"
  rm -rf "$libs"
  mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$PWD/$libs" \
    || die "Maven could not fetch the Kafka jars (see above); check the network to Maven Central and re-run make setup"
  echo "$pom_hash" > "$libs/.pom-hash"
fi

# 3. Prometheus (optional for the stack, needed by its tests): Debian's package.
if ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Prometheus from Debian's package"
    (apt-get install -y -qq prometheus >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq prometheus >/dev/null; }) \
      || die "apt-get install prometheus failed; run it by hand to see why"
    # The package starts a system service on 9090 on some systems: we run our own.
    (systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true)
    pkill -x prometheus-node-exporter 2>/dev/null || true
  else
    say "Prometheus is not installed (optional); to add it run: sudo apt-get install prometheus"
  fi
fi
exit 0
