#!/usr/bin/env python3
"""PyTorch + PEFT side of bench/big_throughput.ts: the same shape, batch, LoRA and loss.

Model: transformers' AutoModelForCausalLM.from_config(config.json of the random folder that
big_throughput.ts wrote; --config), random init, weights in bf16 on the GPU. LoRA r (alpha = r, dropout as
given) on q, k, v, o, gate, up, down: PEFT when installed, else a minimal hand-written LoRA wrapper of
nn.Linear (said in the output). bf16 autocast, gradient checkpointing (use_reentrant=False) as given.
Batch: prompts x K sequences of `seq` seeded random ids, every token scored. Loss: NCA on the sequences'
summed log-probs (log_softmax in fp32) against fixed reference log-probs and soft labels, beta 0.1.
Optimizer: AdamW (fused when available) on the LoRA parameters, clip_grad_norm_(1.0).

One JSON line: tokens/s over the timed steps, step ms, torch.cuda.max_memory_allocated and
max_memory_reserved (GiB), versions.

Run: python3 bench/torch_big_baseline.py --config FOLDER/config.json [--prompts 4 --k 4 --seq 1024]
     [--steps 2 --warmup 1] [--gc on|off] [--lora-r 16] [--lora-dropout 0]
"""
import argparse
import json
import math
import sys
import time

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_linear(torch):
    """The hand-written LoRA layer (torch is imported only once the flags are read)."""

    class LoraLinear(torch.nn.Module):
        """y = W x + (alpha / r) * B A dropout(x), A kaiming-uniform, B zero (PEFT's init), fp32 adapters."""

        def __init__(self, base, r, alpha, dropout):
            super().__init__()
            self.base = base
            self.lora_A = torch.nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))
            self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))
            torch.nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.drop = torch.nn.Dropout(dropout)
            self.scaling = alpha / r

        def forward(self, x):
            return self.base(x) + (self.drop(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling

    return LoraLinear


def add_lora(torch, model, r, dropout):
    for p in model.parameters():
        p.requires_grad_(False)
    why = "peft is not installed"
    try:
        import peft

        cfg = peft.LoraConfig(
            r=r, lora_alpha=r, lora_dropout=dropout, target_modules=list(TARGETS), task_type="CAUSAL_LM"
        )
        return peft.get_peft_model(model, cfg), f"peft {peft.__version__}"
    except ImportError:
        pass
    except Exception as e:  # a peft that does not fit this transformers: fall back, and say so
        why = f"peft failed: {type(e).__name__}: {e}"[:200]
    layer = lora_linear(torch)
    swaps = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in TARGETS]
    for name in swaps:
        parent_name, child = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        setattr(parent, child, layer(getattr(parent, child), r, r, dropout))
    return model, f"hand-written ({len(swaps)} modules; {why})"


def nca_loss(torch, policy, reference, labels, beta, k):
    r = beta * (policy - reference)
    pos = (labels * torch.nn.functional.logsigmoid(r)).sum(-1)
    neg = torch.nn.functional.logsigmoid(-r).sum(-1)
    return -(pos + neg / k).mean()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config.json of the model shape")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--gc", choices=("on", "off"), default="on")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    for name in ("prompts", "k", "seq", "steps", "lora_r"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= a.lora_dropout < 1:
        p.error("--lora-dropout must be in [0, 1)")
    try:
        import torch
    except ImportError:
        raise SystemExit("torch_big_baseline: PyTorch is not installed (this runs on the GPU machine)")
    if not torch.cuda.is_available():
        raise SystemExit("torch_big_baseline: no CUDA device")

    from transformers import AutoConfig, AutoModelForCausalLM
    import transformers

    torch.manual_seed(a.seed)
    cfg = AutoConfig.from_pretrained(a.config)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    model.config.use_cache = False
    if a.gc == "on":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model, lora_impl = add_lora(torch, model, a.lora_r, a.lora_dropout)
    params = [q for q in model.parameters() if q.requires_grad]
    for q in params:
        q.data = q.data.float()
    try:
        opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    except (TypeError, RuntimeError):
        opt = torch.optim.AdamW(params, lr=1e-5)

    rows = a.prompts * a.k
    g = torch.Generator(device="cuda").manual_seed(a.seed)
    ids = torch.randint(0, cfg.vocab_size, (rows, a.seq), device="cuda", generator=g)
    reference = -a.seq * math.log(cfg.vocab_size) + torch.randn(a.prompts, a.k, device="cuda", generator=g)
    labels = torch.softmax(torch.randn(a.prompts, a.k, device="cuda", generator=g), -1)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=ids).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        tok = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        policy = tok.sum(-1).view(a.prompts, a.k)
        loss = nca_loss(torch, policy, reference, labels, 0.1, a.k)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    step_s = times[len(times) // 2]
    gib = lambda b: round(b / 2**30, 2)  # noqa: E731
    print(json.dumps({
        "bench": "torch_big_baseline",
        "model_type": cfg.model_type,
        "hidden": cfg.hidden_size,
        "layers": cfg.num_hidden_layers,
        "vocab": cfg.vocab_size,
        "params": sum(q.numel() for q in model.parameters()),
        "trainable_params": sum(q.numel() for q in params),
        "lora": lora_impl,
        "precision": "bf16 autocast, bf16 base weights, fp32 adapters",
        "gradient_checkpointing": a.gc == "on",
        "batch": f"{a.prompts} x {a.k} x {a.seq}",
        "tokens_per_step": rows * a.seq,
        "step_ms": round(step_s * 1000, 1),
        "tokens_per_s": round(rows * a.seq / step_s, 1),
        "max_memory_allocated_gib": gib(torch.cuda.max_memory_allocated()),
        "max_memory_reserved_gib": gib(torch.cuda.max_memory_reserved()),
        "last_loss": round(float(loss), 5),
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    sys.exit(main())
