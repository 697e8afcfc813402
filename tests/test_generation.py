"""Generative models: the contract, the decoder, the step batcher, and the example served,
prototyped and logged for real (bentoml serve, Gradio through gradio_client, Streamlit's
AppTest, MLflow's pyfunc)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from torch import nn

import proto2prod
from proto2prod import Definition, NullProgress, Settings, Trained, fields, generation
from proto2prod.client import Client
from proto2prod.errors import DefinitionError, InvalidInput, TooManyRequests
from proto2prod.generation import ByteTokenizer, Prompt
from proto2prod.predictor import Predictor
from proto2prod.registry import Registry, publish
from proto2prod.service.stepping import Generation, StepBatcher
from tests.conftest import EXAMPLES, ROOT
from tests.service_process import ADMIN_TOKEN, running_prototype, running_service

PROMPT = {"prompt": 'The "for" statement', "max_new_tokens": 40, "temperature": 0}


@pytest.fixture(scope="module")
def textgen() -> Definition:
    return proto2prod.load_definition(EXAMPLES / "textgen.py")


@pytest.fixture(scope="module")
def textgen_quick(textgen: Definition) -> Trained:
    return textgen.model.train(NullProgress(), quick=True)


@pytest.fixture(scope="module")
def predictor(textgen: Definition, textgen_quick: Trained) -> Predictor:
    return Predictor(textgen.model, textgen_quick.weights)


# -- the contract -------------------------------------------------------------------------
def test_generation_settings_are_bounded_optional_named_inputs(textgen: Definition) -> None:
    inputs = textgen.model.inputs
    decoded = inputs.decode({"prompt": "Hi"})
    assert decoded == {
        "prompt": "Hi",
        "max_new_tokens": 80,
        "temperature": 0.7,
        "top_k": 0,
        "seed": -1,
    }
    with pytest.raises(InvalidInput) as over:
        inputs.decode({"prompt": "Hi", "max_new_tokens": 513})
    assert over.value.field == "max_new_tokens"
    assert "an integer from 1 to 512" in str(over.value)
    with pytest.raises(InvalidInput, match="not a whole number"):
        inputs.decode({"prompt": "Hi", "top_k": 2.5})
    with pytest.raises(InvalidInput, match="it is missing"):
        inputs.decode({"temperature": 0})
    schema = inputs.json_schema()
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["max_new_tokens"] == {
        "title": "max_new_tokens",
        "description": "The most tokens to generate.",
        "type": "integer",
        "minimum": 1,
        "maximum": 512,
        "default": 80,
    }
    assert fields.from_spec(textgen.model.outputs.spec()).spec() == {
        "kind": "text",
        "name": "text",
        "max_length": 10_000,
        "stream": True,
    }
    assert fields.from_spec(inputs.spec()).spec() == inputs.spec()
    # parameters added later are recorded only when set: older versions' specs stay equal
    assert fields.Number().spec() == {"kind": "number", "name": "number"}
    assert fields.Text().spec() == {"kind": "text", "name": "text", "max_length": 10_000}


class _FewLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(300, 8)
        self.head = nn.Linear(8, 100)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


class _Stopper(nn.Module):
    """ "!" until a row holds 3 real tokens (its mask says), then end of sequence: `stop`."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(ByteTokenizer.vocab_size))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.bias.expand(*ids.shape, -1).clone()
        seen = mask.sum(1)  # real tokens per row
        logits[..., ord("!")] = 1.0
        logits[..., ByteTokenizer.eos_id] = torch.where(seen > 2, 5.0, 0.0)[:, None]
        return logits


def _generator(network: type[nn.Module]) -> proto2prod.Model:
    class Gen(proto2prod.Model):
        name = "gen"
        inputs = generation.inputs(max_new_tokens=8)
        outputs = fields.Text(stream=True)

        def network(self) -> nn.Module:
            return network()

        def tokenizer(self) -> ByteTokenizer:
            return ByteTokenizer()

        def examples(self) -> list[Any]:
            return [{"prompt": "ab", "temperature": 0}]

    return Gen()


def test_the_definition_check_names_what_a_generator_lacks(textgen: Definition) -> None:
    proto2prod.definition.check_definition(textgen.model)
    with pytest.raises(DefinitionError, match="100 logits per position; the tokenizer's"):
        proto2prod.definition.check_definition(_generator(_FewLogits))
    proto2prod.definition.check_definition(_generator(_Stopper))


