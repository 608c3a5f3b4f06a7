"""What parity.py and reward_head.py share: the command line, an exact fp32 reference on a GPU too, and
writing one model after another so that one failing (a transformers API change, say) does not lose the
others, with a manifest of what was written."""
import argparse
import json
import os
import sys


def reference_main(doc, kinds, default_kinds, run_model, bench, manifest, argv=None):
    """Parses --out/--models/--seed/--device, runs `run_model(kind, out, seed, device)` for each model and
    writes OUT/<manifest>; returns the exit status (1 when a model failed or none was written)."""
    import torch

    script = os.path.basename(sys.argv[0])
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write OUT/<model>/ into")
    p.add_argument("--models", default=",".join(default_kinds), help="comma-separated: " + ", ".join(kinds))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device for the reference (default cpu: exact fp32)")
    a = p.parse_args(argv)
    chosen = [m.strip() for m in a.models.split(",") if m.strip()]
    for k in chosen:
        if k not in kinds:
            p.error(f"--models: unknown {k!r} (choose from {', '.join(kinds)})")
    # an exact fp32 reference even on a GPU (PyTorch >= 2.9 spells it fp32_precision; mixing raises)
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(a.out, exist_ok=True)
    done, failed = [], []
    for k in chosen:
        try:
            d = run_model(k, a.out, a.seed, torch.device(a.device))
            done.append(d)
            print(json.dumps({"bench": bench, **d}), flush=True)
        except (Exception, SystemExit) as e:
            failed.append(k)
            msg = f"{type(e).__name__}: {e}"[:800]
            print(json.dumps({"bench": bench, "model": k, "error": msg}), flush=True)
            print(f"{script}: {k}: {msg}", file=sys.stderr)
    with open(os.path.join(a.out, manifest), "w") as f:
        json.dump({"models": [d["model"] for d in done], "failed": failed, "torch": torch.__version__}, f)
    return 1 if failed or not done else 0


def rotary_sizes(vocab, **extra):
    """config.json fields of the tiny rotary-family models both references build: 2 layers, hidden 64,
    4 heads over 2 kv heads, 128 positions, untied."""
    return dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        initializer_range=0.1,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        **extra,
    )


def gpt2_sizes(vocab, **extra):
    """GPT2Config fields of the tiny GPT-2 both references build: the same sizes, no dropout."""
    return dict(
        vocab_size=vocab,
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        initializer_range=0.1,
        bos_token_id=vocab - 1,
        eos_token_id=vocab - 1,
        **extra,
    )
