"""Point decoding: the answer grammar agrees with the parser, constrained answers parse, answers end at ``]``, and a
shared image prefix gives the same tokens as separate prefills."""

from __future__ import annotations

import contextlib
import os
import random
import re
from collections.abc import Iterator

import pytest
import torch
from conftest import ORIGINAL, QUESTION, expand_image_ids, read_ref, tiny_model, tiny_processor
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoTokenizer, DynamicCache, LogitsProcessor

from robopoint_hf import RoboPointImageProcessor, RoboPointProcessor
from robopoint_hf.checkpoints import default_model
from robopoint_hf.model.decoding import (
    AnswerEndCriteria,
    AnswerGrammar,
    AnswerLogitsProcessor,
    answer_decoding_kwargs,
    jump_forward_generate,
    token_bytes,
)
from robopoint_hf.model.points import ANSWER_REGEX, answer_regex, format_points, parse_points
from robopoint_hf.model.shared_prefix import common_prefix_length, unpadded_rows

pytest.importorskip("outlines_core")


def walk_grammar(grammar: AnswerGrammar, spelled: dict[int, bytes], rng: random.Random, limit: int = 400) -> str:
    """A random string of the grammar's language: random allowed tokens until the automaton can only end."""
    state, text = grammar.initial_state, b""
    for _ in range(limit):
        allowed = grammar.mask(state).nonzero().flatten().tolist()
        choices = [token for token in allowed if token != grammar.eos_token_id]
        if not choices or (grammar.is_final(state) and rng.random() < 0.3):
            assert grammar.is_final(state)
            return text.decode("utf-8")
        token = rng.choice(choices)
        text += spelled[token]
        state = grammar.next_state(state, token)
    raise AssertionError(f"no end after {limit} tokens: {text!r}")


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "llama": AutoTokenizer.from_pretrained(ORIGINAL / "vicuna-mlp2x-full"),
        "shipped": AutoTokenizer.from_pretrained(default_model()),
    }


# ------------------------------------------------------------------------------------------- grammar vs parser
@pytest.mark.parametrize("name", ["llama", "shipped"])
@pytest.mark.parametrize("max_points, tuple_size", [(None, 2), (3, 2), (2, 4)])
def test_strings_of_the_grammar_parse_to_what_they_spell(tokenizers, name, max_points, tuple_size):
    tokenizer = tokenizers[name]
    grammar = AnswerGrammar.for_tokenizer(tokenizer, max_points=max_points, tuple_size=tuple_size)
    spelled, rng = token_bytes(tokenizer), random.Random(0)
    lengths = set()
    for _ in range(60):
        text = walk_grammar(grammar, spelled, rng)
        assert re.fullmatch(grammar.regex, text), text
        for mode in ("robust", "original"):
            parsed = parse_points(text, mode=mode)
            assert not parsed.parse_failed
            values = re.findall(r"[01]\.\d{3}", text)
            assert len(parsed.items) == len(values) // tuple_size
            items = parsed.points if tuple_size == 2 else parsed.boxes
            flat = [v for item in items for v in ((item.x, item.y) if tuple_size == 2 else item.__dict__.values())]
            assert [v for v in flat if not isinstance(v, bool)] == [float(v) for v in values]
            assert all(item.normalized for item in items)
        lengths.add(len(parsed.items))
        if max_points is not None:
            assert len(parsed.items) <= max_points
    assert len(lengths) > 2  # the walk reaches short and long answers


def test_formatted_answers_are_in_the_language():
    rng = random.Random(1)
    for count in range(6):
        points = [(rng.random(), rng.random()) for _ in range(count)]
        text = format_points(points)
        assert re.fullmatch(ANSWER_REGEX, text)
        assert re.fullmatch(answer_regex(max_points=max(count, 1)), text)
        assert not re.fullmatch(answer_regex(max_points=count - 1), text) if count > 1 else True
    for bad in ["[(0.5, 0.5)]", "[(0.5000, 0.500)]", "[(1.001, 0.500)]", "[(0.500,0.500)]", "(0.500, 0.500)"]:
        assert not re.fullmatch(ANSWER_REGEX, bad)
    with pytest.raises(ValueError, match="max_points must be a positive integer"):
        answer_regex(0)


