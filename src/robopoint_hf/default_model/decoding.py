"""Decoding RoboPoint answers: only answers that parse, and an end at the closing bracket.

Two pieces plug into :meth:`~transformers.GenerationMixin.generate` (``logits_processor=`` and
``stopping_criteria=``), so every decoding strategy of transformers (greedy, sampling, beams, batches) keeps working:

* `AnswerLogitsProcessor` masks every token that cannot continue a string of the answer language
  (:func:`~.points.answer_regex`, the same grammar `parse_points` reads). The regular expression is compiled once per
  tokenizer to a token-level automaton by ``outlines-core`` (optional dependency: ``pip install
  'robopoint_hf[constrained]'``); see ``docs/design/decoding.md`` for why that library.
* `AnswerEndCriteria` ends a row once the bracket that opened its answer is closed, with or without the mask: a
  runaway answer stops at ``]`` instead of at ``max_new_tokens``.

`answer_decoding_kwargs` builds both for one ``generate`` call.

This module imports only torch, transformers and its sibling ``.points``: ``pipeline_robopoint`` imports it
relatively, so it is copied next to the weights with the pipeline; ``outlines-core`` is imported only when a grammar
is compiled.
"""

from __future__ import annotations

import random
import re
import weakref
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation import GenerateDecoderOnlyOutput

from .points import answer_regex, format_points

CONSTRAINED_EXTRA = "pip install 'robopoint_hf[constrained]'"
"""How to install the grammar compiler (``outlines-core``) that constrained decoding needs."""

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")

LIKELY_BRANCHES: dict[frozenset[bytes], bytes] = {
    frozenset((b"0", b"1")): b"0",
    frozenset((b"(", b"]")): b"(",
    frozenset((b",", b"]")): b",",
}
"""The choices of the answer language that answers nearly always make one way, keyed by the next bytes the grammar
allows, and the way `AnswerGrammar.draft_tokens` guesses: a value is ``0.ddd`` (``1.000`` is only the image's far
edge), and a list goes on after ``[`` and after a tuple's ``)`` (it closes once per answer)."""


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-ins for bytes (``ByteLevel`` tokenizers spell tokens with them)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


