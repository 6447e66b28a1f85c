"""The verdict as a plain HTML block, put on top of Evidently's report: what the on-call reads first
(verdict, retrain advice and why, every signal against its threshold), before the evidence below it."""

from __future__ import annotations

from html import escape
from typing import Any

FIRED_STYLE = "color:#b00020;font-weight:bold"
BOX_STYLE = "font-family:sans-serif;margin:16px 32px;padding:12px 16px;border:1px solid #ccc"
HEADER = ("<tr><th align='left'>signal</th><th>kind</th><th>value</th><th>threshold</th>"
          "<th>reference &rarr; current</th><th></th></tr>")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _row(name: str, signal: dict[str, Any]) -> str:
    style = f" style='{FIRED_STYLE}'" if signal["fired"] else ""
    state = "fired" if signal["fired"] else escape(signal["note"] or "no")
    moved = ("" if signal["reference"] is None and signal["current"] is None  # a distance has no sides
             else f"{_number(signal['reference'])} &rarr; {_number(signal['current'])}")
    cells = (escape(name), escape(signal["kind"]), _number(signal["value"]), f"{signal['threshold']:g}", moved, state)
    return f"<tr{style}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def verdict_banner(summary: dict[str, Any]) -> str:
    """``summary`` is what decision.json holds."""
    if summary["status"] != "ok":
        verdict = escape(summary["status"])
    else:
        verdict = "DRIFTED" if summary["drifted"] else "no drift"
    title = f"{escape(summary['model'])}: {verdict}; retrain: {'yes' if summary['retrain'] else 'no'}"
    window = (f"{summary['current_rows']} requests ({summary['labelled_rows']} with feedback), "
              f"{escape(summary['window'])}; reference data {escape(summary['reference_data_version'])}")
    reasons = "".join(f"<li>{escape(reason)}</li>" for reason in summary["reasons"])
    rows = "".join(_row(name, signal) for name, signal in summary["signals"].items())
    return (f"<div style='{BOX_STYLE}'><h2 style='margin:0'>{title}</h2><p>{window}</p><ul>{reasons}</ul>"
            f"<table cellpadding='4'>{HEADER}{rows}</table></div>")
