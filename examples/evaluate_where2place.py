"""Evaluate a RoboPoint model on Where2Place (or any benchmark in its layout): answer, score, draw.

The same flow as ``robopoint eval where2place``, in a few library calls. Rerunning resumes; under
``accelerate launch`` the questions are sharded over the processes and merged by the main one.

    python examples/evaluate_where2place.py --model ./robopoint-13b --data-dir where2place --output answers.jsonl
    accelerate launch --num_processes 2 examples/evaluate_where2place.py --model ./robopoint-13b \\
        --data-dir where2place --output answers.jsonl

Compare with other models' answer files: ``robopoint eval score --answers answers.jsonl other.jsonl --data-dir ...``.
"""

from __future__ import annotations

import argparse

from accelerate import PartialState
from transformers import pipeline

import robopoint_hf  # noqa: F401  (registers pipeline("robopoint") with transformers)
from robopoint_hf.evaluation.plots import save_summary_chart
from robopoint_hf.evaluation.runner import format_score_table, pipeline_answer_fn, run_answers
from robopoint_hf.evaluation.where2place import load_questions, score_answer_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="RoboPoint model folder or Hub id")
    parser.add_argument("--data-dir", required=True, help="Where2Place folder: point_questions.jsonl, images/, masks/")
    parser.add_argument("--output", default="answers.jsonl", help="answer file (resumed if it exists)")
    args = parser.parse_args()

    ################
    # Answer (greedy; resumable; one shard per process)
    ################
    state = PartialState()
    pipe = pipeline("robopoint", model=args.model, device=state.device)
    questions = load_questions(args.data_dir)
    answer_fn = pipeline_answer_fn(pipe, batch_size=4, max_new_tokens=1024)
    records = run_answers(questions, answer_fn, args.output, model_id="robopoint", batch_size=4, state=state)

    ################
    # Score and draw (main process)
    ################
    if records is not None:
        protocols = ["strict", "original"]
        results = score_answer_files([args.output], args.data_dir, protocols=protocols, questions=questions)
        print(format_score_table(["robopoint"], results, protocols))
        save_summary_chart(["robopoint"], results, protocols, "where2place_summary.png")


if __name__ == "__main__":
    main()
