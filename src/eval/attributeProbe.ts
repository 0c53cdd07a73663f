/**
 * What retrieval embeddings encode, attribute by attribute, on a corpus whose entries carry
 * `concepts` ("shape:circle", "color:red", …; the synthetic corpus does): for each caption, its
 * top-1 video by cosine, and the share of captions whose top-1 video has the caption's value of
 * each attribute. A model that ignores an attribute scores its chance, 1 / (values it takes).
 *
 * @example
 * const r = attributeAgreement(textRows, textIds, videoRows, videoIds, conceptsById);
 * r.attributes.find((a) => a.name === 'dir')?.agreement // e.g. 0.47
 */

export interface AttributeAgreement {
  captions: number;
  /** Share of captions whose top-1 video is their own (R@1 as a fraction). */
  exact: number;
  attributes: { name: string; agreement: number; values: number; chance: number }[];
}

/** Splits "key:value" concepts into a map; a concept without a colon is an error naming it. */
export function conceptMap(concepts: readonly string[], where: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const c of concepts) {
    const i = c.indexOf(':');
    if (i <= 0) throw new Error(`${where}: concept '${c}' must read 'attribute:value'`);
    out.set(c.slice(0, i), c.slice(i + 1));
  }
  return out;
}

/**
 * @param texts caption embeddings (L2-normalised rows), with `textIds` the entry id of each
 * @param videos video embeddings (L2-normalised rows), with `videoIds`
 * @param concepts attribute → value of each entry id
 */
export function attributeAgreement(
  texts: readonly ArrayLike<number>[], textIds: readonly string[],
  videos: readonly ArrayLike<number>[], videoIds: readonly string[],
  concepts: ReadonlyMap<string, ReadonlyMap<string, string>>,
): AttributeAgreement {
  if (texts.length !== textIds.length || videos.length !== videoIds.length) throw new Error('attributeAgreement: one id per embedding row');
  if (texts.length === 0 || videos.length === 0) throw new Error('attributeAgreement: no captions or no videos');
  const valuesOf = new Map<string, Set<string>>();
  const of = (id: string) => {
    const c = concepts.get(id);
    if (!c) throw new Error(`attributeAgreement: no concepts for entry '${id}'`);
    return c;
  };
  for (const id of videoIds) for (const [k, v] of of(id)) (valuesOf.get(k) ?? valuesOf.set(k, new Set()).get(k)!).add(v);
  const hits = new Map<string, number>();
  let exact = 0;
  texts.forEach((q, i) => {
    let best = 0;
    let bestScore = -Infinity;
    videos.forEach((v, j) => {
      let s = 0;
      for (let k = 0; k < q.length; k++) s += q[k] * v[k];
      if (s > bestScore) { bestScore = s; best = j; }
    });
    if (textIds[i] === videoIds[best]) exact++;
    const got = of(videoIds[best]);
    for (const [k, v] of of(textIds[i])) if (got.get(k) === v) hits.set(k, (hits.get(k) ?? 0) + 1);
  });
  const n = texts.length;
  return {
    captions: n,
    exact: exact / n,
    attributes: [...valuesOf].map(([name, set]) => ({ name, agreement: (hits.get(name) ?? 0) / n, values: set.size, chance: 1 / set.size })),
  };
}
