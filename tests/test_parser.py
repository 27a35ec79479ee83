"""Face parser: network shapes, safetensors I/O and its errors, the structure mapper, training parts,
and (when the shipped weights exist) a quality smoke check on real held-out photos."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fewshot_core.errors import ModelFileMissingError, WeightsMismatchError
from fewshot_core.parsing.classes import CLASS_INDEX, FLIP_PERMUTATION, IGNORE_INDEX, NUM_CLASSES, PARSE_CLASSES
from fewshot_core.parsing.mapper import ParserStructureMapper, default_parser_path
from fewshot_core.parsing.network import (
    FaceParser,
    ParserConfig,
    count_parameters,
    fuse_batchnorm,
    iris_centres_from_probs,
    load_parser,
    save_parser,
)
from fewshot_core.parsing.train import (LabelDataError, augment, confusion, iou_from_confusion, load_labelled,
                                        lovasz_softmax, moved_points, parsing_loss, update_average)
from fewshot_core.parsing.train import main as train_main
from fewshot_core.parsing.network import read_parser_metadata
from fewshot_core.parsing.widen import grow_parser
from fewshot_core.structure import StructureMapper

SMALL = ParserConfig(widths=(8, 16, 16, 32), blocks=(0, 1, 1, 1), full_res=4)


def _random_parser(cfg: ParserConfig = SMALL, seed: int = 0) -> FaceParser:
    torch.manual_seed(seed)
    model = FaceParser(cfg)
    with torch.no_grad():  # non-trivial BN statistics, and fp16-exact weights so a saved file round-trips exactly
        for name, t in model.state_dict().items():
            if name.endswith("running_mean"):
                t.normal_(0, 0.1)
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
        for p in model.parameters():
            p.copy_(p.half().float())
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model.eval()


@pytest.fixture(scope="module")
def parser_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("parser") / "parser.safetensors"
    model = _random_parser()
    save_parser(model, path)
    return path, model


@pytest.mark.parametrize("side", [128, 64, 100])
def test_parser_logits_shape_any_side(side):
    model = _random_parser()
    with torch.no_grad():
        out = model(torch.rand(2, 3, side, side))
    assert out.shape == (2, NUM_CLASSES, side, side) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())


def test_default_parser_is_small():
    n = count_parameters(FaceParser())
    assert 50_000 < n <= 3_000_000


def test_parser_sees_the_pixels_at_full_resolution():
    """Changing one input pixel changes the logits at that pixel (the head is not a blurry upsample)."""
    model = _random_parser()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[0, :, 31, 33] = 1.0 - y[0, :, 31, 33]
    with torch.no_grad():
        d = (model(x) - model(y)).abs().sum(1)[0]
    assert float(d[31, 33]) > 0
    assert float(d[0, 0]) < float(d[31, 33])


def test_save_load_roundtrip_is_exact(parser_file):
    path, model = parser_file
    loaded = load_parser(path)
    assert loaded.config == model.config and not loaded.training
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_fused_parser_gives_the_same_logits():
    model = _random_parser()
    fused = fuse_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())   # the original is untouched
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "parser.safetensors"
    with pytest.raises(ModelFileMissingError, match="nowhere/parser.safetensors"):
        load_parser(path)


def test_foreign_files_are_refused(tmp_path, parser_file):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsMismatchError, match="garbage.safetensors"):
        load_parser(garbage)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other), metadata={"format": "fewshot-generator-v1"})
    with pytest.raises(WeightsMismatchError, match="not a fewshot face-parser file"):
        load_parser(other)
    # Right format tag, wrong tensors: one missing, one with another shape.
    path, model = parser_file
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.pop("head.3.bias")
    state["stem.0.weight"] = torch.zeros(3, 3, 3, 3)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken), metadata=meta)
    with pytest.raises(WeightsMismatchError, match="missing"):
        load_parser(broken)


def test_mapper_is_a_structure_mapper_with_softmax_maps(parser_file):
    path, _ = parser_file
    mapper = ParserStructureMapper.from_file(path)
    assert isinstance(mapper, StructureMapper)
    assert mapper.name == "parser" and list(mapper.channels) == PARSE_CLASSES
    for side in (128, 96):
        crops = torch.rand(2, 3, side, side)
        maps = mapper(crops, torch.zeros(2, 5, 2))
        assert maps.shape == (2, len(mapper.channels), side, side)
        assert float(maps.min()) >= 0.0
        torch.testing.assert_close(maps.sum(1), torch.ones(2, side, side))
    centres = mapper.iris_centres(torch.rand(3, 3, 64, 64))
    assert centres.shape == (3, 2, 2) and bool(torch.isfinite(centres).all())


def test_mapper_output_can_feed_a_trained_layer(parser_file):
    """The maps must be usable inside a training graph (no inference-mode tensors)."""
    mapper = ParserStructureMapper.from_file(parser_file[0])
    maps = mapper(torch.rand(1, 3, 32, 32), torch.zeros(1, 5, 2))
    conv = torch.nn.Conv2d(NUM_CLASSES, 2, 3, padding=1)
    conv(maps).sum().backward()
    assert conv.weight.grad is not None


def test_iris_centroid_recovers_disc_centres():
    probs = torch.zeros(1, NUM_CLASSES, 64, 64)
    probs[:, 0] = 1.0
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    for name, (cx, cy) in (("iris_l", (20.3, 30.6)), ("iris_r", (44.8, 29.2))):
        disc = ((xs - cx) ** 2 + (ys - cy) ** 2 <= 9.0).float()
        probs[0, CLASS_INDEX[name]] = disc
        probs[0, 0] -= disc
    k = CLASS_INDEX
    c = iris_centres_from_probs(probs, k["iris_l"], k["iris_r"], k["eye_l"], k["eye_r"])[0]
    torch.testing.assert_close(c, torch.tensor([[20.3, 30.6], [44.8, 29.2]]), atol=0.3, rtol=0)


def test_augment_flip_swaps_left_and_right_classes():
    """With no geometric jitter a sample is either unchanged or mirrored with left/right classes swapped."""
    maps = torch.zeros(8, 32, 32, dtype=torch.long)
    maps[:, 10:14, 4:10] = CLASS_INDEX["eye_l"]
    maps[:, 10:14, 22:28] = CLASS_INDEX["eye_r"]
    maps[:, 12, 6] = CLASS_INDEX["iris_l"]
    maps[:, 28:, :] = IGNORE_INDEX
    crops = torch.rand(8, 3, 32, 32)
    _, out = augment(crops, maps, torch.Generator().manual_seed(3), strength=0.0)
    mirrored = torch.tensor(FLIP_PERMUTATION + [0] * (256 - NUM_CLASSES))[maps.flip(-1).clamp(max=255)]
    mirrored[maps.flip(-1) == IGNORE_INDEX] = IGNORE_INDEX
    same = (out == maps).flatten(1).all(1)
    flipped = (out == mirrored).flatten(1).all(1)
    assert bool((same | flipped).all()) and bool(same.any()) and bool(flipped.any())
    assert int((out[flipped] == CLASS_INDEX["iris_r"]).sum()) == int(flipped.sum())


def test_augment_without_flip_keeps_every_sample_unmirrored():
    """flip_p 0 (MediaPipe's own left/right habits kept): no sample is mirrored, and the colour draws are the
    same as with the default flip share, so a run's other augmentations do not change with the flag."""
    maps = torch.zeros(16, 32, 32, dtype=torch.long)
    maps[:, 10:14, 4:10] = CLASS_INDEX["eye_l"]
    maps[:, 10:14, 22:28] = CLASS_INDEX["eye_r"]
    maps[:, 12, 6] = CLASS_INDEX["iris_l"]  # the only asymmetric pixel: a mirrored map differs here
    crops = torch.rand(16, 3, 32, 32)
    kept, out = augment(crops, maps, torch.Generator().manual_seed(3), strength=0.0, blur_p=0.0, flip_p=0.0)
    assert bool((out == maps).all())
    default, default_maps = augment(crops, maps, torch.Generator().manual_seed(3), strength=0.0, blur_p=0.0)
    unmirrored = (default_maps == maps).flatten(1).all(1)
    assert bool(unmirrored.any()) and not bool(unmirrored.all())
    torch.testing.assert_close(kept[unmirrored], default[unmirrored])


def test_moved_points_follow_the_pixels_grid_sample_moves():
    side = 64
    points = torch.tensor([[[20.0, 30.0], [41.5, 17.25], [33.0, 44.0]]])
    image = torch.zeros(1, 1, side, side)
    for x, y in points[0].round().long():
        image[0, 0, y - 1:y + 2, x - 1:x + 2] = 1.0
    centred = points.round()
    angle, scale, shift = 0.12, 1.07, torch.tensor([0.09, -0.05])
    theta = torch.tensor([[[math.cos(angle) / scale, -math.sin(angle) / scale, shift[0]],
                           [math.sin(angle) / scale, math.cos(angle) / scale, shift[1]]]])
    moved = moved_points(centred, theta, side)[0]
    warped = torch.nn.functional.grid_sample(image, torch.nn.functional.affine_grid(theta, [1, 1, side, side],
                                             align_corners=False), align_corners=False)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(side).float(), torch.arange(side).float(), indexing="ij")
    for x, y in moved:  # the centroid of each moved blob is where moved_points says
        near = warped * (((xs - x) ** 2 + (ys - y) ** 2) < 16)
        cx, cy = (near * xs).sum() / near.sum(), (near * ys).sum() / near.sum()
        assert abs(float(cx - x)) < 0.15 and abs(float(cy - y)) < 0.15
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    torch.testing.assert_close(moved_points(points, identity, side), points)