@pytest.mark.parametrize("name", ["llama", "shipped"])
def test_the_model_tokenization_of_every_answer_is_allowed(tokenizers, name):
    """What a model trained on `format_points` writes (the tokenizer's own split, after the prompt) is never masked."""
    tokenizer = tokenizers[name]
    grammar = AnswerGrammar.for_tokenizer(tokenizer)
    prompt = tokenizer("USER: Point. ASSISTANT:", add_special_tokens=False).input_ids
    rng = random.Random(2)
    for count in range(8):
        points = [(rng.choice([rng.random(), 1.0, 0.0]), rng.random()) for _ in range(count)]
        ids = tokenizer("USER: Point. ASSISTANT: " + format_points(points), add_special_tokens=False).input_ids
        assert ids[: len(prompt)] == prompt
        processor = AnswerLogitsProcessor(grammar, len(prompt))
        for end in range(len(prompt), len(ids) + 1):
            allowed = processor(torch.tensor([ids[:end]]), torch.zeros(1, len(tokenizer)))[0] == 0
            next_token = ids[end] if end < len(ids) else tokenizer.eos_token_id
            assert allowed[next_token], (format_points(points), end)


# ------------------------------------------------------------------------------------------- generation
def test_constrained_answers_parse_and_respect_max_points():
    model, processor = tiny_model(), tiny_processor()
    image = Image.new("RGB", (40, 30), (0, 100, 200))
    inputs = processor(
        images=[image] * 2, text=["Point to the mug.", "Where is the cup? Be brief."], return_tensors="pt"
    )
    width = inputs["input_ids"].shape[1]
    free = model.generate(**inputs, max_new_tokens=20, do_sample=False)[:, width:]
    texts = processor.batch_decode(free, skip_special_tokens=True)
    assert all(parse_points(text).parse_failed for text in texts)  # a random model writes garbage
    for max_points in (None, 2):
        kwargs = answer_decoding_kwargs(processor.tokenizer, width, max_points=max_points, vocab_size=32000)
        ids = model.generate(**inputs, max_new_tokens=80, do_sample=False, **kwargs)[:, width:]
        for row in processor.batch_decode(ids, skip_special_tokens=True):
            assert re.fullmatch(answer_regex(max_points), " " + row.strip()), row
            parsed = parse_points(row)
            assert not parsed.parse_failed and (max_points is None or len(parsed.points) <= max_points)


def test_answers_end_at_the_closing_bracket():
    tokenizer = tiny_processor().tokenizer
    ids = tokenizer(
        ["[(0.1, 0.2)] more text [(0.3", "[[0.1, 0.2], [0.3", "no bracket ] here ["], add_special_tokens=False
    ).input_ids
    width = max(len(row) for row in ids)
    batch = torch.tensor([row + [0] * (width - len(row)) for row in ids])
    criteria = AnswerEndCriteria(tokenizer, prompt_length=0)
    assert criteria(batch, None).tolist() == [True, False, False]
    first = tokenizer("[(0.1, 0.2)]", add_special_tokens=False).input_ids
    assert not criteria(batch[:1, : len(first) - 1], None).item()
    assert criteria(batch[:1, : len(first)], None).item()


def test_stop_at_answer_end_cuts_a_runaway_answer():
    """Unconstrained: the closing bracket ends the row; the tokens before it are those of the free run."""
    from test_pipeline_robopoint import pointing_model

    model, processor = pointing_model("[(12, 34)] and then")
    inputs = processor(images=Image.new("RGB", (40, 30)), text="Point.", return_tensors="pt")
    width = inputs["input_ids"].shape[1]
    free = model.generate(**inputs, max_new_tokens=30, do_sample=False)[0, width:]
    kwargs = answer_decoding_kwargs(processor.tokenizer, width, constrained=False)
    stopped = model.generate(**inputs, max_new_tokens=30, do_sample=False, **kwargs)[0, width:]
    assert processor.tokenizer.decode(free, skip_special_tokens=True) == "[(12, 34)] and then"
    assert processor.tokenizer.decode(stopped, skip_special_tokens=True) == "[(12, 34)]"
    assert stopped.tolist() == free[: len(stopped)].tolist()


