"""How MLflow's UI shows a suite: its experiment, opened with the tags the UI's pages read (kind, description,
chart view), the chart view itself, the ``mlflow ui`` command on the local store and the links the CLI prints."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.errors import BenchmarkError
from benchmark.record import acc_metric
from benchmark.tracking.reader import ResultStore
from benchmark.tracking.retry import Retrying
from benchmark.tracking.store import tracking_uri

EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the experiment's description on its page in the UI
# The chart view the printed links open: MLflow 3.17's UI orders its chart sections alphabetically by metric
# prefix (``baseline/``, ``convergence/`` before ``test/``), and reads a view stored as the experiment tag
# ``mlflow.sharedViewState.<key>`` when a link carries ``viewStateShareKey=<key>``. Ours leads with accuracy against
# the realised share of Unknown examples, then the per-epoch curves; the UI appends every other section after them.
VIEW_KEY = "slick-bench-v1"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
_LEAD = "Accuracy against % Unknown (one point per variant)"
_SECTIONS = [_LEAD, "test/acc", "ood/acc", "train/acc", "dev/acc", "train", "early_stop/test/acc",
             "convergence/test/acc", "early_stop/ood/acc", "convergence/ood/acc", "linear"]


def chart_view() -> str:
    """The experiment's chart view, as MLflow's UI stores a shared one (its ``compareRunSections`` and
    ``compareRunCharts``; the UI adds a chart for every metric, in the section named by its prefix)."""
    def scatter(stop: str) -> dict:
        return {"uuid": f"slick-{stop}-vs-unknown", "type": "SCATTER", "metricSectionId": "slick-lead",
                "isGenerated": False, "deleted": False, "runsCountToCompare": 100,
                "displayName": f"{stop.upper()} test accuracy against realised % Unknown",
                "xaxis": {"key": "realized_unknown_fraction", "type": "PARAM"},
                "yaxis": {"key": acc_metric("test", stop=stop), "dataAccessKey": acc_metric("test", stop=stop),
                          "type": "METRIC"}}

    sections = [{"uuid": "slick-lead" if name == _LEAD else f"slick-{name}", "name": name, "display": True,
                 "isReordered": name == _LEAD} for name in _SECTIONS]
    # The variants' runs only, grouped by mixture (the seeds of one mixture averaged): the charts plot the runs the
    # list shows, and ungrouped, a parent's children are folded under it (a suite's parent has no per-epoch metric).
    view = {"searchFilter": "tags.`slick.role` = 'variant'",
            "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "mixture"}]},
            "useGroupedValuesInCharts": True, "isAccordionReordered": True, "hideEmptyCharts": True,
            "compareRunSections": sections, "compareRunCharts": [scatter("early_stop"), scatter("convergence")]}
    return json.dumps(view, separators=(",", ":"))


def open_experiment(client, retrying: Retrying, uri: str, experiment: str, description: str) -> str:
    """The experiment's id: created (with the tags the UI reads) or found, restored and brought up to date."""
    found = retrying(f"look up experiment '{experiment}'", client.get_experiment_by_name, experiment)
    if found is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
        try:
            # MLflow 3 otherwise opens an experiment on its GenAI overview (traces), not on the runs and charts.
            return retrying(f"create experiment '{experiment}'", client.create_experiment, experiment,
                            artifact_location=location,
                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, VIEW_TAG: chart_view(),
                                  **({NOTE_TAG: description} if description else {})})
        except BenchmarkError:
            found = retrying(f"look up experiment '{experiment}'", client.get_experiment_by_name, experiment)
            if found is None:
                raise
            # created by a concurrent run in between: use it
    if found.lifecycle_stage == "deleted":
        retrying(f"restore experiment '{experiment}'", client.restore_experiment, found.experiment_id)
    if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        retrying("tag the experiment", client.set_experiment_tag, found.experiment_id,
                 EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if found.tags.get(VIEW_TAG) != chart_view():
        retrying("store the experiment's chart view", client.set_experiment_tag, found.experiment_id,
                 VIEW_TAG, chart_view())
    if description and not found.tags.get(NOTE_TAG):
        retrying("describe the experiment", client.set_experiment_tag, found.experiment_id,
                 NOTE_TAG, description)
    return found.experiment_id


def ui_command(host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The MLflow UI on the local store, bound to loopback only."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        raise BenchmarkError(f"MLFLOW_TRACKING_URI is '{uri}': open that server's own UI instead")
    artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve()
    return ["mlflow", "ui", "--backend-store-uri", uri, "--default-artifact-root", artifacts.as_uri(),
            "--host", host, "--port", str(port)]


def ui_links(host: str = "127.0.0.1", port: int = 5000) -> list[tuple[str, str]]:
    """(experiment, URL) for every experiment with suite runs: its runs page in the chart view, in the UI's
    "Model training" mode. MLflow 3.17 opens on its GenAI (traces) mode unless told otherwise, whatever the
    experiment's ``mlflow.experimentKind`` tag says."""
    return [(name, f"http://{host}:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
                   f"&compareRunsMode=CHART&viewStateShareKey={VIEW_KEY}")
            for experiment_id, name in ResultStore().experiments()]
