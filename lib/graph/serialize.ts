/**
 * ONNX ModelProto encoding and decoding of the builder's IR.
 *
 * No weight needs to pass through the protobuf (which stops at 2 GB):
 * - initializers that already live in a file ({@link ExternalTensor}: a frozen weight inside a model
 *   folder's safetensors) are written as ONNX external-data entries (location, offset, length). ONNX Runtime
 *   resolves a location relative to the model file's folder, so the caller says, through `locate`, how the
 *   file is reached from there (lib/runtime/graph_folder.ts links the files into a per-graph folder);
 * - in-memory initializers of at least `externalDataThreshold` bytes are moved into one blob, which
 *   onnxruntime-node takes through its `externalData` session option, or which is written beside the model.
 * Everything else (shapes, small constants) stays inline.
 * @module
 */
import { dtypeFromOnnx, ONNX_DTYPE, type TensorArray } from "./dtype.ts";
import type { Attr, Dim, ExternalData, Graph, Node, TensorData, ValueInfo } from "./ir.ts";
import { IR_VERSION, OPSET } from "./ir.ts";
import { Msg, type RawField, readFields, readPackedFloats, readPackedVarints, readString } from "./proto.ts";

/** Options for {@link serializeModel}. */
export type SerializeOptions = {
  /** Move in-memory initializers of at least this many bytes into one external blob. Default: never. */
  externalDataThreshold?: number;
  /** The file name the model refers to for that blob. Default "weights.bin". */
  externalDataPath?: string;
  /**
   * The location (relative to the model file's folder) under which the model refers to a file holding
   * external tensors. Required when the graph has any.
   */
  locate?: (file: string) => string;
  producer?: string;
};

/** A serialized model: the ModelProto bytes and, when asked for, the external weights blob. */
export type SerializedModel = {
  model: Uint8Array;
  externalData?: { path: string; data: Uint8Array };
};

/** Where a tensor's bytes go: inline (undefined) or an external-data entry. */
type Placer = (t: TensorData) => { location: string; offset: number; length: number } | undefined;

/** Encodes a graph as an ONNX model. */
export function serializeModel(graph: Graph, opts: SerializeOptions = {}): SerializedModel {
  const threshold = opts.externalDataThreshold ?? Infinity;
  const path = opts.externalDataPath ?? "weights.bin";
  const blob: { offset: number; data: TensorArray }[] = [];
  let offset = 0;
  const place: Placer = (t) => {
    if (t.external) return { ...t.external, location: locateOf(t.name, t.external, opts.locate) };
    if (t.data.byteLength < threshold) return undefined;
    offset = Math.ceil(offset / 64) * 64; // aligned, as ONNX's own writer does for mmap
    const at = offset;
    blob.push({ offset: at, data: t.data });
    offset += t.data.byteLength;
    return { location: path, offset: at, length: t.data.byteLength };
  };
  const model = new Msg()
    .varint(1, IR_VERSION)
    .string(2, opts.producer ?? "nca-align")
    .message(7, graphMsg(graph, place))
    .message(8, new Msg().string(1, "").varint(2, OPSET))
    .message(8, new Msg().string(1, "com.microsoft").varint(2, 1));
  const out: SerializedModel = { model: model.encode() };
  if (blob.length) {
    const data = new Uint8Array(offset);
    for (const { offset: at, data: d } of blob) data.set(bytesOf(d), at);
    out.externalData = { path, data };
  }
  return out;
}

function locateOf(name: string, ext: ExternalData, locate?: (file: string) => string): string {
  if (!locate) {
    throw new TypeError(
      `initializer ${name} lives in ${ext.file}: serializing it needs a \`locate\` option (where the model finds that file)`,
    );
  }
  return locate(ext.file);
}

