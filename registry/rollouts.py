"""Shadow and canary comparisons as MLflow runs, so they outlive the service.

A service running a shadow or a canary logs its comparison every `PROTO2PROD_SHADOW_LOG_S`
as metrics of one run per champion/challenger pair, in the model's experiment
(`proto2prod/NAME`), tagged with both versions; a canary's rollback is a tag on it.
`proto2prod compare NAME` reads them back. MLflow's UI shows them beside the training runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from proto2prod.registry.client import Registry
from proto2prod.registry.publish import experiment_for

KIND = "proto2prod.rollout"
"""Tag naming the kind of a run: `shadow`, `canary`, or `drift` (a version against its
reference statistics, logged by service/drift.py's tracker)."""
CHAMPION = "proto2prod.champion"
CHALLENGER = "proto2prod.challenger"
ROLLED_BACK = "proto2prod.canary.rolled_back"


@dataclass
class RolloutRun:
    """One run for one pair of versions; created on the first `log`."""

    registry: Registry
    name: str
    kind: str
    champion: str
    challenger: str
    worker: int = 1
    run_id: str | None = None
    step: int = 0

    def log(self, metrics: dict[str, float | None], tags: dict[str, str] | None = None) -> None:
        """Log the numbers that exist (a side with no answers yet has none)."""
        from mlflow.entities import Metric, RunTag

        client = self.registry.client
        with self.registry.errors(f"logging the {self.kind} comparison of {self.name}"):
            if self.run_id is None:
                run = client.create_run(
                    experiment_for(self.registry, self.name),
                    run_name=f"{self.kind} v{self.champion} vs v{self.challenger}",
                    tags={
                        KIND: self.kind,
                        CHAMPION: self.champion,
                        CHALLENGER: self.challenger,
                        "proto2prod.model": self.name,
                        "proto2prod.worker": str(self.worker),
                    },
                )
                self.run_id = run.info.run_id
            now = int(time.time() * 1000)
            client.log_batch(
                self.run_id,
                metrics=[
                    Metric(key, float(value), now, self.step)
                    for key, value in metrics.items()
                    if value is not None
                ],
                tags=[RunTag(k, v) for k, v in (tags or {}).items()],
            )
            self.step += 1

    def record_rollback(self, reason: str) -> None:
        """Say on the challenger's version that its canary against this champion was rolled
        back, so every replica's next check of the canary alias acts on it too (a replica
        the fan-out missed, or one started later)."""
        value = json.dumps({"champion": self.champion, "reason": reason})
        with self.registry.errors(f"recording the canary rollback of {self.name}"):
            self.registry.client.set_model_version_tag(
                self.name, self.challenger, ROLLED_BACK, value
            )

    def end(self) -> None:
        if self.run_id is not None:
            with self.registry.errors(f"ending the {self.kind} run of {self.name}"):
                self.registry.client.set_terminated(self.run_id)


def comparisons(
    registry: Registry,
    name: str,
    *,
    kinds: tuple[str, ...] = ("shadow", "canary"),
    limit: int = 20,
) -> list[dict[str, Any]]:
    """The latest runs of `name` of these kinds (shadow, canary, drift), newest first:
    kind, versions, last metrics."""
    client = registry.client
    with registry.errors(f"reading the rollouts of {name}", not_found=f"no model named {name}"):
        experiment = client.get_experiment_by_name(f"proto2prod/{name}")
        if experiment is None:
            return []
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{KIND}` != ''",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
    return [
        {
            "run_id": run.info.run_id,
            "kind": run.data.tags.get(KIND),
            "champion": run.data.tags.get(CHAMPION),
            "challenger": run.data.tags.get(CHALLENGER),
            "worker": run.data.tags.get("proto2prod.worker"),
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run.info.start_time / 1000)),
            "rolled_back": run.data.tags.get(ROLLED_BACK),
            "metrics": dict(run.data.metrics),
        }
        for run in runs
        if run.data.tags.get(KIND) in kinds
    ]
