"""A trained model on disk: weights, model card and variant table.

    <model_dir>/weights.pt      state dict (tensors only: torch.load(weights_only=True))
    <model_dir>/model_card.json classes, input, normalisation, network config,
                                training config, data fingerprint, seed, time
    <model_dir>/variants.json   every variant: accuracy and intrinsic metrics,
                                plus the per-module metrics they sum from

Loading never unpickles: the weights are read with ``weights_only=True`` and
everything else is JSON. Any problem (missing file, corrupt data, a state
dict that does not fit the card's network) is a ``ModelLoadError`` with a
one-line reason.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adascale_ros.model.accuracy import Normalization
from adascale_ros.model.directory import (
    FORMAT_VERSION,
    MODEL_CARD,
    VARIANTS,
    WEIGHTS,
    ModelLoadError,
    card_input_shape,
    read_model_card,
    write_json,
)
from adascale_ros.model.elastic import ElasticConfig, ElasticNet, MultiExitNet


@dataclass
class LoadedModel:
    net: MultiExitNet
    card: dict[str, Any]
    normalize: Normalization
    directory: Path

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return card_input_shape(self.card)


def save_model(directory: Path, net: MultiExitNet, card: dict[str, Any], variants: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), directory / WEIGHTS)
    write_json(directory / MODEL_CARD, {"format_version": FORMAT_VERSION, **card})
    write_json(directory / VARIANTS, {"format_version": FORMAT_VERSION, **variants})


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict of tensors; never executes code from the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: not found") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: not a readable weights file ({first_line})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: does not hold a state dict of tensors")
    return state


def fit_state_dict(net: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``state`` into ``net`` strictly, or say in one line what does not match."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            problems.append(f"{len(keys)} {label} (e.g. {keys[0]})")
    if problems:
        raise ModelLoadError(f"{source}: weights do not fit the network in the model card: {'; '.join(problems)}")
    net.load_state_dict(state)


def build_from_card(network: dict[str, Any]) -> MultiExitNet:
    """The untrained network a model card's ``network`` describes (a backbone without its ImageNet
    weights: the model's own follow)."""
    if network.get("kind") == "backbone":
        from adascale_ros.model.elastic_backbone import BackboneConfig, ElasticBackbone

        return ElasticBackbone(BackboneConfig.from_dict(network), pretrained=False)
    return ElasticNet(ElasticConfig.from_dict(network))


def load_model(directory: Path | str) -> LoadedModel:
    directory = Path(directory)
    card = read_model_card(directory)
    try:
        net = build_from_card(card["network"])
        normalize = Normalization(tuple(card["normalization"]["mean"]), tuple(card["normalization"]["std"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{directory / MODEL_CARD}: incomplete or invalid model card ({exc})") from exc
    fit_state_dict(net, load_state_dict(directory / WEIGHTS), directory / WEIGHTS)
    net.eval()
    return LoadedModel(net, card, normalize, directory)
