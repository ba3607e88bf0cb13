"""Real OpenAI-compatible servers (``transformers serve``, ``robopoint serve``) on 127.0.0.1 for tests, and the
models they serve.

``transformers serve MODEL`` is FastAPI + uvicorn around ``generate``, answering ``/v1/chat/completions`` with the
model's own chat template and processor; it needs ``transformers[serving]`` (FastAPI, uvicorn, openai), and tests
skip with that hint when they are missing. ``robopoint serve`` is ours (`robopoint_hf.inference.server`), started as
users start it.

The served models are exports of the original-format fixture checkpoint (``robopoint export``); the
same checkpoint converted to our format (``robopoint convert``) is the local side of every comparison, so an
endpoint run and a local run answer with the same weights through two independent stacks.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from conftest import ORIGINAL

CLIP = ORIGINAL / "clip-vit-tiny-patch14-336"
STARTUP_TIMEOUT_S = 90.0
"""Longest wait for the server to load the model and answer ``/health``; a server that is not up by then is
killed and the test fails with the end of its log."""


def free_port() -> int:
    """A port nothing listens on now (the OS picks it), so parallel runs never clash."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serving_available() -> str | None:
    """Why ``transformers serve`` cannot run here, or None when it can."""
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        return 'transformers serve needs its extras: pip install "transformers[serving]" (fastapi, uvicorn, openai)'
    return None


