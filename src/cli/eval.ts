/** `vlmargin eval <kind>`: each evaluation kind registers itself as a sub-command of `eval` here. */
import type { Command } from 'commander';

const kinds: ((evalCommand: Command) => void)[] = [];

export function register(program: Command): void {
  const ev = program.command('eval').description('evaluate a checkpoint or a score file');
  for (const r of kinds) r(ev);
}
