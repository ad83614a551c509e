"""The NDIF service: the API key (checked here only), its model listing, and pre-flight checks.

Before any remote work starts, `preflight(base, tuned, ...)` checks that an API key is set (the
message names `NDIF_API_KEY`) and that NDIF currently hosts both models at the pinned revisions,
from the service's `/status` listing (the call `nnsight.status()` makes), with a hard time limit.
`remote_model(repo_id, revision=...)` gives the nnsight model whose traces NDIF runs. Running work
there is the job of `helpers.backend.NDIF` (and `SimulatedNDIF` for the serialised path run here).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEPLOYED_LEVELS = frozenset({"HOT", "WARM"})  # nnsight.ndif: COLD models are downloaded, not up
STATUS_TIMEOUT_S = 20.0


class NDIFError(RuntimeError):
    """A remote run cannot start; the message says what to do."""


class MissingAPIKey(NDIFError):
    """No NDIF API key is configured."""


class NDIFUnreachable(NDIFError):
    """The NDIF status endpoint did not answer in time."""


class NotHosted(NDIFError):
    """A model (at its revision) is not running on NDIF."""


@dataclass(frozen=True)
class Deployment:
    """One model NDIF serves: repository, revision, deployment level and application state."""

    repo_id: str
    revision: str
    level: str
    state: str

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"


def api_key() -> str:
    """The configured NDIF API key (environment first, then nnsight's config); raise if none."""
    from nnsight.schema.config import CONFIG

    key = os.environ.get("NDIF_API_KEY") or CONFIG.API.APIKEY
    if not key:
        raise MissingAPIKey(
            "running on NDIF needs an NDIF API key: set the NDIF_API_KEY environment variable "
            "(on Colab, add a secret named NDIF_API_KEY), or run `nnsight.login()` once; keys "
            "are issued at https://login.ndif.us"
        )
    return key


def parse_status(raw: Mapping[str, Any]) -> dict[str, list[Deployment]]:
    """Deployed (HOT/WARM) models of a raw `/status` answer, by repository id."""
    out: dict[str, list[Deployment]] = {}
    for name, value in (raw.get("deployments") or {}).items():
        if value.get("deployment_level") not in DEPLOYED_LEVELS:
            continue
        dep = Deployment(
            repo_id=str(value.get("repo_id", name)),
            revision=str(value.get("revision") or "main"),
            level=str(value.get("deployment_level")),
            state=str(value.get("application_state", "UNHEALTHY")),
        )
        out.setdefault(dep.repo_id, []).append(dep)
    return out


def fetch_status(timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
    """Raw `/status` JSON of the configured NDIF host, or `NDIFUnreachable` after `timeout` s.

    The request runs in a worker thread with a wall-clock deadline, so a stalled DNS lookup or
    connection cannot hang a notebook.
    """
    from nnsight import ndif
    from nnsight.schema.config import CONFIG

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(ndif._get, "/status", (min(5.0, timeout), timeout))
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError as err:
        raise NDIFUnreachable(
            f"NDIF ({CONFIG.API.HOST}) did not answer /status within {timeout:.0f} s; check the "
            "network or https://discuss.ndif.us, or run locally on a GPU"
        ) from err
    except Exception as err:  # noqa: BLE001 - any transport or HTTP error means unreachable
        raise NDIFUnreachable(
            f"could not read NDIF's model list from {CONFIG.API.HOST}/status "
            f"({type(err).__name__}: {err}); check the network or run locally on a GPU"
        ) from err
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def check_hosted(
    models: Iterable[tuple[str, str | None]], hosted: Mapping[str, list[Deployment]]
) -> None:
    """Raise `NotHosted` naming every (repo, revision) that is not RUNNING on NDIF."""
    missing = []
    for repo_id, revision in models:
        wanted = revision or "main"
        ok = any(d.running and d.revision == wanted for d in hosted.get(repo_id, []))
        if not ok:
            have = ", ".join(f"{d.revision} ({d.state})" for d in hosted.get(repo_id, []))
            missing.append(f"{repo_id}@{wanted}" + (f" [NDIF has: {have}]" if have else ""))
    if missing:
        running = sorted(r for r, deps in hosted.items() if any(d.running for d in deps))
        raise NotHosted(
            "NDIF does not run "
            + "; ".join(missing)
            + ". Models running now: "
            + (", ".join(running) if running else "none")
            + ". Run these models locally on a GPU (see the planner), or pick hosted ones."
        )


def preflight(
    base: str,
    tuned: str,
    *,
    base_revision: str | None = None,
    tuned_revision: str | None = None,
    timeout: float = STATUS_TIMEOUT_S,
) -> dict[str, list[Deployment]]:
    """Check key and hosting for a remote pair before any work; return NDIF's deployments."""
    for ref in (base, tuned):
        if ref.startswith("organism:") or os.path.exists(ref):
            raise ValueError(
                f"{ref!r} is a local model; NDIF runs hub models only (pass '<org>/<name>' ids)"
            )
    api_key()
    hosted = parse_status(fetch_status(timeout))
    check_hosted([(base, base_revision), (tuned, tuned_revision)], hosted)
    return hosted


def remote_model(repo_id: str, *, revision: str | None = None) -> Any:
    """An nnsight model of `repo_id` for remote traces (config only here; weights stay on NDIF)."""
    from nnsight.modeling.transformers import TransformersModel

    kwargs = {"revision": revision} if revision else {}
    return TransformersModel(repo_id, task="text-generation", **kwargs)
