/**
 * The margin heads {@link MarginHead} builds by name. A new head is one file in this folder
 * exporting a {@link defineHead} definition, and one entry here.
 */
import { z } from 'zod';
import { camri } from './camri.js';
import { aamSoftmax, amSoftmax, arcface, cosface, normface } from './combined.js';
import type { MarginHeadDefinition } from './define.js';
import { kappaface } from './kappaface.js';
import { softmax } from './softmax.js';
import { sphereface } from './sphereface.js';
import { sphereFace2 } from './sphereFace2.js';
import { sphereFaceR } from './sphereFaceR.js';
import { virtualSoftmax } from './virtualSoftmax.js';

const HEADS = [
  softmax, normface, arcface, cosface, amSoftmax, aamSoftmax, sphereface, sphereFaceR, sphereFace2, kappaface, camri, virtualSoftmax,
] as const;

/** The tuple of the heads' schemas (a mapped tuple needs a type parameter to stay a tuple). */
type SchemasOf<H extends readonly unknown[]> = { -readonly [K in keyof H]: H[K] extends { schema: infer S } ? S : never };
type Schemas = SchemasOf<typeof HEADS>;

/** Head configuration: `name` plus that family's options, defaults from the papers. */
export const marginHeadConfigSchema = z.discriminatedUnion('name', HEADS.map((h) => h.schema) as unknown as Schemas);
/** What `new MarginHead(...)` accepts (defaults optional). */
export type MarginHeadConfig = z.input<typeof marginHeadConfigSchema>;
/** The configuration with every default filled in. */
export type MarginHeadSettings = z.output<typeof marginHeadConfigSchema>;
export type MarginHeadName = MarginHeadSettings['name'];

/** Every head name, in registry order. */
export const MARGIN_HEAD_NAMES = HEADS.map((h) => h.schema.shape.name.value) as unknown as readonly [MarginHeadName, ...MarginHeadName[]];

const byName = new Map<string, MarginHeadDefinition>(HEADS.map((h) => [h.schema.shape.name.value, h as unknown as MarginHeadDefinition]));

/** The definition of head `name`. */
export function marginHeadDefinition(name: MarginHeadName): MarginHeadDefinition {
  const def = byName.get(name);
  if (!def) throw new Error(`marginHeadDefinition: unknown head '${name}'; expected one of ${MARGIN_HEAD_NAMES.join(', ')}`);
  return def;
}