def test_stop_length_and_the_mask_a_network_asks_for() -> None:
    model = _generator(_Stopper)
    predictor = Predictor(model, model.network().state_dict())
    stopped = predictor.decoder.generate([Prompt(tuple(b"a"), 8)])[0]  # type: ignore[union-attr]
    assert (stopped.text, stopped.finish_reason) == ("!!", "stop")
    assert stopped.counts == {"prompt_tokens": 1, "completion_tokens": 2}
    # a longer prompt in the same step: its own mask row, its own stop
    both = predictor.decoder.generate([Prompt(tuple(b"a"), 8), Prompt(tuple(b"abc"), 8)])  # type: ignore[union-attr]
    assert [s.text for s in both] == ["!!", ""]
    assert [s.finish_reason for s in both] == ["stop", "stop"]


def test_temperature_zero_or_a_seed_give_the_same_text_alone_or_batched(
    predictor: Predictor,
) -> None:
    greedy = predictor.predict(PROMPT)
    assert len(greedy) == 40 and predictor.predict(PROMPT) == greedy
    assert "".join(chunk for chunk, _ in predictor.stream(PROMPT)) == greedy
    seeded = {**PROMPT, "temperature": 1.0, "seed": 7}
    others = [{**PROMPT, "prompt": f"Other {i}", "temperature": 1.0} for i in range(5)]
    alone = predictor.predict(seeded)
    batched = predictor.predict_batch([*others, seeded, PROMPT])
    assert batched[-2:] == [alone, greedy]  # what shares its steps changes nothing
    random = {**PROMPT, "temperature": 1.0, "seed": -1}
    assert len({predictor.predict(random) for _ in range(4)}) > 1
    top1 = {**PROMPT, "temperature": 1.0, "top_k": 1, "seed": 3}
    assert predictor.predict(top1) == greedy  # top-1 sampling is greedy


def test_the_kv_cache_gives_the_text_of_reading_the_whole_window(textgen: Definition) -> None:
    """Greedy decoding of an untrained network (logits far from ties) two ways: with its
    cache (a prefill, then one token per step, sequences joining at different lengths) and
    reading each whole window every step, within the context (no refresh yet)."""
    model = textgen.model
    torch.manual_seed(0)
    predictor = Predictor(model, model.network().state_dict())
    cached = predictor.decoder
    assert cached is not None and cached.takes_past
    windowed = generation.Decoder(
        lambda ids: predictor.network(ids)[0],  # type: ignore[arg-type]
        model.tokens,
        context=model.context,
        device=predictor.device,
        takes_mask=False,
    )
    prompts = [Prompt(tuple(b"The list"), 40), Prompt(tuple(b"def f(x):\n  return"), 30)]
    both = cached.generate(prompts)
    assert [s.text for s in both] == [s.text for s in windowed.generate(prompts)]
    assert len(set(both[0].text)) > 5  # not one repeated token: the check can fail
    # past the context the cache is read again (a prefill of the last 3/4): still going
    long = cached.generate([Prompt(tuple(b"x"), 3 * model.context)])[0]
    assert long.finish_reason == "length" and len(long.new) == 3 * model.context


def test_a_character_split_across_byte_tokens_is_shown_whole() -> None:
    sequence = generation.Continuation(Prompt((1,), 4), ByteTokenizer())
    euro = "€".encode()
    assert [sequence.advance(b) for b in euro] == ["", "", "€"]
    assert sequence.text == "€"


