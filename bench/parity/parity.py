#!/usr/bin/env python3
"""Reference side of the model parity check: PyTorch + transformers write, bench/parity/ours.ts compares.

For each tiny random model -- Llama with grouped-query attention, Qwen2 (q/k/v biases), GPT-2 (tied
embeddings, Conv1D layers) -- this script

1. builds it with transformers (float32, eager attention, eval mode: no dropout), with weights drawn
   N(0, 0.1) and norm weights / biases perturbed so that every parameter matters;
2. saves it with save_pretrained (safetensors) to OUT/<model>/ and checks that from_pretrained loads the
   same logits back;
3. makes a batch of 8 sequences x 16 tokens, rows 0-3 right-padded and rows 4-7 left-padded, labels -100
   on the prompt and the padding; position ids from the mask as `generate` computes them
   (cumsum(mask) - 1, 1 on padding), which is what our decoder derives from the mask;
4. computes the logits, the per-sequence summed response log-probs (HF shift: logits at t score the label
   at t + 1), and the gradients of two losses with respect to a few named parameters:
     r_i = beta * (log pi_i - log mu_i)   (mu: a fixed reference tensor, saved)
     DPO (K = 2, 4 prompts):  mean_prompts  -log sigma(r_chosen - r_rejected)
     NCA (K = 4, 2 prompts):  mean_prompts [ -sum_i p_i log sigma(r_i) - (1/K) sum_i log sigma(-r_i) ]
   with p = softmax(rewards) (the soft labels, saved);
5. writes OUT/<model>/parity.json (batch, reference tensors, logits, log-probs, losses, gradients;
   parameters named as our loader names them: GPT-2 without the `transformer.` prefix) and
   OUT/manifest.json.

Run:  python3 bench/parity/parity.py --out /tmp/parity
then: deno run -A bench/parity/ours.ts --dir /tmp/parity --device cuda
"""
import json
import math
import os
import random
import sys

import torch
import torch.nn.functional as F

from _harness import gpt2_sizes, reference_main, rotary_sizes

ROWS, WIDTH, VOCAB = 8, 16, 96
BETA = 0.5

# the parameters whose gradients are compared (canonical names, as bench/parity/ours.ts loads them)
LLAMA_PARAMS = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.1.self_attn.v_proj.weight",
    "model.layers.1.self_attn.o_proj.weight",
    "model.layers.0.mlp.gate_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
    "model.layers.0.input_layernorm.weight",
    "model.norm.weight",
    "lm_head.weight",
]
QWEN2_EXTRA = ["model.layers.0.self_attn.q_proj.bias", "model.layers.1.self_attn.k_proj.bias"]
GPT2_PARAMS = [
    "wte.weight",
    "wpe.weight",
    "h.0.attn.c_attn.weight",
    "h.0.attn.c_attn.bias",
    "h.1.attn.c_proj.weight",
    "h.1.mlp.c_fc.weight",
    "h.0.mlp.c_proj.bias",
    "h.0.ln_1.weight",
    "h.1.ln_2.bias",
    "ln_f.weight",
]
QWEN3_EXTRA = ["model.layers.0.self_attn.q_norm.weight", "model.layers.1.self_attn.k_norm.weight"]
GEMMA_EXTRA = ["model.layers.0.pre_feedforward_layernorm.weight", "model.layers.1.post_feedforward_layernorm.weight"]
PHI3_PARAMS = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.qkv_proj.weight",
    "model.layers.1.self_attn.o_proj.weight",
    "model.layers.0.mlp.gate_up_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
    "model.layers.0.input_layernorm.weight",
    "model.norm.weight",
    "lm_head.weight",
]
KINDS = ("llama", "qwen2", "gpt2", "mistral", "qwen3", "gemma2", "gemma3_text", "phi3")
# windows shorter than the batch's 16 columns, so that masking them matters
WINDOW = 6


def param_names(kind):
    if kind == "gpt2":
        return GPT2_PARAMS
    if kind == "phi3":
        return PHI3_PARAMS
    extra = {
        "qwen2": QWEN2_EXTRA,
        "qwen3": QWEN3_EXTRA,
        "gemma2": GEMMA_EXTRA,
        "gemma3_text": GEMMA_EXTRA + QWEN3_EXTRA,
    }.get(kind, [])
    return LLAMA_PARAMS + extra


