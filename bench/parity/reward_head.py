#!/usr/bin/env python3
"""Reference side of the reward-head parity check: AutoModelForSequenceClassification writes,
bench/parity/reward_ours.ts compares (lib/model/reward_head.ts: the decoder body + the `score` head).

For each tiny random reward model -- Llama with grouped-query attention, Qwen2 (q/k/v biases), GPT-2
(learned positions, Conv1D), and optionally Mistral, Qwen3, Gemma 2, Phi-3 -- with num_labels = 1 and a
pad token, this script

1. builds it with transformers (float32, eval mode), weights N(0, 0.1), norms and biases perturbed, the
   score head N(0, 1);
2. saves it with save_pretrained (safetensors) to OUT/<model>/ and checks that
   AutoModelForSequenceClassification.from_pretrained loads it back to the same rewards;
3. makes 8 sequences of 3..16 tokens (no token is the pad id); the reference reward of each is
   transformers' on the sequence ALONE (batch 1, no padding: logits[0, -1, 0]);
4. also records transformers' rewards for the batch right-padded with the pad id (its pooling: the
   rightmost token that is not pad_token_id), which must agree;
5. writes OUT/<model>/reward_parity.json: the batch as ours.ts feeds it (rows 0-3 right-padded, rows 4-7
   left-padded), `rewards` (the per-sequence references), `rewards_padded` (transformers' right-padded
   batch), versions; and OUT/reward_manifest.json.

Run:  python3 bench/parity/reward_head.py --out /tmp/reward_parity
then: deno run -A bench/parity/reward_ours.ts --dir /tmp/reward_parity [--device cuda]
"""
import json
import os
import random
import sys

import torch

from _harness import gpt2_sizes, reference_main, rotary_sizes

ROWS, WIDTH, VOCAB, PAD = 8, 16, 96, 0
KINDS = ("llama", "qwen2", "gpt2", "mistral", "qwen3", "gemma2", "phi3")
DEFAULT_KINDS = ("llama", "qwen2", "gpt2")


def make_config(kind):
    import transformers as tf

    sizes = rotary_sizes(VOCAB, pad_token_id=PAD, num_labels=1)
    if kind == "llama":
        return tf.LlamaConfig(attention_bias=False, **sizes), tf.LlamaForSequenceClassification
    if kind == "qwen2":
        return tf.Qwen2Config(use_sliding_window=False, **sizes), tf.Qwen2ForSequenceClassification
    if kind == "mistral":
        return tf.MistralConfig(sliding_window=6, **sizes), tf.MistralForSequenceClassification
    if kind == "qwen3":
        return tf.Qwen3Config(head_dim=32, **sizes), tf.Qwen3ForSequenceClassification
    if kind == "gemma2":
        cfg = tf.Gemma2Config(
            head_dim=16,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=8.0,
            sliding_window=6,
            hidden_activation="gelu_pytorch_tanh",
            **sizes,
        )
        return cfg, tf.Gemma2ForSequenceClassification
    if kind == "phi3":
        return tf.Phi3Config(sliding_window=6, **sizes), tf.Phi3ForSequenceClassification
    if kind == "gpt2":
        cfg = tf.GPT2Config(**gpt2_sizes(VOCAB, summary_first_dropout=0.0, pad_token_id=PAD, num_labels=1))
        return cfg, tf.GPT2ForSequenceClassification
    raise ValueError(f"unknown model {kind!r}")


def is_norm(name):
    return "norm" in name or ".ln_" in name or name.startswith("ln_") or "ln_f" in name


def build_model(kind, seed):
    cfg, model_cls = make_config(kind)
    torch.manual_seed(seed)
    model = model_cls(cfg).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "score.weight":
                p.normal_(0.0, 1.0)
            elif is_norm(name):
                if name.endswith("weight"):
                    p.copy_(1 + 0.1 * torch.randn_like(p))
                else:
                    p.normal_(0.0, 0.1)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.1)
    return model.eval()


def make_sequences(seed):
    rng = random.Random(seed)
    return [[rng.randrange(3, VOCAB - 1) for _ in range(rng.randint(3, WIDTH))] for _ in range(ROWS)]


def padded(seqs, left_rows):
    """ids and mask [ROWS, WIDTH]: rows in `left_rows` left-padded, the others right-padded, with PAD."""
    ids = [[PAD] * WIDTH for _ in seqs]
    mask = [[0] * WIDTH for _ in seqs]
    for r, s in enumerate(seqs):
        start = WIDTH - len(s) if r in left_rows else 0
        for t, tok in enumerate(s):
            ids[r][start + t] = tok
            mask[r][start + t] = 1
    return ids, mask


def check(cond, msg):
    if not cond:
        raise SystemExit(f"reward_head.py self-check failed: {msg}")


def rewards_alone(model, seqs, device):
    out = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s], dtype=torch.long, device=device)
            out.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, 0].item())
    return out


def run_model(kind, out_dir, seed, device):
    model = build_model(kind, seed).to(device)
    folder = os.path.join(out_dir, kind)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    names = set()
    from safetensors import safe_open

    for f in os.listdir(folder):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(folder, f), "pt") as st:
                names.update(st.keys())
    check("score.weight" in names, f"{kind}: no score.weight in {sorted(names)[:5]}...")
    check("lm_head.weight" not in names, f"{kind}: the checkpoint has an LM head")

    seqs = make_sequences(seed + 1)
    ref = rewards_alone(model, seqs, device)
    check(all(map(lambda x: x == x and abs(x) < 1e6, ref)), f"{kind}: rewards not finite: {ref}")

    # transformers' own batch: right padding with the pad id; its pooling finds the last non-pad token
    ids, mask = padded(seqs, left_rows=set())
    with torch.no_grad():
        batch = model(
            input_ids=torch.tensor(ids, device=device), attention_mask=torch.tensor(mask, device=device)
        ).logits[:, 0].tolist()
    gap = max(abs(a - b) for a, b in zip(batch, ref))
    check(gap < 1e-4, f"{kind}: transformers' right-padded batch differs from the sequences alone by {gap}")

    from transformers import AutoModelForSequenceClassification

    back = AutoModelForSequenceClassification.from_pretrained(folder).float().eval().to(device)
    again = rewards_alone(back, seqs, device)
    gap = max(abs(a - b) for a, b in zip(again, ref))
    check(gap < 1e-5, f"{kind}: rewards after save/load differ by {gap}")

    import transformers

    ours_ids, ours_mask = padded(seqs, left_rows=set(range(ROWS // 2, ROWS)))
    record = {
        "model": kind,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "rows": ROWS,
        "width": WIDTH,
        "pad_token_id": PAD,
        "input_ids": ours_ids,
        "attention_mask": ours_mask,
        "rewards": ref,
        "rewards_padded": batch,
    }
    with open(os.path.join(folder, "reward_parity.json"), "w") as f:
        json.dump(record, f)
    return {"model": kind, "folder": folder, "rewards": ref[:3]}


def main(argv=None):
    return reference_main(__doc__, KINDS, DEFAULT_KINDS, run_model, "reward_parity_reference", "reward_manifest.json", argv)


if __name__ == "__main__":
    sys.exit(main())