# -- the step batcher, in-process ---------------------------------------------------------
def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_steps_admit_between_steps_never_mix_versions_and_free_cancelled_slots(
    textgen: Definition, textgen_quick: Trained
) -> None:
    old = Predictor(textgen.model, textgen_quick.weights)
    new = Predictor(textgen.model, textgen_quick.weights)
    steps: list[tuple[str, int]] = []
    batcher = StepBatcher(max_active=3, max_waiting=6, on_step=lambda v, n, _: steps.append((v, n)))
    seen: list[set[int]] = []
    for predictor in (old, new):  # every forward pass: the sequences of one version only
        decoder = predictor.decoder
        assert decoder is not None
        step = decoder.step

        def spy(sequences: Any, step: Any = step, owner: Predictor = predictor) -> Any:
            seen.append({id(owner)})
            assert all(s.tokenizer is owner.model.tokens for s in sequences)
            return step(sequences)

        decoder.step = spy  # type: ignore[method-assign]

    async def scenario() -> dict[str, Any]:
        deadline = time.monotonic() + 60
        prompt = Prompt(tuple(b"The list"), 12)
        gens = [Generation(old, prompt, deadline, "1") for _ in range(2)]
        gens += [Generation(new, prompt, deadline, "2") for _ in range(3)]
        hung = Generation(old, Prompt(tuple(b"x"), 500), deadline, "1")
        batcher.submit(hung)
        for g in gens:
            batcher.submit(g)
        with pytest.raises(TooManyRequests):  # 3 active at most, 6 waiting: the rest 429
            for _ in range(10):
                batcher.submit(Generation(old, prompt, deadline, "1"))
        first = await anext(hung.stream())
        hung.cancel()  # its client went: the slot frees at the next step
        texts = []
        for g in gens:
            events = [e async for e in g.stream()]
            assert events[-1].kind == "done", events[-1]
            texts.append("".join(e.text for e in events))
        return {"first": first, "texts": texts, "hung": hung}

    found = _run(scenario())
    batcher.close()
    assert found["first"].kind == "chunk"
    assert len(found["hung"].sequence.new) < 500
    assert len(set(found["texts"])) == 1 and len(found["texts"][0]) == 12
    assert {v for v, _ in steps} == {"1", "2"}
    assert max(n for _, n in steps) >= 2  # sequences shared steps


def test_a_sequence_past_its_deadline_ends_with_a_504_event(predictor: Predictor) -> None:
    batcher = StepBatcher(max_active=1, max_waiting=2)

    async def scenario() -> list[Any]:
        late = Generation(predictor, Prompt(tuple(b"x"), 500), time.monotonic() + 0.3, "1")
        batcher.submit(late)
        return [e async for e in late.stream()]

    events = _run(scenario())
    batcher.close()
    assert events[-1].kind == "error" and events[-1].error.status == 504
    assert "PROTO2PROD_GENERATE_TIMEOUT_S" in str(events[-1].error)


# -- served for real ----------------------------------------------------------------------
@dataclass
class Served:
    home: Path
    registry: Registry
    version: str
    url: str


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, textgen: Definition, textgen_quick: Trained
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("textgen")
    home = root / "home"
    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(home)}))
    version = publish(registry, textgen, textgen_quick, alias="production").version
    env = {"PROTO2PROD_MAX_NEW_TOKENS": "300", "PROTO2PROD_MAX_SEQUENCES": "4"}
    with running_service(home, "textgen@production", root / "service.log", **env) as url:
        yield Served(home, registry, version, url)


def _events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in response.text.strip().split("\n\n"):
        kind, data = (line.split(": ", 1)[1] for line in block.splitlines())
        found.append((kind, json.loads(data)))
    return found


