#!/usr/bin/env python3
"""PyTorch eager baseline for bench/train_throughput.ts: same GPT-2-124M-shaped model, batch and optimizer.

Model: transformers' GPT2LMHeadModel from a GPT2Config (vocab 50257, 12 layers, hidden 768, 12 heads,
1024 positions; dropout 0, as our graphs have none), random init. Batch: 8 x 512 seeded random token ids,
labels = inputs (the mean token cross-entropy: what our `full`/`lora` SFT cases optimize). Optimizer:
torch.optim.AdamW (fused=True when available, weight decay 0.01) with clip_grad_norm_(1.0), like ours.

Cases, `MODE-PRECISION[-ATTN]`:
  MODE       full (every weight trains) or lora (r = 16, alpha 32, on c_attn, c_proj, c_fc; PEFT when it is
             installed, else a minimal hand-written LoRA wrapper of transformers' Conv1D layers)
  PRECISION  fp32 (TF32 off), tf32 (fp32 params, TF32 matmuls: allow_tf32 / fp32_precision "tf32"), or
             bf16 (fp32 params, torch.autocast(bfloat16), TF32 on)
  ATTN       sdpa (default: transformers' default, fused attention kernels) or eager (the unfused
             softmax(QK^T)V that our ONNX graph computes)

One JSON line per case: tokens/s, step ms, MFU and the formula (6N full, 4N LoRA, N = all parameters;
peak: H100/H200 dense TF32 494.7, bf16 989.4, fp32 66.9 TFLOP/s, or --peak-tflops), the GPU name and
versions. Reference (H200, full fine-tune, B=8, T=512, sdpa): fp32 47.7k tok/s, TF32 105k, bf16 131k.

Run: python3 bench/torch_baseline.py [--cases full-tf32,full-bf16,lora-tf32,lora-bf16] [--steps 20]
"""
import argparse
import json
import math
import sys
import time

import torch

PEAKS = {"tf32": 494.7, "bf16": 989.4, "fp32": 66.9}  # H100/H200 SXM dense TFLOP/s
TARGETS = ("c_attn", "c_proj", "c_fc")


class LoraConv1D(torch.nn.Module):
    """y = Conv1D(x) + (alpha / r) * x A^T B^T, A [r, in] kaiming-uniform, B [out, r] zero (PEFT's init)."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        n_in, n_out = base.weight.shape  # Conv1D keeps [in, out]
        self.lora_A = torch.nn.Parameter(torch.empty(r, n_in, device=base.weight.device))
        self.lora_B = torch.nn.Parameter(torch.zeros(n_out, r, device=base.weight.device))
        torch.nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling


def add_lora(model, r, alpha):
    """LoRA on every c_attn / c_proj / c_fc; returns the name of the implementation used."""
    for p in model.parameters():
        p.requires_grad_(False)
    why = "peft is not installed"
    try:
        import peft

        cfg = peft.LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=0.0,
            target_modules=list(TARGETS),
            fan_in_fan_out=True,
            task_type="CAUSAL_LM",
        )
        return peft.get_peft_model(model, cfg), f"peft {peft.__version__}"
    except ImportError:
        pass
    except Exception as e:  # a peft that does not fit this transformers: fall back, and say so
        why = f"peft failed: {type(e).__name__}: {e}"[:200]
        print(f"torch_baseline: {why}; using the hand-written LoRA", file=sys.stderr)
    from transformers.pytorch_utils import Conv1D

    swaps = []
    for name, module in model.named_modules():
        if isinstance(module, Conv1D) and name.split(".")[-1] in TARGETS:
            swaps.append(name)
    for name in swaps:
        parent_name, child = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoraConv1D(getattr(parent, child), r, alpha))
    if not swaps:
        raise SystemExit("no Conv1D c_attn/c_proj/c_fc modules found: transformers' GPT-2 changed")
    return model, f"hand-written ({len(swaps)} modules; {why})"


def set_tf32(on):
    """TF32 for fp32 matmuls: PyTorch >= 2.9's fp32_precision API (mixing it with the legacy allow_tf32
    flag raises there), else the legacy flag."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = "tf32" if on else "ieee"
    else:
        matmul.allow_tf32 = on


