"""micronet.training.data: dataset texts, the real CIFAR and ImageFolder loaders on tiny
files, the synthetic problem, calibration batches, top-1 evaluation, mixing."""
import pytest
import torch
from torch import nn
from torchvision.datasets import CIFAR10, CIFAR100

from micronet.training.data import (CIFAR_STATS, DatasetSpec, SyntheticProblem, batches, evaluate, load_dataset,
                           loaders, mix_batch, parse_dataset)
from micronet.errors import UsageError

from cifar_files import (BLUE, GREEN, RED, TEST_LABELS, TRAIN_LABELS, trust_checksums, write_cifar10,
                         write_cifar100)


@pytest.fixture
def cifar10(tmp_path, monkeypatch):
    folder = write_cifar10(tmp_path / "data")
    trust_checksums(monkeypatch, CIFAR10, folder)
    return folder


@pytest.fixture
def cifar100(tmp_path, monkeypatch):
    folder = write_cifar100(tmp_path / "data")
    trust_checksums(monkeypatch, CIFAR100, folder)
    return folder


class Constant(nn.Module):
    """Always predicts ``label`` (of ``classes``); records the dtype of its inputs."""

    def __init__(self, label=0, classes=10, dtype=torch.float32):
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=dtype))
        self.logits = torch.nn.functional.one_hot(torch.tensor(label), classes).to(dtype)
        self.seen = []

    def forward(self, x):
        self.seen.append((x.dtype, self.training, x.shape))
        return self.logits.expand(x.shape[0], -1) * self.scale


# ------------------------------------------------------------------ texts


def test_parse_dataset_forms(tmp_path):
    assert parse_dataset("fake") == DatasetSpec("fake")
    assert parse_dataset(f"cifar10:{tmp_path}") == DatasetSpec("cifar10", tmp_path)
    assert parse_dataset("cifar100:~/data").path.name == "data"
    assert not str(parse_dataset("cifar100:~/data").path).startswith("~")
    assert str(parse_dataset("imagefolder:/x/y")) == "imagefolder:/x/y"


@pytest.mark.parametrize("text", ["mnist:/data", "cifar10", "cifar10:", "fake:/x", "", "imagenet"])
def test_parse_dataset_errors_name_the_accepted_forms(text):
    with pytest.raises(UsageError) as caught:
        parse_dataset(text)
    message = str(caught.value)
    assert "cifar10:PATH, cifar100:PATH, imagefolder:PATH or fake" in message or "needs a folder" in message


# ------------------------------------------------------------------ CIFAR


def test_cifar10_through_torchvision_with_normalisation(cifar10):
    train = load_dataset(f"cifar10:{cifar10.parent}", True)
    test = load_dataset(f"cifar10:{cifar10.parent}", False)
    assert isinstance(train, CIFAR10) and isinstance(test, CIFAR10)
    assert len(train) == 20 and len(test) == 10
    assert train.targets == sum(TRAIN_LABELS, [])
    assert train.classes[9] == "truck"
    image, label = test[0]
    assert image.shape == (3, 32, 32) and label == 0
    mean, std = CIFAR_STATS["cifar10"]
    expected = [(value / 255 - m) / s for value, m, s in zip((RED, GREEN, BLUE), mean, std)]
    for channel in range(3):  # rows are 1024 red, 1024 green, 1024 blue values
        assert torch.allclose(image[channel], torch.full((32, 32), expected[channel]), atol=1e-6)


def test_cifar_folder_forms_parent_batches_folder_or_renamed(cifar10, tmp_path):
    assert len(load_dataset(f"cifar10:{cifar10}", False)) == 10  # the batches folder itself
    renamed = cifar10.rename(tmp_path / "my-cifar")
    assert len(load_dataset(f"cifar10:{renamed}", False)) == 10


def test_cifar_augmentation_and_resize(cifar10):
    train = load_dataset(f"cifar10:{cifar10}", True, augment=True, input_shape=(1, 3, 16, 16))
    names = [type(t).__name__ for t in train.transform.transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "Resize", "ToTensor", "Normalize"]
    assert train[0][0].shape == (3, 16, 16)
    test = load_dataset(f"cifar10:{cifar10}", False, augment=True)  # never on the test split
    assert [type(t).__name__ for t in test.transform.transforms] == ["ToTensor", "Normalize"]


def test_cifar100_fine_labels(cifar100):
    test = load_dataset(f"cifar100:{cifar100.parent}", False)
    assert isinstance(test, CIFAR100)
    assert test.targets == [99, 5, 5, 0, 42, 7] and len(test.classes) == 100
    assert len(load_dataset(f"cifar100:{cifar100}", True)) == 12
    # 2 of 6 test labels are 5
    assert evaluate(Constant(5, 100), f"cifar100:{cifar100}", input_shape=(1, 3, 32, 32),
                    num_classes=100) == pytest.approx(100 * 2 / 6)