# ------------------------------------------------------------------------------------------- jump-forward
@pytest.mark.parametrize("name", ["llama", "shipped"])
def test_forced_text_is_what_every_answer_writes_next(tokenizers, name):
    """At every token boundary of real answers, the forced text is a prefix of what the answer writes next, and the
    text is forced exactly where the grammar has one way on."""
    tokenizer = tokenizers[name]
    grammar = AnswerGrammar.for_tokenizer(tokenizer, max_points=3)
    spelled, rng = token_bytes(tokenizer), random.Random(2)
    prompt = tokenizer("ASSISTANT:", add_special_tokens=False).input_ids
    seen = set()
    for _ in range(40):
        points = [(rng.choice([0.0, 1.0, rng.random()]), rng.random()) for _ in range(rng.randint(0, 3))]
        answer = format_points(points)
        ids = tokenizer("ASSISTANT: " + answer, add_special_tokens=False).input_ids[len(prompt) :]
        full = b"".join(spelled[token] for token in ids)
        assert full.decode().strip() == answer
        state, written = grammar.initial_state, 0
        for token in ids:
            text = grammar.forced_text(state)
            assert full[written:].startswith(text), (answer, full[:written], text)
            seen.add(text.decode())
            written += len(spelled[token])
            state = grammar.next_state(state, token)
    assert {", ", ".000, "} <= seen
    assert "." in seen or name == "shipped"  # the shipped vocabulary writes "0.8" as one token
    assert grammar.forced_text(grammar.initial_state) == b""  # " [" or "[": two ways


@pytest.mark.parametrize("name", ["llama", "shipped"])
def test_drafts_are_the_answers_own_tokens_up_to_an_unlikely_branch(tokenizers, name):
    """Drafts continue the forced text through the likely branches (a value ``0.``, the list going on), in the tokens
    the tokenizer writes answers with: at every token boundary of real answers the drafted tokens are allowed one
    after the other, and they are the answer's own next tokens up to where its text writes ``1`` or ``]``."""
    tokenizer = tokenizers[name]
    grammar = AnswerGrammar.for_tokenizer(tokenizer)
    rng = random.Random(3)
    prompt = tokenizer("ASSISTANT:", add_special_tokens=False).input_ids
    agreed = 0
    for _ in range(40):
        points = [(rng.choice([1.0, rng.random()]), rng.random()) for _ in range(rng.randint(0, 4))]
        ids = tokenizer("ASSISTANT: " + format_points(points), add_special_tokens=False).input_ids[len(prompt) :]
        state = grammar.initial_state
        for position, token in enumerate(ids):
            draft, walk = grammar.draft_tokens(state), state
            for drafted in draft:
                walk = grammar.next_state(walk, drafted)
                assert walk is not None
            assert grammar.spelling(draft).startswith(grammar.forced_text(state))
            same = 0
            while same < len(draft) and ids[position + same : position + same + 1] == [draft[same]]:
                same += 1
            if same < len(draft):
                written, guessed = grammar.spelling(ids[position + same :]), grammar.spelling(draft[same:])
                branch = len(os.path.commonprefix([written, guessed]))
                assert written[branch : branch + 1] in (b"1", b"]"), (format_points(points), written, guessed)
            agreed += same
            state = grammar.next_state(state, token)
    assert agreed > 100


def decode_both_ways(model, processor, inputs, max_points=None, **options):
    """Constrained greedy decoding without and with jump-forward: [(outputs, unmasked scores)] x 2, forwards x 2."""
    width = inputs["input_ids"].shape[1]
    results, forwards = [], []
    counter = model.register_forward_hook(lambda *_: forwards.__setitem__(-1, forwards[-1] + 1))
    try:
        for jump in (False, True):
            forwards.append(0)
            kwargs = answer_decoding_kwargs(
                processor.tokenizer,
                width,
                max_points=max_points,
                vocab_size=model.config.text_config.vocab_size,
                keep_unmasked_scores=True,
                jump_forward=jump,
                generate_kwargs=dict(do_sample=False, return_dict_in_generate=True, output_scores=True, **options),
            )
            outputs = model.generate(**inputs, **kwargs)
            results.append((outputs, kwargs["logits_processor"][-1].unmasked_scores))
    finally:
        counter.remove()
    return results, forwards