def make_optimizer(params, lr):
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=True), True
    except (TypeError, RuntimeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01), False


def run_case(case, a, device, gpu):
    from transformers import GPT2Config, GPT2LMHeadModel

    parts = case.split("-")
    if len(parts) not in (2, 3) or parts[0] not in ("full", "lora") or parts[1] not in PEAKS:
        raise SystemExit(f"unknown case {case!r}: MODE-PRECISION[-ATTN], e.g. full-tf32, lora-bf16-eager")
    mode, precision = parts[0], parts[1]
    attn = parts[2] if len(parts) == 3 else "sdpa"
    if attn not in ("sdpa", "eager"):
        raise SystemExit(f"unknown attention {attn!r} in case {case!r} (sdpa or eager)")
    set_tf32(precision in ("tf32", "bf16"))

    torch.manual_seed(a.seed)
    cfg = GPT2Config(
        vocab_size=a.vocab,
        n_positions=max(a.positions, a.seq),
        n_embd=a.hidden,
        n_layer=a.layers,
        n_head=a.heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        attn_implementation=attn,
    )
    try:
        cfg._attn_implementation = attn
    except Exception:  # the constructor argument covers transformers versions without the setter
        pass
    model = GPT2LMHeadModel(cfg).to(device).float()
    n_params = sum(p.numel() for p in model.parameters())
    lora_impl = None
    if mode == "lora":
        model, lora_impl = add_lora(model, a.lora_r, 2 * a.lora_r)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    opt, fused = make_optimizer(trainable, a.lr)

    gen = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=gen).to(device)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first = None
    for _ in range(a.warmup):
        loss = step()
        first = first if first is not None else loss.item()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync()
    wall = time.perf_counter() - t0
    last = loss.item()
    if not math.isfinite(last):
        raise RuntimeError(f"{case}: loss is {last}")

    tokens_per_s = a.batch * a.seq * a.steps / wall
    flops_per_token = (6 if mode == "full" else 4) * n_params
    known_gpu = gpu is not None and ("H100" in gpu or "H200" in gpu)
    peak = a.peak_tflops if a.peak_tflops else (PEAKS[precision] if known_gpu else None)
    import transformers

    return {
        "bench": "torch_baseline",
        "case": case,
        "mode": mode,
        "precision": precision,
        "attn": getattr(model.config, "_attn_implementation", attn),
        "device": device.type,
        "gpu": gpu,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lora": lora_impl,
        "fused_adamw": fused,
        "layers": a.layers,
        "hidden": a.hidden,
        "heads": a.heads,
        "vocab": a.vocab,
        "batch": a.batch,
        "seq": a.seq,
        "steps": a.steps,
        "params": n_params,
        "trainable_params": n_trainable,
        "tokens_per_s": round(tokens_per_s, 1),
        "step_ms": round(1000 * wall / a.steps, 3),
        "flops_per_token": flops_per_token,
        "model_tflops": round(flops_per_token * tokens_per_s / 1e12, 4),
        "peak_tflops": peak,
        "mfu": round(flops_per_token * tokens_per_s / (peak * 1e12), 4) if peak else None,
        "mfu_formula": f"{6 if mode == 'full' else 4}*N*tokens/s / peak; N = {n_params} (all parameters, "
        f"attention score FLOPs excluded); peak = {peak} TFLOP/s ({precision})",
        "max_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
        "first_loss": first,
        "last_loss": last,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="full-tf32,full-bf16,lora-tf32,lora-bf16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--positions", type=int, default=1024)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name in ("batch", "seq", "steps", "layers", "hidden", "heads", "vocab", "lora_r"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.warmup < 1:
        p.error("--warmup must be >= 1 (the first steps allocate and pick kernels)")
    device = torch.device(a.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    failed = 0
    for case in [c.strip() for c in a.cases.split(",") if c.strip()]:
        try:
            rec = run_case(case, a, device, gpu)
        except (RuntimeError, ValueError) as e:  # e.g. out of memory: report it and go on
            failed += 1
            rec = {"bench": "torch_baseline", "case": case, "error": f"{type(e).__name__}: {e}"[:500]}
        print(json.dumps(rec), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
