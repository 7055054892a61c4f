"""The torch-free part of a model directory: file names, JSON and the variant table.

Nodes that only need the variant table (the selector, the profiler) import
this module and so never load torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
WEIGHTS = "weights.pt"
MODEL_CARD = "model_card.json"
VARIANTS = "variants.json"


class ModelLoadError(ValueError):
    """A model directory that cannot be used, with the reason."""


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: unreadable JSON: {exc}") from exc


def read_model_card(directory: Path | str) -> dict[str, Any]:
    """The model card, checked for what every reader needs; ``ModelLoadError`` with the reason."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: not a model directory")
    card = read_json(directory / MODEL_CARD)
    if not isinstance(card, dict) or card.get("format_version") != FORMAT_VERSION:
        version = card.get("format_version") if isinstance(card, dict) else None
        raise ModelLoadError(f"{directory / MODEL_CARD}: format_version {version!r}, this code reads {FORMAT_VERSION}")
    try:
        _ = card["network"], card["classes"], card["normalization"]["mean"], card["normalization"]["std"]
        card_input_shape(card)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{directory / MODEL_CARD}: incomplete or invalid model card ({exc})") from exc
    return card


def card_input_shape(card: dict[str, Any]) -> tuple[int, int, int]:
    """(channels, height, width) the network takes."""
    shape = card["input"]
    return int(shape["channels"]), int(shape["height"]), int(shape["width"])


def card_resolutions(card: dict[str, Any]) -> tuple[int, ...]:
    """The input resolutions of a network with elastic resolution (every variant id names its own);
    empty for a network of one input size."""
    return tuple(int(r) for r in card["network"].get("resolutions", ()))


def load_variant_table(directory: Path | str) -> dict[str, Any]:
    table = read_json(Path(directory) / VARIANTS)
    if table.get("format_version") != FORMAT_VERSION or not isinstance(table.get("variants"), list):
        raise ModelLoadError(f"{Path(directory) / VARIANTS}: not a variant table of format {FORMAT_VERSION}")
    return table


def reference_variants(table: dict[str, Any]) -> dict[str, str]:
    """The variants a benchmark or a calibration always measures: ``top`` (the most accurate on
    validation, the more FLOPs on a tie), ``largest`` (the most FLOPs, the more accurate on a tie: the
    whole network) and ``fastest`` (``cheapest_variant``: the fewest FLOPs among those that classify)."""
    rows = table["variants"]
    if not rows:
        raise ModelLoadError("the variant table has no variants")
    top = max(rows, key=lambda row: (row["val_accuracy"], row["flops"]))
    largest = max(rows, key=lambda row: (row["flops"], row["val_accuracy"]))
    return {"top": top["variant_id"], "largest": largest["variant_id"], "fastest": cheapest_variant(table)}


def camera_rate_variants(table: dict[str, Any]) -> dict[str, str]:
    """The variants a calibration times one camera frame at a time, by role: the reference variants and,
    for a network with elastic resolution, the most accurate at each input resolution (``best @<r>``),
    the static choices a user has per frame size. Each variant once, under its first role."""
    chosen = reference_variants(table)
    rows = [row for row in table["variants"] if row.get("resolution") is not None]
    for resolution in sorted({int(row["resolution"]) for row in rows}):
        at = [row for row in rows if int(row["resolution"]) == resolution]
        best = max(at, key=lambda row: (row["val_accuracy"], -row["flops"]))["variant_id"]
        if best not in chosen.values():
            chosen[f"best @{resolution}"] = best
    return chosen


# A variant whose validation accuracy is below this share of the most accurate one's does not
# classify (a generated branch that did not learn answers near chance): never a safe choice.
USEFUL_ACCURACY_SHARE = 0.9


def cheapest_variant(table: dict[str, Any]) -> str:
    """The variant with the fewest FLOPs (ties: lowest id) among those that classify, with at least
    ``USEFUL_ACCURACY_SHARE`` of the most accurate one's validation accuracy: the default safe choice
    under any load, and the fastest variant a benchmark measures."""
    rows = table["variants"]
    if not rows:
        raise ModelLoadError("the variant table has no variants")
    best = max(float(row.get("val_accuracy", 0.0)) for row in rows)
    useful = [row for row in rows if float(row.get("val_accuracy", 0.0)) >= USEFUL_ACCURACY_SHARE * best]
    return min(useful, key=lambda row: (row.get("flops", 0), row["variant_id"]))["variant_id"]
