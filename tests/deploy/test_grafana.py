"""deploy/grafana/ssegate.json asks only for metrics (and labels) that /metrics really has: here
one process (the multiprocess test checks the same dashboard against two workers)."""

from __future__ import annotations

from pathlib import Path

from tests.security.harness import running, start
from tests.support.metrics import samples
from tests.support.promql import dashboard_exprs, problems, refs
from tests.support.sse import read_stream

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ssegate.json"


def test_the_promql_reader_finds_names_and_labels() -> None:
    found = refs(
        'histogram_quantile(0.95, sum by (le, provider) (rate(a_bucket{job=~"$job", model="x"}'
        "[$__rate_interval]))) / ignoring(code) b_total"
    )
    assert found.metrics == {"a_bucket", "b_total"}
    assert found.matched == {"a_bucket": {"job", "model"}}
    assert found.grouped == {"le", "provider", "code"}


def test_a_dashboard_naming_what_the_scrape_lacks_is_caught() -> None:
    scraped = samples('# TYPE x_total counter\nx_total{provider="demo"} 1\n')
    assert problems(["sum by (provider) (rate(x_total[5m]))"], scraped) == []
    assert problems(["rate(y_total[5m])"], scraped) == ["rate(y_total[5m]): no metric y_total in the scrape"]
    assert len(problems(['x_total{model="m"}'], scraped)) == 1
    assert len(problems(["sum by (model) (x_total)"], scraped)) == 1


async def test_every_dashboard_query_names_metrics_one_process_exports() -> None:
    exprs = dashboard_exprs(DASHBOARD)
    assert len(exprs) >= 15
    async with running() as server:
        created = await start(server)
        await read_stream(server.client, "GET", created["events_url"])
        failed = await start(server, body={"messages": [{"role": "user", "content": "/error please"}]})
        await read_stream(server.client, "GET", failed["events_url"])
        await server.client.post("/v1/chat/completions", json={"model": "demo-1", "messages": []})
        text = (await server.client.get("/metrics")).text
    assert problems(exprs, samples(text)) == []
