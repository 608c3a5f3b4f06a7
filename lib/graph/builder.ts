/**
 * The graph builder: values that carry their dtype and (possibly symbolic) shape, nodes recorded in
 * topological order, explicit inputs, initializers and constants. Operators live in ops.ts as plain
 * functions over {@link Value}s; this file only records.
 *
 * @example
 * ```ts
 * const g = new GraphBuilder("mlp");
 * const x = g.input("x", "float32", ["batch", 4]);
 * const w = g.initializer("w", new Float32Array(4 * 3), [4, 3]);
 * g.output(matmul(x, w), "y");
 * const graph = g.build();
 * ```
 * @module
 */
import type { DType, TensorArray } from "./dtype.ts";
import type { Attr, Dim, Graph, Node, TensorData } from "./ir.ts";

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
};

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
    this.nodes.push(n);
    for (const v of outputs) this.producer.set(v, n);
    return outputs;
  }

  /** Marks a value as a graph output under `name` (an Identity is added when the name differs). */
  output(value: Value, name?: string): Value {
    const wanted = name ?? value.name;
    const isOwnInput = this.inputs.includes(value) || this.initializers.has(value.name);
    if (wanted !== value.name || isOwnInput || value.g !== this) {
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
    case "int8":
      return Int8Array.from(values);
    case "bool":
    case "uint8":
      return Uint8Array.from(values);
  }
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
