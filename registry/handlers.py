"""The MLflow REST operations as blocking functions Message -> JSON dict over the registry's stores; no
HTTP here (registry/api.py binds them to routes and runs them in Starlette's threadpool)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from registry import sources, wire
from registry.artifacts import ArtifactStore
from registry.entities import RUN_STATUSES, VIEW_TYPES
from registry.errors import InvalidParameterValue
from registry.store import RegistryStore
from registry.tracking import TrackingStore
from registry.versions import now_ms
from registry.wire import Message

Handler = Callable[[Message], dict[str, Any]]
Json = dict[str, Any]
_VIEW_TYPE_NUMBERS = {str(i): name for i, name in enumerate(VIEW_TYPES, start=1)}  # protobuf enum values
_RUN_STATUS_NUMBERS = {str(i): name for i, name in enumerate(RUN_STATUSES, start=1)}


def _enum(msg: Message, name: str, numbers: Mapping[str, str], default: str) -> str:
    value = msg.text(name, default=default) or default
    return numbers.get(value, value)


class MlflowHandlers:
    """One method per MLflow endpoint; each validates its message, does one store call (or a few),
    and returns the response body. Raises RegistryErrors, which the HTTP layer renders."""

    def __init__(self, store: RegistryStore, artifacts: ArtifactStore) -> None:
        self.store = store
        self.tracking = TrackingStore(store)
        self.artifacts = artifacts

    # --- experiments ---

    def create_experiment(self, msg: Message) -> Json:
        experiment_id = self.tracking.create_experiment(
            msg.text("name", required=True), msg.text("artifact_location") or None, dict(msg.pairs("tags"))
        )
        return {"experiment_id": experiment_id}

    def get_experiment(self, msg: Message) -> Json:
        return {"experiment": wire.experiment(self.tracking.get_experiment(msg.text("experiment_id", required=True)))}

    def get_experiment_by_name(self, msg: Message) -> Json:
        found = self.tracking.get_experiment_by_name(msg.text("experiment_name", required=True))
        return {"experiment": wire.experiment(found)}

    def search_experiments(self, msg: Message) -> Json:
        page = self.tracking.search_experiments(
            view_type=_enum(msg, "view_type", _VIEW_TYPE_NUMBERS, "ACTIVE_ONLY"),
            filter_string=msg.text("filter"),
            max_results=msg.int64("max_results"),
            order_by=msg.texts("order_by"),
            page_token=msg.text("page_token"),
        )
        return wire.paged("experiments", page, wire.experiment)

    def update_experiment(self, msg: Message) -> Json:
        self.tracking.rename_experiment(msg.text("experiment_id", required=True), msg.text("new_name", required=True))
        return {}

    def delete_experiment(self, msg: Message) -> Json:
        self.tracking.delete_experiment(msg.text("experiment_id", required=True))
        return {}

    def restore_experiment(self, msg: Message) -> Json:
        self.tracking.restore_experiment(msg.text("experiment_id", required=True))
        return {}

    def set_experiment_tag(self, msg: Message) -> Json:
        self.tracking.set_experiment_tag(
            msg.text("experiment_id", required=True), msg.text("key", required=True), msg.text("value")
        )
        return {}

    def delete_experiment_tag(self, msg: Message) -> Json:
        self.tracking.delete_experiment_tag(msg.text("experiment_id", required=True), msg.text("key", required=True))
        return {}

    # --- runs ---

    def create_run(self, msg: Message) -> Json:
        run = self.tracking.create_run(
            msg.text("experiment_id") or "0",
            user_id=msg.text("user_id"),
            start_time=msg.int64("start_time"),
            run_name=msg.text("run_name"),
            tags=msg.pairs("tags"),
        )
        return {"run": wire.run(run)}

    def get_run(self, msg: Message) -> Json:
        return {"run": wire.run(self.tracking.get_run(msg.run_id()))}

    def update_run(self, msg: Message) -> Json:
        info = self.tracking.update_run(
            msg.run_id(),
            status=_enum(msg, "status", _RUN_STATUS_NUMBERS, "") or None,
            end_time=msg.int64("end_time"),
            run_name=msg.text("run_name") or None,
        )
        return {"run_info": wire.run_info(info)}

    def delete_run(self, msg: Message) -> Json:
        self.tracking.delete_run(msg.run_id())
        return {}

    def restore_run(self, msg: Message) -> Json:
        self.tracking.restore_run(msg.run_id())
        return {}

    def search_runs(self, msg: Message) -> Json:
        page = self.tracking.search_runs(
            msg.texts("experiment_ids"),
            filter_string=msg.text("filter"),
            view_type=_enum(msg, "run_view_type", _VIEW_TYPE_NUMBERS, "ACTIVE_ONLY"),
            max_results=msg.int64("max_results"),
            order_by=msg.texts("order_by"),
            page_token=msg.text("page_token"),
        )
        return wire.paged("runs", page, wire.run)

    def log_parameter(self, msg: Message) -> Json:
        self.tracking.log_param(msg.run_id(), msg.text("key", required=True), msg.text("value"))
        return {}

    def log_metric(self, msg: Message) -> Json:
        self.tracking.log_metric(msg.run_id(), wire.read_metric(msg, now_ms()))
        return {}

    def log_batch(self, msg: Message) -> Json:
        now = now_ms()
        self.tracking.log_batch(
            msg.run_id(),
            metrics=wire.read_metrics(msg, "metrics", now),
            params=msg.pairs("params"),
            tags=msg.pairs("tags"),
        )
        return {}

    def set_tag(self, msg: Message) -> Json:
        self.tracking.set_tag(msg.run_id(), msg.text("key", required=True), msg.text("value"))
        return {}

    def delete_tag(self, msg: Message) -> Json:
        self.tracking.delete_tag(msg.run_id(), msg.text("key", required=True))
        return {}

    def log_inputs(self, msg: Message) -> Json:
        self.tracking.log_inputs(msg.run_id(), [wire.read_dataset_input(m) for m in msg.messages("datasets")])
        return {}

    def get_metric_history(self, msg: Message) -> Json:
        page = self.tracking.get_metric_history(
            msg.run_id(),
            msg.text("metric_key", required=True),
            max_results=msg.int64("max_results"),
            page_token=msg.text("page_token"),
        )
        if not page.items:
            return {}  # what MLflow answers for an empty history
        return wire.paged("metrics", page, wire.metric)

    def search_logged_models(self, msg: Message) -> Json:
        """MLflow 3 "logged models" are not stored here, so there are none; the client asks for them when
        listing a run's artifacts under a path (to merge a logged model's files), and an empty answer
        lets it list the run's own artifacts."""
        msg.texts("experiment_ids")
        return {"models": []}

    # --- registered models ---

    def create_registered_model(self, msg: Message) -> Json:
        model = self.store.create_registered_model(
            msg.text("name", required=True), msg.text("description"), dict(msg.pairs("tags"))
        )
        return {"registered_model": wire.registered_model(model)}

    def get_registered_model(self, msg: Message) -> Json:
        name = msg.text("name", required=True)
        model = self.store.get_registered_model(name)
        return {"registered_model": wire.registered_model(model, self.store.list_model_versions(name))}

    def rename_registered_model(self, msg: Message) -> Json:
        model = self.store.rename_registered_model(msg.text("name", required=True), msg.text("new_name", required=True))
        return {"registered_model": wire.registered_model(model)}

    def update_registered_model(self, msg: Message) -> Json:
        model = self.store.update_registered_model(msg.text("name", required=True), msg.text("description"))
        return {"registered_model": wire.registered_model(model)}

    def delete_registered_model(self, msg: Message) -> Json:
        self.store.delete_registered_model(msg.text("name", required=True))
        return {}

    def search_registered_models(self, msg: Message) -> Json:
        page = self.store.search_registered_models(
            msg.text("filter"), msg.int64("max_results"), msg.texts("order_by"), msg.text("page_token")
        )
        return wire.paged("registered_models", page, wire.registered_model)

    def get_latest_versions(self, msg: Message) -> Json:
        found = self.store.latest_versions(msg.text("name", required=True), msg.texts("stages"))
        return {"model_versions": [wire.model_version(mv) for mv in found]}

    def set_registered_model_tag(self, msg: Message) -> Json:
        self.store.set_registered_model_tag(msg.text("name", required=True), msg.text("key", required=True),
                                            msg.text("value"))
        return {}

    def delete_registered_model_tag(self, msg: Message) -> Json:
        self.store.delete_registered_model_tag(msg.text("name", required=True), msg.text("key", required=True))
        return {}

    def set_alias(self, msg: Message) -> Json:
        self.store.set_alias(msg.text("name", required=True), msg.text("alias", required=True), msg.version())
        return {}

    def delete_alias(self, msg: Message) -> Json:
        self.store.delete_alias(msg.text("name", required=True), msg.text("alias", required=True))
        return {}

    def get_version_by_alias(self, msg: Message) -> Json:
        mv = self.store.get_version_by_alias(msg.text("name", required=True), msg.text("alias", required=True))
        return {"model_version": wire.model_version(mv)}

    # --- model versions ---

    def create_model_version(self, msg: Message) -> Json:
        source = msg.text("source", required=True)
        mv = sources.create_version_from_source(
            self.store,
            self.tracking,
            self.artifacts,
            msg.text("name", required=True),
            source,
            run_id=msg.text("run_id") or None,
            description=msg.text("description"),
            tags=dict(msg.pairs("tags")),
        )
        return {"model_version": wire.model_version(mv)}

    def get_model_version(self, msg: Message) -> Json:
        mv = self.store.get_model_version(msg.text("name", required=True), msg.version())
        return {"model_version": wire.model_version(mv)}

    def update_model_version(self, msg: Message) -> Json:
        mv = self.store.update_model_version(msg.text("name", required=True), msg.version(), msg.text("description"))
        return {"model_version": wire.model_version(mv)}

    def delete_model_version(self, msg: Message) -> Json:
        self.store.delete_model_version(msg.text("name", required=True), msg.version())
        return {}

    def search_model_versions(self, msg: Message) -> Json:
        page = self.store.search_model_versions(
            msg.text("filter"), msg.int64("max_results"), msg.texts("order_by"), msg.text("page_token")
        )
        return wire.paged("model_versions", page, lambda mv: wire.model_version(mv, with_aliases=False))

    def transition_stage(self, msg: Message) -> Json:
        mv = self.store.transition_stage(
            msg.text("name", required=True),
            msg.version(),
            msg.text("stage", required=True),
            archive_existing=msg.boolean("archive_existing_versions"),
        )
        return {"model_version": wire.model_version(mv)}

    def set_model_version_tag(self, msg: Message) -> Json:
        self.store.set_model_version_tag(
            msg.text("name", required=True), msg.version(), msg.text("key", required=True), msg.text("value")
        )
        return {}

    def delete_model_version_tag(self, msg: Message) -> Json:
        self.store.delete_model_version_tag(msg.text("name", required=True), msg.version(), msg.text("key", required=True))
        return {}

    def get_download_uri(self, msg: Message) -> Json:
        mv = self.store.get_model_version(msg.text("name", required=True), msg.version())
        if not mv.source:
            raise InvalidParameterValue(f"Version {mv.version} of {mv.name!r} has no source")
        return {"artifact_uri": sources.download_uri(self.tracking, mv.source)}
