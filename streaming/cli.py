"""`productcat stream …` (and `python -m streaming …`): run the consumer, publish a catalogue file
as product messages, or follow a subject. Heavy imports stay inside each command."""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from streaming.settings import StreamSettings

app = typer.Typer(help="Streaming inference over a message broker (NATS, RabbitMQ, Redis Streams, Kafka).",
                  no_args_is_help=True)

UrlOption = Annotated[str | None, typer.Option(help="Broker URL (default: PRODUCTCAT_STREAM_URL).")]


def _settings(**overrides: Any) -> StreamSettings:
    return StreamSettings(**{key: value for key, value in overrides.items() if value is not None})


@app.command()
def run(
    url: UrlOption = None,
    input: Annotated[str | None, typer.Option("--input", help="Subject/queue the products arrive on.")] = None,
    output: Annotated[str | None, typer.Option(help="Where predictions go.")] = None,
    dead_letter: Annotated[str | None, typer.Option(help="Where malformed messages go.")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Port of /health and /metrics (0: off).")] = None,
) -> None:
    """Consume products, score them with the champion, publish and log predictions (until SIGTERM)."""
    from api.settings import get_api_settings
    from ml.logging_setup import configure_logging
    from streaming.consumer import StreamConsumer

    api_settings = get_api_settings()
    ml_settings = api_settings.ml()
    configure_logging(ml_settings.log_level)
    settings = _settings(url=url, input=input, output=output, dead_letter=dead_letter, group=group,
                         metrics_port=metrics_port)
    consumer = StreamConsumer(settings=settings, api_settings=api_settings, ml_settings=ml_settings)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, consumer.stop)
        await consumer.run()

    asyncio.run(main())


def read_catalogue(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a .jsonl / .csv file (either may be gzipped) as product messages; ``id`` from the row's
    id (or asin), else ``<file stem>:<row number>``. CSV cells holding a JSON list (features) are read
    as lists."""
    gzipped = path.suffix.lower() == ".gz"
    kind = Path(path.stem).suffix.lower() if gzipped else path.suffix.lower()
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        if kind == ".csv":
            rows: Iterator[dict[str, Any]] = (
                {key: _cell(value) for key, value in row.items() if key and value not in (None, "")}
                for row in csv.DictReader(handle))
        else:
            rows = (json.loads(line) for line in handle if line.strip())
        for number, row in enumerate(rows, start=1):
            row.setdefault("id", row.get("asin") or row.get("product_id") or f"{path.stem}:{number}")
            yield row


def _cell(value: str) -> Any:
    if value.startswith("[") and value.endswith("]"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


@app.command()
def publish(
    file: Annotated[Path, typer.Option("--file", exists=True, dir_okay=False,
                                       help="Catalogue .csv or .jsonl (optionally .gz).")],
    url: UrlOption = None,
    subject: Annotated[str | None, typer.Option(help="Default: the consumer's input.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Publish at most this many rows.")] = None,
) -> None:
    """Publish each row of a catalogue file as one product message."""
    from streaming.brokers import make_broker

    settings = _settings(url=url)
    target = subject or settings.input

    async def main() -> int:
        broker = make_broker(settings)
        await broker.connect()
        sent = 0
        try:
            for row in read_catalogue(file):
                if limit is not None and sent >= limit:
                    break
                await broker.publish(target, json.dumps(row).encode())
                sent += 1
        finally:
            await broker.close()
        return sent

    typer.echo(f"published {asyncio.run(main())} products to {target}")


@app.command()
def tail(
    url: UrlOption = None,
    subject: Annotated[str | None, typer.Option(help="Default: the consumer's output.")] = None,
    group: Annotated[str, typer.Option(help="Group this reader joins (it acknowledges what it prints).")] = (
        "productcat-tail"),
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many messages.")] = None,
    idle_seconds: Annotated[float | None, typer.Option(help="Stop after this long without a message.")] = None,
) -> None:
    """Print messages of a subject (the predictions by default) as JSON lines, acknowledging each."""
    from streaming.brokers import make_broker

    settings = _settings(url=url)
    source = subject or settings.output

    async def main() -> None:
        broker = make_broker(settings, group=group)
        await broker.connect()
        try:
            subscription = await broker.subscribe(source)
            seen, idle = 0, 0.0
            while count is None or seen < count:
                deliveries = await subscription.fetch(min(100, (count or 100) - seen), 1.0)
                idle = 0.0 if deliveries else idle + 1.0
                if idle_seconds is not None and idle >= idle_seconds:
                    return
                for delivery in deliveries:
                    sys.stdout.write(delivery.body.decode("utf-8", errors="replace") + "\n")
                    await delivery.ack()
                seen += len(deliveries)
                sys.stdout.flush()
        finally:
            await broker.close()

    asyncio.run(main())
