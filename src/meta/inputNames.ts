/** The weight net's input names, free of tensors so that a config schema can list them. */

/**
 * What the weight net can see of a sample, all detached: `loss` (ℓᵢ), `cosine` (the positive
 * pair's cosine), `rowMargin` / `columnMargin` (that cosine minus the hardest negative's in its
 * row / column) — these three as z-scores over the batch —, `rank` (the share of the batch's negatives that outscore the positive, row and
 * column averaged), `source` (1 for a human caption, 0 for a generated one) and `progress`
 * (step / total steps).
 */
export const WEIGHTING_INPUTS = ['loss', 'cosine', 'rowMargin', 'columnMargin', 'rank', 'source', 'progress'] as const;
export type WeightingInput = typeof WEIGHTING_INPUTS[number];

/** Checks a list of inputs (known names, no repeats, at least one); returns a copy. */
export function checkWeightingInputs(inputs: unknown, fn: string): WeightingInput[] {
  if (!Array.isArray(inputs) || inputs.length === 0) throw new Error(`${fn}: 'inputs' must be a non-empty list of ${WEIGHTING_INPUTS.join(', ')}`);
  const seen = new Set<string>();
  for (const x of inputs) {
    if (!(WEIGHTING_INPUTS as readonly unknown[]).includes(x)) throw new Error(`${fn}: unknown weighting input ${JSON.stringify(x)}; expected one of ${WEIGHTING_INPUTS.join(', ')}`);
    if (seen.has(x)) throw new Error(`${fn}: weighting input '${x}' is listed twice`);
    seen.add(x);
  }
  return [...inputs] as WeightingInput[];
}
