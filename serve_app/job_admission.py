"""Admission for video jobs: a bound on the queue, a cap per client, a bound on the disk.

Counted from the job store every Ingress replica shares, so the bounds hold for the
service as a whole, not per replica (give or take the POSTs in flight at the same moment).
"""

import hashlib
from collections.abc import Iterable

from deployments.settings import AppArgs
from serve_app.errors import ApiError, overloaded_error


def client_of(authorization: str | None, address: str | None) -> str:
    """Who a job belongs to for the per-client cap: its API key, else its address.

    The key is kept as a hash: the job's state is a file, and a key is a secret.
    """
    if authorization:
        return "key:" + hashlib.sha256(authorization.encode()).hexdigest()[:16]
    return f"address:{address or 'unknown'}"


class JobAdmission:
    def __init__(self, args: AppArgs):
        self.args = args

    def check(self, states: Iterable[dict], client: str) -> None:
        """Refuses a new job when the queue is full or the client has its cap of active jobs.

        Raises:
            ApiError: 503 (``overloaded``) past ``max_queued_jobs``; 429 (``too_many_jobs``)
                past ``max_jobs_per_client``; both with Retry-After.
        """
        queued = mine = 0
        for state in states:
            if state["state"] not in ("queued", "running"):
                continue
            queued += state["state"] == "queued"
            mine += state.get("client") == client
        if mine >= self.args.max_jobs_per_client:
            raise ApiError(
                429, "too_many_jobs",
                f"you have {mine} video jobs queued or running, the limit per client is "
                f"{self.args.max_jobs_per_client}; retry when one has finished",
                {"Retry-After": str(self.args.retry_after_s)},
            )
        if queued >= self.args.max_queued_jobs:
            raise overloaded_error(self.args.retry_after_s, f"the video jobs queue is full ({queued} queued)")

    def room_bytes(self, usage_bytes: int, declared_bytes: int | None) -> int:
        """Bytes an upload may take on the jobs' disk now.

        Raises:
            ApiError: 507 (``storage_full``), with Retry-After, when the declared body
                (or any body) does not fit.
        """
        room = self.args.max_jobs_bytes - usage_bytes
        if room <= 0 or (declared_bytes is not None and declared_bytes > room):
            raise storage_full(self.args.retry_after_s)
        return room


def storage_full(retry_after_s: int) -> ApiError:
    return ApiError(507, "storage_full", "the video jobs' storage is full; retry when older jobs have expired",
                    {"Retry-After": str(retry_after_s)})
