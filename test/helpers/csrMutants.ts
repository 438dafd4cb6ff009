import { tlv } from '../../certs/x509/der.js';

/** mulberry32: a small seeded PRNG, so a fuzz run is the same run every time. */
export function seededRandom(seed: number): { next: () => number; int: (n: number) => number; pick: <T>(items: readonly T[]) => T } {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { next, int, pick: (items) => items[int(items.length)]! };
}

type Rng = ReturnType<typeof seededRandom>;

const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0xff, 0x30, 0x31, 0x05, 0x06, 0xa0];

/**
 * Byte-level mutants: bit flips, random and boundary bytes, insertions,
 * deletions, duplicated ranges, truncations and length-byte tweaks. Framing
 * is not repaired: most of these must be refused as malformed.
 */
export function byteMutant(input: Buffer, rng: Rng): Buffer {
  const b = Buffer.from(input);
  const at = rng.int(b.length);
  switch (rng.int(8)) {
    case 0: {
      for (let i = 1 + rng.int(3); i > 0; i--) {
        const p = rng.int(b.length);
        b[p] = b[p]! ^ (1 << rng.int(8));
      }
      return b;
    }
    case 1:
      b[at] = rng.int(256);
      return b;
    case 2:
      b[at] = rng.pick(INTERESTING);
      return b;
    case 3:
      return Buffer.concat([b.subarray(0, at), Buffer.from([rng.next() < 0.5 ? rng.int(256) : rng.pick(INTERESTING)]), b.subarray(at)]);
    case 4:
      return Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + rng.int(8)))]);
    case 5: {
      const len = 1 + rng.int(16);
      return Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]);
    }
    case 6:
      return b.subarray(0, at);
    default: {
      // A length byte: the one after a tag at a node boundary, nudged by one or made long-form.
      const offsets = lengthOffsets(b);
      const p = offsets.length > 0 ? rng.pick(offsets) : at;
      const v = b[p]!;
      if (v < 0x80 && rng.next() < 0.3) return Buffer.concat([b.subarray(0, p), Buffer.from([0x81, v]), b.subarray(p + 1)]);
      b[p] = (v + (rng.next() < 0.5 ? 1 : 255)) & 0xff;
      return b;
    }
  }
}

/** Offsets of the first length byte of every TLV that parses, walking constructed ones. */
function lengthOffsets(b: Buffer): number[] {
  const out: number[] = [];
  const walk = (start: number, end: number, depth: number) => {
    for (let p = start; p + 2 <= end && depth < 12; ) {
      const tag = b[p]!;
      let len = b[p + 1]!;
      let header = 2;
      if (len & 0x80) {
        const n = len & 0x7f;
        if (n === 0 || n > 3 || p + 2 + n > end) return;
        len = 0;
        for (let i = 0; i < n; i++) len = len * 256 + b[p + 2 + i]!;
        header += n;
      }
      if (p + header + len > end) return;
      out.push(p + 1);
      if (tag & 0x20) walk(p + header, p + header + len, depth + 1);
      p += header + len;
    }
  };
  walk(0, b.length, 0);
  return out;
}

/** A DER tree whose lengths are recomputed when it is encoded again. */
export type Tree = { tag: number; value: Buffer } | { tag: number; children: Tree[] };

export function parseTree(b: Buffer): Tree {
  const walk = (start: number, end: number): Tree[] => {
    const out: Tree[] = [];
    for (let p = start; p < end; ) {
      const tag = b[p]!;
      let len = b[p + 1]!;
      let header = 2;
      if (len & 0x80) {
        const n = len & 0x7f;
        len = 0;
        for (let i = 0; i < n; i++) len = len * 256 + b[p + 2 + i]!;
        header += n;
      }
      const body = b.subarray(p + header, p + header + len);
      out.push(tag & 0x20 ? { tag, children: walk(p + header, p + header + len) } : { tag, value: Buffer.from(body) });
      p += header + len;
    }
    return out;
  };
  return walk(0, b.length)[0]!;
}

export function encodeTree(t: Tree): Buffer {
  return 'children' in t ? tlv(t.tag, ...t.children.map(encodeTree)) : tlv(t.tag, t.value);
}

function allNodes(t: Tree, out: { node: Tree; parent?: Tree & { children: Tree[] } }[] = [], parent?: Tree & { children: Tree[] }): typeof out {
  out.push({ node: t, ...(parent ? { parent } : {}) });
  if ('children' in t) for (const c of t.children) allNodes(c, out, t as Tree & { children: Tree[] });
  return out;
}

const clone = (t: Tree): Tree => ('children' in t ? { tag: t.tag, children: t.children.map(clone) } : { tag: t.tag, value: Buffer.from(t.value) });

const TAGS = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x13, 0x14, 0x16, 0x17, 0x1e, 0x30, 0x31, 0xa0, 0x80, 0x86];

/**
 * Structure-aware mutants: one node of the tree changed (its content, its
 * tag, removed, duplicated, children reordered, an OID subidentifier padded
 * with 0x80, an INTEGER with a leading zero), every length above it
 * recomputed, so the framing stays DER and the mutation reaches the checks
 * behind it.
 */
export function treeMutant(input: Buffer, rng: Rng): Buffer {
  const root = clone(parseTree(input));
  const nodes = allNodes(root);
  const { node, parent } = rng.pick(nodes.slice(1));
  const op = rng.int(9);
  if ('value' in node && op <= 2) {
    const v = node.value;
    if (op === 0 || v.length === 0) node.value = Buffer.concat([v, Buffer.from([rng.pick(INTERESTING)])]);
    else if (op === 1) {
      const c = Buffer.from(v);
      const p = rng.int(c.length);
      c[p] = rng.next() < 0.5 ? c[p]! ^ (1 << rng.int(8)) : rng.pick(INTERESTING);
      node.value = c;
    } else node.value = v.subarray(0, rng.int(v.length));
  } else if (op === 3) node.tag = rng.pick(TAGS.filter((t) => ((t & 0x20) !== 0) === 'children' in node));
  else if (op === 4 && parent) parent.children.splice(parent.children.indexOf(node), 1);
  else if (op === 5 && parent) parent.children.splice(parent.children.indexOf(node), 0, clone(node));
  else if (op === 6 && 'children' in node && node.children.length > 1) node.children.reverse();
  else {
    // Targeted: a non-minimal OID subidentifier, a non-minimal INTEGER, a BOOLEAN that is not DER.
    const oids = nodes.filter((n) => n.node.tag === 0x06).map((n) => n.node as { tag: number; value: Buffer });
    const ints = nodes.filter((n) => n.node.tag === 0x02).map((n) => n.node as { tag: number; value: Buffer });
    const bools = nodes.filter((n) => n.node.tag === 0x01).map((n) => n.node as { tag: number; value: Buffer });
    const choice = rng.int(3);
    if (choice === 0 && oids.length > 0) {
      const o = rng.pick(oids);
      const starts = [0, ...[...o.value].flatMap((byte, i) => ((byte & 0x80) === 0 && i + 1 < o.value.length ? [i + 1] : []))];
      const p = rng.pick(starts);
      o.value = Buffer.concat([o.value.subarray(0, p), Buffer.from([0x80]), o.value.subarray(p)]);
    } else if (choice === 1 && ints.length > 0) {
      const i = rng.pick(ints);
      i.value = Buffer.concat([Buffer.from([rng.next() < 0.5 ? 0x00 : 0xff]), i.value]);
    } else if (bools.length > 0) rng.pick(bools).value = Buffer.from([rng.pick([0x01, 0x00, 0x80])]);
    else return byteMutant(input, rng);
  }
  return encodeTree(root);
}