def test_augment_with_the_mesh_renders_the_moved_maps_afresh():
    from tests.test_parsing_render import SIZE, synthetic_face
    from fewshot_core.parsing.render import render_class_map
    mesh = torch.from_numpy(synthetic_face()[:, :2]).float()[None].repeat(4, 1, 1)
    stored = torch.from_numpy(render_class_map(mesh[0].numpy(), SIZE)).long()[None].repeat(4, 1, 1)
    crops = torch.rand(4, 3, SIZE, SIZE)
    _, still = augment(crops, stored, torch.Generator().manual_seed(1), strength=0.0, blur_p=0, flip_p=0, mesh=mesh)
    assert torch.equal(still, stored)  # no movement: MediaPipe's own map, pixel for pixel
    _, moved = augment(crops, stored, torch.Generator().manual_seed(1), strength=1.0, blur_p=0, flip_p=0, mesh=mesh)
    _, resampled = augment(crops, stored, torch.Generator().manual_seed(1), strength=1.0, blur_p=0, flip_p=0)
    assert not torch.equal(moved, stored)
    # Same draw, same movement: the rendered map is the resampled one up to border pixels.
    agree = (moved == resampled).float().mean()
    assert 0.97 < agree < 1.0


def test_loss_ignores_unlabelled_pixels():
    target = torch.full((1, 16, 16), IGNORE_INDEX, dtype=torch.long)
    target[0, :8] = CLASS_INDEX["skin"]
    logits = torch.randn(1, NUM_CLASSES, 16, 16, generator=torch.Generator().manual_seed(0))
    changed = logits.clone()
    changed[0, :, 8:] += 5 * torch.randn(NUM_CLASSES, 8, 16)
    a, _ = parsing_loss(logits, target)
    b, _ = parsing_loss(changed, target)
    torch.testing.assert_close(a, b)
    c, _ = parsing_loss(logits + 3 * torch.nn.functional.one_hot(target.clamp(max=11), NUM_CLASSES)
                        .permute(0, 3, 1, 2), target)
    assert float(c) < float(a)


