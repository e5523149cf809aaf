"""Prefill and greedy-decode speed of ParrnnForCausalLM (sru, srupp, mingru) against LlamaForCausalLM of the same
width, depth and (within 10 %) parameter count, through ``generate``, on a CPU.

Llama runs at its best here: SDPA attention, with its default dynamic cache ("llama") and with the static cache
("llama-static"). Each measurement is one ``generate(do_sample=False, max_new_tokens=T)`` whose stopping
criterion records a timestamp at every generated token: prefill = start to the first token (the parallel
forward over the prompt plus generate's setup), decode = the time between consecutive tokens (median and IQR
over the tokens of every round). A "raw loop" (prefill with ``model(...)``, then ``model(next_token,
past_key_values=cache)`` and an argmax per token, no ``generate``) is timed for short prompts: the difference to
``generate``'s per-token time is generate's own overhead. Memory: the bytes of the decoding state (parrnn's
`ParrnnCache`) against Llama's KV cache after the prompt and the T new tokens.

Runs are interleaved: each round times every model on one (prompt length, batch) before the next, so the ratios
compare timings taken under the same machine load; long prompts get fewer rounds (``--long-rounds``). Every
measurement is appended to ``<out>/raw.jsonl`` as it finishes; a rerun with the same ``--out`` skips what is
there (resumable), then writes ``results.json`` and ``results.md`` (the CPU named, threads, versions, load).

    python benchmarks/hf_speed.py --threads 2 --out benchmarks/results/<date>-zen3-hf        # the full table
    python benchmarks/hf_speed.py --tiny --out /tmp/hf-speed-smoke                           # seconds

The full table takes about 5-8 minutes on 2 quiet cores (most of it the prefills at 16384 x 8: Llama's about a
minute each with the dynamic and the static cache); an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, StoppingCriteria, StoppingCriteriaList  # noqa: E402

import parrnn  # noqa: E402
import parrnn.hf  # noqa: E402
from parrnn.experiments.bench.report import cpu_model, git_commit  # noqa: E402

PARRNN_CELLS = ("sru", "srupp", "mingru")
LLAMAS = ("llama", "llama-static")


# ---- models -------------------------------------------------------------------------------------------------

def count(model: torch.nn.Module) -> int:
    """Parameters, tied ones once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_models(hidden: int, layers: int, heads: int, vocab: int, llama_intermediate: int,
                 cells: tuple[str, ...] = PARRNN_CELLS) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """Llama and one ParrnnForCausalLM per cell, all of width ``hidden`` and depth ``layers``, tied embeddings;
    each parrnn model's SwiGLU MLP is sized so its parameter count is within 10 % of Llama's."""
    torch.manual_seed(0)
    llama_config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=llama_intermediate,
                               num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                               max_position_embeddings=1 << 16, tie_word_embeddings=True, bos_token_id=None,
                               eos_token_id=None, pad_token_id=0)
    llama_config._attn_implementation = "sdpa"
    llama = LlamaForCausalLM(llama_config).eval()
    target = count(llama)
    models: dict[str, torch.nn.Module] = {"llama": llama}
    info: dict[str, Any] = {"llama": {"params": target, "intermediate_size": llama_intermediate}}
    for cell in cells:
        options = {"proj_size": hidden // 4, "num_heads": max(1, heads // 4)} if cell == "srupp" else {}
        base = parrnn.hf.ParrnnConfig(cell=cell, vocab_size=vocab, hidden_size=hidden, num_layers=layers,
                                      intermediate_size=0, cell_options=options, pad_token_id=0)
        without = count(parrnn.hf.ParrnnForCausalLM(base))
        # 3 * hidden * intermediate parameters per block's MLP (plus one norm of hidden)
        intermediate = max(0, round((target - without - layers * hidden) / (3 * hidden * layers) / 8) * 8)
        torch.manual_seed(0)
        model = parrnn.hf.ParrnnForCausalLM(
            parrnn.hf.ParrnnConfig(**(base.to_dict() | {"intermediate_size": intermediate}))).eval()
        params = count(model)
        if abs(params - target) > 0.1 * target:
            raise ValueError(f"{cell}: {params} parameters, not within 10% of Llama's {target}")
        models[cell] = model
        info[cell] = {"params": params, "intermediate_size": intermediate, "cell_options": options}
    return models, info


# ---- timing -------------------------------------------------------------------------------------------------

class Clock(StoppingCriteria):
    """Records a timestamp each time generate has produced a token; never stops generation."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _cache_of(out: Any) -> Any:
    """The decoding cache of a model or generate output: ``cache`` (transformers >= 5.25) or ``past_key_values``."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def cache_bytes(cache: Any) -> int:
    """Bytes of a decoding state: parrnn's ParrnnCache, or a transformers key/value cache."""
    if isinstance(cache, parrnn.hf.ParrnnCache):
        return cache.nbytes()
    total = 0
    for layer in cache.layers:
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def prompt(batch: int, length: int, vocab: int) -> torch.Tensor:
    return torch.randint(1, vocab, (batch, length), generator=torch.Generator().manual_seed(length + batch))


@torch.no_grad()
def time_generate(model: torch.nn.Module, name: str, ids: torch.Tensor, tokens: int) -> dict[str, Any]:
    """One greedy generate: prefill seconds, per-token decode seconds, the state's bytes at the end."""
    clock = Clock()
    options: dict[str, Any] = {"cache_implementation": "static"} if name == "llama-static" else {}
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False,
                         pad_token_id=0, stopping_criteria=StoppingCriteriaList([clock]),
                         return_dict_in_generate=True, **options)
    if len(clock.times) != tokens or out.sequences.shape[1] != ids.shape[1] + tokens:
        raise RuntimeError(f"{name}: generated {out.sequences.shape[1] - ids.shape[1]} tokens, expected {tokens}")
    steps = [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)]
    return {"prefill_s": clock.times[0] - start, "decode_s": steps, "state_bytes": cache_bytes(_cache_of(out))}


