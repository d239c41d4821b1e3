"""``logger=mlflow``: a run as an MLflow run (its config as params, window metrics by step), and
every version in MLflow's model registry, with the aliases ``champion`` and ``challenger`` moved as
the loop promotes, rejects or rolls out.

No model is pickled: a version's source is its directory in the perennial registry (safetensors
files), or, with a tracking server, its weights file uploaded as an artifact of the run.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from perennial.registry import VersionRecord, atomic_write_text
from perennial.registry.store import WEIGHTS_FILE
from perennial.tracking.base import FINISHED, RunHistory, RunLogger, finite, metrics_of, require

CHAMPION, CHALLENGER = "champion", "challenger"
TAG = "perennial."
# A store on this machine's disk can point a model version at the perennial registry's own files;
# any other has clients elsewhere, who get an uploaded copy.
LOCAL_SCHEMES = ("", "file", "sqlite")
_STATUS = {"promoted": "champion", "rejected": "rejected", "rollout": "candidate"}
_PARAM_LENGTH, _TAG_LENGTH, _BATCH = 6000, 8000, 100  # MLflow's limits on values and params per call


class MLflowLogger(RunLogger):
    """Logs a run to MLflow and registers its versions as model versions of ``registered_model``.

    ``tracking_uri`` null keeps everything in ``<run dir>/mlflow/mlflow.db`` (SQLite, which holds
    a model registry); a server URI (``http://host:5000``) is checked when the logger is built.
    ``upload_weights`` null uploads the weights only where the store is not on this machine.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "perennial",
        registered_model: str | None = None,
        upload_weights: bool | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._mlflow = require("mlflow", "mlflow", "mlflow")
        if not experiment:
            raise ValueError(f"logger.experiment must name an MLflow experiment, got {experiment!r}")
        if registered_model is not None and not str(registered_model).strip():
            raise ValueError(f"logger.registered_model must be a name or null, got {registered_model!r}")
        if timeout <= 0:
            raise ValueError(f"logger.timeout must be > 0 seconds, got {timeout}")
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.registered_model, self.upload_weights, self.timeout = registered_model, upload_weights, timeout
        if tracking_uri:
            self._check_store(tracking_uri)
        self._client: Any = None
        self._uri = ""
        self._versions_dir = Path()
        self.run_id = ""
        self.model = ""
        self._versions: dict[str, str] = {}  # perennial id -> MLflow model version
        self._champion: str | None = None

    # ---- checks -----------------------------------------------------------------------------
    def _check_store(self, uri: str) -> None:
        """Fail now, naming the URI, if the store cannot be reached: not at the first window."""
        if urlparse(uri).scheme in ("http", "https"):
            try:
                urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=self.timeout).close()
            except urllib.error.HTTPError:
                pass  # it answered: a server is there, and the real call below tells if it is MLflow
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", err)
                raise RuntimeError(
                    f"logger=mlflow cannot reach the MLflow tracking server at logger.tracking_uri={uri!r} "
                    f"({reason}); start it, fix the URI, or leave logger.tracking_uri=null to log into "
                    "the run directory"
                ) from err
        try:
            self._mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
        except Exception as err:  # MLflow raises many kinds, by store; any of them means unusable
            raise RuntimeError(
                f"logger=mlflow cannot use the MLflow store logger.tracking_uri={uri!r}: {err}"
            ) from err

    # ---- the run ----------------------------------------------------------------------------
    def start(self, history: RunHistory) -> None:
        self.close()
        uri = self.tracking_uri or f"sqlite:///{(history.run_dir / 'mlflow' / 'mlflow.db').resolve()}"
        if not self.tracking_uri:
            (history.run_dir / "mlflow").mkdir(parents=True, exist_ok=True)
        self._uri = uri
        self._client = self._mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        self._versions_dir = history.versions_dir
        self.run_id = self._open_run(history)
        self._log_params(history.config)
        self.model = self.registered_model or history.name
        if not self._exists(self._client.get_registered_model, self.model):
            self._client.create_registered_model(self.model, tags={f"{TAG}source": "perennial"})
        self._catch_up(history)

    def _open_run(self, history: RunHistory) -> str:
        """The MLflow run this run directory logged to before, when it is in this store; else a new one."""
        marker = history.run_dir / "mlflow" / "run.json"
        if marker.is_file():
            saved = json.loads(marker.read_text())
            run = self._exists(self._client.get_run, saved.get("run_id", ""))
            if saved.get("tracking_uri") == self._uri and run and run.info.lifecycle_stage == "active":
                self._client.update_run(saved["run_id"], status="RUNNING")
                return saved["run_id"]
        experiment = self._client.get_experiment_by_name(self.experiment)
        if experiment is None:
            # With the default store, artifacts stay in the run directory too, not in ./mlruns.
            location = (
                None if self.tracking_uri else (history.run_dir / "mlflow" / "artifacts").resolve().as_uri()
            )
            experiment_id = self._client.create_experiment(self.experiment, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        tags = {f"{TAG}run_dir": str(history.run_dir.resolve())}
        run = self._client.create_run(experiment_id, run_name=history.name, tags=tags)
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, json.dumps({"tracking_uri": self._uri, "run_id": run.info.run_id}))
        return run.info.run_id

    def _exists(self, get: Callable[[str], Any], key: str) -> Any:
        """``get(key)``, or None where MLflow has no such thing."""
        from mlflow.exceptions import MlflowException

        try:
            return get(key)
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return None

    def _log_params(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key[:250], _text(value, _PARAM_LENGTH)) for key, value in _flatten(config).items()]
        for i in range(0, len(params), _BATCH):
            # Logging a param again with the same value is a no-op: a resumed run has the same config.
            self._client.log_batch(self.run_id, params=params[i : i + _BATCH])

    def _catch_up(self, history: RunHistory) -> None:
        """Make MLflow agree with the committed history: versions a crash never committed go, missing
        versions and windows are logged, and statuses and aliases follow the registry."""
        known = {r.id for r in history.versions}
        for mv in list(self._model_versions()):  # read every page before deleting from them
            version = mv.tags.get(f"{TAG}version")
            if version not in known or version in self._versions:
                self._client.delete_model_version(self.model, mv.version)
            else:
                self._versions[version] = str(mv.version)
        missing = [r for r in history.versions if r.id not in self._versions]
        for record in missing:
            self.log_version(record)
        new = {r.id for r in missing}
        for decision in history.decisions:
            if decision.version in new:
                self.log_decision(decision.version, decision.window, decision.decision, decision.numbers)
        for record in history.versions:
            self._tag(record.id, {"status": record.status})
        self._champion = history.champion()
        self._alias(CHAMPION, self._champion)
        challenger = next((r.id for r in reversed(history.versions) if r.status == "candidate"), None)
        self._alias(CHALLENGER, challenger)
        logged = {m.step for m in self._client.get_metric_history(self.run_id, "served_accuracy")}
        for row in history.rows:
            if row["window"] not in logged:
                self.log_window(row)

    def _model_versions(self) -> Iterator[Any]:
        """This run's versions of the registered model, page by page."""
        token = None
        while True:
            page = self._client.search_model_versions(
                f"run_id = '{self.run_id}'", max_results=1000, page_token=token
            )
            yield from (mv for mv in page if mv.name == self.model)
            token = page.token
            if not token:
                return

    # ---- events -----------------------------------------------------------------------------
    def log_window(self, row: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        step = int(row["window"])
        metrics = [Metric(k, v, stamp, step) for k, v in finite(metrics_of(row)).items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def log_version(self, record: VersionRecord) -> None:
        tags = {
            "version": record.id,
            "parent": record.parent or "",
            "kind": record.kind,
            "status": record.status,
            "n_samples": record.n_samples,
            "train_seconds": round(record.train_seconds, 3),
            "trained_on_windows": ",".join(map(str, record.trained_on_windows)),
            "trigger": (record.trigger or {}).get("name", ""),
            "created_window": record.created_window,
        }
        tags = {f"{TAG}{k}": _text(v, _TAG_LENGTH) for k, v in tags.items()}
        tags |= {f"gate.{k}": _text(v, _TAG_LENGTH) for k, v in finite(record.metrics).items()}
        mv = self._client.create_model_version(
            self.model, self._source(record.id), run_id=self.run_id, tags=tags, await_creation_for=0
        )
        self._versions[record.id] = str(mv.version)
        self._alias(CHALLENGER, record.id)  # just gated: the challenger until a decision moves it

    def log_decision(
        self, version: str, window: int | None, decision: str, numbers: Mapping[str, Any]
    ) -> None:
        if version not in self._versions:
            return  # a version this logger never saw (it cannot happen in the loop); nothing to tag
        tags = {"decision": decision, "decision_window": window, "reason": numbers.get("reason", "")}
        tags |= {f"gate.{k}": v for k, v in finite(numbers).items()}
        if decision in _STATUS:
            tags["status"] = _STATUS[decision]
        self._tag(version, tags)
        if decision == "promoted":
            if self._champion and self._champion != version:
                self._tag(self._champion, {"status": "retired"})
            self._champion = version
            self._alias(CHAMPION, version)
        if decision in ("promoted", "rejected") and self._alias_target(CHALLENGER) == self._versions[version]:
            self._alias(CHALLENGER, None)

    def close(self, status: str = FINISHED) -> None:
        if self._client is not None and self.run_id:
            self._client.set_terminated(self.run_id, status=status.upper())
        self._client, self._versions, self._champion = None, {}, None

    # ---- helpers ----------------------------------------------------------------------------
    def _source(self, version: str) -> str:
        local = self._versions_dir / version
        upload = self.upload_weights
        if upload is None:
            upload = urlparse(self._uri).scheme not in LOCAL_SCHEMES
        if not upload:
            return str(local.resolve())
        # Only the weights: the version directory also holds the replay buffer, i.e. training examples.
        self._client.log_artifact(self.run_id, str(local / WEIGHTS_FILE), artifact_path=f"versions/{version}")
        runs_uri = f"runs:/{self.run_id}/versions/{version}"
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        return RunsArtifactRepository.get_underlying_uri(runs_uri)

    def _tag(self, version: str, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            name = key if key.startswith("gate.") else f"{TAG}{key}"
            self._client.set_model_version_tag(
                self.model, self._versions[version], name, _text(value, _TAG_LENGTH)
            )

    def _alias(self, alias: str, version: str | None) -> None:
        """Point ``alias`` at ``version``'s model version, or remove it."""
        if version is None:
            if self._alias_target(alias) is not None:
                self._client.delete_registered_model_alias(self.model, alias)
        elif version in self._versions:
            self._client.set_registered_model_alias(self.model, alias, self._versions[version])

    def _alias_target(self, alias: str) -> str | None:
        """The model version ``alias`` points at (MLflow returns numbers or strings, by store)."""
        target = self._client.get_registered_model(self.model).aliases.get(alias)
        return None if target is None else str(target)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _text(value: Any, limit: int) -> str:
    # JSON for everything but strings, so null, true and lists read as they do in the YAML config.
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