def make_config(kind):
    import transformers as tf

    common = dict(attn_implementation="eager")
    sizes = rotary_sizes(VOCAB, **common)
    if kind == "llama":
        return tf.LlamaConfig(attention_bias=False, **sizes), tf.LlamaForCausalLM
    if kind == "qwen2":
        return tf.Qwen2Config(use_sliding_window=False, **sizes), tf.Qwen2ForCausalLM
    if kind == "gpt2":
        cfg = tf.GPT2Config(**gpt2_sizes(VOCAB, **common))
        return cfg, tf.GPT2LMHeadModel
    if kind == "mistral":
        return tf.MistralConfig(sliding_window=WINDOW, **sizes), tf.MistralForCausalLM
    if kind == "qwen3":
        # head_dim 32 x 4 heads != hidden 64, as Qwen3 has; the second layer slides
        cfg = tf.Qwen3Config(head_dim=32, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1, **sizes)
        return cfg, tf.Qwen3ForCausalLM
    if kind == "gemma2":
        cfg = tf.Gemma2Config(
            head_dim=16,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=8.0,
            sliding_window=WINDOW,
            hidden_activation="gelu_pytorch_tanh",
            **sizes,
        )
        return cfg, tf.Gemma2ForCausalLM
    if kind == "gemma3_text":
        cfg = tf.Gemma3TextConfig(
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=WINDOW,
            sliding_window_pattern=2,  # layer 0 slides (local rope base), layer 1 is global (linear scaling)
            rope_theta=1e6,
            rope_local_base_freq=10000.0,
            rope_scaling={"rope_type": "linear", "factor": 8.0},
            **sizes,
        )
        return cfg, tf.Gemma3ForCausalLM
    if kind == "phi3":
        cfg = tf.Phi3Config(
            partial_rotary_factor=0.5,
            sliding_window=WINDOW,
            original_max_position_embeddings=32,
            rope_scaling={
                "type": "longrope",
                "short_factor": [1.0 + i / 8 for i in range(4)],
                "long_factor": [2.0 + i for i in range(4)],
            },
            **sizes,
        )
        return cfg, tf.Phi3ForCausalLM
    raise ValueError(f"unknown model {kind!r}")


def force_eager(config):
    try:
        config._attn_implementation = "eager"
    except Exception:  # older/newer transformers spell it differently; the constructor kwarg covers it
        pass


def is_norm(name):
    return "norm" in name or ".ln_" in name or name.startswith("ln_") or "ln_f" in name


def build_model(kind, seed):
    cfg, model_cls = make_config(kind)
    force_eager(cfg)
    torch.manual_seed(seed)
    model = model_cls(cfg).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_norm(name):
                if name.endswith("weight"):
                    p.copy_(1 + 0.1 * torch.randn_like(p))
                else:
                    p.normal_(0.0, 0.1)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.1)
    return model.eval()


def torch_name(kind, canonical):
    return "transformer." + canonical if kind == "gpt2" else canonical


def make_batch(seed):
    rng = random.Random(seed)
    ids = [[0] * WIDTH for _ in range(ROWS)]
    mask = [[0] * WIDTH for _ in range(ROWS)]
    labels = [[-100] * WIDTH for _ in range(ROWS)]
    for r in range(ROWS):
        prompt, response = rng.randint(2, 6), rng.randint(3, 7)
        n = prompt + response
        start = 0 if r < ROWS // 2 else WIDTH - n  # rows 0-3 right-padded, 4-7 left-padded
        for t in range(n):
            tok = rng.randrange(3, VOCAB - 1)
            ids[r][start + t] = tok
            mask[r][start + t] = 1
            if t >= prompt:
                labels[r][start + t] = tok
    ids_t = torch.tensor(ids, dtype=torch.long)
    mask_t = torch.tensor(mask, dtype=torch.long)
    labels_t = torch.tensor(labels, dtype=torch.long)
    # as transformers' generate derives them (and our decoder does from the mask)
    pos = mask_t.cumsum(-1) - 1
    pos = pos.masked_fill(mask_t == 0, 1)
    return ids_t, mask_t, labels_t, pos