def test_generate_streams_events_and_predict_gives_the_same_whole_text(
    served: Served, predictor: Predictor
) -> None:
    with httpx.stream("POST", f"{served.url}/generate", json={"input": PROMPT}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-model-version"] == served.version
        response.read()
    events = _events(response)
    chunks = [data["text"] for kind, data in events if kind == "chunk"]
    kind, done = events[-1]
    assert kind == "done" and len(chunks) == 40
    assert done == {
        "finish_reason": "length",
        "prompt_tokens": len(PROMPT["prompt"]),  # type: ignore[arg-type]
        "completion_tokens": 40,
        "text": "".join(chunks),
        "model": "textgen",
        "version": served.version,
    }
    whole = httpx.post(f"{served.url}/predict", json={"inputs": [PROMPT, PROMPT]}).json()
    assert whole["outputs"] == [done["text"]] * 2
    assert done["text"] == predictor.predict(PROMPT)  # the same text in-process
    with Client(served.url) as client:
        streamed = list(client.generate(PROMPT))
    assert "".join(c.text for c in streamed) == done["text"]
    assert streamed[-1].finish_reason == "length" and streamed[-1].version == served.version


def test_generate_refuses_clearly(served: Served) -> None:
    url = f"{served.url}/generate"
    capped = httpx.post(url, json={"input": {**PROMPT, "max_new_tokens": 400}})
    assert capped.status_code == 422
    assert capped.json()["field"] == "max_new_tokens"
    assert "PROTO2PROD_MAX_NEW_TOKENS" in capped.json()["message"]
    bounded = httpx.post(url, json={"input": {**PROMPT, "temperature": 5}})
    assert bounded.status_code == 422 and bounded.json()["field"] == "temperature"
    assert httpx.post(url, json={"inputs": [PROMPT]}).status_code == 400
    assert (
        httpx.post(url, content=b"{", headers={"content-type": "application/json"}).status_code
        == 400
    )
    predict = httpx.post(
        f"{served.url}/predict", json={"inputs": [{**PROMPT, "max_new_tokens": 400}]}
    )
    assert predict.status_code == 422 and predict.json()["index"] == 0
    document = httpx.get(f"{served.url}/openapi.json").json()
    assert (
        "text/event-stream" in document["paths"]["/generate"]["post"]["responses"]["200"]["content"]
    )


def test_concurrent_streams_share_steps_and_a_gone_client_frees_its_slot(served: Served) -> None:
    results: list[str] = []

    def one(i: int) -> None:
        with Client(served.url) as client:
            item = {**PROMPT, "prompt": f"Stream {i}", "max_new_tokens": 30}
            results.append("".join(c.text for c in client.generate(item)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 8 and all(len(r) == 30 for r in results)
    metrics = httpx.get(f"{served.url}/metrics").text
    sizes = [
        line
        for line in metrics.splitlines()
        if line.startswith("proto2prod_batch_size_count") and 'model="textgen"' in line
    ]
    assert sizes, "the decoding steps are counted as batches"
    # 4 slots: 4 clients that leave after their first chunk must not keep them
    for _ in range(4):
        with httpx.stream(
            "POST", f"{served.url}/generate", json={"input": {**PROMPT, "max_new_tokens": 300}}
        ) as response:
            next(response.iter_lines())
    started = time.monotonic()
    with Client(served.url) as client:
        assert len("".join(c.text for c in client.generate({**PROMPT, "max_new_tokens": 5}))) == 5
    assert time.monotonic() - started < 20


def test_a_stream_in_flight_finishes_on_its_version_across_a_live_swap(
    served: Served, textgen: Definition, textgen_quick: Trained
) -> None:
    long_item = {**PROMPT, "max_new_tokens": 300}
    with httpx.stream("POST", f"{served.url}/generate", json={"input": long_item}) as response:
        lines = response.iter_lines()
        next(lines)
        changed = Trained({k: v * 0.9 for k, v in textgen_quick.weights.items()}, metrics={})
        newer = publish(served.registry, textgen, changed, alias="production").version
        reload = httpx.post(
            f"{served.url}/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert reload.status_code == 200, reload.text
        rest = "\n".join(lines)
    done = json.loads(rest.strip().rsplit("data: ", 1)[1])
    assert done["version"] == served.version and done["completion_tokens"] == 300
    after = httpx.post(f"{served.url}/generate", json={"input": PROMPT})
    assert after.headers["x-model-version"] == newer
    served.version = newer


# -- prototyped and logged ----------------------------------------------------------------
def test_gradio_streams_in_process_and_from_the_service(
    served: Served, tmp_path: Path, predictor: Predictor
) -> None:
    from gradio_client import Client as GradioClient

    version = served.version
    in_args = [str(EXAMPLES / "textgen.py"), "--model", f"textgen/{version}"]
    expected = httpx.post(f"{served.url}/predict", json={"inputs": [PROMPT]}).json()["outputs"][0]
    for args in (in_args, ["--backend", served.url]):
        with running_prototype(served.home, args, tmp_path / "gradio.log") as (url, _):
            job = GradioClient(url, verbose=False).submit(
                PROMPT["prompt"], 40, 0, 0, -1, api_name="/predict"
            )
            outputs = [o[0] for o in job]  # every partial text Gradio streamed
            assert job.outputs()[-1][0] == expected
            assert len(outputs) > 5 and outputs[-1] == expected
            assert f"version {version}" in job.outputs()[-1][1]


def test_streamlit_writes_the_stream(
    served: Served, textgen: Definition, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    first = {**textgen.model.examples()[0]}
    expected = httpx.post(f"{served.url}/predict", json={"inputs": [first]}).json()["outputs"][0]
    monkeypatch.setenv("PROTO2PROD_HOME", str(served.home))
    monkeypatch.setenv("PROTO2PROD_UI_BACKEND", served.url)
    app = AppTest.from_file(str(ROOT / "prototype" / "streamlit_app.py"), default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    app.button[0].click().run()
    assert not app.error, [e.value for e in app.error]
    assert expected.strip() in [m.value.strip() for m in app.markdown]  # what write_stream wrote
    assert f"version {served.version}" in app.caption[0].value


def test_mlflow_pyfunc_predicts_the_whole_text_and_streams(
    served: Served, predictor: Predictor
) -> None:
    import mlflow

    with served.registry.fluent():
        model = mlflow.pyfunc.load_model(f"models:/textgen/{served.version}")
        whole = model.predict([PROMPT])
        chunks = list(model.predict_stream(PROMPT))
    served_text = httpx.post(f"{served.url}/predict", json={"inputs": [PROMPT]}).json()["outputs"]
    assert whole == served_text
    assert "".join(chunks) == whole[0] and len(chunks) > 1


def test_the_example_trains_and_reports_its_validation_loss(textgen_quick: Trained) -> None:
    assert 0 < textgen_quick.metrics["val_loss"] < 5.6  # below uniform over 257 ids: ln 257
    assert textgen_quick.metrics["val_bits_per_byte"] == pytest.approx(
        textgen_quick.metrics["val_loss"] / 0.6931471805599453
    )


# -- the benchmark ------------------------------------------------------------------------
def _stream_row(arch: str, streams: int, tokens: float, p50: float, p99: float) -> dict[str, Any]:
    return {
        "model": "textgen",
        "architecture": arch,
        "streams": streams,
        "tokens_per_s": tokens,
        "ttft_p50_ms": p50,
        "ttft_p99_ms": p99,
        "streams_done": 10,
        "failed": 0,
        "server_cpu": {"service": 1.0},
    }


def test_generation_verdicts_hold_and_fail_on_the_numbers() -> None:
    from proto2prod.benchmarks.stream_verdicts import generation as _generation

    rows = [
        _stream_row("steps", 1, 250, 8.0, 12.0),
        _stream_row("steps", 32, 1200, 30.0, 70.0),
        _stream_row("one-at-a-time", 32, 250, 3000.0, 4000.0),
    ]
    held = _generation({"generation": rows}, proto2prod.benchmarks.verdicts.TARGETS)
    assert [v.holds for v in held] == [True, True, True]
    assert held[0].numbers == "1200 vs 250 tokens/s (4.80x)"
    rows[1] = {**_stream_row("steps", 32, 700, 30.0, 120.0), "failed": 1}
    failed = _generation({"generation": rows}, proto2prod.benchmarks.verdicts.TARGETS)
    assert [v.holds for v in failed] == [False, False, False]
    assert "1.43 ms batched vs 4.00 ms alone" in failed[0].reason  # CPU per token, both ways


def test_the_report_and_the_gpu_card_show_the_streams_table() -> None:
    from proto2prod.benchmarks import gpu_card
    from proto2prod.benchmarks.report import markdown
    from proto2prod.benchmarks.report_scenarios import generation_blocks

    rows = [_stream_row("steps", 32, 1200, 30.0, 70.0)]
    line = "| textgen | service, step batching | 32 | 1200 | 30.0 | 70.0 | 10 | 0 | 1.00 |"
    assert line in markdown(generation_blocks(rows))
    machine = {"gpu": "H100", "cpu": "x", "cores": 8, "versions": {"torch": "2"}}
    card = gpu_card.render(
        {
            "machine": machine,
            "device": "cuda",
            "started": "now",
            "limits": [],
            "runs": [],
            "generation": rows,
        }
    )
    assert "## Generation: concurrent streams" in card and line in card


def test_the_benchmark_streams_from_the_service_and_from_gradio(
    served: Served, tmp_path: Path
) -> None:
    from proto2prod.benchmarks import streams
    from proto2prod.benchmarks.context import Bench, Subject
    from proto2prod.benchmarks.models import EXAMPLES as BY_NAME
    from proto2prod.benchmarks.plan import Plan
    from proto2prod.benchmarks.targets import Placement, start

    plan = Plan(models=["textgen"], users=[1], duration=3, warmup=0.5)
    bench = Bench(plan, served.home, tmp_path, tmp_path, Placement.detect(), print)
    path, names = streams.payload(Subject("textgen", BY_NAME["textgen"], tmp_path), tmp_path)
    assert names == ["prompt", "max_new_tokens", "temperature", "top_k", "seed"]
    for arch in ("steps", "prototype"):
        where = {"home": served.home, "logs": tmp_path, "placement": bench.placement}
        with start(arch, "textgen", BY_NAME["textgen"], **where) as target:
            found = streams.run(bench, target, path, names, 2)
        assert found["failed"] == 0 and found["streams_done"] > 0, (arch, found)
        assert found["tokens_per_s"] > 0 and 0 < found["ttft_p50_ms"] <= found["ttft_p99_ms"]
