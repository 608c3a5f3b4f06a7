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