def test_lovasz_term_equals_one_minus_iou_for_hard_predictions():
    """At a one-hot prediction the Lovasz extension is exactly the Jaccard loss; soft ones sit between."""
    gen = torch.Generator().manual_seed(3)
    target = torch.randint(0, 4, (2, 24, 24), generator=gen)
    target[0, :2] = IGNORE_INDEX
    pred = target.clone().clamp(max=NUM_CLASSES - 1)
    pred[:, 10:14] = torch.randint(0, 5, (2, 4, 24), generator=gen)   # a band of wrong guesses
    probs = torch.nn.functional.one_hot(pred, NUM_CLASSES).permute(0, 3, 1, 2).float()
    iou = iou_from_confusion(confusion(pred, target))
    expected = float((1 - iou[1:4]).mean())                           # classes 1..3 are in the reference
    assert abs(float(lovasz_softmax(probs, target)) - expected) < 1e-6
    assert expected > 0.05
    perfect = torch.nn.functional.one_hot(target.clamp(min=0, max=NUM_CLASSES - 1), NUM_CLASSES)
    assert float(lovasz_softmax(perfect.permute(0, 3, 1, 2).float(), target)) < 1e-6
    soft = torch.softmax(torch.log(probs * 0.9 + 0.1 / NUM_CLASSES), 1).requires_grad_(True)
    value = lovasz_softmax(soft, target)
    value.backward()
    assert 0 < float(value.detach()) and float(soft.grad.abs().sum()) > 0
    total, parts = parsing_loss(torch.log(soft.detach()), target, lovasz_weight=2.0)
    assert "lovasz" in parts and float(total) > parts["ce"] + 2.0 * parts["lovasz"] - 1e-4


