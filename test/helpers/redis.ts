/**
 * A real Redis for the queue tests. `.ci/run` starts one and names it in VLMARGIN_TEST_REDIS
 * (then it must answer, or the tests fail); elsewhere a redis-server on the PATH is started
 * on a free loopback port for the test file and stopped after it; without one the tests skip.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createConnection, createServer } from 'node:net';

export interface TestRedis {
  url: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Whether a Redis answers PING on host:port within `ms`. */
export function pingRedis(host: string, port: number, ms = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ host, port });
    const done = (ok: boolean): void => { sock.destroy(); resolve(ok); };
    sock.setTimeout(ms, () => done(false));
    sock.once('error', () => done(false));
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.once('data', (d) => done(d.toString().startsWith('+PONG')));
  });
}

/** Why the Redis tests cannot run here, or null when they can. */
export function redisUnavailable(): string | null {
  if (process.env.VLMARGIN_TEST_REDIS) return null;
  const r = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  return r.error || r.status !== 0
    ? 'redis-server is not on the PATH (apt-get install redis-server; `bash .ci/run` installs and starts one)'
    : null;
}

/** The Redis to test against; throws when one was promised (VLMARGIN_TEST_REDIS) and does not answer. */
export async function startTestRedis(): Promise<TestRedis> {
  const given = process.env.VLMARGIN_TEST_REDIS;
  if (given) {
    const u = new URL(given);
    if (!(await pingRedis(u.hostname, Number(u.port || 6379)))) throw new Error(`VLMARGIN_TEST_REDIS=${given} does not answer PING`);
    return { url: given, stop: async () => undefined };
  }
  const port = await freePort();
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const t0 = Date.now();
  while (!(await pingRedis('127.0.0.1', port, 200))) {
    if (child.exitCode !== null || Date.now() - t0 > 10_000) {
      child.kill('SIGKILL');
      throw new Error(`redis-server on port ${port} did not start (exit ${child.exitCode})`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null) { resolve(); return; }
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    }),
  };
}
