"""Sample-quality metrics: the statistics against closed forms, the feature networks against their floors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import scipy.linalg
import torch

import genzoo
from genzoo.checkpoint import read_tensors
from genzoo.data.core import DataInfo, prepare
from genzoo.data.registry import dataset_info, load_split
from genzoo.evaluate import feature_net, sample_quality
from genzoo.evaluate.feature_net import check_feature_net, load_feature_net
from genzoo.evaluate.sample_quality import classifier_score, frechet_distance, frechet_distance_gaussians, kernel_distance, mmd2_unbiased, polynomial_kernel, precision_recall, SAMPLE_METRICS, sample_quality_metrics
from genzoo.models.registry import build_model
from genzoo.train import feature_net as feature_training
from genzoo.train.feature_net import held_out_data

SHIPPED = Path(genzoo.__file__).parent / feature_net.PACKAGE_DIR
ACCURACY_FLOORS = {"digits": 0.97, "mnist": 0.99}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def real_images(name: str, data_root=None) -> torch.Tensor:
    """The test split of ``name`` in [0, 1], (N, 1, H, W)."""
    info, split = load_split(name, "test", data_root, download=False)
    return prepare(split.images, info, "discrete", train=False)


def shuffled_pixels(x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Each image's pixels in a random order of its own: the same gray levels, no digit."""
    flat = x.flatten(1)  # (N, D)
    order = torch.rand(flat.shape, generator=generator(seed)).argsort(1)
    return flat.gather(1, order).view_as(x)


@torch.no_grad()
def features(net, x: torch.Tensor) -> torch.Tensor:
    return net.features(x)  # (N, 128)


@pytest.fixture(scope="module")
def digits_net():
    return load_feature_net("digits")


@pytest.fixture(scope="module")
def mnist_root(shared_data):
    return str(shared_data)


# --- Frechet distance ------------------------------------------------------------------------------
def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    # diagonal covariances commute: Tr(C1 + C2 - 2 (C1 C2)^1/2) = sum (s1 - s2)^2
    g = generator()
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    s1, s2 = (torch.rand(6, generator=g, dtype=torch.float64) + 0.1 for _ in range(2))
    expected = ((mu1 - mu2) ** 2 + (s1 - s2) ** 2).sum().item()
    found = frechet_distance_gaussians(mu1, torch.diag(s1 ** 2), mu2, torch.diag(s2 ** 2))
    assert found == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_full_gaussians_matches_scipy_sqrtm():
    g = generator(1)
    d = 7
    a, b = torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, d, generator=g, dtype=torch.float64)
    c1, c2 = a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64), b @ b.T
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    sqrt = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy()).real
    expected = float(((mu1 - mu2) ** 2).sum() + (c1 + c2).trace() - 2 * sqrt.trace())
    assert frechet_distance_gaussians(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-9)
    # a distance: symmetric, and 0 between a Gaussian and itself, even a singular one (rank 3 of 7)
    assert frechet_distance_gaussians(mu2, c2, mu1, c1) == pytest.approx(expected, rel=1e-9)
    low_rank = b[:, :3] @ b[:, :3].T
    assert abs(frechet_distance_gaussians(mu1, low_rank, mu1, low_rank)) < 1e-9 * low_rank.trace().item()


def test_frechet_distance_of_features_is_the_distance_of_their_fitted_gaussians():
    g = generator(2)
    a, b = torch.randn(300, 5, generator=g), 2 * torch.randn(400, 5, generator=g) + 1
    a64, b64 = a.double(), b.double()
    expected = frechet_distance_gaussians(a64.mean(0), torch.cov(a64.T), b64.mean(0), torch.cov(b64.T))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)
    assert abs(frechet_distance(a, a)) < 1e-9


# --- kernel distance -------------------------------------------------------------------------------
def test_mmd2_unbiased_is_the_u_statistic_written_out():
    g = generator(3)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / (6 * 5)
    assert mmd2_unbiased(x, y).item() == pytest.approx((xx + yy - 2 * xy).item(), rel=1e-12)
    assert polynomial_kernel(x, y)[2, 4].item() == pytest.approx(k(x[2], y[4]).item(), rel=1e-12)


