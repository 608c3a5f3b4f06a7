#!/usr/bin/env python3
"""PyTorch `generate` baseline for bench/sample.ts: K sampled responses per prompt from the same model folder.

Model: the random-weight bf16 folder bench/sample.ts makes (bench/_shapes.ts' randomModelFolder; pass its path),
loaded with transformers' AutoModelForCausalLM in --dtype. Prompts: the token ids bench/sample.ts wrote with
--dump-prompts (the same chat-rendered prompts of mixed lengths), else --prompts synthetic ones of 10 to 120
tokens. Sampling as ours: temperature 1, top_k 0 (off: transformers' default would be 50), top_p 1, K =
num_return_sequences, left padding; --ignore-eos forces every response to --tokens (min_new_tokens).

A batch of --batch sequences is --batch / K prompts per `generate` call. One JSON line per batch size:
generated tokens/s (sum of new tokens up to each row's end / the time of all calls, after a warm-up call),
prompts/s, the GPU's name and versions.

Run: python3 bench/gpu/sample_torch.py --model ~/.cache/nca-align/bench-models/smollm-135m-bfloat16 \
       --prompts-json /tmp/prompts.json --k 4 --tokens 32 --batch 8,32 --ignore-eos
"""
import argparse
import json
import sys
import time

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face model folder (bench/sample.ts' random folder)")
    p.add_argument("--prompts-json", help='{"prompts": [[ids], ...]} from bench/sample.ts --dump-prompts')
    p.add_argument("--prompts", type=int, default=16, help="synthetic prompts when no --prompts-json")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--tokens", type=int, default=32, help="new tokens per response at most")
    p.add_argument("--batch", default="8,32", help="sequences per generate call, comma-separated")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    a.batch = [int(b) for b in a.batch.split(",") if b.strip()]
    if a.k < 1 or a.tokens < 1 or any(b < 1 for b in a.batch):
        p.error("--k, --tokens and --batch must be >= 1")
    return a


def prompt_ids(a, vocab):
    if a.prompts_json:
        with open(a.prompts_json) as f:
            return json.load(f)["prompts"]
    g = torch.Generator().manual_seed(a.seed)
    return [torch.randint(3, min(vocab, 128), (10 + (i * 37) % 111,), generator=g).tolist() for i in range(a.prompts)]


def left_pad(rows, pad, device):
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, n - len(r):] = torch.tensor(r)
        mask[i, n - len(r):] = 1
    return ids.to(device), mask.to(device)


def main(argv=None):
    a = parse_args(argv)
    from transformers import AutoModelForCausalLM
    import transformers

    torch.manual_seed(a.seed)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=DTYPES[a.dtype]).to(a.device).eval()
    cfg = model.config
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    eos = cfg.eos_token_id
    prompts = prompt_ids(a, cfg.vocab_size)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)

    def run(rows, new_tokens):
        ids, mask = left_pad(rows, pad, a.device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=a.k,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens if a.ignore_eos else 0,
                pad_token_id=pad,
                eos_token_id=eos,
            )
        new = out[:, ids.shape[1]:]
        if a.ignore_eos or eos is None:
            return new.numel()
        stops = torch.tensor(eos if isinstance(eos, list) else [eos], device=new.device)
        hit = torch.isin(new, stops)
        # tokens up to and including the first stop id, as ours counts them
        first = torch.where(hit.any(1), hit.float().argmax(1) + 1, torch.full_like(hit[:, 0], new.shape[1], dtype=torch.long))
        return int(first.sum())

    gpu = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else None
    for batch in a.batch:
        per_call = max(1, batch // a.k)
        run(prompts[:per_call], 2)  # warm-up
        sync()
        t0 = time.perf_counter()
        tokens = 0
        for at in range(0, len(prompts), per_call):
            tokens += run(prompts[at:at + per_call], a.tokens)
        sync()
        s = time.perf_counter() - t0
        print(json.dumps({
            "bench": "sample_torch",
            "model": a.model,
            "device": a.device,
            "hardware": gpu,
            "dtype": a.dtype,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "batch": per_call * a.k,
            "prompts": len(prompts),
            "k": a.k,
            "max_new_tokens": a.tokens,
            "ignore_eos": a.ignore_eos,
            "tokens": tokens,
            "seconds": round(s, 3),
            "tokens_per_s": round(tokens / s, 1),
            "prompts_per_s": round(len(prompts) / s, 2),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