@torch.no_grad()
def time_raw_loop(model: torch.nn.Module, name: str, ids: torch.Tensor, tokens: int) -> dict[str, Any]:
    """The decoding loop without generate: model(prompt) then model(token, past_key_values=cache) + argmax."""
    cache = None
    if name == "llama-static":
        cache = transformers.StaticCache(config=model.config, max_cache_len=ids.shape[1] + tokens)
    elif name == "llama":
        cache = transformers.DynamicCache(config=model.config)
    start = time.perf_counter()
    out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    times = [time.perf_counter()]
    cache = _cache_of(out)
    for _ in range(tokens - 1):
        out = model(token, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        cache = _cache_of(out)
        times.append(time.perf_counter())
    return {"prefill_s": times[0] - start, "decode_s": [b - a for a, b in zip(times, times[1:], strict=False)]}


# ---- the run ------------------------------------------------------------------------------------------------

def plan(args: argparse.Namespace, names: list[str]) -> list[dict[str, Any]]:
    """Every measurement in run order: rounds outermost (interleaving), then lengths, batches and models."""
    jobs = []
    for round_ in range(args.rounds):
        for length in args.lengths:
            rounds = args.rounds if length < args.long_from else args.long_rounds
            if round_ >= rounds:
                continue
            tokens = args.decode_tokens if length < args.long_from else args.long_decode_tokens
            for batch in args.batches:
                for name in names:
                    jobs.append({"round": round_, "model": name, "length": length, "batch": batch,
                                 "kind": "generate", "tokens": tokens})
                    if length <= args.raw_max:
                        jobs.append({"round": round_, "model": name, "length": length, "batch": batch,
                                     "kind": "raw", "tokens": tokens})
    return jobs


def key(job: dict[str, Any]) -> str:
    return f"{job['round']}/{job['model']}/{job['length']}/{job['batch']}/{job['kind']}"


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def summarize(records: list[dict[str, Any]], names: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (model, length, batch): prefill tokens/s (median over rounds), decode ms/token (median and
    IQR over all tokens of all rounds), raw-loop decode ms/token, state bytes; ratios against the faster Llama."""
    rows = []
    for length in args.lengths:
        for batch in args.batches:
            by_model: dict[str, dict[str, Any]] = {}
            for name in names:
                gen = [r for r in records if (r["model"], r["length"], r["batch"], r["kind"])
                       == (name, length, batch, "generate")]
                if not gen:
                    continue
                raw = [r for r in records if (r["model"], r["length"], r["batch"], r["kind"])
                       == (name, length, batch, "raw")]
                steps = [s for r in gen for s in r["decode_s"]]
                q1, med, q3 = quartiles(steps)
                prefills = [r["prefill_s"] for r in gen]
                prefill = statistics.median(prefills)
                row = {"model": name, "length": length, "batch": batch, "rounds": len(gen),
                       "prefill_tok_s": length * batch / prefill, "prefill_s": prefill,
                       "prefill_range_tok_s": [length * batch / max(prefills), length * batch / min(prefills)],
                       "decode_ms": 1e3 * med, "decode_iqr_ms": [1e3 * q1, 1e3 * q3],
                       "decode_tok_s": batch / med, "state_bytes": gen[-1]["state_bytes"]}
                if raw:
                    row["raw_decode_ms"] = 1e3 * statistics.median(s for r in raw for s in r["decode_s"])
                    row["generate_overhead_ms"] = row["decode_ms"] - row["raw_decode_ms"]
                by_model[name] = row
            llamas = [by_model[n] for n in LLAMAS if n in by_model]
            for name, row in by_model.items():
                if name not in LLAMAS and llamas:
                    row["decode_speedup"] = min(r["decode_ms"] for r in llamas) / row["decode_ms"]
                    row["prefill_speedup"] = row["prefill_tok_s"] / max(r["prefill_tok_s"] for r in llamas)
                    row["state_vs_kv"] = row["state_bytes"] / min(r["state_bytes"] for r in llamas)
                rows.append(row)
    return rows


def flatness(rows: list[dict[str, Any]], names: list[str], lengths: list[int]) -> dict[str, Any]:
    """Per model and batch: decode ms/token at the longest prompt over the shortest."""
    out = {}
    for name in names:
        for batch in {r["batch"] for r in rows}:
            by_length = {r["length"]: r["decode_ms"] for r in rows if (r["model"], r["batch"]) == (name, batch)}
            if min(lengths) in by_length and max(lengths) in by_length:
                out[f"{name}/N={batch}"] = by_length[max(lengths)] / by_length[min(lengths)]
    return out


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], flat: dict[str, Any]) -> str:
    lines = [f"# ParrnnForCausalLM vs LlamaForCausalLM: prefill and greedy decode ({meta['cpu']})", "",
             f"{meta['threads']} threads, float32, width {meta['hidden']}, {meta['layers']} blocks, vocabulary "
             f"{meta['vocab']}; parameters: " + ", ".join(f"{k} {v['params']:,}" for k, v in meta["models"].items())
             + f". torch {meta['torch']}, transformers {meta['transformers']}, parrnn commit {meta['commit']}. "
             f"Load average before/after: {meta['load_before']} / {meta['load_after']}.", "",
             f"Command: `{meta['command']}`", "",
             "Prefill: median over rounds (min-max). "
             "Decode: median ms per generated token (IQR over tokens and rounds) through `generate`; raw: the same "
             "loop without `generate` (short prompts); speedups against the faster Llama (dynamic or static cache) "
             "at the same prompt length and batch; state: bytes of the decoding state after prompt + new tokens.",
             "",
             "| model | prompt | batch | prefill tok/s (range) | prefill x | decode ms/token (IQR) | decode x "
             "| raw ms | generate overhead ms | state MiB | state / KV |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        speed = {k: format(r[k], ".2f") if k in r else "" for k in
                 ("prefill_speedup", "decode_speedup", "raw_decode_ms", "generate_overhead_ms")}
        ratio = format(r["state_vs_kv"], ".4f") if "state_vs_kv" in r else ""
        lines.append(
            f"| {r['model']} | {r['length']} | {r['batch']} | {r['prefill_tok_s']:,.0f} "
            f"({r['prefill_range_tok_s'][0]:,.0f}-{r['prefill_range_tok_s'][1]:,.0f}, {r['rounds']} rounds) "
            f"| {speed['prefill_speedup']} "
            f"| {r['decode_ms']:.2f} ({r['decode_iqr_ms'][0]:.2f}-{r['decode_iqr_ms'][1]:.2f}) "
            f"| {speed['decode_speedup']} | {speed['raw_decode_ms']} | {speed['generate_overhead_ms']} "
            f"| {r['state_bytes'] / 2**20:.3f} | {ratio} |")
    lines += ["", "Decode ms/token at the longest prompt over the shortest (1.00 = flat):", ""]
    lines += [f"- {k}: {v:.2f}" for k, v in sorted(flat.items())]
    overhead = [r for r in rows if "generate_overhead_ms" in r]
    if overhead:
        lines += ["", "generate's own per-token overhead (generate minus the raw loop), as a share of the decode time:",
                  ""]
        lines += [f"- {r['model']} prompt {r['length']} batch {r['batch']}: {r['generate_overhead_ms']:.2f} ms "
                  f"({100 * r['generate_overhead_ms'] / r['decode_ms']:.0f} %)" for r in overhead]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="results folder (raw.jsonl makes the run resumable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--llama-intermediate", type=int, default=688)
    parser.add_argument("--cells", nargs="+", default=list(PARRNN_CELLS))
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3, help="rounds for prompts shorter than --long-from")
    parser.add_argument("--long-from", type=int, default=4096)
    parser.add_argument("--long-rounds", type=int, default=1)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--long-decode-tokens", type=int, default=12)
    parser.add_argument("--raw-max", type=int, default=1024, help="raw loops for prompts up to this length")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny models and prompts (a smoke test); explicit options still win")
    if "--tiny" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(hidden=32, layers=2, heads=2, llama_intermediate=88, lengths=[16, 64], batches=[1, 2],
                            rounds=2, long_from=64, decode_tokens=5, long_decode_tokens=4, raw_max=16)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models, info = build_models(args.hidden, args.layers, args.heads, args.vocab, args.llama_intermediate,
                                tuple(args.cells))
    models["llama-static"] = models["llama"]
    names = ["llama", "llama-static", *args.cells]
    raw_path = out / "raw.jsonl"
    signature = {"threads": args.threads, "hidden": args.hidden, "layers": args.layers, "heads": args.heads,
                 "vocab": args.vocab, "llama_intermediate": args.llama_intermediate}
    signature_path = out / "run.json"
    if signature_path.exists() and json.loads(signature_path.read_text()) != signature:
        raise SystemExit(f"{out} holds a run with other settings ({signature_path.read_text().strip()}); resume "
                         "with those, or give another --out")
    signature_path.write_text(json.dumps(signature))
    done = {}
    if raw_path.exists():
        for line in raw_path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done[key(record)] = record
    jobs = plan(args, names)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"{len(jobs)} measurements, {sum(key(j) in done for j in jobs)} already in {raw_path}", flush=True)
    warm = prompt(1, 16, args.vocab)  # first calls load kernels and fill caches: not part of any measurement
    for name in names:
        time_generate(models[name], name, warm, 2)
        time_raw_loop(models[name], name, warm, 2)
    for i, job in enumerate(jobs):
        if key(job) in done:
            continue
        ids = prompt(job["batch"], job["length"], args.vocab)
        timer = time_generate if job["kind"] == "generate" else time_raw_loop
        result = timer(models[job["model"]], job["model"], ids, job["tokens"])
        record = job | result | {"load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
        done[key(job)] = record
        with raw_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"[{i + 1}/{len(jobs)}] {key(job)}: prefill {record['prefill_s']:.3f} s, decode "
              f"{1e3 * statistics.median(record['decode_s']):.2f} ms/token", flush=True)
    records = [done[key(j)] for j in jobs]
    rows = summarize(records, names, args)
    flat = flatness(rows, names, args.lengths)
    meta = {"cpu": cpu_model(), "threads": args.threads, "hidden": args.hidden, "layers": args.layers,
            "vocab": args.vocab, "heads": args.heads, "models": info, "torch": torch.__version__,
            "transformers": transformers.__version__, "parrnn": parrnn.__version__, "commit": git_commit(),
            "python": platform.python_version(), "date": datetime.date.today().isoformat(),
            "load_before": load_before, "load_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "command": "python benchmarks/hf_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows, "flatness": flat}, indent=1))
    text = markdown(meta, rows, flat)
    (out / "results.md").write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
