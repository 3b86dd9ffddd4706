"""Model integrity: `train` records the SHA-256 of a version's artifact files (and an HMAC
when a signing key is set); loading checks it before anything is unpickled or run. The unit
tests pin the rules; the integration tests tamper with real artifacts in the session's MLflow
and watch the detector's model watcher refuse them."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import pytest
from detector_helpers import ProductionModel, register_copy
from pydantic import SecretStr

from iot_mlops.detector.metrics import DetectorMetrics
from iot_mlops.detector.watcher import ModelWatcher
from iot_mlops.lifecycle import integrity, registry
from iot_mlops.lifecycle.integrity import DIGEST_TAG, HMAC_TAG, ModelIntegrityError

# --- the rules (pure) -------------------------------------------------------------------------


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "sub" / "model.pkl").write_bytes(b"\x80\x04payload")
    return root


@pytest.mark.unit
def test_the_digest_changes_with_any_file_and_ignores_mlflows_local_meta(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    d0 = integrity.tree_digest(root)
    assert d0 == integrity.tree_digest(root)  # stable
    (root / "registered_model_meta").write_text("model_name: x\nmodel_version: '3'\n")
    assert integrity.tree_digest(root) == d0  # MLflow's local-copy file is not the artifact
    (root / "sub" / "model.pkl").write_bytes(b"\x80\x04payloaD")
    d1 = integrity.tree_digest(root)
    assert d1 != d0
    (root / "sub" / "model.pkl").rename(root / "sub" / "other.pkl")  # same bytes, new name
    assert integrity.tree_digest(root) not in (d0, d1)
    (root / "extra.py").write_text("import os\n")
    assert integrity.tree_digest(root) not in (d0, d1)


@pytest.mark.unit
def test_verify_refuses_mismatches_missing_tags_and_forged_signatures() -> None:
    d, other = "a" * 64, "b" * 64
    integrity.verify({DIGEST_TAG: d}, d, "", True, "v1")  # matches: no error
    with pytest.raises(ModelIntegrityError, match="files were changed"):
        integrity.verify({DIGEST_TAG: other}, d, "", True, "v1")
    with pytest.raises(ModelIntegrityError, match="no artifact_sha256 tag"):
        integrity.verify({}, d, "", True, "v1")
    integrity.verify({}, d, "", False, "v1")  # accepted when not required
    key = "k3y"
    tags = integrity.integrity_tags(d, key)
    assert set(tags) == {DIGEST_TAG, HMAC_TAG}
    integrity.verify(tags, d, key, True, "v1")
    # With a key, the digest tag alone is not enough: whoever registers can compute it.
    with pytest.raises(ModelIntegrityError, match="no artifact_hmac tag"):
        integrity.verify({DIGEST_TAG: d}, d, key, True, "v1")
    with pytest.raises(ModelIntegrityError, match="signature"):
        forged = {DIGEST_TAG: other, HMAC_TAG: integrity.sign(other, "k3y")}
        integrity.verify(forged, d, key, True, "v1")
    with pytest.raises(ModelIntegrityError, match="signature"):
        integrity.verify(integrity.integrity_tags(d, "another"), d, key, True, "v1")


# --- against the real registry ----------------------------------------------------------------


def _tampered_version(pm: ProductionModel, tmp: Path, marker: Path) -> str:
    """A new version whose files are the production version's with one line added to the
    model's code (it would write ``marker`` when loaded), tagged with the ORIGINAL digest: what
    someone who can write the artifact store, but not the registry, could do."""
    s = pm.settings
    uri = s.mlflow_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    original = client.get_model_version(s.model_name, pm.version).tags[DIGEST_TAG]
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{s.model_name}/{pm.version}", dst_path=str(tmp), tracking_uri=uri
        )
    )
    (local / "registered_model_meta").unlink(missing_ok=True)
    code = [p for p in local.rglob("*.py") if "ForecastModel" in p.read_text()]
    assert code, sorted(p.name for p in local.rglob("*"))
    with open(code[0], "a") as f:
        f.write(f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    run = client.create_run(client.get_experiment_by_name(s.experiment_name).experiment_id)
    client.log_artifacts(run.info.run_id, str(local), "model")
    client.set_terminated(run.info.run_id)
    rid = run.info.run_id
    mv = client.create_model_version(s.model_name, f"runs:/{rid}/model", rid)
    client.set_model_version_tag(s.model_name, mv.version, DIGEST_TAG, original)
    return str(mv.version)


@pytest.mark.integration
def test_train_records_the_digest_the_detector_checks(production_model: ProductionModel) -> None:
    s = production_model.settings
    mv = registry.get_version(s, production_model.version)
    digest = mv.tags[DIGEST_TAG]
    assert len(digest) == 64 and HMAC_TAG not in mv.tags  # no signing key in the suite
    path = registry.download_verified(s, production_model.version)
    assert integrity.tree_digest(path) == digest
    # A signing key set on the detector: the unsigned version is refused.
    keyed = s.model_copy(update={"model_signing_key": SecretStr("detector-key")})
    with pytest.raises(ModelIntegrityError, match="no artifact_hmac tag"):
        registry.download_verified(keyed, production_model.version)
    # Signed with that key (as `train` does when the key is set): accepted.
    registry.record_integrity(keyed, production_model.version)
    try:
        registry.download_verified(keyed, production_model.version)
        with pytest.raises(ModelIntegrityError, match="signature"):
            other = s.model_copy(update={"model_signing_key": SecretStr("another-key")})
            registry.download_verified(other, production_model.version)
    finally:
        registry.record_integrity(s, production_model.version)  # back as the suite expects


@pytest.mark.integration
def test_the_watcher_refuses_tampered_artifacts_before_running_them(
    production_model: ProductionModel, tmp_path: Path
) -> None:
    pm = production_model
    marker = tmp_path / "code-ran"
    bad = _tampered_version(pm, tmp_path / "dl", marker)
    metrics = DetectorMetrics()
    watcher = ModelWatcher(
        pm.settings, metrics, threading.Event(), resolve=lambda _s: bad
    )  # fmt: skip
    watcher.poll_once()
    assert watcher.current is None and watcher.take() is None
    assert bad in watcher.failed and "refusing to load" in watcher.failed[bad].reason
    assert metrics.registry.get_sample_value("iot_model_refused_total") == 1
    assert not marker.exists(), "the tampered model's code ran"
    # The same version, digest check off and no tag required: the check was what stopped it.
    # (Its tag still records the original digest, so only removing the tag lets it through.)
    client = mlflow.MlflowClient(pm.settings.mlflow_tracking_uri)
    client.delete_model_version_tag(pm.settings.model_name, bad, DIGEST_TAG)
    lax = pm.settings.model_copy(update={"model_require_digest": False})
    registry.load_forecaster(lax, version=bad)
    assert marker.exists()


@pytest.mark.integration
def test_a_version_without_a_digest_is_refused_with_the_fix(
    production_model: ProductionModel,
) -> None:
    pm = production_model
    bare = register_copy(pm.settings, pm.version, digest=False)
    with pytest.raises(ModelIntegrityError) as e:
        registry.load_forecaster(pm.settings, version=bare)
    assert "carries no artifact_sha256 tag" in e.value.message
    assert "iot-mlops train" in (e.value.fix or "")
