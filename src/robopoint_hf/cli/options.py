"""The command line's option vocabulary: option groups as dataclasses, and argparse built from them.

Every verb declares its options as dataclass fields with HF-style metadata (``field(metadata={"help": ...,
"choices": ...})``); verbs that share a meaning share the dataclass, so they share the spelling. The helper
follows `transformers.HfArgumentParser`'s rules (``--a-b`` and ``--a_b`` both accepted, a bool field is a flag
with ``--no-a-b``, ``choices`` from the metadata) without importing transformers, which would cost a second on
every ``--help`` (docs/design/cli.md). Old spellings stay for one release as hidden aliases that print a
one-line deprecation naming the new flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field

from robopoint_hf.dtypes import DTYPE_CHOICES

__all__ = [
    "DeprecatedAlias",
    "GenerationOptions",
    "ModelLoadingOptions",
    "OutputDirOptions",
    "add_dataclass_arguments",
    "add_output_dir_arguments",
    "output_dir",
    "positive_int",
]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


@dataclass
class ModelLoadingOptions:
    """How a verb that loads a model loads it (predict, eval run, demo); TRL ``ModelConfig``'s names."""

    model: str | None = field(default=None, metadata={"help": "RoboPoint model folder or Hub id"})
    device: str | None = field(
        default=None,
        metadata={"help": "where to run (default: cuda if available, else cpu)", "choices": ("cpu", "cuda", "mps")},
    )
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "weight dtype (default: float32 on cpu, bfloat16 on cuda, float16 on mps)",
            "choices": DTYPE_CHOICES,
        },
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={"help": "quantize the language model(s) to 4-bit NF4", "deprecated": ("--load-4bit",)},
    )
    load_in_8bit: bool = field(
        default=False,
        metadata={"help": "quantize the language model(s) to 8-bit (LLM.int8)", "deprecated": ("--load-8bit",)},
    )


@dataclass
class OutputDirOptions:
    """Where a verb that writes a folder writes it."""

    output_dir: str | None = field(
        default=None, metadata={"help": "output folder (must not exist or be empty, unless --overwrite)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace the output if it exists and is not empty"})


@dataclass
class GenerationOptions:
    """How a verb that asks a model asks it (predict, eval run)."""

    max_new_tokens: int | None = field(
        default=None, metadata={"help": "longest answer in tokens (default: the model's generation config)"}
    )
    format_instruction: bool = field(
        default=True,
        metadata={
            "help": "append RoboPoint's answer-format sentence to the instruction (Python: answer_format=)",
            "deprecated_negative": ("--no-answer-format",),
        },
    )
    constrained: bool = field(
        default=True,
        metadata={"help": "decode in RoboPoint's answer language, ending at ']' (needs outlines-core)"},
    )


def _flags(name: str) -> list[str]:
    dashed = "--" + name.replace("_", "-")
    return [dashed] if "_" not in name else [dashed, "--" + name]


class DeprecatedAlias(argparse.Action):
    """An old spelling: prints one line naming the new flag, then acts as the new flag."""

    def __init__(self, option_strings, dest, new_flag: str, value=None, takes_value: bool = False, **kwargs):
        super().__init__(option_strings, dest, nargs=None if takes_value else 0, **kwargs)
        self.new_flag, self.value, self.takes_value = new_flag, value, takes_value

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"FutureWarning: {option_string} is deprecated and will be removed in the next release; "
            f"use {self.new_flag}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values if self.takes_value else self.value)


def _base_type(annotation) -> type:
    hints = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return next((hint for hint in hints if hint is not type(None)), str)


_PASSTHROUGH = ("action", "type", "nargs", "metavar", "required")
"""Metadata keys handed to ``add_argument`` as they are (as ``HfArgumentParser`` does with a field's metadata)."""