def test_kernel_distance_is_unbiased_and_positive_for_shifted_distributions():
    # independent pairs of small samples of one distribution: the estimates average to 0 within
    # their standard error, and many are negative (the biased V-statistic would be > 0 every time)
    g = generator(4)
    estimates = torch.stack([mmd2_unbiased(torch.randn(20, 4, generator=g, dtype=torch.float64),
                                           torch.randn(20, 4, generator=g, dtype=torch.float64))
                             for _ in range(400)])
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean()) < 4 * standard_error
    assert (estimates < 0).float().mean() > 0.3
    x, y = torch.randn(600, 8, generator=g), torch.randn(600, 8, generator=g)
    same_mean, same_std = kernel_distance(x, y, num_subsets=20, subset_size=200, generator=generator())
    shifted_mean, shifted_std = kernel_distance(x, y + 0.5, num_subsets=20, subset_size=200, generator=generator())
    assert abs(same_mean) < 3 * same_std
    assert shifted_mean > 5 * shifted_std > 0
    # reproducible with the same generator seed; the subset size is capped at the smaller set
    assert kernel_distance(x, y, 5, 200, generator(7)) == kernel_distance(x, y, 5, 200, generator(7))
    assert kernel_distance(x[:50], y, 3, 1000)[0] == pytest.approx(
        kernel_distance(x[:50], y, 3, 50)[0], rel=1e-12)


# --- precision and recall --------------------------------------------------------------------------
def test_precision_recall_of_identical_and_of_far_apart_sets():
    g = generator(5)
    x = torch.randn(500, 16, generator=g)
    assert precision_recall(x, x.clone()) == (1.0, 1.0)
    assert precision_recall(x, torch.randn(400, 16, generator=g) + 100.0) == (0.0, 0.0)
    repeated = x[:20].repeat(5, 1)  # each point 5 times: k-NN radii of exactly 0
    assert precision_recall(repeated, repeated.clone()) == (1.0, 1.0)


def test_precision_recall_by_hand_in_one_dimension(monkeypatch):
    real = torch.arange(5.0)[:, None]  # 0..4: k=1 radii all 1; k=3 radii 3, 2, 2, 2, 3
    # a collapsed generator: fakes 0.1, 0.3, 0.9 all lie within 1 of a real point (precision 1);
    # their k=1 radii 0.2, 0.2, 0.6 cover the reals 0 and 1 only (recall 2/5)
    collapsed = torch.tensor([[0.1], [0.3], [0.9]])
    assert precision_recall(real, collapsed, k=1) == (1.0, 0.4)
    # k=3: fakes 0.5 (within 3 of 0) and 6.5 (within 3 of 4) are inside, 20 and 21 are not;
    # the fakes' radii (20.5, 14.5, 19.5, 20.5) cover every real point
    fake = torch.tensor([[0.5], [6.5], [20.0], [21.0]])
    assert precision_recall(real, fake, k=3) == (0.5, 1.0)
    # blocks of one row give the same answers as one block
    monkeypatch.setattr(sample_quality, "DISTANCE_CHUNK_ELEMENTS", 1)
    assert precision_recall(real, collapsed, k=1) == (1.0, 0.4)
    assert precision_recall(real, fake, k=3) == (0.5, 1.0)
    with pytest.raises(ValueError, match="k=3"):
        precision_recall(real[:3], fake, k=3)


# --- classifier score --------------------------------------------------------------------------------
def test_classifier_score_bounds():
    k = 10
    one_hot = torch.eye(k).repeat(7, 1)  # confident, classes equally frequent: the maximum, K
    assert classifier_score(one_hot) == pytest.approx(k, rel=1e-12)
    assert classifier_score(torch.full((50, k), 1 / k)) == pytest.approx(1.0, abs=1e-12)
    assert classifier_score(torch.eye(k)[[3] * 40]) == pytest.approx(1.0, abs=1e-12)  # one class only
    probs = torch.softmax(3 * torch.randn(200, k, generator=generator(6)), 1)
    p_y = probs.double().mean(0)
    kl = (probs.double() * (probs.double().log() - p_y.log())).sum(1)
    assert classifier_score(probs) == pytest.approx(kl.mean().exp().item(), rel=1e-10)
    assert 1 < classifier_score(probs) < k


