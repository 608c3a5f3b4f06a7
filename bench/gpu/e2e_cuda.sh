#!/usr/bin/env bash
# The user's commands on CUDA, end to end: `deno task train --demo --device cuda` (SFT, sampling, reference
# log-probs, NCA training, export, charts), then `deno task serve --device cuda` on that run, asked for a
# chat completion (plain and streamed) and for /v1/logprobs. One JSON line per check on stdout; the demo's
# and the server's output on stderr. Exit status: the number of failed checks.
#
#   bash bench/gpu/e2e_cuda.sh [PORT]        (deno on PATH: source .gpu/bin/setup.sh on the GPU machine)
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
PORT=${1:-8765}
DEVICE=${DEVICE:-cuda} # DEVICE=cpu: the same on the CPU (a dry run)
fails=0
t0=$SECONDS
if deno task train --demo --device "$DEVICE" >&2; then
  echo "{\"check\":\"e2e_demo\",\"device\":\"$DEVICE\",\"ok\":true,\"seconds\":$((SECONDS - t0))}"
else
  echo "{\"check\":\"e2e_demo\",\"device\":\"$DEVICE\",\"ok\":false,\"seconds\":$((SECONDS - t0))}"
  exit 1
fi
RUN=$(ls -dt runs/demo-2* | head -1)
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); s=json.load(open(sys.argv[2])); print(json.dumps({'check':'e2e_demo_result','sft':d['sft'],'rows':d['rows'],'seconds':d['seconds'],'device':s.get('device'),'train_tokens_per_s':s['final'].get('tokens_per_s')}))" "$RUN/demo.json" "$RUN/summary.json"

deno task serve --model "$RUN" --device "$DEVICE" --port "$PORT" --quiet >&2 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
python3 - "$PORT" <<'EOF' || fails=$?
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
def post(path, body, stream=False):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read().decode() if stream else json.load(r)
t = time.time()
while True:
    try:
        urllib.request.urlopen(base + "/health", timeout=2).read()
        break
    except Exception:
        if time.time() - t > 90:
            print(json.dumps({"check": "e2e_serve_up", "ok": False})); sys.exit(3)
        time.sleep(0.5)
fails = 0
def report(name, ok, **kw):
    global fails
    fails += 0 if ok else 1
    print(json.dumps({"check": name, "ok": ok, **kw}), flush=True)
report("e2e_serve_up", True, seconds=round(time.time() - t, 1))
try:
    t = time.time()
    r = post("/v1/chat/completions", {"messages": [{"role": "user", "content": "sort 3 1 2"}], "max_tokens": 12, "temperature": 0, "logprobs": True})
    text = r["choices"][0]["message"]["content"]
    report("e2e_chat", bool(text) and r["usage"]["completion_tokens"] > 0, text=text, ms=round(1000 * (time.time() - t)))
except Exception as e:
    report("e2e_chat", False, error=str(e))
try:
    body = post("/v1/chat/completions", {"messages": [{"role": "user", "content": "sort 5 4 9 1"}], "max_tokens": 12, "temperature": 0, "stream": True}, stream=True)
    events = [l[6:] for l in body.splitlines() if l.startswith("data: ")]
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1] if json.loads(e)["choices"])
    report("e2e_stream", events[-1] == "[DONE]" and len(events) > 2, chunks=len(events), text=text)
except Exception as e:
    report("e2e_stream", False, error=str(e))
try:
    r = post("/v1/logprobs", {"prompt": "sort 3 1 2", "candidates": ["1 2 3", "1 3 2", "3 2 1"], "rewards": [1, 0.33, 0.33]})
    c = r["candidates"]
    ok = len(c) == 3 and all(isinstance(x.get(k), (int, float)) for x in c for k in ("policy_logprob", "reference_logprob", "implicit_reward"))
    report("e2e_logprobs", ok, candidates=[{k: v for k, v in x.items() if not isinstance(v, list)} for x in c])
except Exception as e:
    report("e2e_logprobs", False, error=str(e))
sys.exit(fails)
EOF
exit "$fails"
