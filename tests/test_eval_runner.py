"""Where2Place runner: resume after a kill, sharding and merge, generation through the pipeline on real items,
scoring existing files through the CLI, pictures, and one clear error per bad input.

`fixtures/where2place_real/` holds three real Where2Place items (see its README): question ids 42, 99, 44 at
positions 0..2, no categories.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_pipeline_robopoint import make_pipe, pointing_model

from robopoint_hf.cli import main
from robopoint_hf.evaluation.plots import plot_question, question_title
from robopoint_hf.evaluation.runner import (
    ANSWER_FIELDS,
    AnswerWriter,
    generate_answers,
    image_batches,
    merge_answers,
    pipeline_answer_fn,
    read_answer_lines,
    run_answers,
    shard_bounds,
)
from robopoint_hf.evaluation.where2place import (
    Where2PlaceQuestion,
    load_questions,
    score_answer_file,
    score_answer_files,
)

REAL = Path(__file__).parent / "fixtures" / "where2place_real"
SIX = Path(__file__).parent / "fixtures" / "where2place"  # six synthetic items with categories
POINT = "[(0.25, .7)]"  # the pointing model's greedy answer; ".7" is invisible to the original grammar


@dataclass
class SimulatedState:
    """`accelerate.PartialState` stand-in: one rank of a simulated world, no real barrier."""

    process_index: int = 0
    num_processes: int = 1

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    def wait_for_everyone(self) -> None:
        pass


class Killed(RuntimeError):
    pass


def canned(fail_after: int | None = None, log: list | None = None):
    """A deterministic answer_fn ("[(0.<id>, 0.5)]"); raises `Killed` once `fail_after` answers were given."""
    given = []

    def answer(questions):
        if fail_after is not None and len(given) + len(questions) > fail_after:
            raise Killed(f"killed after {len(given)} answers")
        given.extend(q.question_id for q in questions)
        if log is not None:
            log.extend(q.question_id for q in questions)
        return [f"[(0.{q.question_id}, 0.5)]" for q in questions]

    return answer


@pytest.fixture(scope="module")
def questions():
    return load_questions(SIX)


@pytest.fixture(scope="module")
def reference(questions, tmp_path_factory):
    """Bytes of an uninterrupted single-process run."""
    path = tmp_path_factory.mktemp("ref") / "answers.jsonl"
    run_answers(questions, canned(), path, model_id="m", state=SimulatedState())
    return path.read_bytes()


# --------------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("batch_size", [1, 4])
def test_resume_after_kill_is_identical_to_an_uninterrupted_run(questions, reference, tmp_path, batch_size):
    out = tmp_path / "answers.jsonl"
    with pytest.raises(Killed):
        run_answers(questions, canned(fail_after=4), out, model_id="m", batch_size=batch_size, state=SimulatedState())
    kept = read_answer_lines(out)
    assert [r["question_id"] for r in kept] == [0, 1, 2, 3][: 4 // batch_size * batch_size]
    log = []
    run_answers(questions, canned(log=log), out, model_id="m", batch_size=batch_size, state=SimulatedState())
    assert log == [q.question_id for q in questions][len(kept) :]  # nothing asked twice
    assert out.read_bytes() == reference
    assert set(json.loads(out.read_text().splitlines()[0])) == set(ANSWER_FIELDS)


def test_torn_last_line_is_cut_and_asked_again(questions, reference, tmp_path):
    out = tmp_path / "answers.jsonl"
    out.write_bytes(reference.splitlines(keepends=True)[0] + reference.splitlines(keepends=True)[1][:25])
    assert [r["question_id"] for r in read_answer_lines(out)] == [0]
    log = []
    run_answers(questions, canned(log=log), out, model_id="m", state=SimulatedState())
    assert log == [1, 2, 3, 4, 5]
    assert out.read_bytes() == reference


def test_finished_file_is_left_alone_and_overwrite_starts_over(questions, reference, tmp_path):
    out = tmp_path / "answers.jsonl"
    out.write_bytes(reference)
    log = []
    run_answers(questions, canned(log=log), out, model_id="m", state=SimulatedState())
    assert log == []
    run_answers(questions, canned(log=log), out, model_id="m", overwrite=True, state=SimulatedState())
    assert log == [q.question_id for q in questions] and out.read_bytes() == reference


def test_answer_writer_writes_whole_lines(tmp_path):
    with AnswerWriter(tmp_path / "sub" / "a.jsonl") as writer:  # folders are created (the original crashed)
        writer.write({"question_id": "é", "text": ""})
    assert (tmp_path / "sub" / "a.jsonl").read_text(encoding="utf-8") == '{"question_id": "é", "text": ""}\n'


# ------------------------------------------------------------------------------------------- shard and merge
@pytest.mark.parametrize("items, world", [(6, 1), (6, 4), (100, 8), (2, 5), (0, 3)])
def test_shard_bounds_cover_everything_once_and_balanced(items, world):
    bounds = [shard_bounds(items, world, rank) for rank in range(world)]
    assert [i for start, end in bounds for i in range(start, end)] == list(range(items))
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="process_index"):
        shard_bounds(items, world, world)


@pytest.mark.parametrize("world", [2, 4])
def test_simulated_data_parallel_run_merges_in_question_order(questions, reference, tmp_path, world):
    out = tmp_path / "answers.jsonl"
    for rank in range(world):
        generate_answers(questions, canned(), out, model_id="m", process_index=rank, num_processes=world)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"answers.jsonl.rank{r}" for r in range(world)]
    merge_answers(questions, out)
    assert out.read_bytes() == reference
    assert [p.name for p in tmp_path.iterdir()] == ["answers.jsonl"]  # shards removed


def test_killed_shard_resumes_even_with_another_world_size(questions, reference, tmp_path):
    out = tmp_path / "answers.jsonl"
    generate_answers(questions, canned(), out, model_id="m", process_index=0, num_processes=3)  # ids 0, 1
    with pytest.raises(Killed):
        generate_answers(questions, canned(fail_after=1), out, model_id="m", process_index=1, num_processes=3)
    with pytest.raises(ValueError, match=r"3 of 6 questions have no answer .*\[3, 4, 5\]"):
        merge_answers(questions, out)
    log = []
    run_answers(questions, canned(log=log), out, model_id="m", state=SimulatedState(0, 1))  # resume with 1 process
    assert log == [3, 4, 5]
    assert out.read_bytes() == reference and [p.name for p in tmp_path.iterdir()] == ["answers.jsonl"]


def test_merge_after_a_kill_between_replace_and_shard_removal(questions, reference, tmp_path):
    out = tmp_path / "answers.jsonl"
    for rank in range(2):
        generate_answers(questions, canned(), out, model_id="m", process_index=rank, num_processes=2)
    out.write_bytes(reference)  # the merged file exists, the shards still too: identical duplicates
    merge_answers(questions, out)
    assert out.read_bytes() == reference and [p.name for p in tmp_path.iterdir()] == ["answers.jsonl"]


# --------------------------------------------------------------------------------------------- bad answer files
def test_resume_refuses_other_models_benchmarks_and_corrupt_files(questions, reference, tmp_path):
    out = tmp_path / "answers.jsonl"
    out.write_bytes(reference)
    with pytest.raises(ValueError, match="answers of model 'm', not 'other'.*--overwrite"):
        run_answers(questions, canned(), out, model_id="other", state=SimulatedState())
    out.write_text('{"question_id": 77, "text": "[]"}\n')
    with pytest.raises(ValueError, match="question_id 77, which is not in the question file"):
        generate_answers(questions, canned(), out, model_id="m")
    out.write_text('{"question_id": 0, "text": "[]", "model_id": "m"}\n{broken\n{"question_id": 1, "text": ""}\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        generate_answers(questions, canned(), out, model_id="m")
    out.write_text('{"question_id": 0, "text": "a", "model_id": "m"}\n')
    (tmp_path / "answers.jsonl.rank1").write_text('{"question_id": 0, "text": "b", "model_id": "m"}\n')
    with pytest.raises(ValueError, match="question_id 0 has two different answers"):
        generate_answers(questions, canned(), out, model_id="m")


def test_duplicate_question_ids_and_wrong_answer_counts_are_refused(questions, tmp_path):
    twice = [*questions, questions[0]]
    with pytest.raises(ValueError, match="question_id 0 appears twice"):
        generate_answers(twice, canned(), tmp_path / "a.jsonl", model_id="m")
    with pytest.raises(ValueError, match="returned 0 answers for 1 questions"):
        generate_answers(questions, lambda batch: [], tmp_path / "b.jsonl", model_id="m")


def test_questions_about_one_image_are_batched_on_their_own(tmp_path):
    """Runs of one image (by file, or by content for decoded images) get batches of their own, in file order."""
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(first)
    Image.new("RGB", (4, 4), (4, 5, 6)).save(second)
    decoded = [Image.open(first).convert("RGB"), Image.open(first).convert("RGB")]  # equal content, two objects
    images = [second, first, tmp_path / "." / "a.png", first, second, decoded[0], decoded[1], second]
    questions = [Where2PlaceQuestion(index, image, None, "q") for index, image in enumerate(images)]
    batches = [[q.question_id for q in batch] for batch in image_batches(questions, 2)]
    assert batches == [[0], [1, 2], [3], [4], [5, 6], [7]]
    assert [[q.question_id for q in b] for b in image_batches(questions, 8)] == [[0], [1, 2, 3], [4], [5, 6], [7]]
    assert [len(b) for b in image_batches(questions[:1] + questions[4:5] + questions[7:], 2)] == [2, 1]
    # generate_answers asks in those batches, and writes the answers in file order.
    calls = []
    answer_fn = canned()
    written = generate_answers(
        questions,
        lambda batch: calls.append([q.question_id for q in batch]) or answer_fn(batch),
        tmp_path / "a.jsonl",
        model_id="m",
        batch_size=2,
    )
    assert written == 8 and calls == batches
    assert [r["question_id"] for r in read_answer_lines(tmp_path / "a.jsonl")] == list(range(8))


# ------------------------------------------------------------------------------------------- through the pipeline
def test_tiny_random_model_through_the_pipeline_writes_a_scorable_file(tmp_path):
    questions = load_questions(REAL)
    out = tmp_path / "answers.jsonl"
    answer_fn = pipeline_answer_fn(make_pipe(), batch_size=2, max_new_tokens=6)
    records = run_answers(questions, answer_fn, out, model_id="tiny", batch_size=2, state=SimulatedState())
    assert [r["question_id"] for r in records] == [42, 99, 44]
    for record, question in zip(records, questions, strict=True):
        assert set(record) == set(ANSWER_FIELDS)
        assert record["prompt"] == question.text and record["category"] is None and record["model_id"] == "tiny"
    results = score_answer_files([out], REAL, protocols=["strict", "original"])[0]
    assert results["strict"].num_questions == 3
    assert all(0 <= s <= 1 for s in results["strict"].per_question)


def test_pointing_model_answers_score_as_computed_by_hand(tmp_path):
    questions = load_questions(REAL)
    out = tmp_path / "answers.jsonl"
    model, processor = pointing_model(POINT)
    pipe = make_pipe(model, processor)
    run_answers(questions, pipeline_answer_fn(pipe, max_new_tokens=12), out, model_id="p", state=SimulatedState())
    assert [r["text"] for r in read_answer_lines(out)] == [POINT] * 3
    expected = []
    for question in questions:
        mask = np.asarray(Image.open(question.mask))
        height, width = mask.shape
        expected.append(float(mask[math.floor(0.7 * height), math.floor(0.25 * width)] >= 128))
    strict = score_answer_file(out, REAL, protocol="strict")
    assert strict.per_question == expected
    original = score_answer_file(out, REAL, protocol="original")  # "(0.25, .7)" holds no original tuple
    assert original.per_question == [0.0, 0.0, 0.0] and original.num_empty == 3


# ---------------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def two_answer_files(tmp_path_factory):
    """A good file and one whose second answer is unreadable, for the three real questions."""
    folder = tmp_path_factory.mktemp("answers")
    good, bad = folder / "good.jsonl", folder / "bad.jsonl"
    texts = {"good": ["[(0.5, 0.8), (0.6, 0.85)]"] * 3, "bad": ["[(0.1, 0.1)]", "no idea", "[(0.5, 0.5, 0.7, 0.9)]"]}
    for path, name in ((good, "good"), (bad, "bad")):
        lines = [
            {"question_id": qid, "prompt": "", "text": text, "answer_id": "x", "model_id": name, "category": None}
            for qid, text in zip([42, 99, 44], texts[name], strict=True)
        ]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return good, bad


def test_cli_scores_existing_files_with_table_json_and_pictures(two_answer_files, tmp_path, capsys):
    good, bad = two_answer_files
    scores, pictures = tmp_path / "scores.json", tmp_path / "plots"
    argv = ["eval", "score", "--answers", str(good), str(bad), "--data-dir", str(REAL)]
    argv += ["--protocols", "strict", "original", "micro", "--save-scores", str(scores), "--visualize", str(pictures)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    saved = json.loads(scores.read_text())
    for label, path in (("good", good), ("bad", bad)):
        for protocol in ("strict", "original", "micro"):
            expected = score_answer_file(path, REAL, protocol=protocol)
            assert saved[label][protocol]["per_question"] == expected.per_question
        line = next(row for row in out.splitlines() if row.startswith(label))
        assert f"{100 * saved[label]['strict']['accuracy']:.2f}" in line
    # "no idea": unreadable (0) under strict, an empty answer (0) under the original's grammar
    assert saved["bad"]["strict"]["num_failed"] == 1 and saved["bad"]["original"]["num_empty"] == 1
    assert sorted(p.name for p in pictures.iterdir()) == ["000_42.png", "001_99.png", "002_44.png", "summary.png"]
    with Image.open(pictures / "001_99.png") as picture:
        assert picture.size == (816, 528)  # 10.2 x 6.6 in at 80 dpi


def test_category_mean_without_categories_is_skipped_and_the_rest_printed(two_answer_files, tmp_path, capsys):
    good, _ = two_answer_files
    scores = tmp_path / "scores.json"
    argv = ["eval", "score", "--answers", str(good), "--data-dir", str(REAL), "--save-scores", str(scores)]
    assert main([*argv, "--protocols", "strict", "category_mean", "original"]) == 0
    printed = capsys.readouterr()
    assert printed.err == "robopoint eval: skipping category_mean: 3 of 3 questions have no category\n"
    saved = json.loads(scores.read_text())["good"]
    assert "category_mean" not in saved
    assert saved["strict"]["per_question"] == score_answer_file(good, REAL, protocol="strict").per_question
    assert saved["original"]["per_question"] == score_answer_file(good, REAL, protocol="original").per_question
    assert main([*argv, "--protocols", "category_mean"]) == 2  # nothing left to score: an error, not an empty table
    assert "category_mean needs a category per question" in capsys.readouterr().err


def test_cli_answers_a_subset_then_resumes_to_all(tmp_path, capsys):
    """--question-ids / --limit answer a subset; the same command without them completes the file."""
    from test_pipeline_robopoint import TWO_POINTS, TWO_POINTS_PROBS, pointing_model

    model, processor = pointing_model(TWO_POINTS, TWO_POINTS_PROBS)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    out = tmp_path / "answers.jsonl"
    argv = ["eval", "run", "--model", str(tmp_path / "model"), "--data-dir", str(REAL), "--output", str(out)]
    argv += ["--max-new-tokens", "20"]
    assert main([*argv, "--question-ids", "44,42"]) == 0
    assert [json.loads(line)["question_id"] for line in out.read_text().splitlines()] == [42, 44]
    assert main([*argv, "--limit", "1"]) == 2  # the file holds answers outside the subset: named, not dropped
    assert "44" in capsys.readouterr().err
    assert main(argv) == 0
    assert [json.loads(line)["question_id"] for line in out.read_text().splitlines()] == [42, 99, 44]
    assert main([*argv, "--question-ids", "7"]) == 2
    assert "--question-ids: 7 not in" in capsys.readouterr().err


def test_cli_answers_with_a_saved_model_then_scores(tmp_path, capsys):
    model, processor = pointing_model(POINT)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    out = tmp_path / "answers.jsonl"
    argv = ["eval", "where2place", "--model", str(tmp_path / "model"), "--data-dir", str(REAL), "--output", str(out)]
    argv += ["--max-new-tokens", "12", "--prompt-template", "llava_v1", "--batch-size", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"answers: {out} (3 questions, model_id 'model')" in printed and "strict" in printed
    assert [r["text"] for r in read_answer_lines(out)] == [POINT] * 3


def _copy_real(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(REAL, data)
    return data


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "masks" / "01.jpg").unlink(), r"question 99 \(line 2\): mask .*01.jpg is missing"),
        (lambda d: (d / "images" / "44.jpg").unlink(), r"question 44 \(line 3\): image .*44.jpg is missing"),
        (
            lambda d: Image.open(d / "masks" / "00.jpg").convert("RGB").save(d / "masks" / "00.jpg"),
            "question 42.*mode 'RGB', expected a single-channel",
        ),
    ],
)
def test_cli_names_the_broken_item(two_answer_files, tmp_path, capsys, damage, message):
    data = _copy_real(tmp_path)
    damage(data)
    assert main(["eval", "score", "--answers", str(two_answer_files[0]), "--data-dir", str(data)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("robopoint eval score: error:")
    assert re.search(message, error), error


def test_cli_refuses_answer_files_that_do_not_match(two_answer_files, tmp_path, capsys):
    short = tmp_path / "short.jsonl"
    short.write_text("".join(two_answer_files[0].read_text().splitlines(keepends=True)[:2]))
    assert main(["eval", "score", "--answers", str(short), "--data-dir", str(REAL)]) == 2
    error = capsys.readouterr().err
    assert "short.jsonl: answers do not match questions: 2 answers for 3 questions; missing question_ids [44]" in error
    assert main(["eval", "score", "--answers", str(short), "--labels", "a", "b", "--data-dir", str(REAL)]) == 2
    assert main(["eval"]) == 2


# ---------------------------------------------------------------------------------------------------- pictures
def test_unreadable_answer_keeps_its_colour_and_legend_entry():
    from matplotlib import colormaps

    image = Image.new("RGB", (64, 48))
    mask = np.zeros((48, 64), np.uint8)
    answers = [("a", "no idea", 0.0), ("b", "[(0.5, 0.5)]", 1.0), ("c", None, None)]
    figure = plot_question(image, mask, answers, title="t", score_name="strict")
    legend = figure.axes[0].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == [
        "Ground Truth",
        "a\nstrict: 0.00 (unreadable answer)",
        "b\nstrict: 1.00 (1 points)",
        "c\nstrict: skipped (no answer)",
    ]
    set1 = colormaps["Set1"]
    assert [tuple(h.get_color()) for h in legend.legend_handles[1:]] == [set1(1), set1(2), set1(3)]
    assert question_title("<image>\nPoint to the mug. Your answer should be ...") == "Point to the mug."