def _write_shard(folder, name, n, heldout, found, rows_in_labels=None):
    crops = np.random.default_rng(0).integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
    paths = np.array([f"lfw/P{i}/P{i}_0001.jpg" for i in range(n)])
    np.savez(folder / f"{name}.npz", crops=crops, landmarks=np.zeros((n, 5, 2), np.float32), paths=paths,
             heldout=np.array(heldout))
    m = rows_in_labels or n
    (folder / "labels").mkdir(exist_ok=True)
    np.savez(folder / "labels" / f"{name}.npz", class_maps=np.full((m, 16, 16), 1, np.uint8),
             iris_centres=np.zeros((m, 2, 2), np.float32), found=np.array(found[:m]), paths=paths[:m])


def test_load_labelled_keeps_one_side_of_the_split_and_found_faces(tmp_path):
    _write_shard(tmp_path, "lfw_0000", 6, [False, False, True, False, True, False],
                 [True, False, True, True, True, True])
    train = load_labelled(tmp_path / "labels")
    held = load_labelled(tmp_path / "labels", heldout=True)
    assert list(train.paths) == ["lfw/P0/P0_0001.jpg", "lfw/P3/P3_0001.jpg", "lfw/P5/P5_0001.jpg"]
    assert len(held) == 2 and train.crops.shape == (3, 16, 16, 3) and train.maps.shape == (3, 16, 16)
    _write_shard(tmp_path, "lfw_0001", 4, [False] * 4, [True] * 4, rows_in_labels=3)
    with pytest.raises(LabelDataError, match="relabel"):
        load_labelled(tmp_path / "labels")


def test_weight_average_moves_part_way_and_copies_batchnorm_statistics():
    average, model = _random_parser(seed=0), _random_parser(seed=1)
    before = [p.clone() for p in average.parameters()]
    update_average(average, model, decay=0.75)
    for old, new, target in zip(before, average.parameters(), model.parameters()):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * target)
    for mine, theirs in zip(average.buffers(), model.buffers()):
        assert torch.equal(mine, theirs)


def _tiny_training(tmp_path, name, *extra):
    out = tmp_path / f"{name}.safetensors"
    argv = ["--labels", str(tmp_path / "labels"), "--out", str(out), "--steps", "4", "--batch", "2",
            "--widths", "8", "16", "16", "32", "--blocks", "0", "1", "1", "1", "--head", "4", "--val-faces", "0",
            "--warmup", "1", "--run-dir", str(tmp_path / f"run_{name}"), *extra]
    assert train_main(argv) == 0
    return out


