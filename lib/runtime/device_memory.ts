/**
 * How much memory a device can give a run: the system's available memory for the CPU, the GPU's free
 * memory (from `nvidia-smi`) for CUDA. Undefined when it cannot be told.
 * @module
 */
import type { Device } from "./session.ts";

/** Free and total bytes of a device's memory. */
export type DeviceMemory = { free: number; total: number };

/** The memory of `device` (CUDA device `deviceId`), or undefined when unknown. */
export async function deviceMemory(device: Device, deviceId = 0): Promise<DeviceMemory | undefined> {
  if (device === "cpu") {
    try {
      const m = Deno.systemMemoryInfo();
      return { free: m.available, total: m.total };
    } catch {
      return undefined;
    }
  }
  try {
    const out = await new Deno.Command("nvidia-smi", {
      args: ["--query-gpu=memory.free,memory.total", "--format=csv,noheader,nounits", "-i", String(deviceId)],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!out.success) return undefined;
    return parseNvidiaSmi(new TextDecoder().decode(out.stdout));
  } catch {
    return undefined;
  }
}

/** `nvidia-smi --query-gpu=memory.free,memory.total --format=csv,noheader,nounits` (MiB) → bytes. */
export function parseNvidiaSmi(text: string): DeviceMemory | undefined {
  const m = text.trim().split("\n")[0]?.match(/^\s*(\d+)\s*,\s*(\d+)\s*$/);
  return m ? { free: Number(m[1]) * 2 ** 20, total: Number(m[2]) * 2 ** 20 } : undefined;
}