@dataclass(frozen=True)
class RunningServer:
    """A server process started by `running_server`: its API base, its log file and the process itself."""

    url: str
    log: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def answer_ctrl_c() -> None:
    """``preexec_fn`` of commands that a test interrupts: SIGINT back to its default disposition.

    A shell starts background jobs with SIGINT ignored, children inherit that, and Python then installs no
    KeyboardInterrupt handler: a test suite run in the background would see its Ctrl-C tests hang.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def running_server(
    command: list[str], port: int, *, name: str, startup_timeout: float = STARTUP_TIMEOUT_S
) -> Iterator[RunningServer]:
    """Runs ``command`` (a server that listens on 127.0.0.1:``port``), waits for ``/health`` and yields it.

    The server runs in its own process group, which is terminated (then killed) on exit whatever happened, so no
    test leaves a server behind. Start-up is bounded by ``startup_timeout``; a server that is not up by then, or
    exits, fails with the end of its log.
    """
    import httpx

    log = tempfile.NamedTemporaryFile(prefix="openai-server-", suffix=".log", delete=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=answer_ctrl_c
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not up after {startup_timeout:.0f} s:\n{_tail(log.name)}")
            with contextlib.suppress(subprocess.TimeoutExpired):  # waits 0.2 s for the model to load, or exits
                process.wait(timeout=0.2)
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{_tail(log.name)}")
        yield RunningServer(url=f"{base_url}/v1", log=Path(log.name), process=process)
    finally:
        _stop(process)
        log.close()
        os.unlink(log.name)


@contextlib.contextmanager
def openai_server(
    model: str | os.PathLike,
    *,
    port: int | None = None,
    startup_timeout: float = STARTUP_TIMEOUT_S,
    extra_args: tuple[str, ...] = (),
) -> Iterator[str]:
    """Runs ``transformers serve MODEL`` on 127.0.0.1 and yields its base URL (``http://127.0.0.1:PORT/v1``).

    ``extra_args`` are more ``transformers serve`` options (e.g. ``("--continuous-batching",)``).
    """
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--log-level",
        "warning",
        *extra_args,
    ]
    with running_server(command, port, name="transformers serve", startup_timeout=startup_timeout) as server:
        yield server.url


@contextlib.contextmanager
def robopoint_server(
    model: str | os.PathLike, *extra_args: str, startup_timeout: float = STARTUP_TIMEOUT_S
) -> Iterator[RunningServer]:
    """Runs ``robopoint serve --model MODEL`` (and ``extra_args``) on 127.0.0.1, float32 on CPU."""
    port = free_port()
    command = [sys.executable, "-m", "robopoint_hf.cli", "serve", "--model", str(model), "--port", str(port)]
    command += ["--device", "cpu", "--dtype", "float32", *extra_args]
    with running_server(command, port, name="robopoint serve", startup_timeout=startup_timeout) as server:
        yield server


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not exited 10 s later."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _tail(path: str, size: int = 3000) -> str:
    return Path(path).read_text(errors="replace")[-size:]


# ---------------------------------------------------------------------------------------------------- models
def pointing_original_checkpoint(answer: str, folder: Path) -> Path:
    """The original-format fixture checkpoint rewritten so that its greedy answer to any RoboPoint prompt is ``answer``.

    The same bigram construction as ``test_pipeline_robopoint.pointing_model`` (attention and MLP outputs zeroed,
    one-hot embeddings along the chain ``":" -> answer tokens -> EOS``), applied to the ORIGINAL checkpoint's
    weights, so that both converters (ours and the plain-LLaVA export) and both serving stacks see one model whose
    answer is real points.
    """
    from transformers import AutoTokenizer

    source = ORIGINAL / "vicuna-mlp2x-full"
    shutil.copytree(source, folder)
    tokenizer = AutoTokenizer.from_pretrained(source)
    prompt_end = tokenizer.convert_tokens_to_ids(":")
    chain = [prompt_end, *tokenizer(answer, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError(f"{answer!r} repeats a token; a bigram table cannot spell it.")
    for shard in sorted(glob.glob(str(folder / "pytorch_model*.bin"))):
        state = torch.load(shard, map_location="cpu", weights_only=True)
        for key, tensor in state.items():
            if key.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
                tensor.zero_()
            elif key == "model.norm.weight":
                tensor.fill_(1)
        hidden = None
        if "model.embed_tokens.weight" in state:
            embeddings = state["model.embed_tokens.weight"]
            hidden = embeddings.shape[1]
            for slot, token in enumerate(chain[:-1]):
                embeddings[token] = torch.nn.functional.one_hot(torch.tensor(slot), hidden).to(embeddings.dtype)
        if "lm_head.weight" in state:
            head = state["lm_head.weight"]
            hidden = head.shape[1]
            head.zero_()
            rms_scale = 1 / math.sqrt(1 / hidden + 1e-5)  # final RMSNorm of a one-hot row
            logit = math.log(0.999999 / 0.000001) + math.log(head.shape[0] - 1)
            for slot, successor in enumerate(chain[1:]):
                head[successor, slot] = logit / rms_scale
        torch.save(state, shard)
    return folder


@dataclass(frozen=True)
class ServedModel:
    """One original-format checkpoint, served as its plain-LLaVA export and converted to our format for local runs.

    Args:
        url (`str`): the server's API base (``http://127.0.0.1:PORT/v1``).
        name (`str`): the served model name (``transformers serve`` names it by its folder).
        local (`Path`): the same checkpoint in our format, for ``pipeline("robopoint")`` / ``robopoint eval``.
    """

    url: str
    name: str
    local: Path


@contextlib.contextmanager
def served_checkpoint(source: Path, folder: Path, extra_args: tuple[str, ...] = ()) -> Iterator[ServedModel]:
    """Converts ``source`` both ways (``robopoint convert`` and ``robopoint export``) into ``folder``
    and serves the export with ``transformers serve`` (and ``extra_args``) while the context is open."""
    from robopoint_hf.original.convert import convert_checkpoint

    local = convert_checkpoint(source, folder / "robopoint", vision_tower=CLIP, dtype="float32")
    llava = convert_checkpoint(source, folder / "llava", vision_tower=CLIP, dtype="float32", target="llava")
    with openai_server(llava, extra_args=extra_args) as url:
        yield ServedModel(url=url, name=str(llava), local=local)
