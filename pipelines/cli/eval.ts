/** `vlmargin eval <kind>`: each evaluation kind registers itself as a sub-command of `eval` here. */
import type { Command } from 'commander';
import { register as evalVerify } from './evalVerify.js';
import { registerEvalRetrieval } from './evalRetrieval.js';
import { register as evalAudio } from './evalAudio.js';

const kinds: ((evalCommand: Command) => void)[] = [registerEvalRetrieval, evalVerify, evalAudio];

export function register(program: Command): void {
  const ev = program.command('eval').description('evaluate a checkpoint or a score file');
  for (const r of kinds) r(ev);
}
