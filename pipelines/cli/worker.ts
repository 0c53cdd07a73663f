/** `vlmargin worker`: build frame-cache shards from a queue filled by `vlmargin frames --queue`. */
import type { Command } from 'commander';
import { z } from 'zod';
import { DEFAULT_FRAMES_QUEUE, runFramesWorker } from '../frames-queue.js';

const WorkerArgs = z.object({
  queue: z.string().min(1, 'expected redis://HOST:PORT[/DB]'),
  queueName: z.string().min(1),
  concurrency: z.coerce.number().int().min(1).max(256),
  stallTimeout: z.coerce.number().min(0.5),
});

export function register(program: Command): void {
  program.command('worker')
    .description('take frame-cache jobs from a queue and build their shards (run on every machine that sees the cache folder; Ctrl-C finishes the running shards and stops)')
    .requiredOption('--queue <url>', 'the Redis the coordinator enqueued on: redis://HOST:PORT[/DB]')
    .option('--queue-name <name>', 'queue name on that Redis', DEFAULT_FRAMES_QUEUE)
    .option('--concurrency <k>', 'shards at a time, one ffmpeg process each', '2')
    .option('--stall-timeout <s>', 'a job whose worker has not renewed its lock for this long goes to another worker', '30')
    .action(async (raw: Record<string, unknown>) => {
      const parsed = WorkerArgs.safeParse(raw);
      if (!parsed.success) throw new Error(`worker: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}`);
      const a = parsed.data;
      let built = 0;
      const worker = await runFramesWorker({
        queue: a.queue, name: a.queueName, concurrency: a.concurrency, stallSeconds: a.stallTimeout,
        onJob: (e) => {
          if (e.error) { console.error(`${e.shard} of ${e.out}: failed after ${e.seconds.toFixed(1)} s: ${e.error.message}`); return; }
          built++;
          const r = e.result!;
          console.log(r.reused
            ? `${e.shard} of ${e.out}: already committed`
            : `${e.shard} of ${e.out}: ${r.decoded} clips, ${r.errors.length} failed, ${e.seconds.toFixed(1)} s`);
        },
      });
      console.log(`worker ${process.pid}: taking jobs from ${a.queue} (${a.queueName}), ${a.concurrency} at a time`);
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (): void => {
          if (stopping) { console.error('worker: second signal, leaving now (the running shards go back to the queue when their locks expire)'); process.exit(130); }
          stopping = true;
          console.log('worker: finishing the running shards, then stopping (signal again to leave at once)');
          worker.close().then(resolve, resolve);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      console.log(`worker ${process.pid}: stopped after ${built} shards`);
    });
}
