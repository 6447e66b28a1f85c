"""The shadow challenger end to end (real MLflow registry, real Postgres, the app under uvicorn): the gate
with promotion off sets the `challenger` alias, every /predict is also scored by it off the request path,
the report's numbers match a count made by hand from the rows, `productcat promote --from-shadow` refuses
and then promotes, the API follows; overload drops shadow work and counts it; a challenger that cannot
load never touches an answer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from api.main import create_app
from api.settings import get_api_settings
from ml.gate import gate
from ml.params import ShadowParams, load_params
from ml.promotion import alias_history, promote
from ml.registry import champion, registry_client
from ml.settings import MLSettings, get_settings
from ml.split import read_split
from monitoring.shadow import AccuracyComparison, _verdict, paired_difference_interval, wilson_interval
from productcat.cli import app as cli
from tests.api_support import (
    api_settings,
    build_registry,
    database_with_key,
    live_server,
    register_broken_version,
    wait_for,
)
from tests.conftest import REPO_ROOT, fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _products(settings: MLSettings, count: int) -> list[tuple[dict[str, Any], str]]:
    """Real test-split products as a caller sends them, with their true label."""
    test = read_split(settings, "test").head(count)
    return [({"title": row.title, "features": list(row.features) if row.features is not None else None}, row.label)
            for row in test.itertuples()]


def _cli(monkeypatch: pytest.MonkeyPatch, settings: MLSettings, database: str, *args: str,
         params_file: Path | None = None) -> Any:
    monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.setenv("PRODUCTCAT_MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("PRODUCTCAT_PROJECT_ROOT", str(REPO_ROOT))
    if params_file is not None:
        monkeypatch.setenv("PRODUCTCAT_PARAMS_FILE", str(params_file))
    get_settings.cache_clear()
    get_api_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        get_settings.cache_clear()
        get_api_settings.cache_clear()


def _params_file(tmp_path: Path, **shadow: object) -> Path:
    values = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    values["shadow"] |= shadow
    path = tmp_path / f"params-{len(list(tmp_path.glob('params-*')))}.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def _rows(database: str, sql: str) -> list[sa.Row]:
    engine = sa.create_engine(database)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(sql)))
    finally:
        engine.dispose()


def _shadow_count(database: str) -> int:
    return _rows(database, "SELECT count(*) FROM shadow_prediction")[0][0]


@contextlib.contextmanager
def _serving(settings: MLSettings, database: str, root: Path, **overrides: object) -> Iterator[httpx.Client]:
    app = create_app(api_settings(root, database, **overrides), settings)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_the_challenger_shadows_traffic_and_takes_over_only_on_its_record(tmp_path, monkeypatch) -> None:
    settings, (first, second) = build_registry(tmp_path / "registry")
    decision = gate(settings=settings, params=load_params(settings), version=second, promote=False, by="tests")
    assert decision.outcome == "pass" and decision.challenger and not decision.promoted
    moves = alias_history(registry_client(settings), settings, settings.challenger_alias)
    assert [(m.to_version, m.kind, m.by) for m in moves] == [(second, "challenger", "tests")]
    products = _products(settings, 60)
    with database_with_key("shadow") as (database, key), _serving(settings, database, tmp_path) as client:
        wait_for(lambda: client.get("/shadow/report").json()["challenger"]["loaded_version"] == second,
                 what="the challenger loaded")
        request_ids, truth = [], {}
        for body, _ in products[:40]:
            answer = client.post("/predict", json=body)
            assert answer.status_code == 200 and answer.json()["model"]["version"] == first
            request_ids.append(answer.json()["predictions"][0]["request_id"])
        batch = client.post("/predict", json=[body for body, _ in products[40:]])
        request_ids += [p["request_id"] for p in batch.json()["predictions"]]
        wait_for(lambda: _shadow_count(database) == len(products), what="a shadow row per product")
        for request_id, (_, label) in list(zip(request_ids, products, strict=True))[::2]:  # feedback on half
            assert client.post("/feedback", json={"request_id": request_id, "label": label},
                               headers={"X-API-Key": key}).status_code == 201
            truth[request_id] = label

        report = client.get("/shadow/report").json()
        # By hand, from the rows.
        pairs = _rows(database, "SELECT p.request_id, p.label, s.label, p.latency_ms, s.latency_ms, s.model_version,"
                                " s.champion_version FROM prediction_log p JOIN shadow_prediction s USING (request_id)")
        assert {(row[5], row[6]) for row in pairs} == {(second, first)} and len(pairs) == len(products)
        agree = sum(row[1] == row[2] for row in pairs)
        confusions = Counter((row[1], row[2]) for row in pairs if row[1] != row[2])
        labelled = [row for row in pairs if row[0] in truth]
        champion_right = sum(row[1] == truth[row[0]] for row in labelled)
        challenger_right = sum(row[2] == truth[row[0]] for row in labelled)
        assert (report["champion_version"], report["challenger_version"]) == (first, second)
        assert report["requests"] == len(products) and report["agreements"] == agree
        assert report["agreement_rate"] == pytest.approx(agree / len(products))
        expected = sorted(confusions.items(), key=lambda item: (-item[1], item[0]))[:10]  # ties: by label pair
        assert [((c["champion"], c["challenger"]), c["count"]) for c in report["top_confusions"]] == expected
        assert sum(c["disagreements"] for c in report["per_class"]) == len(products) - agree
        accuracy = report["accuracy"]
        assert accuracy["labelled"] == len(truth) == 30
        assert accuracy["champion"] == pytest.approx(champion_right / 30)
        assert accuracy["challenger"] == pytest.approx(challenger_right / 30)
        assert accuracy["difference"] == pytest.approx((challenger_right - champion_right) / 30)
        assert accuracy["ci_low"] <= accuracy["difference"] <= accuracy["ci_high"]
        for who, column in (("champion", 3), ("challenger", 4)):
            p50, p95 = np.percentile([row[column] for row in pairs], [50, 95])
            assert report["latency"][who] == {"p50_ms": pytest.approx(p50, abs=1e-3),
                                              "p95_ms": pytest.approx(p95, abs=1e-3)}
        assert report["verdict"] == "not_enough_evidence"  # params.yaml asks for 200 requests and 100 labels
        printed = _cli(monkeypatch, settings, database, "shadow", "report", "--json")
        assert printed.exit_code == 0, printed.output
        assert f'"agreements": {agree},' in printed.output

        # Too few labels: refused, the rule named, the alias untouched.
        strict = _params_file(tmp_path, min_requests=10, min_labelled=31, max_accuracy_drop=1.0)
        refused = _cli(monkeypatch, settings, database, "promote", "--from-shadow", "--by", "ana", params_file=strict)
        assert refused.exit_code == 1, refused.output
        assert "not_enough_evidence" in refused.output and "FAIL: 30 of them labelled" in refused.output
        assert str(champion(registry_client(settings), settings).version) == first

        enough = _params_file(tmp_path, min_requests=10, min_labelled=30, max_accuracy_drop=1.0)
        promoted = _cli(monkeypatch, settings, database, "promote", "--from-shadow", "--by", "ana", params_file=enough)
        assert promoted.exit_code == 0, promoted.output
        client_ = registry_client(settings)
        serving = champion(client_, settings)
        assert str(serving.version) == second and serving.tags["promoted_by"] == "ana"
        assert serving.tags["promotion_reason"].startswith(f"shadow report v{second} vs v{first}: 60 requests")
        assert '"verdict": "promote"' in serving.tags["shadow_evidence"]
        cleared = alias_history(client_, settings, settings.challenger_alias)[-1]
        assert (cleared.kind, cleared.from_version, cleared.to_version) == ("cleared", second, None)
        printed = _cli(monkeypatch, settings, database, "history", "--alias", "challenger")
        assert printed.exit_code == 0 and "cleared" in printed.output and "challenger" in printed.output

        # The API follows both aliases: v2 answers, and nothing is shadowed any more.
        wait_for(lambda: client.get("/model").json()["version"] == second, what="the API serving v2")
        wait_for(lambda: client.get("/shadow/report").json()["challenger"]["loaded_version"] is None,
                 what="the challenger unloaded")
        after = client.post("/predict", json=products[0][0]).json()
        assert after["model"]["version"] == second
        wait_for(lambda: after["predictions"][0]["request_id"] in {r[0] for r in _rows(
            database, "SELECT request_id FROM prediction_log")}, what="the log row")
        assert _shadow_count(database) == len(products)


def test_overload_drops_shadow_work_and_counts_it_never_an_answer(tmp_path, monkeypatch) -> None:
    settings, (first, second) = build_registry(tmp_path / "registry")
    set_by_hand = _cli(monkeypatch, settings, "sqlite://", "promote", "--alias", "challenger", "--version", second,
                       "--reason", "try it on live traffic", "--by", "ben")
    assert set_by_hand.exit_code == 0 and f"@challenger -> v{second}" in set_by_hand.output
    batch = [body for body, _ in _products(settings, 10)]
    with database_with_key("overload") as (database, _), _serving(settings, database, tmp_path,
                                                                  shadow_queue_size=1) as client:
        wait_for(lambda: client.get("/shadow/report").json()["challenger"]["loaded_version"] == second,
                 what="the challenger loaded")
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: client.post("/predict", json=batch), range(64)))
        assert [a.status_code for a in answers] == [200] * 64
        total = 64 * len(batch)

        def settled() -> dict[str, Any]:
            return client.get("/shadow/report").json()["challenger"]

        wait_for(lambda: settled()["scored"] + settled()["dropped"] == total, what="every product scored or dropped")
        state = settled()
        assert state["dropped"] > 0 and state["scored"] > 0
        metrics = client.get("/metrics").text
        assert f'productcat_shadow_dropped_total{{reason="queue_full"}} {float(state["dropped"])}' in metrics
        wait_for(lambda: _shadow_count(database) == state["scored"], what="the scored rows logged")


def test_a_challenger_that_cannot_load_never_touches_an_answer(tmp_path, monkeypatch) -> None:
    settings, (first, _) = build_registry(tmp_path / "registry")
    same = _cli(monkeypatch, settings, "sqlite://", "promote", "--alias", "challenger", "--version", first,
                "--reason", "x")
    assert same.exit_code == 2 and "is the champion already" in same.output
    broken = register_broken_version(settings, first, tmp_path)
    assert _cli(monkeypatch, settings, "sqlite://", "promote", "--alias", "challenger", "--version", broken,
                "--reason", "a broken artifact").exit_code == 0
    body = _products(settings, 1)[0][0]
    with database_with_key("broken") as (database, _), _serving(settings, database, tmp_path) as client:
        wait_for(lambda: broken in client.get("/shadow/report").json()["challenger"]["refused_versions"],
                 what="the broken challenger refused")
        answers = [client.post("/predict", json=body) for _ in range(5)]
        assert all(a.status_code == 200 and a.json()["model"]["version"] == first for a in answers)
        assert len({a.json()["predictions"][0]["label"] for a in answers}) == 1
        assert client.get("/ready").status_code == 200
        assert _shadow_count(database) == 0


def test_the_stream_consumer_shadows_its_micro_batches_too(tmp_path) -> None:
    from streaming.consumer import StreamConsumer
    from tests.test_streaming import BROKERS, product_messages, publish_all, remove_subjects, stream_settings

    with socket.socket() as probe:
        probe.settimeout(2)
        if probe.connect_ex(("127.0.0.1", 6379)) != 0:
            pytest.skip("no redis broker on 127.0.0.1:6379")
    settings, (first, second) = build_registry(tmp_path / "registry")
    promote(settings=settings, version=second, reason="the stream too", by="tests", alias=settings.challenger_alias)
    stream = stream_settings(BROKERS["redis"])
    messages = product_messages(12)
    with fresh_database() as database:
        consumer = StreamConsumer(settings=stream, api_settings=api_settings(tmp_path, database), ml_settings=settings)

        async def scenario() -> None:
            task = asyncio.create_task(consumer.run())
            try:
                await asyncio.to_thread(wait_for, lambda: consumer.shadow is not None
                                        and consumer.shadow.manager.current is not None, what="the challenger")
                await publish_all(stream, [body for _, body in messages])
                await asyncio.to_thread(wait_for, lambda: _shadow_count(database) == len(messages),
                                        what="a shadow row per message")
            finally:
                consumer.stop()
                await task
                await remove_subjects(stream)

        asyncio.run(scenario())
        rows = _rows(database, "SELECT p.channel, p.model_version, s.model_version, s.champion_version "
                               "FROM prediction_log p JOIN shadow_prediction s USING (request_id)")
    assert rows and set(rows) == {("redis", first, second, first)} and len(rows) == len(messages)


def test_the_paired_interval_and_the_verdict_rules() -> None:
    low, high = wilson_interval(8, 10, 1.959964)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)  # the textbook Wilson interval of 8/10
    same = paired_difference_interval(both=40, only_a=0, only_b=0, neither=10, confidence=0.95)
    assert same[0] == 0 and same[1] < 0 < same[2]
    worse = paired_difference_interval(both=30, only_a=0, only_b=20, neither=0, confidence=0.95)
    assert worse[0] == pytest.approx(-0.4) and worse[2] < 0
    rules = ShadowParams(min_requests=10, min_labelled=50, max_accuracy_drop=0.05)
    accuracy = AccuracyComparison(labelled=50, champion=1.0, challenger=0.6, difference=-0.4, ci_low=worse[1],
                                  ci_high=worse[2], confidence=0.95)
    verdict, reasons = _verdict(50, accuracy, rules)
    assert verdict == "keep_champion" and reasons[-1].startswith("FAIL: accuracy challenger 0.6000")
    assert _verdict(9, accuracy, rules)[0] == "not_enough_evidence"