def test_jump_forward_gives_greedy_tokens_with_fewer_forwards(vicuna_full):
    """The fixture checkpoint (Llama tokenizer): jump-forward writes the tokens of constrained greedy decoding, with
    the same scores up to float summation order, in fewer model forwards; also when max_points forces the end, and
    when max_new_tokens cuts a draft."""
    processor = RoboPointProcessor(
        RoboPointImageProcessor(), AutoTokenizer.from_pretrained(ORIGINAL / "vicuna-mlp2x-full")
    )
    inputs = processor(images=str(ORIGINAL / "images/sink.jpg"), text=QUESTION, return_tensors="pt")
    for options in (dict(max_new_tokens=60), dict(max_new_tokens=60, max_points=1), dict(max_new_tokens=9)):
        results, forwards = decode_both_ways(vicuna_full, processor, inputs, **options)
        (plain, plain_scores), (jumped, jumped_scores) = results
        assert jumped.sequences.tolist() == plain.sequences.tolist()
        assert len(jumped.scores) == len(plain.scores) == len(jumped_scores) == len(plain_scores)
        for a, b in zip(plain_scores, jumped_scores, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
        if options["max_new_tokens"] == 60:
            assert forwards[1] < 0.8 * forwards[0], forwards


class Dictate(LogitsProcessor):
    """Lifts the logit of the next of ``ids`` above every other, so that a random model writes them."""

    def __init__(self, ids: list[int], prompt_length: int):
        self.ids, self.prompt_length = ids, prompt_length

    def __call__(self, input_ids, scores):
        lift = torch.zeros_like(scores)
        lift[:, self.ids[min(input_ids.shape[1] - self.prompt_length, len(self.ids) - 1)]] = 1e4
        return scores + lift


@pytest.mark.parametrize(
    "answer",
    ["[(0.461, 0.527), (0.000, 0.998), (0.310, 0.402)]", "[(1.000, 0.250), (0.500, 1.000)]", "[(0.125, 0.750)]", "[]"],
)
def test_jump_forward_writes_answers_that_take_the_unlikely_branches(vicuna_full, answer):
    """The drafts guess ``0.`` and a list that goes on; answers with ``1.000`` values, one point or none come out
    token for token as step-by-step constrained decoding writes them, with the scores the model gives in that
    context (a rejected draft leaves nothing in the cache)."""
    tokenizer = AutoTokenizer.from_pretrained(ORIGINAL / "vicuna-mlp2x-full")
    processor = RoboPointProcessor(RoboPointImageProcessor(), tokenizer)
    inputs = processor(images=str(ORIGINAL / "images/sink.jpg"), text=QUESTION, return_tensors="pt")
    width = inputs["input_ids"].shape[1]
    prompt = tokenizer("ASSISTANT:", add_special_tokens=False).input_ids
    ids = tokenizer("ASSISTANT: " + answer, add_special_tokens=False).input_ids[len(prompt) :]
    dictate = Dictate([*ids, tokenizer.eos_token_id], width)
    results, forwards = decode_both_ways(vicuna_full, processor, inputs, max_new_tokens=60, logits_processor=[dictate])
    (plain, plain_scores), (jumped, jumped_scores) = results
    assert tokenizer.decode(plain.sequences[0, width:], skip_special_tokens=True) == answer
    assert jumped.sequences.tolist() == plain.sequences.tolist()
    assert len(jumped_scores) == len(plain_scores)
    for a, b in zip(plain_scores, jumped_scores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert forwards[1] < forwards[0] if answer != "[]" else forwards[1] == forwards[0]


def test_jump_forward_closes_the_answer_when_max_points_forces_it():
    from robopoint_hf import RoboPointForConditionalGeneration

    model = RoboPointForConditionalGeneration.from_pretrained(default_model()).eval()
    processor = RoboPointProcessor.from_pretrained(default_model())
    image = Image.open(f"{default_model()}/example_0_free_space_between.jpg")
    inputs = processor(images=image, text="Find free space between the two objects.", return_tensors="pt")
    width = inputs["input_ids"].shape[1]
    texts = []
    for jump in (False, True):
        kwargs = answer_decoding_kwargs(
            processor.tokenizer, width, max_points=2, vocab_size=model.config.text_config.vocab_size, jump_forward=jump
        )
        ids = model.generate(**inputs, max_new_tokens=60, do_sample=False, **kwargs)[0, width:]
        texts.append(processor.tokenizer.decode(ids, skip_special_tokens=True))
    assert texts[0] == texts[1]
    assert len(parse_points(texts[1]).points) == 2 and texts[1].endswith(")]")


def test_jump_forward_refuses_what_it_cannot_decode():
    model, processor = tiny_model(), tiny_processor()
    image = Image.new("RGB", (40, 30))
    one = processor(images=image, text="Point.", return_tensors="pt")
    two = processor(images=[image] * 2, text=["Point.", "Point to it."], return_tensors="pt")
    width = two["input_ids"].shape[1]
    kwargs = answer_decoding_kwargs(processor.tokenizer, width, vocab_size=32000, jump_forward=True)
    with pytest.raises(ValueError, match="batch size 1"):
        model.generate(**two, max_new_tokens=4, do_sample=False, **kwargs)
    with pytest.raises(ValueError, match="batch size 1"):
        model.generate(**one, max_new_tokens=4, do_sample=True, **kwargs)
    with pytest.raises(ValueError, match="AnswerLogitsProcessor"):
        model.generate(**one, max_new_tokens=4, do_sample=False, custom_generate=jump_forward_generate)


# ------------------------------------------------------------------------------------------- distinct points
def state_after(grammar: AnswerGrammar, tokenizer, text: str) -> tuple[int, bytes]:
    """Automaton state and spelled bytes after the answer prefix `text`, tokenized as a model writes it."""
    prompt = tokenizer("ASSISTANT:", add_special_tokens=False).input_ids
    ids = tokenizer("ASSISTANT: " + text, add_special_tokens=False).input_ids[len(prompt) :]
    state, spelled = grammar.initial_state, token_bytes(tokenizer)
    for token in ids:
        state = grammar.next_state(state, token)
    return state, b"".join(spelled[token] for token in ids)


def test_repeating_tokens_are_those_that_close_an_earlier_point(tokenizers):
    tokenizer = tokenizers["llama"]
    grammar = AnswerGrammar.for_tokenizer(tokenizer)
    spelling = {d: {t for t, b in token_bytes(tokenizer).items() if b == d.encode()} for d in "01"}
    assert len(spelling["0"]) == 2  # the digit and its byte-fallback token <0x30>
    state, text = state_after(grammar, tokenizer, "[(0.100, 0.200), (0.100, 0.20")
    assert set(grammar.repeating_tokens(state, text)) == spelling["0"]
    # "1" can only become "1.000)": it repeats the first point.
    state, text = state_after(grammar, tokenizer, "[(0.100, 1.000), (0.100, ")
    assert set(grammar.repeating_tokens(state, text)) == spelling["1"]
    # Not inside a tuple, or no earlier point: nothing to block.
    assert grammar.repeating_tokens(*state_after(grammar, tokenizer, "[(0.100, 0.200), ")) == []
    assert grammar.repeating_tokens(*state_after(grammar, tokenizer, "[(0.100, 0.20")) == []
    # Every way on repeats: the row keeps the repetition rather than having no allowed token.
    earlier = ", ".join(f"(0.100, 0.20{d})" for d in range(10))
    assert grammar.repeating_tokens(*state_after(grammar, tokenizer, f"[{earlier}, (0.100, 0.20")) == []


def test_distinct_points_on_the_shipped_model(shipped_pipe):
    image = f"{default_model()}/example_0_free_space_between.jpg"
    question = "Find free space between the two objects."
    repeated = shipped_pipe(image, question, max_new_tokens=120)
    distinct = shipped_pipe(image, question, max_new_tokens=120, distinct_points=True)
    tuples = re.findall(r"\([^()]*\)", repeated["text"])
    assert len(set(tuples)) < len(tuples)  # the shipped model repeats itself here
    tuples = re.findall(r"\([^()]*\)", distinct["text"])
    assert len(set(tuples)) == len(tuples) == len(distinct["points"]) > 1
    assert re.fullmatch(ANSWER_REGEX, distinct["text"]) and tuples[0] == repeated["text"][1:15]
    free = shipped_pipe(image, question, max_new_tokens=120, constrained=False, distinct_points=True)
    assert free["text"] == repeated["text"]
    unique = {(p["x"], p["y"]) for p in repeated["points"]}
    assert [(p["x"], p["y"]) for p in free["points"]] == sorted(
        unique, key=[(p["x"], p["y"]) for p in repeated["points"]].index
    )


# ------------------------------------------------------------------------------------------- shared prefix
def test_shared_prefix_gives_the_original_tokens(vicuna_full):
    """Prefix prefilled once for three questions: the reference question keeps the ORIGINAL code's exact ids, and
    every row equals its own unshared call."""
    meta, _ = read_ref("vicuna-mlp2x-full", "llava_v1", "sink")
    pixel_values = load_file(ORIGINAL / "refs" / "inputs" / "sink.safetensors")["pixel_values"][None]
    processor = RoboPointProcessor(
        RoboPointImageProcessor(),
        AutoTokenizer.from_pretrained(ORIGINAL / "vicuna-mlp2x-full"),
        prompt_template="llava_v1",
    )
    questions = [QUESTION, "Point to the plate.", "Find free space left of the sink, between the cups."]
    image = str(ORIGINAL / "images/sink.jpg")
    batch = processor(images=[image] * 3, text=questions, return_tensors="pt")
    batch["pixel_values"] = pixel_values.expand(3, -1, -1, -1)
    width = batch["input_ids"].shape[1]
    shared = vicuna_full.generate(**batch, max_new_tokens=12, do_sample=False, share_prefix=True)
    assert shared[:, :width].tolist() == batch["input_ids"].tolist()
    assert batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist() == expand_image_ids(meta["input_ids"])
    assert shared[0, width:].tolist() == meta["generated_ids"]
    for row, question in enumerate(questions):
        single = processor(images=image, text=question, return_tensors="pt")
        single["pixel_values"] = pixel_values
        alone = vicuna_full.generate(**single, max_new_tokens=12, do_sample=False)[0, single["input_ids"].shape[1] :]
        assert shared[row, width:].tolist() == alone.tolist()
    with pytest.raises(ValueError, match="same image"):
        other = batch["pixel_values"].clone()
        other[1] += 1
        vicuna_full.generate(**{**batch, "pixel_values": other}, max_new_tokens=2, share_prefix=True)


@pytest.fixture(scope="module")
def questions_on_one_image():
    processor = tiny_processor()
    image = Image.new("RGB", (40, 30), (90, 140, 200))
    questions = ["Point to the cup.", "Find free space on the table, left of the plate.", "Where?"]
    return processor(images=[image] * 3, text=questions, return_tensors="pt")


@contextlib.contextmanager
def language_model_batches(model) -> Iterator[list[tuple[int, int]]]:
    """(batch, length) of every language-model forward while the block runs."""
    shapes = []
    handle = model.model.language_model.register_forward_pre_hook(
        lambda _, args, kwargs: (
            shapes.append(tuple(kwargs["inputs_embeds"].shape[:2]))
            if kwargs.get("inputs_embeds") is not None
            else None
        ),
        with_kwargs=True,
    )
    try:
        yield shapes
    finally:
        handle.remove()


def test_common_prefix_leaves_every_row_a_token_and_holds_the_image():
    rows = [torch.tensor(ids) for ids in ([1, 7, 7, 3, 4], [1, 7, 7, 3, 4], [1, 7, 7, 5])]
    assert common_prefix_length(rows, image_token_id=7) == 3
    assert common_prefix_length(rows[:2], image_token_id=7) == 4  # equal rows: the last token stays each row's own
    assert common_prefix_length([torch.tensor([2, 7]), torch.tensor([1, 7])], image_token_id=9) == 0
    with pytest.raises(ValueError, match="image placeholders inside the common prefix"):
        common_prefix_length([torch.tensor([1, 3, 7]), torch.tensor([1, 4, 7])], image_token_id=7)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prefix_packs_the_questions_on_one_sequence(questions_on_one_image, attention):
    """Greedy rows decoded on one packed sequence: the prefix is fed once, then the questions, then one token per
    unfinished row, every forward with batch 1; the tokens (padded after a row's end) and scores are those of the
    batched unshared call."""
    model = tiny_model()
    model.set_attn_implementation(attention)
    batch = questions_on_one_image
    width = batch["input_ids"].shape[1]
    settings = dict(max_new_tokens=12, do_sample=False, return_dict_in_generate=True, output_scores=True)
    free = model.generate(**batch, **settings).sequences[:, width:]
    # An end token that row 0 writes third and the other rows never: the rows finish at different steps.
    end = free[0, 2].item()
    assert end not in free[1:].flatten().tolist()
    settings.update(eos_token_id=end, pad_token_id=0)
    unshared = model.generate(**batch, **settings)
    with language_model_batches(model) as shapes:
        shared = model.generate(**batch, **settings, share_prefix=True)
    assert shared.sequences.tolist() == unshared.sequences.tolist()
    assert shared.sequences[0, width + 3 :].tolist() == [0] * 9  # padded after its end, as generate pads
    assert len(shared.scores) == len(unshared.scores) == 12
    for step, (ours, theirs) in enumerate(zip(shared.scores, unshared.scores, strict=True)):
        rows = slice(None) if step < 3 else slice(1, None)  # a finished row's scores are never used
        torch.testing.assert_close(ours[rows], theirs[rows], rtol=1e-5, atol=1e-5)
    rows = unpadded_rows(batch["input_ids"], batch["attention_mask"])
    prefix = common_prefix_length(rows, model.config.image_token_id)
    questions = sum(len(row) - prefix for row in rows)
    assert shapes == [(1, prefix), (1, questions)] + [(1, 3)] * 2 + [(1, 2)] * 9


def test_shared_prefix_gives_beam_search_a_copy_of_the_prefix(questions_on_one_image):
    """Modes the packed loop does not decode (beams) still prefill the prefix once, and give each row a copy."""
    model = tiny_model()
    batch = questions_on_one_image
    settings = dict(max_new_tokens=6, do_sample=False, num_beams=2)
    unshared = model.generate(**batch, **settings)
    with language_model_batches(model) as shapes:
        shared = model.generate(**batch, **settings, share_prefix=True)
    assert shared.tolist() == unshared.tolist()
    assert shapes[0][0] == 1 and {rows for rows, _ in shapes[1:]} == {6}
    for own_cache in (dict(cache=DynamicCache()), dict(cache_implementation="static"), dict(use_cache=False)):
        with pytest.raises(ValueError, match="builds its own cache"):
            model.generate(**batch, **settings, **own_cache, share_prefix=True)


def test_shared_prefix_sampling_draws_as_the_batched_call(questions_on_one_image):
    model = tiny_model()
    batch = questions_on_one_image
    settings = dict(max_new_tokens=8, do_sample=True, top_k=20)
    torch.manual_seed(3)
    unshared = model.generate(**batch, **settings)
    torch.manual_seed(3)
    shared = model.generate(**batch, **settings, share_prefix=True)
    assert shared.tolist() == unshared.tolist()


def test_shared_prefix_with_constraints_equals_unshared_on_the_shipped_model():
    from robopoint_hf import RoboPointForConditionalGeneration

    model = RoboPointForConditionalGeneration.from_pretrained(default_model()).eval()
    processor = RoboPointProcessor.from_pretrained(default_model())
    image = Image.open(f"{default_model()}/example_0_free_space_between.jpg")
    questions = ["Point to the free space between the two objects.", "Find a spot on the left.", "Where is it?"]
    batch = processor(images=[image] * 3, text=questions, return_tensors="pt")
    width = batch["input_ids"].shape[1]
    kwargs = answer_decoding_kwargs(processor.tokenizer, width, vocab_size=model.config.text_config.vocab_size)
    shared = model.generate(**batch, max_new_tokens=40, do_sample=False, share_prefix=True, **kwargs)[:, width:]
    kwargs = answer_decoding_kwargs(processor.tokenizer, width, vocab_size=model.config.text_config.vocab_size)
    unshared = model.generate(**batch, max_new_tokens=40, do_sample=False, **kwargs)[:, width:]
    assert shared.tolist() == unshared.tolist()
    assert all(not parse_points(t).parse_failed for t in processor.batch_decode(shared, skip_special_tokens=True))


# ------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def shipped_pipe():
    from transformers import pipeline

    from robopoint_hf.model.pipeline_robopoint import register_pipeline

    register_pipeline()
    return pipeline("robopoint", model=default_model(), device="cpu")


def test_pipeline_decodes_constrained_with_free_scores(shipped_pipe):
    image = f"{default_model()}/example_0_free_space_between.jpg"
    question = "Find free space between the two objects."
    constrained = shipped_pipe(image, question, max_new_tokens=48, jump_forward=False)
    free = shipped_pipe(image, question, max_new_tokens=48, constrained=False)
    assert not constrained["parse_failed"] and constrained["points"]
    assert re.fullmatch(ANSWER_REGEX, constrained["text"])
    assert constrained == free  # same tokens -> same points and the same scores (read before the mask)
    # Jump-forward (the default for one greedy row): the same tokens; the scores of positions computed in one
    # forward differ from the one-token steps' by float summation order only.
    jumped = shipped_pipe(image, question, max_new_tokens=48)
    assert {**jumped, "points": []} == {**free, "points": []}
    assert [{**p, "score": 0} for p in jumped["points"]] == [{**p, "score": 0} for p in free["points"]]
    assert [p["score"] for p in jumped["points"]] == pytest.approx([p["score"] for p in free["points"]], rel=1e-5)
    two = shipped_pipe(image, question, max_new_tokens=48, max_points=2)
    # The answer closes after two points (the last one's closing token differs, and so does its score).
    assert [{**p, "score": 0} for p in two["points"]] == [{**p, "score": 0} for p in constrained["points"][:2]]
    assert two["points"][0] == jumped["points"][0]


def test_pipeline_list_of_instructions_shares_the_prefix(shipped_pipe, monkeypatch):
    """One frame, several instructions: the frame is preprocessed and encoded once, the questions decoded in one call
    on one copy of its prefix, with the answers of one call per question."""
    image = Image.open(f"{default_model()}/example_3_object_attribute.jpg")
    questions = ["Point to the red object.", "Find free space on the left of the table, please.", "Point to it."]
    one_by_one = [shipped_pipe(image, question, max_new_tokens=40) for question in questions]
    calls = []
    generate = type(shipped_pipe.model).generate

    def spy(model, *args, **kwargs):
        calls.append((kwargs["input_ids"].shape[0], kwargs.get("share_prefix")))
        return generate(model, *args, **kwargs)

    preprocessed = []
    image_processor = type(shipped_pipe.processor.image_processor)
    preprocess = image_processor.__call__

    def count(processor, images, *args, **kwargs):
        preprocessed.append(len(images) if isinstance(images, list) else 1)
        return preprocess(processor, images, *args, **kwargs)

    monkeypatch.setattr(type(shipped_pipe.model), "generate", spy)
    monkeypatch.setattr(image_processor, "__call__", count)
    together = shipped_pipe(image, questions, max_new_tokens=40)
    assert calls == [(3, True)]
    assert preprocessed == [1]  # the frame is preprocessed once, each question only tokenized
    assert [row["text"] for row in together] == [row["text"] for row in one_by_one]
    for row, alone in zip(together, one_by_one, strict=True):
        assert [p["score"] for p in row["points"]] == pytest.approx([p["score"] for p in alone["points"]], abs=1e-5)
        assert {**row, "points": []} == {**alone, "points": []}


# ------------------------------------------------------------------------------------------- serving
def test_build_request_asks_each_engine_for_the_same_grammar():
    from robopoint_hf.inference.serving import build_request

    image = Image.new("RGB", (8, 8))
    vllm = build_request(image, "Point to the mug.", model="m", max_points=3)
    sglang = build_request(image, "Point to the mug.", model="m", engine="sglang", max_points=3)
    assert vllm["structured_outputs"] == {"regex": answer_regex(3)} and sglang["regex"] == answer_regex(3)
    assert {k: v for k, v in vllm.items() if k != "structured_outputs"} == {
        k: v for k, v in sglang.items() if k != "regex"
    }
    assert vllm["messages"][-1]["content"][1]["text"].endswith("in the image.")
    assert "regex" not in build_request(image, "Point.", model="m", engine="sglang", constrained=False)
    with pytest.raises(ValueError, match="engine must be one of vllm, sglang"):
        build_request(image, "Point.", model="m", engine="tgi")
