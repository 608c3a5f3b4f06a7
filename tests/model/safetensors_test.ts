import assert from "node:assert/strict";
import {
  decodeSafetensors,
  encodeSafetensors,
  headerFromBytes,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
} from "../../lib/model/safetensors.ts";
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32Bits,
  f32FromBits,
  f32ToBf16Bits,
  f32ToF16Bits,
} from "../../lib/model/float_codec.ts";

// ---------------------------------------------------------------------------------------------------------
// Helpers: build files by hand, independently of the writer under test
// ---------------------------------------------------------------------------------------------------------

/** Concatenate byte arrays. */
function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** 8-byte little-endian length + header text (no padding added) + data. */
function rawFile(headerText: string, data: Uint8Array, pad = false): Uint8Array {
  let text = headerText;
  if (pad) { while (new TextEncoder().encode(text).length % 8 !== 0) text += " "; }
  const header = new TextEncoder().encode(text);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(header.length), true);
  return concat(len, header, data);
}

function le32(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const v = new DataView(out.buffer);
  values.forEach((x, i) => v.setFloat32(i * 4, x, true));
  return out;
}

function le16(...bits: number[]): Uint8Array {
  const out = new Uint8Array(bits.length * 2);
  const v = new DataView(out.buffer);
  bits.forEach((x, i) => v.setUint16(i * 2, x, true));
  return out;
}

function le64(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const v = new DataView(out.buffer);
  values.forEach((x, i) => v.setFloat64(i * 8, x, true));
  return out;
}

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "safetensors_test_" });
}

function t(shape: number[], values: number[]) {
  return { dtype: "float32" as const, shape, data: new Float32Array(values) };
}

// ---------------------------------------------------------------------------------------------------------
// Scalar conversions: exact bit patterns
// ---------------------------------------------------------------------------------------------------------

Deno.test("fp16 encode: exact bit patterns incl. subnormals, inf, NaN and round-to-nearest-even", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [0.1, 0x2e66],
    [1 / 3, 0x3555],
    [65504, 0x7bff], // largest finite half
    [65519, 0x7bff], // below the midpoint to infinity
    [65520, 0x7c00], // midpoint: ties to even (infinity)
    [1e6, 0x7c00], // overflow
    [-1e6, 0xfc00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [2 ** -24, 0x0001], // smallest subnormal
    [-(2 ** -24), 0x8001],
    [2 ** -25, 0x0000], // exactly half the smallest subnormal: ties to even (zero)
    [f32FromBits(f32Bits(2 ** -25) + 1), 0x0001], // just above half: rounds up
    [3 * 2 ** -25, 0x0002], // 1.5 ulp: ties to even (2)
    [5 * 2 ** -25, 0x0002], // 2.5 ulp: ties to even (2)
    [1e-8, 0x0000], // underflow
    [1 + 2 ** -11, 0x3c00], // tie between 0x3c00 and 0x3c01 -> even
    [1 + 3 * 2 ** -11, 0x3c02], // tie between 0x3c01 and 0x3c02 -> even
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // above the tie
    [(2 ** -14) * (1 - 2 ** -11), 0x0400], // rounds from subnormal up into the smallest normal
  ];
  for (const [x, bits] of cases) {
    assert.equal(f32ToF16Bits(x), bits, `f32ToF16Bits(${x}) = 0x${f32ToF16Bits(x).toString(16)}`);
  }
  assert.equal(f32ToF16Bits(NaN) & 0x7c00, 0x7c00);
  assert.notEqual(f32ToF16Bits(NaN) & 0x03ff, 0);
  assert.equal(f32ToF16Bits(NaN), 0x7e00);
});

Deno.test("fp16 decode: subnormals, inf, NaN, signed zero", () => {
  assert.equal(f16BitsToF32(0x3c00), 1);
  assert.equal(f16BitsToF32(0xc000), -2);
  assert.equal(f16BitsToF32(0x7bff), 65504);
  assert.equal(f16BitsToF32(0x0001), 2 ** -24);
  assert.equal(f16BitsToF32(0x03ff), 1023 * 2 ** -24);
  assert.equal(f16BitsToF32(0x8001), -(2 ** -24));
  assert.equal(f16BitsToF32(0x0400), 2 ** -14);
  assert.equal(f16BitsToF32(0x3555), 0.333251953125);
  assert.equal(f16BitsToF32(0x7c00), Infinity);
  assert.equal(f16BitsToF32(0xfc00), -Infinity);
  assert.ok(Number.isNaN(f16BitsToF32(0x7e00)));
  assert.ok(Number.isNaN(f16BitsToF32(0x7c01)));
  assert.ok(Object.is(f16BitsToF32(0x8000), -0));
  // Every finite half survives a decode/encode round trip.
  for (let h = 0; h < 65536; h++) {
    if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) continue; // NaNs
    assert.equal(f32ToF16Bits(f16BitsToF32(h)), h);
  }
});

