"""One vocabulary: the verbs that mean the same thing spell it the same, and old spellings still work for a release."""

from __future__ import annotations

import argparse
import typing

import pytest

from robopoint_hf.cli import main, make_parser

LOADING = {"--model", "--device", "--dtype", "--load-in-4bit", "--load-in-8bit"}
MODEL_LOADERS = ("predict", "eval where2place", "demo", "serve")
FOLDER_WRITERS = ("convert", "export", "merge-lora", "synth", "eval leaderboard")
GENERATORS = ("predict", "eval where2place")


def verb_options(path: str) -> set[str]:
    """Every visible option string of ``robopoint PATH`` (hidden deprecated aliases excluded)."""
    parser = make_parser()
    for word in path.split():
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return {
        flag for action in parser._actions if action.help is not argparse.SUPPRESS for flag in action.option_strings
    }


@pytest.mark.parametrize("verb", MODEL_LOADERS)
def test_every_model_loader_has_the_same_loading_options(verb):
    options = verb_options(verb)
    assert LOADING <= options, LOADING - options
    assert not {"--load-4bit", "--load-8bit", "--bits"} & options


@pytest.mark.parametrize("verb", FOLDER_WRITERS)
def test_every_folder_writer_has_output_dir_and_overwrite(verb):
    options = verb_options(verb)
    assert {"--output-dir", "--overwrite"} <= options
    assert not {"--out", "--output"} & options


@pytest.mark.parametrize("verb", GENERATORS)
def test_every_generator_spells_the_generation_options_alike(verb):
    assert {"--max-new-tokens", "--format-instruction", "--no-format-instruction", "--constrained"} <= verb_options(
        verb
    )


def test_training_uses_trl_model_config_names():
    from robopoint_hf.training.arguments import ModelArguments

    names = {f for f in typing.get_type_hints(ModelArguments)}
    assert {"load_in_4bit", "load_in_8bit", "lora_r", "lora_alpha", "lora_dropout", "dtype"} <= names
    with pytest.warns(FutureWarning, match="--load-in-4bit"):
        assert ModelArguments(model="m", lora=True, bits=4).load_in_4bit


def test_convert_targets_are_the_converters():
    from robopoint_hf.cli.convert import CONVERSION_TARGETS
    from robopoint_hf.original.checkpoint import TargetFormat

    assert CONVERSION_TARGETS == typing.get_args(TargetFormat)


def test_dtype_and_template_choices_come_from_the_library():
    from robopoint_hf.cli.options import DTYPE_CHOICES
    from robopoint_hf.inference.loading import DEFAULT_DTYPES
    from robopoint_hf.model.templates import TEMPLATE_NAMES

    assert set(DTYPE_CHOICES) == set(DEFAULT_DTYPES.values())
    parser = make_parser().parse_args(["convert", "s", "--output-dir", "o", "--prompt-template", TEMPLATE_NAMES[-1]])
    assert parser.prompt_template == TEMPLATE_NAMES[-1]


@pytest.mark.parametrize(
    "old, new, attribute, value",
    [
        (["--load-4bit"], "--load-in-4bit", "load_in_4bit", True),
        (["--no-answer-format"], "--no-format-instruction", "format_instruction", False),
        (["--save", "x.png"], "--output", "output", "x.png"),
    ],
)
def test_old_spellings_warn_in_one_line_and_still_work(old, new, attribute, value, capsys):
    args = make_parser().parse_args(["predict", "--image", "i.png", "--instruction", "x", *old])
    assert getattr(args, attribute) == value
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("FutureWarning: ") and old[0] in line and new in line


def test_both_spellings_of_a_multiword_option(capsys):
    dashed = make_parser().parse_args(["predict", "--image", "i", "--instruction", "x", "--max-new-tokens", "5"])
    underscored = make_parser().parse_args(["predict", "--image", "i", "--instruction", "x", "--max_new_tokens", "5"])
    assert dashed.max_new_tokens == underscored.max_new_tokens == 5


def test_positional_output_folder_is_deprecated_not_broken(capsys):
    from robopoint_hf.cli.options import output_dir

    args = make_parser().parse_args(["convert", "src", "out"])
    assert output_dir(args) == "out"
    assert "use --output-dir" in capsys.readouterr().err
    assert main(["merge-lora", "adapter"]) == 2
    assert (
        capsys.readouterr().err == "robopoint merge-lora: error: the following arguments are required: --output-dir\n"
    )


def test_quantization_flags_exclude_each_other(capsys):
    assert main(["predict", "--image", "i", "--instruction", "x", "--load-in-4bit", "--load-in-8bit"]) == 2
    assert "--load-in-4bit and --load-in-8bit exclude each other" in capsys.readouterr().err
