#!/usr/bin/env node
// Runs the compiled mocha suite (dist/test/**/*.test.js) on the backend named by
// VLMARGIN_TEST_BACKEND (default wasm) and closes with the plain line
// `N passed, N failed` taken from mocha's own counts. VLMARGIN_TEST_SKIP_FILES, a comma-separated
// list of test file stems (`lint,frameCache` for test/lint.test.ts and test/frameCache.test.ts),
// leaves those files out; a stem with no file is an error, so the list cannot go stale silently.
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

const skipStems = (process.env.VLMARGIN_TEST_SKIP_FILES ?? '').split(',').map((s) => s.trim()).filter(Boolean);
const files = collect(distTest);
const stemOf = (f) => path.relative(distTest, f).replace(/\.test\.js$/, '');
const unknown = skipStems.filter((s) => !files.some((f) => stemOf(f) === s));
if (unknown.length) {
  console.error(`test/run-mocha.mjs: VLMARGIN_TEST_SKIP_FILES names ${unknown.join(', ')}, which match no file in ${distTest}`);
  process.exit(2);
}
if (skipStems.length) console.log(`left out (VLMARGIN_TEST_SKIP_FILES): ${skipStems.join(', ')}`);

const mocha = new Mocha({ timeout: 120000, reporter: 'spec', grep });
for (const f of files) if (!skipStems.includes(stemOf(f))) mocha.addFile(f);
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
