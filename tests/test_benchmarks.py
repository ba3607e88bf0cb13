"""Benchmark readers (published layouts), one command for every layout, leaderboard and the metric's new options."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robopoint_hf.cli import main
from robopoint_hf.evaluation.benchmarks import detect_benchmark, load_benchmark
from robopoint_hf.evaluation.leaderboard import bootstrap_interval, leaderboard_rows, score_records

FIXTURES = Path(__file__).parent / "fixtures"
BENCH = FIXTURES / "benchmarks"
LAYOUTS = {
    "where2place": (FIXTURES / "where2place", "where2place", 6),
    "where2place_hf": (BENCH / "where2place_hf", "where2place", 3),
    "roboafford": (BENCH / "roboafford", "roboafford", 3),
    "refspatial": (BENCH / "refspatial", "refspatial", 4),
    "refspatial_hf": (BENCH / "refspatial_hf", "refspatial", 2),
    "pointbench": (BENCH / "pointbench", "pointbench", 3),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_is_detected_and_read(layout):
    folder, benchmark, n = LAYOUTS[layout]
    assert detect_benchmark(folder) == benchmark
    records = load_benchmark(folder)
    assert len(records) == n and {r.benchmark for r in records} == {benchmark}
    for record in records:
        assert record.instruction and record.mask is not None
        assert record.open_image().size == record.image_size


def test_ids_are_the_benchmarks_own_or_positions():
    assert [r.question_id for r in load_benchmark(BENCH / "where2place_hf")] == ["0", "1", "2"]
    assert [r.question_id for r in load_benchmark(BENCH / "roboafford")] == [0, 1, 2]  # position in the JSON array
    assert [r.question_id for r in load_benchmark(BENCH / "pointbench")] == [0, 1, 2]
    assert [r.question_id for r in load_benchmark(BENCH / "refspatial")] == [
        "location/0",
        "location/1",
        "placement/0",
        "placement/1",
    ]
    placement = load_benchmark(BENCH / "refspatial", split="placement")
    assert [r.question_id for r in placement] == [0, 1] and placement[0].extra["step"] == 1
    assert placement[0].instruction.startswith("Please point out the thing 0") and "formatted" in placement[0].text


def test_records_keep_the_benchmarks_fields():
    afford = load_benchmark(BENCH / "roboafford")
    assert [r.category for r in afford] == ["object affordance", "object reference", "spatial affordance"]
    assert [Path(r.mask).suffix for r in afford] == [".png", ".png", ".jpg"]
    assert np.asarray(Image.open(afford[1].mask)).ndim == 3  # colour mask kept as stored
    bench = load_benchmark(BENCH / "pointbench")
    assert [r.extra["count"] for r in bench] == [1, 2, 1] and bench[1].category == "counting"
    assert load_benchmark(BENCH / "where2place_hf")[1].category == "unseen"


def test_bad_folders_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="not a known benchmark layout"):
        detect_benchmark(tmp_path)
    (tmp_path / "annotations_normxy.json").write_text(json.dumps([{"question": "q", "img": "00.jpg"}]))
    with pytest.raises(ValueError, match=r"annotations_normxy.json, question 0: missing field 'mask'"):
        load_benchmark(tmp_path)
    (tmp_path / "annotations_normxy.json").write_text(json.dumps([{"question": "q", "img": "0.jpg", "mask": "m.png"}]))
    with pytest.raises(FileNotFoundError, match="question 0: image"):
        load_benchmark(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        load_benchmark(BENCH / "refspatial", split="nope")


def test_strict_protocol_reads_other_formats_through_adapters():
    records = load_benchmark(BENCH / "roboafford")
    # free space of mask i: columns 5 + 3i .. 16 + 3i, rows 5..19 of a 40x30 image
    molmo = ['<point x="20.0" y="40.0" alt="a">a</point>'] * 3
    gemini = ['[{"point": [400, 200]}]'] * 3
    assert score_records(records, molmo, "strict", answer_format="molmo").per_question == [1.0, 1.0, 0.0]
    assert score_records(records, gemini, "strict", answer_format="gemini-er").per_question == [1.0, 1.0, 0.0]


def test_bootstrap_is_seeded_and_brackets_the_score():
    records = load_benchmark(FIXTURES / "where2place")
    texts = ["[(0.5, 0.5)]", "[(0.1, 0.1)]", "nothing", "[(0.5, 0.6)]", "[(0.3, 0.3)]", "[(0.7, 0.7)]"]
    result = score_records(records, texts, "strict")
    low, high = bootstrap_interval(result, "strict", num_samples=200, seed=3)
    assert (low, high) == bootstrap_interval(result, "strict", num_samples=200, seed=3)
    assert low <= result.accuracy <= high
    rows = leaderboard_rows("m", "where2place", "strict", result, [r.category for r in records], num_samples=50)
    assert rows[0].category == "all" and {r.category for r in rows[1:]} == {r.category for r in records}


def test_one_command_runs_the_shipped_model_on_every_layout(tmp_path, capsys):
    for name, (folder, benchmark, n) in LAYOUTS.items():
        if name == "where2place":
            continue  # covered by tests/test_eval_runner.py
        output = tmp_path / f"{name}.jsonl"
        argv = ["eval", "run", "--data-dir", str(folder), "--output", str(output), "--format-instruction"]
        argv += ["--protocols", "strict", "lmms_eval", "--bootstrap", "20", "--max-new-tokens", "24"]
        assert main(argv) == 0, capsys.readouterr().err
        lines = [json.loads(line) for line in output.read_text().splitlines()]
        assert [line["question_id"] for line in lines] == [r.question_id for r in load_benchmark(folder)]
        assert f"| default_model | {benchmark} | lmms_eval | all | {n} |" in capsys.readouterr().out


def test_score_command_writes_json_leaderboard_and_pictures(tmp_path, capsys):
    answers = json.loads((BENCH / "answers.json").read_text())["pointbench"]["gemini"]["texts"]
    answer_file = tmp_path / "gemini.jsonl"
    answer_file.write_text("".join(json.dumps({"question_id": i, "text": t}) + "\n" for i, t in enumerate(answers)))
    argv = ["eval", "score", "--answers", str(answer_file), "--data-dir", str(BENCH / "pointbench")]
    argv += ["--answer-format", "gemini-er", "--protocols", "lmms_eval_json", "strict", "roborefer"]
    argv += ["--json", str(tmp_path / "s.json"), "--leaderboard", str(tmp_path / "lb"), "--bootstrap", "20"]
    argv += ["--visualize", str(tmp_path / "pics")]
    assert main(argv) == 0, capsys.readouterr().err
    scores = json.loads((tmp_path / "s.json").read_text())["gemini"]
    reference = json.loads((BENCH / "protocol_references.json").read_text())["pointbench"]["gemini"]
    assert scores["lmms_eval_json"]["accuracy"] == reference["lmms_eval_json"]["accuracy"]
    assert scores["roborefer"]["accuracy"] == reference["roborefer"]["accuracy"]
    assert scores["lmms_eval_json"]["extra"]["binary_accuracy"] == reference["lmms_eval_json"]["binary_accuracy"]
    rows = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())["rows"]
    assert {(r["protocol"], r["category"]) for r in rows} >= {("strict", "all"), ("strict", "counting")}
    assert (tmp_path / "lb" / "leaderboard.csv").read_text().startswith("model,benchmark,protocol,category")
    assert len(list((tmp_path / "pics").glob("*.png"))) == 3


def _answer_file(path, texts, ids=None):
    ids = range(len(texts)) if ids is None else ids
    path.write_text("".join(json.dumps({"question_id": i, "text": t}) + "\n" for i, t in zip(ids, texts, strict=True)))
    return str(path)


def test_leaderboard_command_joins_score_files_of_several_benchmarks(tmp_path, capsys):
    answers = json.loads((BENCH / "answers.json").read_text())
    # RoboPoint answers on Where2Place (the original score table's path) and Molmo answers on RefSpatial-Bench
    w2p = _answer_file(tmp_path / "robopoint.jsonl", answers["where2place"]["robopoint"]["texts"])
    argv = ["eval", "score", "--answers", w2p, "--data-dir", str(FIXTURES / "where2place")]
    assert main([*argv, "--protocols", "strict", "original", "--json", str(tmp_path / "scores" / "w2p.json")]) == 0
    ids = [r.question_id for r in load_benchmark(BENCH / "refspatial")]
    ref = _answer_file(tmp_path / "molmo.jsonl", answers["refspatial"]["molmo"]["texts"], ids)
    argv = ["eval", "score", "--answers", ref, "--data-dir", str(BENCH / "refspatial"), "--answer-format", "molmo"]
    argv += ["--protocols", "strict", "roborefer", "--json", str(tmp_path / "ref.json"), "--bootstrap", "30"]
    assert main([*argv, "--leaderboard", str(tmp_path / "direct")]) == 0
    capsys.readouterr()

    files = [str(tmp_path / "scores" / "w2p.json"), str(tmp_path / "ref.json")]
    board = tmp_path / "board"
    assert main(["eval", "leaderboard", *files, "--output-dir", str(board), "--bootstrap", "30"]) == 0
    assert "| molmo | refspatial | roborefer | all | 4 |" in capsys.readouterr().out
    rows = json.loads((board / "leaderboard.json").read_text())["rows"]
    scores = {**json.loads((tmp_path / "scores" / "w2p.json").read_text())}
    scores |= json.loads((tmp_path / "ref.json").read_text())
    for row in rows:
        result = scores[row["model"]][row["protocol"]]
        if row["category"] == "all":
            assert row["score"] == result["accuracy"] and row["num_questions"] == len(result["per_question"])
        else:
            assert row["score"] == result["per_category"][row["category"]]
    assert {(r["model"], r["benchmark"], r["protocol"]) for r in rows} == {
        ("robopoint", "where2place", "strict"),
        ("robopoint", "where2place", "original"),
        ("molmo", "refspatial", "strict"),
        ("molmo", "refspatial", "roborefer"),
    }
    assert {r["category"] for r in rows if r["benchmark"] == "refspatial"} == {"all", "location", "placement"}
    # the same rows, intervals included, as `eval score --leaderboard` wrote from the answers themselves
    direct = json.loads((tmp_path / "direct" / "leaderboard.json").read_text())["rows"]
    assert [r for r in rows if r["benchmark"] == "refspatial"] == direct
    assert (board / "leaderboard.csv").read_text().startswith("model,benchmark,protocol,category")


def test_a_score_file_that_cannot_be_written_stops_the_run_before_any_answer(tmp_path, capsys):
    answers = tmp_path / "answers.jsonl"
    argv = ["eval", "run", "--data-dir", str(FIXTURES / "where2place"), "--output", str(answers)]
    assert main([*argv, "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path} is a folder" in capsys.readouterr().err
    assert not answers.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not a JSON score file"),
        ('{"m": {"strict": {"accuracy": 1.0}}}', "model 'm': no benchmark and per-question categories"),
        ('{"m": {"benchmark": "b", "categories": [null], "strict": {"accuracy": 1.0}}}', "protocol 'strict'"),
        ('{"m": {"benchmark": "b", "categories": [], "answer_file": "a.jsonl"}}', "no scores under any protocol"),
    ],
)
def test_leaderboard_command_names_the_bad_score_file(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["eval", "leaderboard", str(bad), "--output-dir", str(tmp_path / "board")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"robopoint eval leaderboard: error: {bad}") and message in err and "\n" not in err


def test_leaderboard_command_refuses_a_run_given_twice(tmp_path, capsys):
    texts = json.loads((BENCH / "answers.json").read_text())["where2place"]["robopoint"]["texts"]
    answer_file = _answer_file(tmp_path / "m.jsonl", texts)
    argv = ["eval", "score", "--answers", answer_file, "--data-dir", str(FIXTURES / "where2place")]
    assert main([*argv, "--protocols", "strict", "--json", str(tmp_path / "a.json")]) == 0
    (tmp_path / "b.json").write_text((tmp_path / "a.json").read_text())
    board = ["--output-dir", str(tmp_path / "board")]
    assert main(["eval", "leaderboard", str(tmp_path / "a.json"), str(tmp_path / "b.json"), *board]) == 2
    assert f"is also in {tmp_path / 'a.json'}" in capsys.readouterr().err
    (tmp_path / "board").mkdir()
    (tmp_path / "board" / "notes.txt").write_text("x")
    assert main(["eval", "leaderboard", str(tmp_path / "a.json"), *board]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["eval", "leaderboard", str(tmp_path / "a.json"), *board, "--overwrite"]) == 0


def test_metric_takes_answer_format_mask_convention_and_published_protocols():
    evaluate = pytest.importorskip("evaluate")
    from robopoint_hf.hub_files import METRIC_DIR

    metric = evaluate.load(str(METRIC_DIR))
    mask = np.zeros((10, 20), np.uint8)
    mask[:, :10] = 100  # a soft mask: 100/255
    texts = ['<point x="25.0" y="50.0" alt="a">a</point>']
    soft = metric.compute(predictions=texts, references=[mask], protocol="strict", answer_format="molmo")
    assert soft["accuracy"] == 0.0  # 100 < 128: not free space under strict's 0.5 threshold
    nonzero = metric.compute(
        predictions=texts, references=[mask], protocol="strict", answer_format="molmo", mask_convention="nonzero"
    )
    assert nonzero["accuracy"] == 1.0
    published = metric.compute(predictions=["[(0.25, 0.5)]"], references=[mask], protocol="roborefer")
    assert published["accuracy"] == 1.0 and published["protocol"] == "roborefer"