# --- the feature networks ------------------------------------------------------------------------------
def test_shipped_digits_net_meets_its_floor_and_says_what_it_is(digits_net):
    x, labels, source = held_out_data("digits", None, download=False)
    acc = feature_training.accuracy(digits_net, x, labels)
    assert acc >= ACCURACY_FLOORS["digits"]
    m = digits_net.metadata
    assert acc == pytest.approx(m["test_accuracy"], abs=1e-12)
    assert (m["dataset"], m["layer"], m["feature_dim"], m["test_split_source"]) == ("digits", "fc1", 128, source)
    assert m["num_train_examples"] == 1257
    assert features(digits_net, x[:4]).shape == (4, 128) and digits_net(x[:4]).shape == (4, 10)
    assert "digits-lenet-v1, layer fc1 (128-d)" in digits_net.describe()


@pytest.mark.parametrize("dataset", ["mnist", "binarized_mnist"])
def test_shipped_mnist_nets_meet_the_floor(dataset, mnist_root):
    net = load_feature_net(dataset)
    x, labels, _ = held_out_data(dataset, mnist_root, download=False)
    acc = feature_training.accuracy(net, x, labels)
    assert acc == pytest.approx(net.metadata["test_accuracy"], abs=1e-12)  # the stored number is this one
    assert net.metadata["num_test_examples"] == len(x)
    assert acc >= ACCURACY_FLOORS["mnist"] if dataset == "mnist" else acc >= 0.98
    if dataset == "binarized_mnist":  # trained on stochastically binarised MNIST, tested on a static draw
        assert net.metadata["train_data"] == "mnist" and net.metadata["binarize"]
        assert set(x.unique().tolist()) == {0.0, 1.0}


def test_shipped_files_are_small_safetensors():
    for dataset in ("digits", "mnist", "binarized_mnist"):
        path = SHIPPED / feature_net.file_name(dataset)
        assert path.stat().st_size < 1_000_000
        _, meta = read_tensors(path)
        assert meta["dataset"] == dataset and meta["recipe"] == feature_net.RECIPES[dataset].name


def test_a_net_for_another_dataset_is_refused(digits_net):
    with pytest.raises(ValueError, match=r"'digits'.*'mnist'"):
        load_feature_net("mnist", path=SHIPPED / feature_net.file_name("digits"))
    with pytest.raises(ValueError, match=r"'digits'.*'mnist'"):
        check_feature_net(digits_net, dataset_info("mnist"))
    odd_shape = DataInfo("digits", (1, 16, 16), 10, "discrete", 17)
    with pytest.raises(ValueError, match="shape"):
        check_feature_net(digits_net, odd_shape)
    with pytest.raises(ValueError, match="no feature network for dataset 'cifar'"):
        load_feature_net("cifar")


def test_lookup_goes_shipped_then_cache_and_never_trains(tmp_path, monkeypatch, digits_net):
    monkeypatch.setenv("GENZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(feature_net, "PACKAGE_DIR", "no-such-dir")  # pretend nothing is shipped
    with pytest.raises(FileNotFoundError, match="python -m genzoo.train.feature_net --dataset digits"):
        load_feature_net("digits")
    assert not (tmp_path / "feature_nets").exists()  # evaluation trained and wrote nothing
    cached = feature_net.save_feature_net(digits_net, tmp_path / "feature_nets" / "digits-lenet-v1.safetensors")
    again = load_feature_net("digits")  # from the cache
    x = real_images("digits")[:8]
    assert torch.equal(again(x), digits_net(x)) and cached.is_file()


def test_random_shift_translates_each_image():
    x = torch.zeros(5, 1, 8, 8)
    x[:, :, 3:5, 3:5] = torch.arange(1.0, 6.0)[:, None, None, None]  # a block away from the border
    shifted = feature_training.random_shift(x, 2, generator(8))
    for original, moved in zip(x, shifted):
        offsets = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(torch.roll(original, (dy, dx), (1, 2)), moved)]
        assert len(offsets) == 1