def _field_default(spec: dataclasses.Field):
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return dataclasses.MISSING


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    options: type,
    *,
    defaults: dict | None = None,
    helps: dict | None = None,
    exclude: tuple[str, ...] = (),
    deprecated: dict[str, tuple[str, ...]] | None = None,
) -> None:
    """Adds one option per field of the dataclass ``options`` (``HfArgumentParser``'s rules, see the module doc).

    A field without default is required, a ``list[X]`` field takes ``nargs="+"`` values of type ``X``, metadata
    ``aliases`` are further spellings, and the argparse keys ``action``, ``type``, ``nargs``, ``metavar`` and
    ``required`` in the metadata are passed to ``add_argument`` as they are (e.g. ``action="store_true"`` for a flag
    without ``--no-`` form, ``type=`` for a parser of a structured value). ``defaults`` and ``helps`` override a
    field's default and help for this verb (e.g. a default that differs by verb, documented in the README's
    Options table); ``exclude`` leaves fields out; ``deprecated`` adds this verb's old spellings of a field (hidden,
    with a one-line deprecation).
    """
    hints = typing.get_type_hints(options)
    defaults, helps = defaults or {}, helps or {}
    for spec in dataclasses.fields(options):
        if spec.name in exclude:
            continue
        meta = spec.metadata
        default = defaults.get(spec.name, _field_default(spec))
        text = helps.get(spec.name, meta.get("help", ""))
        kind = _base_type(hints[spec.name])
        spellings = _flags(spec.name)
        flags = [spellings[0], *meta.get("aliases", ())]
        passthrough = {key: meta[key] for key in _PASSTHROUGH if key in meta}
        if kind is bool and "action" not in passthrough:
            parser.add_argument(
                *spellings, *flags[1:], action=argparse.BooleanOptionalAction, default=default, help=text
            )
            for old in meta.get("deprecated_negative", ()):
                parser.add_argument(
                    old, dest=spec.name, action=DeprecatedAlias, new_flag=f"--no-{spec.name.replace('_', '-')}",
                    value=False, help=argparse.SUPPRESS,
                )  # fmt: skip
        else:
            kwargs: dict = {"help": text}
            if default is dataclasses.MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = default
            if meta.get("choices") is not None:
                kwargs["choices"] = meta["choices"]
            if "action" not in passthrough and "type" not in passthrough:
                if typing.get_origin(kind) is list:
                    kind = typing.get_args(kind)[0]
                    kwargs["nargs"] = "+"
                kwargs["type"] = positive_int if kind is int and spec.name.startswith("max_") else kind
            kwargs.update(passthrough)
            parser.add_argument(*flags, dest=spec.name, **kwargs)
            if len(spellings) > 1 and not kwargs.get("required"):
                # The underscore spelling is accepted but not shown, so that help and errors name the flag once.
                parser.add_argument(spellings[1], dest=spec.name, **{**kwargs, "help": argparse.SUPPRESS})
        for old in (*meta.get("deprecated", ()), *(deprecated or {}).get(spec.name, ())):
            parser.add_argument(
                old, dest=spec.name, action=DeprecatedAlias, new_flag=flags[0], value=True,
                takes_value=kind is not bool, help=argparse.SUPPRESS,
            )  # fmt: skip


def add_output_dir_arguments(parser: argparse.ArgumentParser, what: str = "output folder", **kwargs) -> None:
    """``--output-dir DIR --overwrite``: the options of every verb that writes a folder."""
    add_dataclass_arguments(
        parser,
        OutputDirOptions,
        helps={"output_dir": f"{what} (must not exist or be empty, unless --overwrite)"},
        **kwargs,
    )
    parser.add_argument("legacy_output_dir", nargs="?", help=argparse.SUPPRESS)


def output_dir(args: argparse.Namespace) -> str:
    """``--output-dir``, or the positional folder of the previous release (with a one-line deprecation)."""
    from .errors import UsageError

    legacy = getattr(args, "legacy_output_dir", None)
    if legacy is not None:
        if args.output_dir is not None:
            raise UsageError(f"two output folders: --output-dir {args.output_dir} and {legacy}; give --output-dir")
        print(
            "FutureWarning: the output folder as a positional argument is deprecated and will be removed in the "
            "next release; use --output-dir",
            file=sys.stderr,
        )
        return legacy
    if args.output_dir is None:
        raise UsageError("the following arguments are required: --output-dir")
    return args.output_dir
