#!/usr/bin/env node
// Runs the compiled mocha suite (dist/test/**/*.test.js) on the backend named by
// VLMARGIN_TEST_BACKEND (default wasm) and closes with the plain line
// `N passed, N failed` taken from mocha's own counts.
import Mocha from 'mocha';
import { readdirSync, statSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const distTest = path.join(root, 'dist', 'test');
if (!existsSync(distTest)) {
  console.error(`test/run-mocha.mjs: ${distTest} is missing; run \`npm run build\` first`);
  process.exit(2);
}

function collect(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...collect(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const grep = process.argv[2];
const { initBackend } = await import(path.join(root, 'dist', 'src', 'backend', 'index.js'));
const choice = await initBackend({ prefer: process.env.VLMARGIN_TEST_BACKEND ?? 'wasm' });
console.log(`backend: ${choice.name}`);

const mocha = new Mocha({ timeout: 120000, reporter: 'spec', grep });
for (const f of collect(distTest)) mocha.addFile(f);
await mocha.loadFilesAsync();
let passed = 0;
let failed = 0;
let skipped = 0;
const runner = mocha.run((failures) => {
  console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exitCode = failures > 0 || failed > 0 ? 1 : 0;
  if (passed + failed === 0) process.exitCode = 1;
  // Native handles (ffmpeg children, webgpu) must not keep a finished run alive.
  setTimeout(() => process.exit(process.exitCode), 200).unref();
});
runner.on('pass', () => { passed += 1; });
runner.on('fail', () => { failed += 1; });
runner.on('pending', () => { skipped += 1; });