def test_cifar100_with_a_10_class_model_is_refused(cifar100):
    with pytest.raises(UsageError, match="has 100 classes, the model outputs 10"):
        evaluate(Constant(), f"cifar100:{cifar100}", input_shape=(1, 3, 32, 32), num_classes=10)


def test_missing_cifar_folder_says_what_to_put_where(tmp_path):
    with pytest.raises(UsageError) as caught:
        load_dataset(f"cifar10:{tmp_path / 'nowhere'}", True)
    message = str(caught.value)
    assert "no folder" in message and "cifar-10-python.tar.gz" in message
    assert f"{tmp_path / 'nowhere' / 'cifar-10-batches-py'}/" in message
    assert "data_batch_1" in message and "test_batch" in message and "batches.meta" in message
    with pytest.raises(UsageError, match=r"lacks train, test, meta .*cifar-100-python/"):
        load_dataset(f"cifar100:{tmp_path}", False)  # an existing folder without the files


def test_incomplete_or_corrupt_cifar_folder(cifar10):
    (cifar10 / "data_batch_3").unlink()
    (cifar10 / "batches.meta").unlink()
    with pytest.raises(UsageError, match=r"cifar-10-batches-py lacks data_batch_3, batches.meta"):
        load_dataset(f"cifar10:{cifar10.parent}", False)


def test_files_not_matching_the_official_checksums(tmp_path):
    folder = write_cifar10(tmp_path)  # torchvision's real md5 sums: none of ours match
    with pytest.raises(UsageError, match=r"data_batch_1, .*test_batch, batches.meta .* official checksums"):
        load_dataset(f"cifar10:{folder}", True)


# ------------------------------------------------------------------ image folders


@pytest.fixture
def images(tmp_path):
    """imagefolder layout: train/ with 3 images of each of 2 classes, val/ with 2 each."""
    from PIL import Image

    for split, count in (("train", 3), ("val", 2)):
        for name, colour in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            folder = tmp_path / "pets" / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                Image.new("RGB", (20, 12), colour).save(folder / f"{index}.png")
    return tmp_path / "pets"


def test_imagefolder_resized_to_the_input(images):
    train = load_dataset(f"imagefolder:{images}", True, augment=True, input_shape=(1, 3, 16, 16))
    test = load_dataset(f"imagefolder:{images}", False, input_shape=(1, 3, 16, 16))
    assert train.classes == ["cat", "dog"] and len(train) == 6 and len(test) == 4
    assert train[0][0].shape == (3, 16, 16) and test[3] [0].shape == (3, 16, 16)
    assert test[3][1] == 1
    grey = load_dataset(f"imagefolder:{images}", False, input_shape=(1, 1, 8, 8))
    assert grey[0][0].shape == (1, 8, 8)
    (images / "val").rename(images / "test")  # test/ is accepted for val/
    assert len(load_dataset(f"imagefolder:{images}", False, input_shape=(1, 3, 8, 8))) == 4


def test_imagefolder_missing_split(images):
    (images / "val").rename(images / "elsewhere")
    with pytest.raises(UsageError, match=r"no .*pets/val/ or .*pets/test/.*one folder per class"):
        load_dataset(f"imagefolder:{images}", False)


def test_image_datasets_refuse_odd_input_shapes(images):
    with pytest.raises(UsageError, match="1 or 3 channels"):
        load_dataset(f"imagefolder:{images}", False, input_shape=(1, 4, 8, 8))


# ------------------------------------------------------------------ synthetic


def test_fake_problem_is_deterministic_and_shaped_like_the_input():
    train = load_dataset("fake", True, input_shape=(1, 3, 8, 8), num_classes=5)
    again = load_dataset("fake", True, input_shape=(1, 3, 8, 8), num_classes=5)
    test = load_dataset("fake", False, input_shape=(1, 3, 8, 8), num_classes=5)
    assert len(train) == 1024 and len(test) == 512
    assert torch.equal(train[7][0], again[7][0]) and train[7][1] == again[7][1]
    assert train[0][0].shape == (3, 8, 8) and set(train.targets) == set(range(5))
    assert torch.equal(train.pattern(3), test.pattern(3))  # one problem, two samples
    assert not torch.equal(train[0][0], test[0][0])
    flat = SyntheticProblem((16,), 3, 4, seed=0)
    assert flat[0][0].shape == (16,)


def test_fake_problem_is_learnable_by_the_nearest_class_mean():
    test = load_dataset("fake", False, input_shape=(1, 3, 8, 8))
    x = torch.stack([test[i][0] for i in range(100)])
    means = torch.stack([test.pattern(c) for c in range(10)])
    nearest = ((x[:, None] - means[None]) ** 2).flatten(2).sum(-1).argmin(1)
    assert nearest.tolist() == test.targets[:100]


# ------------------------------------------------------------------ loaders and batches


