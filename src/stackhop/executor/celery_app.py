"""The Celery application the coordinator publishes to and ``stackhop worker`` runs.

One task, ``stackhop.operation``: a message names a journal, a run and operation
rows (IDs only: no URL, no credential, no record); the worker reads the rest from
the journal and its own environment (:mod:`stackhop.executor.worker`).

Settings (checked against celery 5.7.0; ``docs/design/executor.md`` §3):

- ``task_acks_late`` with ``task_reject_on_worker_lost``: a message is acknowledged
  when its task returns; a worker child killed mid-task has its message requeued
  (redelivered), not acknowledged and lost.
- ``worker_prefetch_multiplier=1`` (and ``-O fair``): a worker holds no message it
  is not running, so a waiting copy is free for another worker.
- ``broker_channel_error_retry``: a channel closed by the broker (RabbitMQ's
  ``consumer_timeout`` on a long copy) reconnects instead of stopping the worker.
- No result backend (the journal is the result), JSON only, durable queues,
  persistent messages, publisher confirms, no remote control (no pidbox queues).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from stackhop.executor.names import DEFAULT_QUEUE, TASK


def make_app(url: str) -> Celery:
    """A Celery app on broker ``url`` with stackhop's settings and its one task."""
    app = Celery("stackhop", broker=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        accept_content=["json"],
        task_serializer="json",
        broker_channel_error_retry=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"confirm_publish": True},
        # A publish while the broker restarts waits for it (about a minute) instead of
        # failing the run at once.
        task_publish_retry_policy={"max_retries": 30, "interval_start": 0.5,
                                   "interval_step": 0.5, "interval_max": 2},
        task_default_queue=DEFAULT_QUEUE,
        task_default_delivery_mode="persistent",
        worker_enable_remote_control=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )

    @app.task(name=TASK, bind=True)  # type: ignore[untyped-decorator]
    def operation(self: Any, message: dict[str, Any]) -> None:
        from stackhop.executor import worker

        info = self.request.delivery_info or {}
        worker.run_message(
            message,
            redelivered=bool(info.get("redelivered")),
            queue=str(info.get("routing_key") or ""),
        )

    return app
