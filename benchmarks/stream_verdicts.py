"""A generative model's claims (benchmarks/streams.py): step batching against one sequence
at a time, the first token's tail, no failed streams; thresholds in verdicts.TARGETS."""

from __future__ import annotations

from typing import Any

from proto2prod.benchmarks.verdicts import Targets, Verdict


def generation(results: dict[str, Any], t: Targets) -> list[Verdict]:
    """Step batching against one sequence at a time, its first-token tail, no failed
    streams (benchmarks/streams.py)."""
    rows = results.get("generation", [])
    out: list[Verdict] = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        top = max(r["streams"] for r in mine)

        def row(arch: str, streams: int, mine: list[dict[str, Any]] = mine) -> Any:
            found = [r for r in mine if r["architecture"] == arch and r["streams"] == streams]
            return found[0] if found else None

        steps, single, alone = row("steps", top), row("one-at-a-time", top), row("steps", 1)
        if steps and single and single["tokens_per_s"]:
            ratio = steps["tokens_per_s"] / single["tokens_per_s"]
            out.append(
                Verdict(
                    f"{model}: step batching >= {t.step_speedup:g}x the tokens/s of one "
                    f"sequence at a time, at {top} streams",
                    f"{steps['tokens_per_s']:.0f} vs {single['tokens_per_s']:.0f} tokens/s "
                    f"({ratio:.2f}x)",
                    ratio >= t.step_speedup,
                    _per_token(steps, single),
                )
            )
        if steps and alone and alone["ttft_p50_ms"]:
            ratio = steps["ttft_p99_ms"] / alone["ttft_p50_ms"]
            out.append(
                Verdict(
                    f"{model}: time to first token p99 at {top} streams <= "
                    f"{t.first_token_ratio:g}x its p50 at one stream",
                    f"{steps['ttft_p99_ms']:.1f} ms vs {alone['ttft_p50_ms']:.1f} ms "
                    f"({ratio:.1f}x)",
                    ratio <= t.first_token_ratio,
                    f"at {top} streams a new sequence joins between steps: it waits for the "
                    f"step in flight ({1000 * top / max(steps['tokens_per_s'], 1e-9):.1f} ms "
                    f"per step of {top} here), then its prefill, while the HTTP side shares "
                    f"the one core with the decoding thread",
                )
            )
        failed = sum(r["failed"] for r in mine if r["architecture"] == "steps")
        done = sum(r["streams_done"] for r in mine if r["architecture"] == "steps")
        out.append(
            Verdict(
                f"{model}: no failed streams with step batching",
                f"{failed} failed of {failed + done}",
                failed == 0 and done > 0,
            )
        )
    return out


def _per_token(steps: dict[str, Any], single: dict[str, Any]) -> str:
    """Why batching gained less than the target: the CPU each token cost either way."""

    def cost(row: dict[str, Any]) -> float:
        return 1000 * sum(row["server_cpu"].values()) / max(row["tokens_per_s"], 1e-9)

    return (
        f"the service's CPU per token: {cost(steps):.2f} ms batched vs {cost(single):.2f} ms "
        f"alone; without a KV cache every step recomputes each sequence's whole window, so "
        f"a step over N sequences costs about N windows of compute and batching saves only "
        f"the per-step overhead"
    )