def sequence_logps(logits, labels):
    """Summed log-probs of the labels; logits at t score the label at t + 1; -100 is not scored."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = labels[:, 1:]
    scored = target != -100
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(scored, picked, torch.zeros_like(picked)).sum(-1)


def dpo_loss(policy, ref, beta):
    r = beta * (policy - ref)  # [P, 2], column 0 = chosen
    return -F.logsigmoid(r[:, 0] - r[:, 1]).mean()


def nca_loss(policy, ref, soft, beta):
    k = policy.shape[1]
    r = beta * (policy - ref)  # [P, K]
    per_prompt = -(soft * F.logsigmoid(r)).sum(-1) - F.logsigmoid(-r).sum(-1) / k
    return per_prompt.mean()


def nca_loss_softplus(policy, ref, soft, beta):
    """The same NCA loss written with softplus (log sigma(z) = -softplus(-z)): a self-check."""
    k = policy.shape[1]
    r = beta * (policy - ref)
    return ((soft * F.softplus(-r)).sum(-1) + F.softplus(r).sum(-1) / k).mean()


def flat(t):
    return {"shape": list(t.shape), "data": t.detach().cpu().double().flatten().tolist()}


def check(cond, msg):
    if not cond:
        raise SystemExit(f"parity.py self-check failed: {msg}")


def run_model(kind, out_dir, seed, device):
    model = build_model(kind, seed).to(device)
    folder = os.path.join(out_dir, kind)
    os.makedirs(folder, exist_ok=True)
    try:
        model.save_pretrained(folder, safe_serialization=True)
    except TypeError:  # transformers without the flag always writes safetensors
        model.save_pretrained(folder)
    check(
        any(f.endswith(".safetensors") for f in os.listdir(folder)),
        f"{folder}: save_pretrained wrote no safetensors file",
    )

    ids, mask, labels, pos = (t.to(device) for t in make_batch(seed + 1))
    names = param_names(kind)
    params = dict(model.named_parameters())
    missing = [n for n in names if torch_name(kind, n) not in params]
    check(not missing, f"{kind}: no parameters {missing}; the model has {sorted(params)}")
    chosen = [params[torch_name(kind, n)] for n in names]

    def forward():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()

    logits = forward()
    logps = sequence_logps(logits, labels)
    real = mask.bool()
    check(torch.isfinite(logits[real]).all().item(), f"{kind}: logits not finite")
    check(torch.isfinite(logps).all().item(), f"{kind}: log-probs not finite")

    # the saved folder loads back to the same model
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    reloaded = reloaded.float().eval().to(device)
    with torch.no_grad():
        back = reloaded(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    diff = (back - logits.detach())[real].abs().max().item()
    check(diff < 1e-5, f"{kind}: logits after save/load differ by {diff}")
    del reloaded

    gen = torch.Generator().manual_seed(seed + 2)
    losses = {}
    for name, k in (("dpo", 2), ("nca", 4)):
        prompts = ROWS // k
        # a fixed reference: the model's own log-probs shifted by U(-3, 3), so rewards are nonzero
        ref = (logps.detach().cpu() + (torch.rand(ROWS, generator=gen) * 6 - 3)).view(prompts, k).to(device)
        soft = torch.softmax(torch.randn(prompts, k, generator=gen) * 1.5, dim=-1).to(device)
        lg = forward()
        policy = sequence_logps(lg, labels).view(prompts, k)
        if name == "dpo":
            loss = dpo_loss(policy, ref, BETA)
        else:
            loss = nca_loss(policy, ref, soft, BETA)
            alt = nca_loss_softplus(policy, ref, soft, BETA).item()
            check(abs(alt - loss.item()) < 1e-5, f"NCA self-check: {loss.item()} vs softplus form {alt}")
        check(math.isfinite(loss.item()), f"{kind} {name}: loss not finite")
        grads = torch.autograd.grad(loss, chosen)
        entry = {
            "beta": BETA,
            "k": k,
            "ref_logps": flat(ref),
            "loss": loss.item(),
            "grads": {n: flat(g) for n, g in zip(names, grads)},
        }
        if name == "nca":
            entry["soft_labels"] = flat(soft)
        for n, g in zip(names, grads):
            check(torch.isfinite(g).all().item(), f"{kind} {name}: gradient of {n} not finite")
            check(g.abs().max().item() > 0, f"{kind} {name}: gradient of {n} is zero")
        losses[name] = entry

    import transformers

    record = {
        "model": kind,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "device": str(device),
        "rows": ROWS,
        "width": WIDTH,
        "input_ids": ids.cpu().tolist(),
        "attention_mask": mask.cpu().tolist(),
        "labels": labels.cpu().tolist(),
        "position_ids": pos.cpu().tolist(),
        # padded positions score nothing and are not compared: zeros there keep the JSON finite
        "logits": flat(torch.where(real.unsqueeze(-1), logits.detach(), torch.zeros_like(logits))),
        "logps": flat(logps),
        "losses": losses,
    }
    with open(os.path.join(folder, "parity.json"), "w") as f:
        json.dump(record, f)
    return {"model": kind, "folder": folder, "losses": {k: v["loss"] for k, v in losses.items()}}


def main(argv=None):
    return reference_main(__doc__, KINDS, KINDS, run_model, "parity_reference", "manifest.json", argv)


if __name__ == "__main__":
    sys.exit(main())