function bytesOf(a: TensorArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** The bytes an initializer takes, wherever they live. */
export function tensorBytes(t: TensorData): number {
  return t.external ? t.external.length : t.data.byteLength;
}

function graphMsg(g: Graph, place: Placer): Msg {
  const m = new Msg();
  for (const n of g.nodes) m.message(1, nodeMsg(n, place));
  m.string(2, g.name);
  for (const t of g.initializers) m.message(5, tensorMsg(t, place));
  for (const v of g.inputs) m.message(11, valueInfoMsg(v));
  for (const v of g.outputs) m.message(12, valueInfoMsg(v));
  return m;
}

function nodeMsg(n: Node, place: Placer): Msg {
  const m = new Msg();
  for (const i of n.inputs) m.string(1, i);
  for (const o of n.outputs) m.string(2, o);
  m.string(3, n.name).string(4, n.op);
  for (const [name, a] of Object.entries(n.attrs)) m.message(5, attrMsg(name, a, place));
  if (n.domain) m.string(7, n.domain);
  return m;
}

const ATTR_TYPE = { float: 1, int: 2, string: 3, tensor: 4, graph: 5, floats: 6, ints: 7 } as const;

function attrMsg(name: string, a: Attr, place: Placer): Msg {
  const m = new Msg().string(1, name).varint(20, ATTR_TYPE[a.type]);
  switch (a.type) {
    case "float":
      return m.float(2, a.value);
    case "int":
      return m.varint(3, a.value);
    case "string":
      return m.string(4, a.value);
    case "tensor":
      return m.message(5, tensorMsg(a.value, () => undefined));
    case "graph":
      return m.message(6, graphMsg(a.value, place));
    case "floats":
      return m.packedFloat(7, a.value);
    case "ints":
      return m.packedVarint(8, a.value);
  }
}

function tensorMsg(t: TensorData, place: Placer): Msg {
  const m = new Msg().packedVarint(1, t.dims).varint(2, ONNX_DTYPE[t.dtype]).string(8, t.name);
  const at = place(t);
  if (at === undefined) {
    if (t.external) throw new TypeError(`tensor ${t.name} lives in ${t.external.file} and cannot be inline`);
    return m.bytes(9, bytesOf(t.data));
  }
  const entry = (k: string, v: string) => new Msg().string(1, k).string(2, v);
  return m
    .message(13, entry("location", at.location))
    .message(13, entry("offset", String(at.offset)))
    .message(13, entry("length", String(at.length)))
    .varint(14, 1);
}

function valueInfoMsg(v: ValueInfo): Msg {
  const shape = new Msg();
  for (const d of v.shape) {
    shape.message(1, typeof d === "number" ? new Msg().varint(1, d) : new Msg().string(2, d));
  }
  const tensorType = new Msg().varint(1, ONNX_DTYPE[v.dtype]).message(2, shape);
  return new Msg().string(1, v.name).message(2, new Msg().message(1, tensorType));
}

// ---------------------------------------------------------------------------------------------------------
// Decoding (round trips and inspection of written models)

/** A decoded model: its graph, opsets and external-data references. */
export type DecodedModel = { irVersion: number; opsets: Record<string, number>; graph: Graph };

/**
 * Decodes ModelProto bytes. External initializers are read from the `externalData` blob when given, else
 * kept as {@link ExternalTensor}s whose `file` is the location the model names.
 */
export function deserializeModel(bytes: Uint8Array, externalData?: Uint8Array): DecodedModel {
  let irVersion = 0;
  const opsets: Record<string, number> = {};
  let graph: Graph | undefined;
  for (const f of readFields(bytes)) {
    if (f.no === 1 && f.wire === 0) irVersion = Number(f.value);
    else if (f.no === 7 && f.wire === 2) graph = decodeGraph(f.value, externalData);
    else if (f.no === 8 && f.wire === 2) {
      let domain = "", version = 0;
      for (const o of readFields(f.value)) {
        if (o.no === 1) domain = readString(o);
        if (o.no === 2 && o.wire === 0) version = Number(o.value);
      }
      opsets[domain] = version;
    }
  }
  if (!graph) throw new TypeError("not an ONNX model: no graph");
  return { irVersion, opsets, graph };
}

function decodeGraph(buf: Uint8Array, ext?: Uint8Array): Graph {
  const g: Graph = { name: "", nodes: [], inputs: [], outputs: [], initializers: [] };
  for (const f of readFields(buf)) {
    if (f.wire !== 2) continue;
    if (f.no === 1) g.nodes.push(decodeNode(f.value, ext));
    else if (f.no === 2) g.name = readString(f);
    else if (f.no === 5) g.initializers.push(decodeTensor(f.value, ext));
    else if (f.no === 11) g.inputs.push(decodeValueInfo(f.value));
    else if (f.no === 12) g.outputs.push(decodeValueInfo(f.value));
  }
  return g;
}

function decodeNode(buf: Uint8Array, ext?: Uint8Array): Node {
  const n: Node = { op: "", name: "", inputs: [], outputs: [], attrs: {} };
  for (const f of readFields(buf)) {
    if (f.no === 1) n.inputs.push(readString(f));
    else if (f.no === 2) n.outputs.push(readString(f));
    else if (f.no === 3) n.name = readString(f);
    else if (f.no === 4) n.op = readString(f);
    else if (f.no === 7) n.domain = readString(f);
    else if (f.no === 5 && f.wire === 2) {
      const [name, a] = decodeAttr(f.value, ext);
      n.attrs[name] = a;
    }
  }
  return n;
}

function decodeAttr(buf: Uint8Array, ext?: Uint8Array): [string, Attr] {
  let name = "", type = 0;
  const fs = readFields(buf);
  for (const f of fs) {
    if (f.no === 1) name = readString(f);
    if (f.no === 20 && f.wire === 0) type = Number(f.value);
  }
  const pick = (no: number) => fs.filter((f) => f.no === no);
  const one = (no: number): RawField => {
    const f = pick(no)[0];
    if (!f) throw new TypeError(`attribute ${name}: missing field ${no}`);
    return f;
  };
  switch (type) {
    case 1:
      return [name, { type: "float", value: readPackedFloats(one(2))[0] }];
    case 2:
      return [name, { type: "int", value: readPackedVarints(one(3))[0] }];
    case 3:
      return [name, { type: "string", value: readString(one(4)) }];
    case 4:
      return [name, { type: "tensor", value: decodeTensor(one(5).value as Uint8Array, ext) }];
    case 5:
      return [name, { type: "graph", value: decodeGraph(one(6).value as Uint8Array, ext) }];
    case 6:
      return [name, { type: "floats", value: pick(7).flatMap(readPackedFloats) }];
    case 7:
      return [name, { type: "ints", value: pick(8).flatMap(readPackedVarints) }];
    default:
      throw new TypeError(`attribute ${name}: unsupported type ${type}`);
  }
}

function decodeTensor(buf: Uint8Array, ext?: Uint8Array): TensorData {
  let dims: number[] = [], code = 0, name = "";
  let raw: Uint8Array | undefined;
  const extInfo: Record<string, string> = {};
  for (const f of readFields(buf)) {
    if (f.no === 1) dims = dims.concat(readPackedVarints(f));
    else if (f.no === 2 && f.wire === 0) code = Number(f.value);
    else if (f.no === 8) name = readString(f);
    else if (f.no === 9 && f.wire === 2) raw = f.value;
    else if (f.no === 13 && f.wire === 2) {
      let k = "", v = "";
      for (const e of readFields(f.value)) {
        if (e.no === 1) k = readString(e);
        if (e.no === 2) v = readString(e);
      }
      extInfo[k] = v;
    }
  }
  const dtype = dtypeFromOnnx(code);
  if (!raw && extInfo.location) {
    const at = Number(extInfo.offset ?? 0), length = Number(extInfo.length);
    if (!ext) return { name, dtype, dims, external: { file: extInfo.location, offset: at, length } };
    raw = ext.subarray(at, at + length);
  }
  if (!raw) throw new TypeError(`initializer ${name}: only raw_data tensors are supported`);
  const copy = raw.slice(); // aligned for the typed-array view
  return { name, dtype, dims, data: typedView(dtype, copy.buffer) };
}

function typedView(dtype: TensorData["dtype"], buf: ArrayBuffer): TensorArray {
  switch (dtype) {
    case "float32":
      return new Float32Array(buf);
    case "float64":
      return new Float64Array(buf);
    case "int32":
      return new Int32Array(buf);
    case "int64":
      return new BigInt64Array(buf);
    case "float16":
    case "bfloat16":
      return new Uint16Array(buf);
    case "int8":
      return new Int8Array(buf);
    default:
      return new Uint8Array(buf);
  }
}

function decodeValueInfo(buf: Uint8Array): ValueInfo {
  let name = "", code = 1;
  const shape: Dim[] = [];
  for (const f of readFields(buf)) {
    if (f.no === 1) name = readString(f);
    if (f.no === 2 && f.wire === 2) {
      for (const t of readFields(f.value)) {
        if (t.no !== 1 || t.wire !== 2) continue;
        for (const tt of readFields(t.value)) {
          if (tt.no === 1 && tt.wire === 0) code = Number(tt.value);
          if (tt.no === 2 && tt.wire === 2) {
            for (const d of readFields(tt.value)) {
              if (d.no !== 1 || d.wire !== 2) continue;
              for (const dv of readFields(d.value)) {
                if (dv.no === 1 && dv.wire === 0) shape.push(Number(dv.value));
                if (dv.no === 2) shape.push(readString(dv));
              }
            }
          }
        }
      }
    }
  }
  return { name, dtype: dtypeFromOnnx(code), shape };
}
