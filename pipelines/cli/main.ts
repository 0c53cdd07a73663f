#!/usr/bin/env node
/** The `vlmargin` command: parses the command line against the tree built in program.ts (each sub-command in its own file). */
import { describeOutOfMemory } from '../../src/train/trainer.js';
import { buildProgram } from './program.js';

const program = buildProgram();
program.parseAsync(process.argv).then(
  () => { setTimeout(() => process.exit(process.exitCode ?? 0), 100).unref(); },
  (e: unknown) => { console.error(describeOutOfMemory(e, 'vlmargin') ?? `vlmargin: ${(e as Error).message}`); process.exit(1); },
);