Deno.test("bf16 encode: round-to-nearest-even, inf, NaN", () => {
  const cases: [number, number][] = [
    [1, 0x3f80],
    [-1, 0xbf80],
    [0, 0x0000],
    [-0, 0x8000],
    [Math.PI, 0x4049], // f32 0x40490fdb: low half < 0x8000, truncates
    [f32FromBits(0x3f808000), 0x3f80], // tie -> even
    [f32FromBits(0x3f818000), 0x3f82], // tie -> even (up)
    [f32FromBits(0x3f808001), 0x3f81], // above tie
    [f32FromBits(0x3f807fff), 0x3f80], // below tie
    [f32FromBits(0x7f7fffff), 0x7f80], // max f32 rounds to infinity
    [Infinity, 0x7f80],
    [-Infinity, 0xff80],
    [f32FromBits(0x00000001), 0x0000], // fp32 subnormal rounds to zero
    [f32FromBits(0x00018000), 0x0002], // subnormal tie -> even
    [f32FromBits(0x00008001), 0x0001],
  ];
  for (const [x, bits] of cases) {
    assert.equal(f32ToBf16Bits(x), bits, `f32ToBf16Bits(${x}) = 0x${f32ToBf16Bits(x).toString(16)}`);
  }
  assert.equal(f32ToBf16Bits(NaN), 0x7fc0);
  // A signalling NaN whose payload sits in the low half must stay NaN, not become infinity.
  assert.equal(f32ToBf16Bits(f32FromBits(0x7f800001)), 0x7fc0);
});

Deno.test("bf16 -> fp32 is bits << 16", () => {
  assert.equal(bf16BitsToF32(0x3f80), 1);
  assert.equal(bf16BitsToF32(0x4049), f32FromBits(0x40490000));
  assert.equal(bf16BitsToF32(0xc2f7), -123.5);
  assert.equal(bf16BitsToF32(0x0001), f32FromBits(0x00010000)); // subnormal
  assert.equal(bf16BitsToF32(0x7f80), Infinity);
  assert.ok(Number.isNaN(bf16BitsToF32(0x7fc0)));
  const bits = [0x3f80, 0xc2f7, 0x0001, 0x7f80, 0xff80, 0x8000, 0x4049];
  const file = rawFile(`{"x":{"dtype":"BF16","shape":[7],"data_offsets":[0,14]}}`, le16(...bits));
  const x = decodeSafetensors(file).get("x")!;
  assert.deepEqual(
    [...new Uint32Array(x.data.buffer, x.data.byteOffset, 7)],
    bits.map((b) => (b << 16) >>> 0),
  );
});

// ---------------------------------------------------------------------------------------------------------
// Byte-exact writer output
// ---------------------------------------------------------------------------------------------------------

Deno.test("writer output matches a hand-built file byte for byte (sorted names, metadata, space padding)", async () => {
  const tensors = new Map([
    ["b", t([2], [1, -2])],
    ["a.weight", t([1, 2], [0.5, Infinity])],
  ]);
  const header =
    `{"__metadata__":{"format":"pt"},"a.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`;
  const expected = rawFile(header, concat(le32(0.5, Infinity), le32(1, -2)), true);
  assert.equal((expected.length - 16) % 8, 0);
  assert.deepEqual(encodeSafetensors(tensors), expected);

  const dir = await tempDir();
  const path = `${dir}/x.safetensors`;
  const size = await writeSafetensors(path, tensors);
  assert.equal(size, expected.length);
  assert.deepEqual(await Deno.readFile(path), expected);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["x.safetensors"]); // no temp files left
  await Deno.remove(dir, { recursive: true });
});

Deno.test("fp16 and bf16 output: exact bytes, extra metadata, scalar and empty tensors", () => {
  const values = [1, 65520, 2 ** -25, 3 * 2 ** -25, NaN, -Infinity, 1 + 2 ** -11];
  const f16 = encodeSafetensors({ v: t([7], values), s: t([], [2]), e: t([0, 3], []) }, {
    dtype: "float16",
    metadata: { source: "test" },
  });
  const header16 =
    `{"__metadata__":{"format":"pt","source":"test"},"e":{"dtype":"F16","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"F16","shape":[],"data_offsets":[0,2]},"v":{"dtype":"F16","shape":[7],"data_offsets":[2,16]}}`;
  assert.deepEqual(
    f16,
    rawFile(
      header16,
      concat(le16(0x4000), le16(0x3c00, 0x7c00, 0x0000, 0x0002, 0x7e00, 0xfc00, 0x3c00)),
      true,
    ),
  );

  const bfValues = [1, f32FromBits(0x3f808000), f32FromBits(0x3f818000), NaN, Infinity];
  const bf = encodeSafetensors({ w: t([5], bfValues) }, { dtype: "bfloat16" });
  const headerBf = `{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[5],"data_offsets":[0,10]}}`;
  assert.deepEqual(bf, rawFile(headerBf, le16(0x3f80, 0x3f80, 0x3f82, 0x7fc0, 0x7f80), true));
});

