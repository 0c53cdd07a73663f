/** A line or item a reader or sampler could not use, kept so a run can report what it skipped and why. */
export interface ItemError {
  source: string;
  line?: number;
  id?: string;
  reason: string;
}
