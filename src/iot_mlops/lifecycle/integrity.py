"""Model integrity: a digest of a version's artifact files, recorded at registration and
checked by the detector before it unpickles anything.

Loading a pyfunc runs its code and unpickles its predictor, so whoever can write the artifact
store or register a version could run code inside every detector. `train` records the SHA-256
of the artifact tree as a version tag and, when a signing key is set, an HMAC-SHA256 of that
digest; the detector downloads the files, recomputes the digest and refuses a mismatch. The
digest alone stops tampering with stored files; the HMAC also stops a forged version (whoever
registers it cannot compute the HMAC without the key). The remaining trust: the trainer's
MLflow credentials and the signing key (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

from iot_mlops.errors import ModelError

DIGEST_TAG = "artifact_sha256"
HMAC_TAG = "artifact_hmac"
# Written by MLflow into a local copy of a registered model (its name and version), not part
# of what was logged; a YAML of two fields, never executed.
LOCAL_ONLY_FILES = frozenset({"registered_model_meta"})
_CHUNK = 1 << 20


class ModelIntegrityError(ModelError):
    """A version's artifacts do not match what was recorded at registration (or nothing
    was recorded and the settings require it): the detector refuses to load it."""


def tree_digest(root: Path) -> str:
    """SHA-256 over every file under ``root``: its relative path and its content's SHA-256,
    in path order, so renaming, adding, removing or changing any file changes the digest."""
    outer = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in LOCAL_ONLY_FILES:
            continue
        inner = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                inner.update(chunk)
        outer.update(f"{rel}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def sign(digest: str, key: str) -> str:
    return hmac.new(key.encode(), digest.encode(), hashlib.sha256).hexdigest()


def integrity_tags(digest: str, key: str) -> dict[str, str]:
    """The version tags that record ``digest`` (and its HMAC when a key is set)."""
    return {DIGEST_TAG: digest, **({HMAC_TAG: sign(digest, key)} if key else {})}


def verify(tags: Mapping[str, str], digest: str, key: str, require_digest: bool, what: str) -> None:
    """Raise ``ModelIntegrityError`` unless ``digest`` (of the downloaded files) is what the
    version's ``tags`` recorded: its HMAC under ``key`` when a key is set, else its digest
    tag (required unless ``require_digest`` is off)."""
    fix_sign = "retrain it with `iot-mlops train` (with IOT_MLOPS_MODEL_SIGNING_KEY set)"
    if key:
        recorded = tags.get(HMAC_TAG)
        if recorded is None:
            raise ModelIntegrityError(
                f"{what} carries no {HMAC_TAG} tag and a signing key is set: refusing to load it",
                fix=fix_sign,
            )
        if not hmac.compare_digest(recorded, sign(digest, key)):
            raise ModelIntegrityError(
                f"{what}: its artifacts do not match the signature recorded at registration "
                "(tampered, or signed with another key): refusing to load it",
                fix=f"{fix_sign}; check who can write the artifact store",
            )
        return
    recorded = tags.get(DIGEST_TAG)
    if recorded is None:
        if require_digest:
            raise ModelIntegrityError(
                f"{what} carries no {DIGEST_TAG} tag: refusing to load an unverifiable model",
                fix=f"{fix_sign}, or set IOT_MLOPS_MODEL_REQUIRE_DIGEST=false to accept it",
            )
        return
    if not hmac.compare_digest(recorded, digest):
        raise ModelIntegrityError(
            f"{what}: its artifacts' SHA-256 {digest[:12]}… is not the {recorded[:12]}… recorded "
            "at registration (the files were changed): refusing to load it",
            fix=f"{fix_sign}; check who can write the artifact store",
        )
