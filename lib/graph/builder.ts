/**
 * The graph builder: values that carry their dtype and (possibly symbolic) shape, nodes recorded in
 * topological order, explicit inputs, initializers and constants. Operators live in ops.ts as plain
 * functions over {@link Value}s; this file only records.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { matmul } from "./ops.ts";
 * const g = new GraphBuilder("mlp");
 * const x = g.input("x", "float32", ["batch", 4]);
 * const w = g.initializer("w", new Float32Array(4 * 3), [4, 3]);
 * g.output(matmul(x, w), "y");
 * const graph = g.build();
 * assert.deepEqual(graph.outputs.map((o) => o.shape), [["batch", 3]]); // shapes follow through, symbols too
 * ```
 * @module
 */
import { type DType, dtypeSize, type TensorArray } from "./dtype.ts";
import type { Attr, Dim, ExternalData, Graph, Node, TensorData } from "./ir.ts";

let counter = 0;

/** A tensor in a graph under construction. */
export class Value {
  constructor(
    /** The builder that owns the node (or input) producing this value. */
    readonly g: GraphBuilder,
    readonly name: string,
    readonly dtype: DType,
    readonly shape: readonly Dim[],
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  toString(): string {
    return `${this.name}: ${this.dtype}[${this.shape.join(", ")}]`;
  }
}

/** A recorded node, with its inputs and outputs as values (null for a missing optional input). */
export type BuiltNode = {
  op: string;
  domain?: string;
  name: string;
  inputs: (Value | null)[];
  outputs: Value[];
  attrs: Record<string, Attr>;
  /** The segment (a decoder layer, the LM head) the node was built in; see {@link GraphBuilder.segment}. */
  segment?: Segment;
  /**
   * Cheap to compute again from its inputs (a weight's cast, a dropout mask): a backward pass built per
   * segment recomputes it where needed instead of keeping the forward's value alive until then.
   */
  remat?: boolean;
  /** The node's own vector-Jacobian product, used instead of the operator's rule (see vjp.ts). */
  grad?: VjpRule;
  /**
   * Values the node's subgraphs read from enclosing scopes by name (a Loop over blocks of rows): inputs as
   * far as gradients are concerned (they follow `inputs` in a rule's `want` and results), never serialized.
   */
  deps?: Value[];
};

/** A group of consecutive nodes whose backward pass is built as one unit (see autodiff.ts). */
export type Segment = { id: number; name: string };

/** A rule: (node, output gradients, which inputs want one) → input gradients (null where none). */
export type VjpRule = (n: BuiltNode, gy: (Value | null)[], want: boolean[]) => (Value | null)[];

let segments = 0;

/** Output specification for {@link GraphBuilder.node}. */
export type OutSpec = { dtype: DType; shape: readonly Dim[]; name?: string };

/** Records a graph. Sub-builders (Loop bodies) see their parent's values through outer-scope references. */
export class GraphBuilder {
  readonly nodes: BuiltNode[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: { value: Value; name: string }[] = [];
  readonly initializers = new Map<string, { value: Value; data: TensorData }>();
  /** Producer of every value made by a node of this builder. */
  readonly producer = new Map<Value, BuiltNode>();
  /** Builders whose graphs became subgraphs (Loop bodies) of this one: searched by {@link describe}. */
  readonly children: GraphBuilder[] = [];
  readonly #names = new Set<string>();
  readonly #constants = new Map<string, Value>();
  readonly #captured = new Map<string, Value>();
  #segment?: Segment;

  constructor(readonly name: string, readonly parent?: GraphBuilder) {}

  /** A fresh, globally unique name with a readable hint. */
  fresh(hint: string): string {
    return `${hint}_${++counter}`;
  }

  #claim(name: string): string {
    if (this.#names.has(name)) throw new Error(`graph ${this.name}: the name "${name}" is taken`);
    for (let b = this.parent; b; b = b.parent) {
      if (b.#names.has(name)) throw new Error(`graph ${this.name}: the name "${name}" is taken`);
    }
    this.#names.add(name);
    return name;
  }

  /** Declares a graph input. */
  input(name: string, dtype: DType, shape: readonly Dim[]): Value {
    const v = new Value(this, this.#claim(name), dtype, [...shape]);
    this.inputs.push(v);
    return v;
  }

  /** Declares an initializer: data that lives with the model (frozen weights). */
  initializer(name: string, data: TensorArray, dims: readonly number[], dtype?: DType): Value {
    const dt = dtype ?? dtypeOfArray(data);
    const n = dims.reduce((a, b) => a * b, 1);
    if (n !== data.length) {
      throw new RangeError(`initializer ${name}: ${data.length} elements for dims [${dims.join(", ")}]`);
    }
    const v = new Value(this, this.#claim(name), dt, [...dims]);
    this.initializers.set(v.name, { value: v, data: { name: v.name, dtype: dt, dims: [...dims], data } });
    return v;
  }

  /**
   * Declares an initializer whose values stay in a file (a frozen weight inside a safetensors checkpoint):
   * ONNX Runtime reads them; JavaScript never holds them.
   */
  externalInitializer(name: string, dtype: DType, dims: readonly number[], external: ExternalData): Value {
    const n = dims.reduce((a, b) => a * b, 1);
    if (n * dtypeSize(dtype) !== external.length) {
      throw new RangeError(
        `initializer ${name}: ${external.length} bytes in ${external.file} for ${dtype}[${dims.join(", ")}]`,
      );
    }
    const v = new Value(this, this.#claim(name), dtype, [...dims]);
    this.initializers.set(v.name, { value: v, data: { name: v.name, dtype, dims: [...dims], external } });
    return v;
  }

  /** A small constant, deduplicated by content. Stored as an initializer of the root builder. */
  constant(values: readonly number[], dims: readonly number[], dtype: DType): Value {
    const root = this.root();
    const key = `${dtype}|${dims.join(",")}|${values.join(",")}`;
    const hit = root.#constants.get(key);
    if (hit) return hit;
    const v = root.initializer(root.fresh("const"), makeArray(dtype, values), dims, dtype);
    root.#constants.set(key, v);
    return v;
  }

  /** A scalar constant. */
  scalar(value: number, dtype: DType): Value {
    return this.constant([value], [], dtype);
  }

  /** A 1-D int64 constant (axes, shapes, indices). */
  ints(values: readonly number[]): Value {
    return this.constant(values, [values.length], "int64");
  }

  /**
   * Builds `fn` as one segment: every node it adds to this builder is tagged with it. Gradients can then
   * build the segment's backward pass as one unit, recomputing the segment's forward from its inputs
   * (activation checkpointing) or only its cheap parts (see autodiff.ts); forward graphs are unchanged.
   */
  segment<T>(name: string, fn: () => T): T {
    const outer = this.#segment;
    this.#segment = { id: ++segments, name };
    try {
      return fn();
    } finally {
      this.#segment = outer;
    }
  }

  /** The id of the segment being built, if any. */
  get segmentId(): number | undefined {
    return this.#segment?.id;
  }

  /** Marks the node producing `v` as cheap to recompute (see {@link BuiltNode.remat}). */
  remat(v: Value): Value {
    const n = this.producer.get(v);
    if (n) n.remat = true;
    return v;
  }

  /**
   * `v`, a value of an enclosing graph, as a value of this (nested) one: the same name, which a subgraph
   * resolves in the outer scope, so operators applied to it add their nodes here.
   */
  capture(v: Value): Value {
    if (v.g === this) return v;
    let hit = this.#captured.get(v.name);
    if (!hit) this.#captured.set(v.name, hit = new Value(this, v.name, v.dtype, v.shape));
    return hit;
  }

  /** The outermost builder. */
  root(): GraphBuilder {
    return this.parent ? this.parent.root() : this;
  }

  /** Records a node and returns its output values. */
  node(
    op: string,
    inputs: readonly (Value | null)[],
    outs: readonly OutSpec[],
    attrs: Record<string, Attr> = {},
    domain?: string,
  ): Value[] {
    const outputs = outs.map((o) =>
      new Value(this, this.#claim(o.name ?? this.fresh(op.toLowerCase())), o.dtype, [...o.shape])
    );
    const n: BuiltNode = { op, name: this.fresh(`n_${op}`), inputs: [...inputs], outputs, attrs };
    if (domain) n.domain = domain;
    if (this.#segment) n.segment = this.#segment;
    this.nodes.push(n);
    for (const v of outputs) this.producer.set(v, n);
    return outputs;
  }

  /** Marks a value as a graph output under `name` (an Identity is added when the name differs). */
  output(value: Value, name?: string): Value {
    const wanted = name ?? value.name;
    // inputs, initializers, captured and outer values are not outputs of a node here: they need one
    if (wanted !== value.name || !this.producer.has(value)) {
      const [out] = this.node("Identity", [value], [{
        dtype: value.dtype,
        shape: value.shape,
        name: wanted,
      }]);
      value = out;
    }
    this.outputs.push({ value, name: wanted });
    return value;
  }

  /** Explains a node by name (operator, inputs and outputs with their inferred shapes), for errors. */
  describe(nodeName: string): string | undefined {
    const n = this.nodes.find((x) => x.name === nodeName);
    if (n) {
      const fmtV = (v: Value | null) => (v ? v.toString() : "(none)");
      return `${n.op} node ${n.name} in graph ${this.name}: inputs ${n.inputs.map(fmtV).join(", ")} → ${
        n.outputs.map(fmtV).join(", ")
      }`;
    }
    for (const c of this.children) {
      const d = c.describe(nodeName);
      if (d) return d;
    }
    return undefined;
  }

  /** The IR graph, ready to serialize. */
  build(): Graph {
    return {
      name: this.name,
      nodes: this.nodes.map(toIrNode),
      inputs: this.inputs.map(info),
      outputs: this.outputs.map(({ value }) => info(value)),
      initializers: [...this.initializers.values()].map((i) => i.data),
    };
  }
}

function info(v: Value) {
  return { name: v.name, dtype: v.dtype, shape: [...v.shape] };
}

function toIrNode(n: BuiltNode): Node {
  const node: Node = {
    op: n.op,
    name: n.name,
    inputs: n.inputs.map((v) => v?.name ?? ""),
    outputs: n.outputs.map((v) => v.name),
    attrs: n.attrs,
  };
  if (n.domain) node.domain = n.domain;
  return node;
}

/** The dtype a typed array holds (Uint16Array is taken as float16 bits). */
export function dtypeOfArray(a: TensorArray): DType {
  if (a instanceof Float32Array) return "float32";
  if (a instanceof Float64Array) return "float64";
  if (a instanceof Int32Array) return "int32";
  if (a instanceof BigInt64Array) return "int64";
  if (a instanceof Uint16Array) return "float16";
  if (a instanceof Int8Array) return "int8";
  return "uint8";
}

/** A typed array of `dtype` holding `values`. */
export function makeArray(dtype: DType, values: readonly number[]): TensorArray {
  switch (dtype) {
    case "float32":
      return Float32Array.from(values);
    case "float64":
      return Float64Array.from(values);
    case "int32":
      return Int32Array.from(values);
    case "int64":
      return BigInt64Array.from(values, (v) => BigInt(v));
    case "float16":
      return Uint16Array.from(values, toHalfBits);
    case "bfloat16":
      return Uint16Array.from(values, toBfloat16Bits);
    case "int8":
      return Int8Array.from(values);
    case "bool":
    case "uint8":
      return Uint8Array.from(values);
  }
}

/** bfloat16 bits of a number: the top half of its float32 bits, rounded to nearest even. */
function toBfloat16Bits(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** IEEE half-precision bits of a number, rounded to nearest even. */
export function toHalfBits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1), mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  e = half;
  return sign | e;
}
