/**
 * A run's checkpoint is self-describing: weights and AdamW's moments under the parameters' own names and
 * shapes (PEFT's adapter names; PyTorch's `exp_avg` / `exp_avg_sq`), the step and loss scale in JSON, so
 * other tools can read and convert it without knowing the graph's packed layout.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readSafetensors } from "../../lib/model/safetensors.ts";
import { STATE_FILE, TENSORS_FILE } from "../../lib/train/checkpoint.ts";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

for (const full of [false, true]) {
  Deno.test(`checkpoint format (${full ? "full fine-tuning" : "LoRA"}): parameters and moments by name and shape`, async () => {
    const s = await tinySetup();
    const res = await train(
      tinyConfigFor(s, { full, epochs: 1, saveEvery: 2, lr: full ? 1e-3 : 1e-2, loraTargets: ["q_proj"] }),
      { log: () => {} },
    );
    const latest = (await Deno.readTextFile(join(res.run.checkpoints, "latest"))).trim();
    const dir = join(res.run.checkpoints, latest);
    const state = JSON.parse(await Deno.readTextFile(join(dir, STATE_FILE)));
    const tensors = await readSafetensors(join(dir, TENSORS_FILE));
    const name = full
      ? "model.layers.1.self_attn.q_proj.weight"
      : "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight";
    const param = tensors.get(name)!;
    assert.ok(param, `${name} in ${[...tensors.keys()].slice(0, 4)}`);
    assert.deepEqual(param.shape, full ? [32, 32] : [4, 32]);
    for (const slot of ["exp_avg", "exp_avg_sq"]) {
      const t = tensors.get(`${name}.${slot}`)!;
      assert.deepEqual(t.shape, param.shape, slot);
      assert.ok(t.data.some((x) => x !== 0), `${slot} has moved`);
    }
    assert.ok(tensors.get(`${name}.exp_avg_sq`)!.data.every((x) => x >= 0));
    // every parameter and its two moments; nothing in the graph's packed layout
    assert.equal(tensors.size % 3, 0);
    assert.ok(![...tensors.keys()].some((k) => k.startsWith("train.")));
    assert.equal(state.scalars.step, state.meta.step);
    assert.equal(state.meta.step, Number(latest.split("-")[1]));
    await Deno.remove(s.dir, { recursive: true });
  });
}