def test_loaders_use_the_data_table(cifar10):
    train, test = loaders({"dataset": f"cifar10:{cifar10}", "batch_size": 8}, (1, 3, 32, 32), 10)
    assert train.batch_size == 8 and len(test) == 2  # 10 test images in batches of 8
    assert [type(t).__name__ for t in train.dataset.transform.transforms][:2] == ["RandomCrop",
                                                                                   "RandomHorizontalFlip"]
    off, _ = loaders({"dataset": f"cifar10:{cifar10}", "augment": False}, (1, 3, 32, 32), 10)
    assert off.batch_size == 128
    assert "RandomCrop" not in [type(t).__name__ for t in off.dataset.transform.transforms]
    with pytest.raises(UsageError, match="needs dataset"):
        loaders({"batch_size": 8}, (1, 3, 32, 32), 10)


def test_synthetic_batches_without_data():
    found = batches(None, (1, 3, 8, 8), 3, num_classes=4)
    assert len(found) == 3 and all(x.shape == (32, 3, 8, 8) and y.shape == (32,) for x, y in found)
    assert all(int(y.max()) < 4 for _, y in found)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(found, batches(None, (1, 3, 8, 8), 3)))
    assert abs(float(torch.cat([x for x, _ in found]).std()) - 1) < 0.05  # standard normal
    assert len(batches(None, (1, 3, 8, 8))) == 8  # the default count
    state = torch.get_rng_state()
    batches(None, (1, 3, 8, 8), 2)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_batches_from_data(cifar10):
    data = {"dataset": f"cifar10:{cifar10}", "batch_size": 8, "calibration_batches": 2}
    found = batches(data, (1, 3, 32, 32))
    assert [tuple(x.shape) for x, _ in found] == [(8, 3, 32, 32)] * 2
    assert len(batches(data, (1, 3, 32, 32), 5)) == 3  # 20 images: 8 + 8 + 4
    test = batches(data, (1, 3, 32, 32), 5, train=False)
    assert sorted(torch.cat([y for _, y in test]).tolist()) == sorted(TEST_LABELS)
    fake = batches({"dataset": "fake", "batch_size": 4}, (1, 3, 8, 8), 2, num_classes=3)
    assert fake[0][0].shape == (4, 3, 8, 8) and int(fake[0][1].max()) < 3


# ------------------------------------------------------------------ evaluate


def test_evaluate_a_model_of_known_accuracy(cifar10):
    model = Constant(0).train()
    model.inner = nn.Identity().eval()  # a submodule keeps its own flag
    accuracy = evaluate(model, {"dataset": f"cifar10:{cifar10}", "batch_size": 4}, input_shape=(1, 3, 32, 32),
                        num_classes=10)
    assert accuracy == 40.0  # 4 of the 10 test labels are 0
    assert model.training and not model.inner.training
    assert all(not training for _, training, _ in model.seen)
    assert evaluate(Constant(0), {"dataset": f"cifar10:{cifar10}", "batch_size": 4},
                    input_shape=(1, 3, 32, 32), num_classes=10, max_batches=1) == 100.0  # labels 0 0 0 0
    assert evaluate(Constant(9), f"cifar10:{cifar10}", input_shape=(1, 3, 32, 32), num_classes=10) == 0.0


def test_evaluate_feeds_a_half_model_half_inputs(cifar10):
    model = Constant(0, dtype=torch.float16)
    assert evaluate(model, f"cifar10:{cifar10}", input_shape=(1, 3, 32, 32), num_classes=10,
                    device="cpu") == 40.0
    assert {dtype for dtype, _, _ in model.seen} == {torch.float16}


def test_evaluate_refuses_an_unknown_device():
    with pytest.raises(UsageError, match="unknown device"):
        evaluate(Constant(), "fake", input_shape=(1, 3, 8, 8), num_classes=10, device="tpu")


# ------------------------------------------------------------------ mixing


def test_mix_batch_off_returns_the_batch():
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mixed, target = mix_batch(x, y, 4)
    assert mixed is x and target is y


def test_mixup_blends_images_and_labels_alike():
    x = torch.arange(6.0)[:, None, None, None].expand(6, 1, 4, 4)
    y = torch.arange(6)
    mixed, target = mix_batch(x, y, 6, mixup=0.4)
    assert target.shape == (6, 6) and torch.allclose(target.sum(1), torch.ones(6))
    # image i = lam * i + (1 - lam) * j, and the target puts lam on i, 1 - lam on j
    assert torch.allclose(mixed[:, 0, 0, 0], target @ torch.arange(6.0), atol=1e-5)


def test_cutmix_pastes_a_box_of_the_stated_area():
    x = torch.arange(8.0)[:, None, None, None].expand(8, 3, 16, 16)
    y = torch.arange(8)
    for _ in range(5):
        mixed, target = mix_batch(x, y, 8, cutmix=1.0)
        own = (mixed[:, 0] == torch.arange(8.0)[:, None, None]).float().mean((1, 2))
        assert torch.allclose(own, target[torch.arange(8), y])  # own pixels = own label weight


def test_cutmix_needs_images():
    with pytest.raises(UsageError, match="cutmix needs image batches"):
        mix_batch(torch.randn(4, 16), torch.arange(4), 4, cutmix=1.0)