def token_bytes(tokenizer) -> dict[int, bytes]:
    """The bytes every non-special token adds to the text, as the model writes them.

    SentencePiece-style vocabularies (Llama, Vicuna, the shipped tiny model) write a space as ``▁`` and bytes
    without a token as ``<0xNN>`` (byte fallback); ``ByteLevel`` vocabularies (GPT-2 style) spell every byte with a
    printable stand-in. Special tokens (BOS, EOS, padding, ``<image>``) spell nothing and are left out.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = backend is not None and '"ByteLevel"' in backend.to_str()
    alphabet = _byte_level_alphabet() if byte_level else {}
    special = set(tokenizer.all_special_ids)
    spelled = {}
    for token, index in tokenizer.get_vocab().items():
        if index in special:
            continue
        if byte_level:
            spelled[index] = bytes(alphabet[char] for char in token if char in alphabet)
        elif match := _BYTE_TOKEN.fullmatch(token):
            spelled[index] = bytes([int(match.group(1), 16)])
        else:
            spelled[index] = token.replace("▁", " ").encode("utf-8")
    return spelled


class AnswerGrammar:
    """The answer language compiled for one tokenizer: a token-level automaton and a vocabulary mask per state.

    Build with `AnswerGrammar.for_tokenizer`, which caches one compiled grammar per tokenizer and options (compiling
    takes ~30 ms for a 32000-token vocabulary; each state's mask is built once, on first use).

    Args:
        tokenizer: the checkpoint's tokenizer (a fast tokenizer).
        regex (`str`): the language, normally :func:`~.points.answer_regex`.
        vocab_size (`int`, *optional*): width of the model's logits, which may exceed the tokenizer's vocabulary;
            the extra ids are never allowed.
        examples (`Sequence[str]`, *optional*): answers in the language; jump-forward drafts the tokens the tokenizer
            writes them with (`draft_tokens`), which are what a model trained on such answers writes.
            `for_tokenizer` passes answers of `format_points`.
    """

    def __init__(self, tokenizer, regex: str, vocab_size: int | None = None, examples: Sequence[str] = ()):
        try:
            from outlines_core import Index, Vocabulary
        except ImportError as error:
            raise ImportError(
                f"Constrained decoding needs outlines-core: {CONSTRAINED_EXTRA} (or decode with constrained=False)."
            ) from error
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("Constrained decoding needs a tokenizer with an EOS token (it ends every answer).")
        by_bytes: dict[bytes, list[int]] = {}
        for index, spelled in token_bytes(tokenizer).items():
            if spelled:
                by_bytes.setdefault(spelled, []).append(index)
        self.regex = regex
        self.eos_token_id = eos
        self.vocab_size = vocab_size or len(tokenizer)
        self._index = Index(regex, Vocabulary(eos, by_bytes))
        self.initial_state = self._index.get_initial_state()
        self._masks: dict[int, torch.Tensor] = {}
        self._blocked: dict[int | None, torch.Tensor] = {None: torch.zeros(self.vocab_size, dtype=torch.bool)}
        self._spelled = {index: spelled for spelled, ids in by_bytes.items() for index in ids}
        vocab = tokenizer.get_vocab()
        self._byte_fallback = {vocab[token] for token in vocab if _BYTE_TOKEN.fullmatch(token)}
        self._one_byte = {}
        for spelled, ids in by_bytes.items():
            if len(spelled) == 1:
                self._one_byte[spelled[0]] = min(ids, key=lambda index: (index in self._byte_fallback, index))
        self._forced_texts: dict[int, bytes] = {}
        self._drafts: dict[int, tuple[int, ...]] = {}
        self._usual_next = self._tabulate_next_tokens(tokenizer, examples)

    def _tabulate_next_tokens(self, tokenizer, examples: Sequence[str]) -> dict[int, tuple[int, ...]]:
        """For each state the ``examples`` pass through, the tokens they continue with there, most frequent first."""
        seen: dict[int, Counter] = {}
        for answer in examples:
            state = self.initial_state
            for token in tokenizer(answer, add_special_tokens=False).input_ids:
                following = self.next_state(state, token)
                if following is None:
                    break
                seen.setdefault(state, Counter())[token] += 1
                state = following
        return {state: tuple(token for token, _ in counts.most_common()) for state, counts in seen.items()}

    @classmethod
    def for_tokenizer(
        cls,
        tokenizer,
        *,
        max_points: int | None = None,
        decimals: int = 3,
        tuple_size: int = 2,
        vocab_size: int | None = None,
    ) -> AnswerGrammar:
        """The (cached) grammar of :func:`~.points.answer_regex` with these options, for this tokenizer."""
        regex = answer_regex(max_points, decimals=decimals, tuple_size=tuple_size)
        compiled = _GRAMMARS.setdefault(tokenizer, {})
        key = (regex, vocab_size or len(tokenizer))
        if key not in compiled:
            examples = _example_answers(max_points, decimals, tuple_size)
            compiled[key] = cls(tokenizer, regex, vocab_size, examples)
        return compiled[key]

    def next_state(self, state: int, token: int) -> int | None:
        """The state after ``token``, or None when the grammar does not allow it there."""
        if token == self.eos_token_id:
            return None
        return self._index.get_next_state(state, token)

    def is_final(self, state: int) -> bool:
        """Whether the text so far is a complete answer."""
        return self._index.is_final_state(state)

    def mask(self, state: int) -> torch.Tensor:
        """Boolean ``[vocab_size]`` tensor: True for the tokens allowed in ``state`` (EOS only in a final state)."""
        mask = self._masks.get(state)
        if mask is None:
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            allowed = [token for token in self._index.get_allowed_tokens(state) if token < self.vocab_size]
            mask[torch.tensor(allowed, dtype=torch.long)] = True
            self._masks[state] = mask
        return mask

    def draft_tokens(self, state: int) -> tuple[int, ...]:
        """Tokens of the text the answer most likely writes next from ``state``: the `forced_text`, continued
        through the `LIKELY_BRANCHES`.

        After a y value the draft is ``), (0.`` (another point, its x below 1), where the forced text is only ``)``.
        The walk stops at a free digit or a choice outside `LIKELY_BRANCHES`; the text is cut into the tokens the
        grammar's examples write there (elsewhere the longest allowed ones), and cut short where the usual token
        would write more than the text. `jump_forward_generate` checks every drafted token against the model's own
        choice, so a wrong guess (the last point's ``)]``, a ``1.000``) costs only the drafted positions of one
        forward. Cached per state.
        """
        draft = self._drafts.get(state)
        if draft is None:
            draft = self._drafts[state] = self._tokens_for(state, self._walk_text(state, likely=True))
        return draft

    def spelling(self, tokens) -> bytes:
        """The text ``tokens`` write (special tokens write nothing)."""
        return b"".join(self._spelled.get(token, b"") for token in tokens)

    def _allowed_spellings(self, state: int) -> list[tuple[int, bytes]]:
        return [
            (token, self._spelled[token]) for token in self._index.get_allowed_tokens(state) if token in self._spelled
        ]

    def forced_text(self, state: int) -> bytes:
        """The text every answer writes next from ``state``, found byte by byte while every allowed token starts
        with the same byte and the answer cannot end there (``.`` after ``0``, ``", "`` after a value); cached per
        state."""
        cached = self._forced_texts.get(state)
        if cached is None:
            cached = self._forced_texts[state] = self._walk_text(state, likely=False)
        return cached

    def _walk_text(self, state: int, likely: bool) -> bytes:
        """The bytes every answer writes next from ``state``; with ``likely``, through `LIKELY_BRANCHES` too."""
        text = b""
        while not self.is_final(state):
            first_bytes = frozenset(spelled[:1] for _, spelled in self._allowed_spellings(state))
            if len(first_bytes) == 1:
                (byte,) = first_bytes
            elif likely and first_bytes in LIKELY_BRANCHES:
                byte = LIKELY_BRANCHES[first_bytes]
            else:
                break
            token = self._one_byte.get(byte[0])
            following = None if token is None else self._index.get_next_state(state, token)
            if following is None:
                break
            text, state = text + byte, following
        return text

    def _tokens_for(self, state: int, text: bytes) -> tuple[int, ...]:
        """``text`` cut into the tokens a model most likely writes it with: where the examples went through ``state``,
        the token they wrote there most often, while it spells a prefix of the rest; elsewhere the longest allowed
        token (a vocabulary token before a byte-fallback one), stopping where an allowed token would write the rest and
        more (`),` where `)` is forced)."""
        tokens, start = [], 0
        while start < len(text):
            if usual := self._usual_next.get(state):
                token = usual[0]
                if not text.startswith(self._spelled[token], start):
                    break
            else:
                allowed = self._allowed_spellings(state)
                rest = text[start:]
                if any(len(spelled) > len(rest) and spelled.startswith(rest) for _, spelled in allowed):
                    break
                fitting = [
                    (len(spelled), token not in self._byte_fallback, -token)
                    for token, spelled in allowed
                    if text.startswith(spelled, start)
                ]
                if not fitting:
                    break
                token = -max(fitting)[2]
            tokens.append(token)
            start += len(self._spelled[token])
            state = self._index.get_next_state(state, token)
        return tuple(tokens)

    def repeating_tokens(self, state: int, text: bytes) -> list[int]:
        """Tokens allowed in ``state`` after which the grammar can only close a tuple that ``text`` already holds.

        The open tuple is extended by each candidate token and the text the grammar then forces (the ``.000`` after
        a ``1``, the closing ``)``); a candidate is repeating when that closes the tuple as an earlier one. Nothing
        is reported when every allowed token repeats (the row would have no way on; it keeps the repetition).
        """
        start = text.rfind(b"(")
        if start < 0 or text.rfind(b")") > start:
            return []
        earlier = set(re.findall(rb"\([^()]*\)", text[:start]))
        if not earlier:
            return []
        current, allowed, repeating = text[start:], self._allowed_spellings(state), []
        for token, spelled in allowed:
            following = self._index.get_next_state(state, token)
            if following is None:
                continue
            written = current + spelled + self.forced_text(following)
            close = written.find(b")")
            if close >= 0 and written[: close + 1] in earlier:
                repeating.append(token)
        return [] if len(repeating) == len(allowed) else repeating

    def blocked(self, state: int | None) -> torch.Tensor:
        """``~mask(state)``, cached; for None (a row no longer constrained) nothing is blocked."""
        blocked = self._blocked.get(state)
        if blocked is None:
            blocked = self._blocked[state] = ~self.mask(state)
        return blocked


_GRAMMARS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _example_answers(max_points: int | None, decimals: int, tuple_size: int, count: int = 24) -> list[str]:
    """Answers of `format_points` in the language of ``answer_regex(max_points, decimals, tuple_size)``: 0 to
    ``max_points`` (at most 32; 8 when unlimited, where the automaton loops) tuples, one value in ten 0 or 1."""
    rng, most = random.Random(0), min(max_points or 8, 32)

    def value() -> float:
        return rng.choice((0.0, 1.0)) if rng.random() < 0.1 else rng.random()

    sizes = [most, *(rng.randint(0, most) for _ in range(count - 1))]
    return [
        format_points([tuple(value() for _ in range(tuple_size)) for _ in range(size)], decimals) for size in sizes
    ]


class AnswerLogitsProcessor(LogitsProcessor):
    r"""Allows only tokens that keep each row's generated text a prefix of the answer language.

    The state of a row is found from its generated tokens (memoized by token prefix), not from a per-row counter,
    so beam search (rows reorder every step), finished rows (padded by ``generate``) and batches all work. A row
    whose tokens left the grammar (only after it finished: EOS or padding) is no longer constrained.

    Args:
        grammar (`AnswerGrammar`): the compiled answer language.
        prompt_length (`int`): width of the ``input_ids`` given to ``generate``; tokens after it are the answer.
        keep_unmasked_scores (`bool`, *optional*, defaults to `False`): keep every step's scores as they were before
            the mask in `unmasked_scores`, so a token's confidence can be read under the model's own distribution
            (the mask renormalizes over the allowed tokens, which would inflate it).
        distinct_points (`bool`, *optional*, defaults to `False`): also block the tokens that would close a tuple
            equal to an earlier one of the row (`AnswerGrammar.repeating_tokens`). "No tuple twice" is not a regular
            property of the answer, so it is checked on each row's text rather than compiled into the automaton.

    Example:

    ```python
    >>> grammar = AnswerGrammar.for_tokenizer(processor.tokenizer, max_points=3)
    >>> ids = model.generate(**inputs, logits_processor=[AnswerLogitsProcessor(grammar, inputs["input_ids"].shape[1])])
    ```
    """

    def __init__(
        self,
        grammar: AnswerGrammar,
        prompt_length: int,
        keep_unmasked_scores: bool = False,
        distinct_points: bool = False,
    ):
        self.grammar = grammar
        self.prompt_length = prompt_length
        self.unmasked_scores: list[torch.Tensor] | None = [] if keep_unmasked_scores else None
        self.distinct_points = distinct_points
        self._states: dict[tuple[int, ...], int | None] = {(): grammar.initial_state}

    def state(self, tokens: tuple[int, ...]) -> int | None:
        """Automaton state after the generated ``tokens`` (None: they left the grammar)."""
        known = len(tokens)
        while tokens[:known] not in self._states:
            known -= 1
        state = self._states[tokens[:known]]
        for end in range(known + 1, len(tokens) + 1):
            if state is not None:
                state = self.grammar.next_state(state, tokens[end - 1])
            self._states[tokens[:end]] = state
        return state

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.unmasked_scores is not None:
            # Indexed by answer position: a decoding loop that checks drafted tokens scores a position again once
            # its earlier tokens changed; the later call is the one that counts.
            del self.unmasked_scores[input_ids.shape[1] - self.prompt_length :]
            self.unmasked_scores.append(scores)
        generated = [tuple(tokens) for tokens in input_ids[:, self.prompt_length :].tolist()]
        states = [self.state(tokens) for tokens in generated]
        blocked = [self.grammar.blocked(state) for state in states]
        if self.distinct_points:
            for row, (tokens, state) in enumerate(zip(generated, states, strict=True)):
                if state is not None and (
                    repeating := self.grammar.repeating_tokens(state, self.grammar.spelling(tokens))
                ):
                    blocked[row] = blocked[row].clone()
                    blocked[row][torch.tensor(repeating, dtype=torch.long)] = True
        blocked = blocked[0].unsqueeze(0) if len(blocked) == 1 else torch.stack(blocked)
        if scores.shape[1] != self.grammar.vocab_size:  # logits wider than the grammar's vocabulary: block the rest
            extra = scores.shape[1] - self.grammar.vocab_size
            blocked = (
                torch.cat([blocked, blocked.new_ones(len(generated), extra)], 1)
                if extra > 0
                else blocked[:, : scores.shape[1]]
            )
        return scores.masked_fill(blocked.to(scores.device), -float("inf"))


class AnswerEndCriteria(StoppingCriteria):
    """Ends a row when the bracket that opened its answer is closed (``[...]`` balanced after the first ``[``).

    Works on token spellings, so it needs no decoding per step: each token's counts of ``[`` and ``]`` are tabled
    once per tokenizer and the running depth of every row is one cumulative sum.

    Args:
        tokenizer: the checkpoint's tokenizer.
        prompt_length (`int`): width of the ``input_ids`` given to ``generate``.
    """

    def __init__(self, tokenizer, prompt_length: int):
        self.prompt_length = prompt_length
        self.opens, self.closes = _bracket_tables(tokenizer)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        generated = input_ids[:, self.prompt_length :].clamp(max=self.opens.shape[0] - 1).cpu()
        opens, closes = self.opens[generated], self.closes[generated]
        depth = (opens - closes).cumsum(dim=1)
        opened = opens.cumsum(dim=1) > 0
        done = ((closes > 0) & opened & (depth <= 0)).any(dim=1)
        return done.to(input_ids.device)


_BRACKETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _bracket_tables(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """``[`` and ``]`` counts of every token id (0 for special tokens and ids past the vocabulary)."""
    if tokenizer not in _BRACKETS:
        spelled = token_bytes(tokenizer)
        size = max(len(tokenizer), max(spelled, default=0) + 1) + 1
        opens = torch.zeros(size, dtype=torch.long)
        closes = torch.zeros(size, dtype=torch.long)
        for index, text in spelled.items():
            opens[index], closes[index] = text.count(b"["), text.count(b"]")
        _BRACKETS[tokenizer] = (opens, closes)
    return _BRACKETS[tokenizer]


def jump_forward_generate(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    streamer=None,
    **model_kwargs,
):
    r"""Greedy decoding of one answer that writes the grammar's forced text without a decoding step per token.

    A ``custom_generate`` loop for :meth:`~transformers.GenerationMixin.generate` (``generate(...,
    custom_generate=jump_forward_generate)``, or ``answer_decoding_kwargs(..., jump_forward=True)``). After each
    chosen token the answer's likely continuation (`AnswerGrammar.draft_tokens`: the forced text, ``.`` after ``0``
    and ``", "`` after a value, carried on through `LIKELY_BRANCHES`, e.g. ``), (0.`` after a point) is fed in the
    same forward as the token, as a speculative draft: the logits of every position are run through the logits
    processors and the draft is kept up to the first token greedy decoding would not have chosen, where the model's
    own choice is taken instead. The tokens are therefore those of plain greedy
    decoding with the same processors, and the scores too up to float summation order (positions computed in one
    forward); what changes is the number of forwards (the cache is cropped past a rejected draft).

    Needs an `AnswerLogitsProcessor` among the logits processors, one row, greedy search (``do_sample=False``,
    ``num_beams=1``) and a cache that can be cropped (the default dynamic cache).
    """
    grammars = [processor for processor in logits_processor if isinstance(processor, AnswerLogitsProcessor)]
    if not grammars:
        raise ValueError("jump_forward_generate needs an AnswerLogitsProcessor (constrained decoding) to draft from.")
    if input_ids.shape[0] != 1 or generation_config.do_sample or (generation_config.num_beams or 1) != 1:
        raise ValueError("jump_forward_generate decodes one row greedily: batch size 1, do_sample=False, num_beams=1.")
    mask = grammars[-1]
    keep_scores = generation_config.return_dict_in_generate and generation_config.output_scores
    scores: tuple[torch.Tensor, ...] = ()

    def forward(sequence: torch.LongTensor, width: int, new: int | None, first: bool = False) -> torch.Tensor:
        """Logits of the last ``width`` positions of ``sequence``, feeding its last ``new`` tokens (None: all of them,
        the prefill of an empty cache); the positions before them are in the cache. ``first``: the prefill, which
        also takes the image inputs."""
        inputs = model.prepare_inputs_for_generation(
            sequence, next_sequence_length=new, is_first_iteration=first, **model_kwargs
        )
        inputs["logits_to_keep"] = width
        outputs = model(**inputs, return_dict=True)
        model_kwargs["cache"] = outputs.cache
        return outputs.logits[0, -width:].float()

    def grow(width: int) -> None:
        if (mask_2d := model_kwargs.get("attention_mask")) is not None:
            model_kwargs["attention_mask"] = torch.cat([mask_2d, mask_2d.new_ones((1, width))], dim=-1)
        if (positions := model_kwargs.get("position_ids")) is not None:
            steps = torch.arange(1, width + 1, dtype=positions.dtype, device=positions.device)
            model_kwargs["position_ids"] = torch.cat([positions, positions[..., -1:] + steps], dim=-1)

    def shrink(width: int) -> None:
        model_kwargs["cache"].crop(-width)
        for key in ("attention_mask", "position_ids"):
            if model_kwargs.get(key) is not None:
                model_kwargs[key] = model_kwargs[key][..., :-width]

    cache = model_kwargs.get("cache")
    cached = cache.get_seq_length() if cache is not None else 0
    logits = forward(input_ids, 1, input_ids.shape[1] - cached if cached else None, first=True)
    draft: tuple[int, ...] = ()
    while True:
        # Position i of `logits` follows the sequence plus draft[:i]; take drafts while greedy agrees.
        for position in range(len(draft) + 1):
            step_scores = logits_processor(input_ids, logits[position : position + 1])
            if keep_scores:
                scores += (step_scores,)
            token = int(step_scores[0].argmax())
            input_ids = torch.cat([input_ids, input_ids.new_tensor([[token]])], dim=-1)
            if streamer is not None:
                streamer.put(input_ids[:, -1:].cpu())
            done = bool(stopping_criteria(input_ids, scores)[0])
            if done or position == len(draft) or token != draft[position]:
                break
        if done:
            break
        if rejected := len(draft) - position:
            shrink(rejected)
        state = mask.state(tuple(input_ids[0, mask.prompt_length :].tolist()))
        draft = mask.grammar.draft_tokens(state) if state is not None else ()
        draft = draft[: max(0, generation_config.max_length - input_ids.shape[1] - 1)]
        grow(1 + len(draft))
        sequence = torch.cat([input_ids, input_ids.new_tensor([draft])], dim=-1) if draft else input_ids
        logits = forward(sequence, 1 + len(draft), 1 + len(draft))
    if streamer is not None:
        streamer.end()
    if not generation_config.return_dict_in_generate:
        return input_ids
    return GenerateDecoderOnlyOutput(
        sequences=input_ids, scores=scores if keep_scores else None, cache=model_kwargs.get("cache")
    )


def answer_decoding_kwargs(
    tokenizer,
    prompt_length: int,
    *,
    constrained: bool = True,
    stop_at_answer_end: bool = True,
    max_points: int | None = None,
    distinct_points: bool = False,
    vocab_size: int | None = None,
    keep_unmasked_scores: bool = False,
    jump_forward: bool = False,
    generate_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``generate`` keyword arguments that decode one RoboPoint answer per row.

    Args:
        tokenizer: the checkpoint's tokenizer.
        prompt_length (`int`): width of the ``input_ids`` given to ``generate``.
        constrained (`bool`, *optional*, defaults to `True`): mask tokens outside the answer language.
        stop_at_answer_end (`bool`, *optional*, defaults to `True`): end a row at the closing ``]``.
        max_points (`int`, *optional*): with ``constrained``, the answer closes after this many points.
        distinct_points (`bool`, *optional*, defaults to `False`): with ``constrained``, no point twice in a row's
            answer (see `AnswerLogitsProcessor`).
        vocab_size (`int`, *optional*): width of the model's logits.
        keep_unmasked_scores (`bool`, *optional*, defaults to `False`): see `AnswerLogitsProcessor`.
        jump_forward (`bool`, *optional*, defaults to `False`): with ``constrained``, decode with
            `jump_forward_generate` (the same tokens as greedy search, fewer forwards); only for one row decoded
            greedily.
        generate_kwargs (`dict`, *optional*): the call's other ``generate`` arguments; their own
            ``logits_processor`` / ``stopping_criteria`` are kept and ours appended.

    Returns:
        `dict`: ``generate_kwargs`` with ``logits_processor`` and ``stopping_criteria`` set.
    """
    kwargs = dict(generate_kwargs or {})
    if constrained:
        grammar = AnswerGrammar.for_tokenizer(tokenizer, max_points=max_points, vocab_size=vocab_size)
        processors = LogitsProcessorList(kwargs.get("logits_processor") or [])
        processors.append(AnswerLogitsProcessor(grammar, prompt_length, keep_unmasked_scores, distinct_points))
        kwargs["logits_processor"] = processors
        if jump_forward:
            kwargs["custom_generate"] = jump_forward_generate
    if stop_at_answer_end:
        criteria = StoppingCriteriaList(kwargs.get("stopping_criteria") or [])
        criteria.append(AnswerEndCriteria(tokenizer, prompt_length))
        kwargs["stopping_criteria"] = criteria
    return kwargs


__all__ = [
    "CONSTRAINED_EXTRA",
    "LIKELY_BRANCHES",
    "AnswerEndCriteria",
    "AnswerGrammar",
    "AnswerLogitsProcessor",
    "answer_decoding_kwargs",
    "jump_forward_generate",
    "token_bytes",
]
