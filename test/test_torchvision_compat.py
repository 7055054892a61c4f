import torch

from adascale_ros.model.torchvision_compat import compiled_ops_load, import_torchvision


def test_torchvision_imports_and_builds_models_and_transforms():
    torchvision = import_torchvision()
    from torchvision.transforms import v2

    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    assert v2.Resize(32)(torch.zeros(3, 64, 48)).shape == (3, 42, 32)


def test_workaround_only_where_compiled_ops_fail():
    import_torchvision()
    import adascale_ros.model.torchvision_compat as compat

    # Applied exactly when the extension cannot load on this machine.
    assert (compat._fragment is not None) == (not compiled_ops_load())
