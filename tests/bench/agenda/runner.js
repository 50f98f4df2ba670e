// runner.js - one Agenda process for sked's benchmarks (tests/bench/run.py).
//
// Connects Agenda to the store given by --uri (its own database), tuned as
// Agenda's documentation allows: a small processEvery, high maxConcurrency
// and defaultConcurrency, no lock limit unless asked. It defines the job
// types `noop` (returns at once) and `sleep` (waits data.seconds), and
// writes one JSON line per event to --out:
//
//   {"ev":"start","id","k","scheduled","run","start","pid"}
//   {"ev":"end","id","k","scheduled","end","pid"}
//
// where `scheduled` is the job's nextRunAt when Agenda picked it up (the
// time it was due), `run` Agenda's lastRunAt (when Job.run began, before it
// saves the job's next run) and `start` the moment the handler was entered,
// all in epoch milliseconds; `k` is data.k, the harness's name for the
// trigger. Lines are written synchronously so that a process killed with
// SIGKILL leaves the runs it started on disk.
//
// Agenda overwrites nextRunAt with the following run's time inside Job.run,
// before it calls the handler, so the due time is captured by wrapping
// Job.prototype.run; nothing else in Agenda is changed.
//
// Prints "ready" on stdout once agenda.start() has resolved; stops on
// SIGTERM/SIGINT (agenda.stop(), which unlocks the jobs it holds but has
// not started) or after --seconds.
//
//   node runner.js --uri mongodb://127.0.0.1:PORT/agenda_x --out runs.jsonl
//       [--name agenda-1] [--process-every 100] [--concurrency 1000]
//       [--lock-limit 0] [--lock-lifetime 600000] [--seconds 600]
//       [--jobs noop,sleep]
//
// Only the job types in --jobs are defined: Agenda polls the store once per
// defined type every processEvery, so an unused definition doubles its
// store load.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { Agenda, Job } from 'agenda';
import { MongoBackend } from '@agendajs/mongo-backend';

const { values: opt } = parseArgs({
  options: {
    uri: { type: 'string' },
    out: { type: 'string' },
    name: { type: 'string', default: `agenda-${process.pid}` },
    'process-every': { type: 'string', default: '100' },
    concurrency: { type: 'string', default: '1000' },
    'lock-limit': { type: 'string', default: '0' },
    'lock-lifetime': { type: 'string', default: '600000' },
    seconds: { type: 'string', default: '600' },
    jobs: { type: 'string', default: 'noop,sleep' },
  },
});
if (!opt.uri || !opt.out) {
  console.error('usage: node runner.js --uri MONGODB_URI --out FILE [options]');
  process.exit(2);
}
const concurrency = Number(opt.concurrency);
const fd = fs.openSync(opt.out, 'a');
const pid = process.pid;

function record(obj) {
  fs.writeSync(fd, JSON.stringify(obj) + '\n');
}

const originalRun = Job.prototype.run;
Job.prototype.run = function run(...args) {
  this.benchScheduled = this.attrs.nextRunAt ? this.attrs.nextRunAt.getTime() : null;
  return originalRun.apply(this, args);
};

function started(job) {
  const k = job.attrs.data ? job.attrs.data.k : undefined;
  const rec = {
    ev: 'start', id: String(job.attrs._id), k, scheduled: job.benchScheduled,
    run: job.attrs.lastRunAt ? job.attrs.lastRunAt.getTime() : null, start: Date.now(), pid,
  };
  record(rec);
  return rec;
}

function ended(rec) {
  record({ ev: 'end', id: rec.id, k: rec.k, scheduled: rec.scheduled, end: Date.now(), pid });
}

const agenda = new Agenda({
  name: opt.name,
  backend: new MongoBackend({ address: opt.uri }),
  processEvery: Number(opt['process-every']),
  maxConcurrency: concurrency,
  defaultConcurrency: concurrency,
  lockLimit: Number(opt['lock-limit']),
  defaultLockLifetime: Number(opt['lock-lifetime']),
});
let errors = 0;
agenda.on('error', (err) => {
  if (errors++ < 20)
    console.error(`agenda error: ${err && err.message}`);
});

const handlers = {
  noop: async (job) => {
    ended(started(job));
  },
  sleep: async (job) => {
    const rec = started(job);
    const seconds = Number((job.attrs.data && job.attrs.data.seconds) || 1);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    ended(rec);
  },
};
for (const name of opt.jobs.split(',')) {
  if (!handlers[name]) {
    console.error(`unknown job type '${name}'`);
    process.exit(2);
  }
  agenda.define(name, handlers[name]);
}

let stopping = false;
async function stop(code) {
  if (stopping)
    return;
  stopping = true;
  try {
    await agenda.stop();
  } catch (err) {
    console.error(`agenda stop: ${err && err.message}`);
  }
  fs.closeSync(fd);
  process.exit(code);
}
process.on('SIGTERM', () => stop(0));
process.on('SIGINT', () => stop(0));
setTimeout(() => stop(0), Number(opt.seconds) * 1000).unref();

await agenda.start();
process.stdout.write('ready\n');