def test_training_with_ema_writes_the_average_and_checkpoints_it(tmp_path):
    _write_shard(tmp_path, "lfw_0000", 6, [False] * 6, [True] * 6)
    plain = load_parser(_tiny_training(tmp_path, "plain")).state_dict()
    averaged_file = _tiny_training(tmp_path, "ema", "--ema", "0.5")
    averaged = load_parser(averaged_file).state_dict()
    # Same seed, same steps: only the averaging differs, so the written weights must too.
    assert any(not torch.equal(plain[k], averaged[k]) for k in plain if k.endswith("weight"))
    assert '"ema": 0.5' in read_parser_metadata(averaged_file)["training"]
    ckpt = torch.load(tmp_path / "run_ema" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4 and set(ckpt["average"]) == set(ckpt["model"])


@pytest.mark.parametrize("grown", [
    ParserConfig(widths=(12, 16, 16, 32), blocks=(0, 1, 1, 1), full_res=4),   # the head's inputs move
    ParserConfig(widths=(8, 24, 20, 40), blocks=(1, 2, 2, 3), full_res=6),    # every part grows
])
def test_a_grown_parser_computes_the_same_logits_until_it_trains(grown):
    old = _random_parser()
    new = grow_parser(old, grown)
    assert count_parameters(new) > count_parameters(old)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(new.eval()(x), old(x), rtol=0, atol=1e-6)
        train_old, train_new = copy.deepcopy(old).train(), copy.deepcopy(new).train()  # batch statistics
        torch.testing.assert_close(train_new(x), train_old(x), rtol=0, atol=1e-5)
    # The new capacity is live: one step's gradient reaches the zero-initialised readers of new channels.
    new.train()
    new(x).logsumexp(dim=1).mean().backward()
    assert new.head[0].weight.grad[:, 8:12].abs().sum() > 0


def test_render_labels_needs_landmarks_in_the_labels_and_grow_needs_init(tmp_path, capsys):
    _write_shard(tmp_path, "lfw_0000", 6, [False] * 6, [True] * 6)  # labels files without 'landmarks'
    base = ["--labels", str(tmp_path / "labels"), "--out", str(tmp_path / "x.safetensors"), "--steps", "1",
            "--batch", "2", "--val-faces", "0", "--run-dir", str(tmp_path / "run")]
    assert train_main(base + ["--render-labels"]) == 1
    assert "no MediaPipe landmarks" in capsys.readouterr().err
    assert train_main(base + ["--grow"]) == 1
    assert "--grow needs --init" in capsys.readouterr().err


def test_growing_refuses_to_shrink_with_a_fix():
    with pytest.raises(WeightsMismatchError, match="can only grow"):
        grow_parser(_random_parser(), ParserConfig(widths=(4, 16, 16, 32), blocks=(0, 1, 1, 1), full_res=4))


def test_training_with_grow_starts_from_the_init_file_in_the_bigger_shape(tmp_path):
    _write_shard(tmp_path, "lfw_0000", 6, [False] * 6, [True] * 6)
    init = _tiny_training(tmp_path, "small")
    out = tmp_path / "grown.safetensors"
    argv = ["--labels", str(tmp_path / "labels"), "--out", str(out), "--steps", "1", "--batch", "2", "--lr", "0",
            "--widths", "12", "16", "16", "32", "--blocks", "0", "1", "1", "1", "--head", "4", "--val-faces", "0",
            "--warmup", "1", "--run-dir", str(tmp_path / "run_grown"), "--init", str(init), "--grow"]
    assert train_main(argv) == 0
    grown, small = load_parser(out), load_parser(init)
    assert grown.config.widths == (12, 16, 16, 32)
    # lr 0: the weights are the init file's, copied into the leading slices of the bigger tensors.
    assert torch.equal(grown.stem[0].weight[:8], small.stem[0].weight)
    assert torch.equal(grown.head[-1].weight, small.head[-1].weight)
    assert not grown.head[0].weight[:, 8:12].any()
    assert '"grow": true' in read_parser_metadata(out)["training"]


# --- the shipped weights on real held-out photos ---------------------------------------------------

shipped = pytest.mark.skipif(not default_parser_path().is_file(), reason="weights/parser_128.safetensors not trained yet")


@shipped
def test_shipped_parser_is_small_and_loads_by_default():
    mapper = ParserStructureMapper.from_default(device="cpu")
    assert count_parameters(mapper.parser) <= 3_000_000
    assert mapper.parser.config.resolution == 128


@shipped
def test_shipped_parser_finds_eyes_and_face_on_heldout_photos(data_root, swap_model):
    """On held-out LFW photos aligned like the pipeline does, each iris class is found near its eye landmark."""
    from fewshot_core.align import SWAP_TEMPLATE, align_faces, transform_points
    from fewshot_core.eval.split import load_heldout
    from fewshot_core.imageio import load_image

    people = sorted(i.split("/", 1)[1] for i in load_heldout() if i.startswith("lfw/"))[:4]
    images = torch.cat([load_image(data_root / "lfw" / p / f"{p}_0001.jpg") for p in people])
    dets = swap_model.detect(images)
    landmarks = torch.stack([d.landmarks[0] for d in dets])
    aligned = align_faces(images, landmarks, SWAP_TEMPLATE, 128)
    in_crop = transform_points(landmarks, aligned.matrices)                 # [B,5,2] crop px
    eyes = in_crop[:, :2]
    mapper = ParserStructureMapper.from_default()
    maps = mapper(aligned.crops, in_crop)
    classes = maps.argmax(1)
    iod = (eyes[:, 0] - eyes[:, 1]).norm(dim=-1)
    centres = mapper.iris_centres(aligned.crops)
    # Billy_Crystal_0001 laughs with his eyes nearly shut: MediaPipe's own map of that crop has no eye opening and
    # 4 iris pixels on one side, 0 on the other. So a face needs only a trace of each iris, the four together plenty.
    for name in ("iris_l", "iris_r"):
        assert int((classes == CLASS_INDEX[name]).sum()) >= 24, name
    for b in range(len(people)):
        for side, name in enumerate(("iris_l", "iris_r")):
            assert int((classes[b] == CLASS_INDEX[name]).sum()) >= 2, (people[b], name)
            err = float((centres[b, side] - eyes[b, side]).norm())
            assert err < 0.2 * float(iod[b]), (people[b], name, err, float(iod[b]))
        nose = in_crop[b, 2].round().long()
        window = classes[b, nose[1] - 2:nose[1] + 3, nose[0] - 2:nose[0] + 3]
        assert int((window == CLASS_INDEX["nose"]).sum()) >= 13, people[b]
        assert float(maps[b, CLASS_INDEX["background"], :4, :4].mean()) > 0.5   # corners are not face