# --- on real features ----------------------------------------------------------------------------------
def halves_and_noise(net, x):
    perm = torch.randperm(len(x), generator=generator(9))
    a, b = features(net, x[perm[: len(x) // 2]]), features(net, x[perm[len(x) // 2:]])
    return a, b, features(net, x), features(net, shuffled_pixels(x))


def test_real_features_halves_are_close_and_shuffled_pixels_far(digits_net):
    x = real_images("digits")  # (360, 1, 8, 8)
    a, b, everything, noise = halves_and_noise(digits_net, x)
    assert abs(frechet_distance(everything, everything)) < 1e-9 * torch.cov(everything.double().T).trace()
    fd_halves, fd_noise = frechet_distance(a, b), frechet_distance(everything, noise)
    assert fd_noise > 10 * fd_halves  # FD of 180 vs 180 in 128-d carries a large positive bias
    kid_halves, kid_halves_std = kernel_distance(a, b, num_subsets=20, subset_size=100)
    kid_noise, kid_noise_std = kernel_distance(everything, noise, num_subsets=20, subset_size=100)
    assert abs(kid_halves) < 3 * kid_halves_std  # unbiased: no systematic offset between halves
    assert kid_noise > 10 * abs(kid_halves) and kid_noise > 5 * kid_noise_std


def test_real_mnist_features_halves_are_close_and_shuffled_pixels_far(mnist_root):
    net = load_feature_net("mnist")
    x = real_images("mnist", mnist_root)  # (1000, 1, 28, 28)
    a, b, everything, noise = halves_and_noise(net, x)
    fd_halves, fd_noise = frechet_distance(a, b), frechet_distance(everything, noise)
    assert fd_noise > 20 * fd_halves
    kid_halves, kid_halves_std = kernel_distance(a, b, num_subsets=20, subset_size=250)
    kid_noise, _ = kernel_distance(everything, noise, num_subsets=20, subset_size=250)
    assert abs(kid_halves) < 3 * kid_halves_std and kid_noise > 100 * abs(kid_halves)
    precision, recall = precision_recall(a, b)
    assert precision > 0.6 and recall > 0.6


# --- a model end to end -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_test():
    return load_split("digits", "test", download=False)


def test_sample_quality_metrics_of_a_tiny_vae(digits_test, digits_net):
    info, split = digits_test
    torch.manual_seed(0)
    model = build_model("vae", info, {"latent_dim": 2, "hidden_dim": 16})
    result = sample_quality_metrics(model, split, info, feature_net=digits_net)
    assert set(result) == {"fd", "kid", "kid_std", "kid_num_subsets", "kid_subset_size", "precision", "recall",
                           "pr_k", "classifier_score", "classifier_score_data", "num_samples", "num_real", "split",
                           "split_source", "feature_net", "feature_net_test_accuracy", "seconds_per_sample"}
    assert result["num_samples"] == result["num_real"] == len(split) == 360
    assert result["kid_subset_size"] == 180 and result["pr_k"] == 3  # half the split: subsets that differ
    assert result["split"] == "test" and result["split_source"] == split.source
    assert result["feature_net"].startswith("genzoo digit classifier digits-lenet-v1, layer fc1 (128-d)")
    assert result["fd"] > 0 and 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
    assert 1 <= result["classifier_score"] <= 10 and result["classifier_score_data"] > 8  # real digits: ~K
    # deterministic given the seed (all but the time it took); fewer samples and metrics on request
    again = sample_quality_metrics(model, split, info, feature_net=digits_net)
    assert again.pop("seconds_per_sample") > 0 and again == {k: v for k, v in result.items() if k != "seconds_per_sample"}
    few = sample_quality_metrics(model, split, info, ["fd"], num_samples=50, batch_size=20, feature_net=digits_net)
    assert few["num_samples"] == 50 and "fd" in few and "kid" not in few and "precision" not in few


def test_sample_quality_metrics_of_a_conditional_model(digits_test, digits_net):
    info, split = digits_test
    torch.manual_seed(0)
    model = build_model("cvae", info, {"latent_dim": 2, "hidden_dim": 16})
    result = sample_quality_metrics(model, split, info, ["score"], num_samples=100, feature_net=digits_net)
    assert 0 <= result["conditional_accuracy"] <= 1 and "fd" not in result


def test_sample_quality_metrics_refuses_bad_input(digits_test, digits_net):
    info, split = digits_test
    model = build_model("vae", info, {"latent_dim": 2, "hidden_dim": 16})
    with pytest.raises(ValueError, match="unknown sample-quality metric.*'fid'.*fd, kid, pr, score"):
        sample_quality_metrics(model, split, info, ["fd", "fid"], feature_net=digits_net)
    assert SAMPLE_METRICS == ("fd", "kid", "pr", "score")
    mnist_net = load_feature_net("mnist")
    with pytest.raises(ValueError, match=r"'mnist'.*'digits'"):
        sample_quality_metrics(model, split, info, ["fd"], feature_net=mnist_net)
    model.sample = lambda n, labels=None, generator=None: torch.full((n, *info.shape), float("nan"))
    with pytest.raises(ValueError, match="samples of vae.*NaN"):
        sample_quality_metrics(model, split, info, ["fd"], num_samples=10, feature_net=digits_net)
