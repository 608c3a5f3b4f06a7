/**
 * Copies of device tensors into host memory. The C API of ONNX Runtime 1.29 copies between devices inside
 * a run, so a copy is a run of a one-node Identity graph on the tensor's device whose output is bound to
 * host memory; one such session per element type, rank and device, made on first use.
 * @module
 */
import { GraphBuilder } from "../../graph/builder.ts";
import { serializeModel } from "../../graph/serialize.ts";
import type { HostTensor } from "../tensor.ts";
import { MemoryInfo } from "./memory_info.ts";
import { OrtSession } from "./session.ts";
import type { OrtValue } from "./value.ts";

const copiers = new Map<string, OrtSession>();
let host: MemoryInfo | undefined;

/** The value's data in JavaScript memory: read directly when on the host, else copied by ONNX Runtime. */
export function copyToHost(value: OrtValue, device: DeviceOf = {}): HostTensor {
  return value.onHost ? value.toHost() : copyByRun(value, device);
}

/** Where a copy session runs. */
export type DeviceOf = { device?: "cpu" | "cuda"; deviceId?: number };

/** The copy as a run of the Identity session (exported for the tests, which run it on the CPU). */
export function copyByRun(value: OrtValue, device: DeviceOf): HostTensor {
  const key = `${value.type}/${value.dims.length}/${device.device}/${device.deviceId ?? 0}`;
  let s = copiers.get(key);
  if (!s) {
    const g = new GraphBuilder("copy");
    const shape = value.dims.map((_, i) => `d${i}`);
    const x = g.input("x", value.type, shape);
    g.output(g.node("Identity", [x], [{ dtype: value.type, shape }])[0], "y");
    s = OrtSession.createSync(serializeModel(g.build()).model, { ...device, intraOpThreads: 1 });
    copiers.set(key, s);
  }
  host ??= MemoryInfo.cpu();
  const binding = s.binding();
  try {
    binding.bindInput("x", value);
    binding.bindOutputToDevice("y", host);
    s.runBindingSync(binding);
    const { y } = binding.outputs();
    try {
      return y.toHost();
    } finally {
      y.release();
    }
  } finally {
    binding.release();
  }
}
