#!/usr/bin/env python3
"""transformers' `generate` baseline for bench/decode.ts: greedy decode tokens/s of the same random folder.

Model: the random-weight bf16 folder bench/decode.ts makes (bench/_shapes.ts' randomModelFolder, e.g.
$MODELS/gpt2-124m-bfloat16), loaded with AutoModelForCausalLM in --dtype. Prompts: --prompt random token
ids (< 128, as the folders' tiny tokenizer has them) per row; every row generates exactly --tokens new tokens
(min_new_tokens), greedy, as bench/decode.ts measures. Per --cache: `dynamic` (transformers' default cache)
and `static` (cache_implementation="static", no torch.compile).

One JSON line per cache x batch: tokens/s (batch * new tokens / the time of one generate call after a warm-up
call, prefill included, as ours), ms per step, versions and the GPU's name.

Run: python3 bench/gpu/decode_torch.py --model $MODELS/gpt2-124m-bfloat16 --batch 1,16 --tokens 64 --prompt 128
"""
import argparse
import json
import os
import sys
import time

DTYPES = ("bf16", "fp16", "fp32")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face model folder (bench/decode.ts' random folder)")
    p.add_argument("--batch", default="1,16", help="rows per generate call, comma-separated")
    p.add_argument("--tokens", type=int, default=64, help="new tokens per row")
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens per row")
    p.add_argument("--cache", default="dynamic,static", help="dynamic, static or both")
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        a.batch = [int(b) for b in a.batch.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batch: whole numbers, comma-separated, got {a.batch!r}")
    if not a.batch or min(a.batch) < 1:
        p.error("--batch: at least one size >= 1")
    a.cache = [c.strip() for c in a.cache.split(",") if c.strip()]
    for c in a.cache:
        if c not in ("dynamic", "static"):
            p.error(f"--cache: dynamic or static, got {c!r}")
    if a.tokens < 1 or a.prompt < 1:
        p.error("--tokens and --prompt must be >= 1")
    if not os.path.isfile(os.path.join(a.model, "config.json")):
        p.error(f"--model {a.model}: no config.json there")
    return a


def main(argv=None):
    a = parse_args(argv)
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype).to(a.device).eval()
    gen = torch.Generator().manual_seed(a.seed)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    for cache in a.cache:
        for batch in a.batch:
            ids = torch.randint(3, 128, (batch, a.prompt), generator=gen).to(a.device)
            mask = torch.ones_like(ids)
            kwargs = dict(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=a.tokens,
                min_new_tokens=a.tokens,
                do_sample=False,
                pad_token_id=0,
            )
            if cache == "static":
                kwargs["cache_implementation"] = "static"
            try:
                with torch.no_grad():
                    model.generate(**kwargs)  # warm-up
                    sync()
                    t0 = time.perf_counter()
                    out = model.generate(**kwargs)
                    sync()
                    seconds = time.perf_counter() - t0
            except Exception as e:  # a transformers without the static cache for this model, say
                print(json.dumps({"bench": "decode_torch", "cache": cache, "batch": batch, "error": str(e)[:400]}))
                continue
            new = out.shape[1] - a.prompt
            print(json.dumps({
                "bench": "decode_torch",
                "model": os.path.basename(os.path.normpath(a.model)),
                "dtype": a.dtype,
                "cache": cache,
                "batch": batch,
                "prompt": a.prompt,
                "new_tokens": new,
                "seconds": round(seconds, 4),
                "tokens_per_s": round(batch * new / seconds, 1),
                "ms_per_step": round(1000 * seconds / max(1, new), 2),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "gpu": gpu,
            }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
