"""A long job that reports its progress to an ssegate topic.

    python examples/job_progress/job.py --topic jobs/demo            # against http://127.0.0.1:8000
    python examples/job_progress/job.py --topic jobs/demo --delay 0  # instantly (tests)

Every step publishes ``progress`` ``{"percent": 0-100, "stage": "...", "state": "running"|"done"}``
to the topic. Each publish carries an idempotency id (``<run>/<step>``), so retrying a publish
that timed out can never report a step twice.
"""

from __future__ import annotations

import argparse
import secrets
import time

from ssegate.publish import SyncHTTPPublisher

STAGES = ["downloading", "parsing", "indexing", "uploading"]


def run_job(publisher: SyncHTTPPublisher, topic: str, *, steps: int, delay: float) -> None:
    run = secrets.token_hex(4)
    for step in range(steps + 1):
        percent = round(100 * step / steps)
        stage = STAGES[min(step * len(STAGES) // steps, len(STAGES) - 1)] if step < steps else "finished"
        state = "done" if step == steps else "running"
        data = {"percent": percent, "stage": stage, "state": state}
        publisher.publish(topic, data, event="progress", id=f"{run}/{step}")
        if step < steps:
            time.sleep(delay)  # stands in for the real work of one step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the ssegate server")
    parser.add_argument("--api-key", help="an API key with the publish scope, if auth is on")
    parser.add_argument("--topic", default="jobs/demo")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--delay", type=float, default=0.25, help="seconds per step")
    args = parser.parse_args()
    with SyncHTTPPublisher(args.url, args.api_key) as publisher:
        run_job(publisher, args.topic, steps=args.steps, delay=args.delay)


if __name__ == "__main__":
    main()
