"""Synthetic tabletop generator: determinism, answer validity, RoboPoint and Where2Place output formats."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robopoint_hf.model.points import ANSWER_FORMAT_SUFFIX, parse_points
from robopoint_hf.synthetic.scenes import FAMILIES, SynthConfig, centre_point, generate_dataset, generate_sample
from robopoint_hf.training.data import load_robopoint_dataset

ANSWER = re.compile(r"^\[\(\d\.\d{3}, \d\.\d{3}\)(, \(\d\.\d{3}, \d\.\d{3}\))*\]$")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "out"
    generate_dataset(out, 40, seed=11, eval_questions=12)
    return out


def test_same_seed_gives_byte_identical_output_whatever_the_worker_count(dataset_dir, tmp_path):
    generate_dataset(tmp_path / "again", 40, seed=11, eval_questions=12, workers=2)
    assert _files(tmp_path / "again") == _files(dataset_dir)
    generate_dataset(tmp_path / "other", 40, seed=12, eval_questions=12)
    assert (tmp_path / "other" / "train.json").read_bytes() != (dataset_dir / "train.json").read_bytes()


def test_answers_lie_inside_non_empty_regions_and_respect_scene_geometry():
    config = SynthConfig()
    families = Counter()
    for index in range(150):
        scene, asked = generate_sample(3, index, config)
        objects = scene.labels > 0
        assert scene.labels.shape == (120, 160) and scene.image.size == (160, 120)
        assert {int(v) for v in np.unique(scene.labels)} == {0} | {o.label for o in scene.objects}
        for question, points, _image in asked:
            families[question.family] += 1
            assert question.region.any()
            assert config.min_points <= len(points) <= min(config.max_points, question.region.sum())
            for x, y in points:
                assert question.region[int(y * 120), int(x * 160)]
            if question.family.startswith("free_space"):
                assert not (question.region & objects).any()  # free space never touches an object
                assert (np.nonzero(question.region)[0] >= scene.table_top).all()  # ... and lies on the table
            else:
                assert any((question.region == scene.mask(o)).all() for o in scene.objects)  # an instance mask
    assert set(families) == set(FAMILIES)


def test_training_records_have_robopoint_format_and_load(dataset_dir):
    records = json.loads((dataset_dir / "train.json").read_text(encoding="utf-8"))
    assert len(records) == 40
    for record in records:
        human, gpt = record["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].startswith("<image>\n") and human["value"].endswith(". " + ANSWER_FORMAT_SUFFIX)
        assert ANSWER.match(gpt["value"]), gpt["value"]
        assert 3 <= len(parse_points(gpt["value"]).points) <= 8
        assert record["id"].split("/")[1] in FAMILIES
        with Image.open(dataset_dir / record["image"]) as image:
            assert image.size == (160, 120) and image.format == "JPEG"
    dataset, report = load_robopoint_dataset(
        dataset_dir / "train.json", dataset_dir, cache_dir=dataset_dir.parent / "cache", return_report=True
    )
    assert report.kept == 40 and report.skipped == {}
    assert dataset[0]["images"][0].size == (160, 120)


def test_answers_match_the_scene_regenerated_from_the_seed(dataset_dir):
    records = json.loads((dataset_dir / "train.json").read_text(encoding="utf-8"))
    for index in (0, 17, 39):
        _scene, [(question, points, _image)] = generate_sample(11, index, SynthConfig())
        expected = "[" + ", ".join(f"({x:.3f}, {y:.3f})" for x, y in points) + "]"
        assert records[index]["conversations"][1]["value"] == expected
        assert question.text in records[index]["conversations"][0]["value"]


def test_eval_split_uses_the_where2place_layout(dataset_dir):
    lines = (dataset_dir / "eval" / "point_questions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 12
    for position, line in enumerate(lines):
        item = json.loads(line)
        assert item["question_id"] == position and item["image"] == f"{position:02d}.jpg"
        assert item["category"] in FAMILIES and item["text"].endswith(ANSWER_FORMAT_SUFFIX)
        assert "<image>" not in item["text"]
        with Image.open(dataset_dir / "eval" / "masks" / f"{position:02d}.jpg") as mask_file:
            assert mask_file.mode == "L"
            mask = np.asarray(mask_file) > 127
        _scene, [(question, points, _image)] = generate_sample(11, position, SynthConfig(), split="eval", questions=1)
        assert question.family == item["category"]
        assert (mask == question.region).mean() > 0.99  # JPEG keeps the mask, up to a few edge pixels
        for x, y in points:  # the reference answer scores 1 on the stored (JPEG) mask
            assert mask[int(y * 120), int(x * 160)]


def test_config_is_validated_and_image_size_is_respected(tmp_path):
    with pytest.raises(ValueError, match="image size"):
        SynthConfig(width=5000)
    with pytest.raises(ValueError, match="family_weights"):
        SynthConfig(family_weights=(1.0,))
    config = SynthConfig(width=320, height=240, questions_per_scene=3)
    summary = generate_dataset(tmp_path, 4, seed=0, config=config)
    records = json.loads((tmp_path / "train.json").read_text(encoding="utf-8"))
    assert summary.records == len(records) == 12
    assert len({record["conversations"][0]["value"] for record in records}) == 12  # distinct questions
    with Image.open(tmp_path / records[0]["image"]) as image:
        assert image.size == (320, 240)


def test_relation_answers_follow_the_stated_relation():
    config = SynthConfig(family_weights=(0, 1, 0, 0, 0, 0))
    seen = Counter()
    for index in range(120):
        scene, [(question, _points, _image)] = generate_sample(5, index, config)
        target = next(o for o in scene.objects if (scene.mask(o) == question.region).all())
        named = [o for o in scene.objects if o.name in question.text]
        assert target not in named
        (tx, ty), (ax, ay) = target.center, named[0].center
        if " between " in question.text:
            (bx, by) = named[1].center
            assert min(ax, bx) < tx < max(ax, bx) or min(ay, by) < ty < max(ay, by)
            seen["between"] += 1
        elif "closest" in question.text or "nearest" in question.text:
            distances = {
                o.label: np.hypot(o.center[0] - ax, o.center[1] - ay) for o in scene.objects if o not in named
            }
            assert distances[target.label] == min(distances.values())
            seen["nearest"] += 1
        else:
            relation = next(word for word in ("front", "behind", "left", "right") if word in question.text)
            assert {"left": tx < ax, "right": tx > ax, "front": ty > ay, "behind": ty < ay}[relation]
            seen[relation] += 1
    assert set(seen) == {"between", "nearest", "left", "right", "front", "behind"}


def test_centre_answer_stays_inside_a_region_whose_centroid_is_outside():
    ring = np.zeros((40, 40), dtype=bool)
    ring[5:35, 5:35] = True
    ring[10:30, 10:30] = False  # centroid (19.5, 19.5) is in the hole
    x, y = centre_point(ring)
    assert ring[int(y * 40), int(x * 40)]
    assert (x * 40 - 20) ** 2 + (y * 40 - 20) ** 2 == pytest.approx(10.5**2 + 0.5**2)  # a hole-edge midpoint
    with pytest.raises(ValueError, match="empty"):
        centre_point(np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="answer"):
        SynthConfig(answer="middle")


def test_command_line_restricts_object_counts_and_families(tmp_path, capsys):
    """The first training stage of the tiny model: one object per scene, only questions about that object."""
    from robopoint_hf.cli import main

    out = tmp_path / "single"
    families = "object_attribute,object_highlight"
    arguments = ["--objects", "1-1", "--families", families, "--answer", "centre"]
    assert main(["synth", "--n", "30", "--output-dir", str(out), *arguments]) == 0
    info = json.loads((out / "synth_info.json").read_text())
    assert (info["config"]["min_objects"], info["config"]["max_objects"]) == (1, 1)
    records = json.loads((out / "train.json").read_text())
    assert len(records) == 30 and {record["id"].split("/")[1] for record in records} == set(families.split(","))
    config = SynthConfig(**{**info["config"], "family_weights": tuple(info["config"]["family_weights"])})
    for record in records:  # the scene regenerated from the seed has exactly one object, answered at its centre
        scene, [(question, _points, _image)] = generate_sample(
            info["seed"], int(record["id"].split("/")[2].split("_")[0]), config
        )
        assert len(scene.objects) == 1 and (question.region == scene.mask(scene.objects[0])).all()
        [point] = parse_points(record["conversations"][1]["value"]).points
        x, y = point.x, point.y
        rows, columns = np.nonzero(question.region)
        assert question.region[int(y * 120), int(x * 160)]
        distances = (rows - rows.mean()) ** 2 + (columns - columns.mean()) ** 2
        answer = (int(y * 120) - rows.mean()) ** 2 + (int(x * 160) - columns.mean()) ** 2
        assert answer == pytest.approx(distances.min())
    assert main(["synth", "--n", "1", "--output-dir", str(tmp_path / "bad"), "--families", "object_colour"]) == 2
    assert "object_colour" in capsys.readouterr().err
    assert main(["synth", "--n", "1", "--output-dir", str(tmp_path / "bad"), "--answer", "middle"]) == 2
    assert "unknown answer kind 'middle'; choose from points, centre" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n", "-1"], "argument --n: must be an integer >= 0, got '-1'"),
        (["--n", "1", "--split-eval", "-1"], "argument --split-eval: must be an integer >= 0, got '-1'"),
        (["--n", "1", "--workers", "0"], "argument --workers: must be a positive integer, got '0'"),
        (["--n", "1", "--questions-per-scene", "0"], "argument --questions-per-scene: must be a positive integer"),
        (["--n", "1", "--objects", "3-1"], "argument --objects: need 1 <= min_objects <= max_objects <= 8, got 3, 1"),
        (["--n", "1", "--image-size", "8x8"], "argument --image-size: image size must be within 32..1000 pixels"),
    ],
)
def test_bad_counts_and_sizes_name_their_flag(tmp_path, capsys, flags, message):
    from robopoint_hf.cli import main

    assert main(["synth", *flags, "--output-dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