// ---------------------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------------------

Deno.test("round trip fp32 through a file is exact, including subarray inputs", async () => {
  const dir = await tempDir();
  const big = new Float32Array(10_000).map((_, i) => Math.sin(i) * 1e3);
  const backing = new Float32Array([9, 9, 1.5, -0, 2 ** -140, 9]);
  const tensors = new Map([
    ["big", { dtype: "float32" as const, shape: [100, 100], data: big }],
    ["sub", { dtype: "float32" as const, shape: [3], data: backing.subarray(2, 5) }],
  ]);
  await writeSafetensors(`${dir}/m.safetensors`, tensors);
  const back = await readSafetensors(`${dir}/m.safetensors`);
  assert.deepEqual([...back.keys()].sort(), ["big", "sub"]);
  assert.deepEqual(back.get("big")!.shape, [100, 100]);
  assert.deepEqual(back.get("big")!.data, big);
  assert.deepEqual([...back.get("sub")!.data], [1.5, -0, 2 ** -140]);
  assert.equal(back.get("sub")!.dtype, "float32");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("round trip fp16 and bf16: representable values exact, others rounded like torch", async () => {
  const dir = await tempDir();
  const values = [0, -0, 1, -2.5, 65504, 2 ** -24, 1023 * 2 ** -24, Infinity, -Infinity, NaN, 0.1, 70000];
  const src = new Map([["x", t([values.length], values)]]);
  await writeSafetensors(`${dir}/h.safetensors`, src, { dtype: "float16" });
  await writeSafetensors(`${dir}/b.safetensors`, src, { dtype: "bfloat16" });
  assert.equal((await readSafetensorsHeader(`${dir}/h.safetensors`)).entries[0].dtype, "F16");

  const h = [...(await readSafetensors(`${dir}/h.safetensors`)).get("x")!.data];
  assert.deepEqual(h.slice(0, 10), [
    0,
    -0,
    1,
    -2.5,
    65504,
    2 ** -24,
    1023 * 2 ** -24,
    Infinity,
    -Infinity,
    NaN,
  ]);
  assert.equal(h[10], f16BitsToF32(0x2e66));
  assert.equal(h[11], Infinity);

  const b = [...(await readSafetensors(`${dir}/b.safetensors`)).get("x")!.data];
  assert.deepEqual(b.slice(0, 4), [0, -0, 1, -2.5]);
  assert.equal(b[4], 65536); // 65504 rounds to the nearest bf16
  assert.equal(b[10], f32FromBits(0x3dcd0000)); // 0.1 = 0x3dcccccd rounds up
  assert.equal(b[11], 70144);
  assert.ok(Number.isNaN(b[9]));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("reader decodes F16, BF16, F64 from unpadded (unaligned) headers and honours the filter", async () => {
  const header =
    `{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]},"d":{"dtype":"F64","shape":[2],"data_offsets":[6,22]},"f":{"dtype":"F32","shape":[1],"data_offsets":[22,26]}}`;
  const file = rawFile(header, concat(le16(0x3c00, 0x0001), le16(0x4049), le64(0.1, -1e300), le32(7.25)));
  assert.notEqual(header.length % 2, 0); // data starts at an odd offset
  const all = decodeSafetensors(file, "mem");
  assert.deepEqual([...all.get("h")!.data], [1, 2 ** -24]);
  assert.deepEqual([...all.get("b")!.data], [f32FromBits(0x40490000)]);
  assert.deepEqual([...all.get("d")!.data], [Math.fround(0.1), -Infinity]);
  assert.deepEqual([...all.get("f")!.data], [7.25]);

  const dir = await tempDir();
  await Deno.writeFile(`${dir}/u.safetensors`, file);
  const some = await readSafetensors(`${dir}/u.safetensors`, { filter: (n) => n === "d" || n === "f" });
  assert.deepEqual([...some.keys()].sort(), ["d", "f"]);
  assert.deepEqual([...some.get("f")!.data], [7.25]);
  const header2 = await readSafetensorsHeader(`${dir}/u.safetensors`);
  assert.deepEqual(header2.entries.map((e) => e.name), ["h", "b", "d", "f"]);
  assert.deepEqual(header2.metadata, {});
  await Deno.remove(dir, { recursive: true });
});

Deno.test("writing replaces an existing file atomically and leaves no temp file", async () => {
  const dir = await tempDir();
  const path = `${dir}/w.safetensors`;
  await writeSafetensors(path, { a: t([1], [1]) });
  await writeSafetensors(path, { a: t([2], [2, 3]) });
  assert.deepEqual([...(await readSafetensors(path)).get("a")!.data], [2, 3]);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["w.safetensors"]);
  await Deno.remove(dir, { recursive: true });
});

// ---------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------

const good =
  `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`;

Deno.test("error: truncated file names the file and the tensor", async () => {
  const dir = await tempDir();
  const path = `${dir}/trunc.safetensors`;
  const full = rawFile(good, le32(1, 2, 3));
  await Deno.writeFile(path, full.subarray(0, full.length - 2));
  await assert.rejects(readSafetensors(path), (e: Error) => {
    assert.match(e.message, /trunc\.safetensors/);
    assert.match(e.message, /"b"/);
    assert.match(e.message, /truncated/);
    return true;
  });
  // Cut inside the header.
  await Deno.writeFile(path, full.subarray(0, 20));
  await assert.rejects(
    readSafetensors(path),
    /trunc\.safetensors: truncated safetensors file: header claims/,
  );
  // Cut inside the length prefix.
  await Deno.writeFile(path, full.subarray(0, 5));
  await assert.rejects(
    readSafetensorsHeader(path),
    /trunc\.safetensors: truncated safetensors file \(5 bytes/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("error: headers that lie about offsets", () => {
  const data = le32(1, 2, 3);
  const cases: [string, RegExp][] = [
    [
      `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,16]}}`,
      /lie\.st: tensor "b": data_offsets \[8, 16\] span 8 bytes but F32\[1\] needs 4/,
    ],
    [
      `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}`,
      /lie\.st: tensor "b": data_offsets \[12, 16\] run past the end/,
    ],
    [
      `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`,
      /lie\.st: tensor "b": data_offsets \[4, 8\] overlap/,
    ],
    [
      `{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`,
      /lie\.st: tensor "a": data_offsets \[4, 12\] leave a gap/,
    ],
    [
      `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`,
      /lie\.st: data section has 12 bytes but the header accounts for 8/,
    ],
    [`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}`, /lie\.st: tensor "a": .*end before begin/],
    [`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, /lie\.st: tensor "a": shape must be/],
    [`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, /lie\.st: tensor "a": data_offsets must be/],
    [`[1,2]`, /lie\.st: safetensors header must be a JSON object/],
    [`{"a":`, /lie\.st: safetensors header is not valid UTF-8 JSON/],
    [`{"__metadata__":{"n":1}}`, /lie\.st: __metadata__\.n must be a string/],
  ];
  for (const [header, re] of cases) {
    assert.throws(() => headerFromBytes(rawFile(header, data), "lie.st"), re, header);
  }
  // Header length beyond the file and absurdly large.
  const huge = rawFile(good, data);
  new DataView(huge.buffer).setBigUint64(0, 1n << 40n, true);
  assert.throws(() => headerFromBytes(huge, "lie.st"), /lie\.st: safetensors header length \d+ exceeds/);
});

Deno.test("error: unknown and non-float dtypes name the file and tensor", async () => {
  assert.throws(
    () => headerFromBytes(rawFile(`{"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}`, le32(1)), "d.st"),
    /d\.st: tensor "w": unknown dtype "F12"/,
  );
  assert.throws(
    () =>
      headerFromBytes(
        rawFile(`{"w":{"dtype":"toString","shape":[1],"data_offsets":[0,4]}}`, le32(1)),
        "d.st",
      ),
    /unknown dtype "toString"/,
  );
  const ints = rawFile(`{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}`, new Uint8Array(8));
  assert.throws(
    () => decodeSafetensors(ints, "i.st"),
    /i\.st: tensor "ids": dtype I64 cannot be loaded as fp32/,
  );
  // ...but a filter that skips it loads the rest, and the header still parses.
  assert.equal(decodeSafetensors(ints, "i.st", { filter: () => false }).size, 0);
  const dir = await tempDir();
  await Deno.writeFile(`${dir}/i.safetensors`, ints);
  await assert.rejects(readSafetensors(`${dir}/i.safetensors`), /i\.safetensors: tensor "ids": dtype I64/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("error: writer rejects inconsistent tensors", () => {
  assert.throws(
    () => encodeSafetensors({ a: t([3], [1, 2]) }),
    /tensor "a": shape \[3\] has 3 elements but data has 2/,
  );
  assert.throws(() => encodeSafetensors({ __metadata__: t([1], [1]) }), /reserved/);
  assert.throws(
    () => encodeSafetensors([["a", t([1], [1])], ["a", t([1], [1])]]),
    /duplicate tensor name "a"/,
  );
});
