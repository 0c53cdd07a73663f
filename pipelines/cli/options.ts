/** Options shared by the job commands. */

/** Commander's collector for a repeatable option. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export const SET_HELP = 'override one config key, validated like the file (repeatable): --set train.steps=30 --set loss.marginRad=0.01';

export const DATA_HELP = 'the data: a manifest (.jsonl) or a folder with manifest.jsonl; for a synthetic config the corpus folder, for an msrvtt config the MSR-VTT folder';
