#!/usr/bin/env node
// The BullMQ peer of am2z-bench: the same scenarios, measured the same way and printed in the
// same format, so bench/report.py puts each BullMQ figure beside am2z's from the same run.
//
//   REDIS_PORT=<scratch port> node bullmq.js <scenario>[,<scenario>...] [reps]
//
// Scenarios (am2z-bench's name for each is the same):
//   one_step        one job at a time: add, wait for its `completed` event (LAT_N, 1000 per rep)
//   chain5          5 jobs, each added when the previous completed (CHAIN_N, 300 per rep)
//   parallel3_join  a flow: parent + 3 children, until the parent completes (FLOW_N, 300 per rep)
//   fanout3         3 jobs in one addBulk, until all 3 completed (FLOW_N per rep)
//   session_run_stop  new Queue + Worker + QueueEvents, 1 job, close, obliterate (SESS_N, 30)
//   throughput      addBulk N (20 000) no-op jobs, then one Worker at each of CONC (1,10,50)
//   chain5_load     N/5 chains of 5 queued (first steps addBulk'ed; each step's processor
//                   adds the next step), then one Worker at the last of CONC
//   all             every scenario above
//
//   node bullmq.js script-names   # `SCRIPT <sha1> bullmq:<name>` lines (no Redis needed)
//
// Output, one line each:
//   RESULT bullmq.<figure> median=<m> min=<a> max=<b> unit=<u> runs=[<per rep>,...]
//   CMDS bullmq.<scenario> <command>=<calls per unit> ...
//   CMDSTAT bullmq.<scenario> <command> calls=<per unit> usec=<per unit>
// Latency figures: each rep yields its p50 and p99 over its samples; the line gives the median,
// min and max of the per-rep values. Redis figures are `INFO cpu commandstats` deltas (every
// command, those run inside Lua scripts included; the observer's own INFO left out) divided by
// the jobs, steps or sessions of the scenario.
//
// Every Worker, Queue and QueueEvents lives in this one Node process, as one am2z process
// submits, serves and awaits. Each rep starts with FLUSHDB: the script refuses to run unless
// REDIS_PORT names a port (never 6379) on 127.0.0.1, and must only get a scratch Redis.

'use strict';

const { Queue, Worker, QueueEvents, FlowProducer } = require('bullmq');
const IORedis = require('ioredis');

if (process.argv[2] === 'script-names') {
  // `SCRIPT <sha1> bullmq:<name>` for each Lua script BullMQ loads (ioredis' defineCommand
  // hashes the content as given), so bench/slowlog.py can name them. Needs no Redis.
  const crypto = require('crypto');
  const scripts = require('bullmq/dist/cjs/scripts');
  for (const { name, content } of Object.values(scripts)) {
    console.log(`SCRIPT ${crypto.createHash('sha1').update(content).digest('hex')} bullmq:${name}`);
  }
  process.exit(0);
}

const PORT = Number(process.env.REDIS_PORT);
if (!Number.isInteger(PORT) || PORT <= 0 || PORT === 6379) {
  console.error('REDIS_PORT must name the scratch Redis this bench may FLUSHDB (not 6379)');
  process.exit(2);
}
const connection = { host: '127.0.0.1', port: PORT };
const num = (name, dflt) => Number(process.env[name] || dflt);
const LAT_N = num('LAT_N', 1000);
const CHAIN_N = num('CHAIN_N', 300);
const FLOW_N = num('FLOW_N', 300);
const SESS_N = num('SESS_N', 30);
const N = num('N', 20000);
const CONC = (process.env.CONC || '1,10,50').split(',').map(Number);
const WARM_UP = 20; // runs before each rep's samples, not counted (as am2z-bench)
const ADD_BULK = 1000; // jobs per addBulk when queueing for throughput

const clock = () => Number(process.hrtime.bigint()) / 1e6; // ms
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const cpuOfNode = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6; // s
};

// ------------------------------------------------------------------ figures and output

// Nearest-rank quantile, as am2z-bench's report.rs.
function quantile(sorted, q) {
  return sorted.length ? sorted[Math.round((sorted.length - 1) * q)] : NaN;
}

function result(name, unit, runs) {
  const sorted = [...runs].sort((a, b) => a - b);
  const f = (v) => v.toFixed(3);
  console.log(
    `RESULT bullmq.${name} median=${f(quantile(sorted, 0.5))} min=${f(sorted[0])} ` +
      `max=${f(sorted[sorted.length - 1])} unit=${unit} runs=[${runs.map(f).join(',')}]`,
  );
}

function p50p99(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return [quantile(sorted, 0.5), quantile(sorted, 0.99)];
}

// ------------------------------------------------------------------ Redis' counters

const SCRIPT_COMMANDS = ['evalsha', 'eval', 'evalsha_ro', 'eval_ro', 'fcall', 'fcall_ro'];

class Observer {
  constructor() {
    this.conn = new IORedis(connection);
  }

  // One INFO call: an interval between two snapshots holds exactly one of the observer's own
  // (commandstats counts a command after it answered), which `delta` takes out.
  async snapshot() {
    const text = await this.conn.call('INFO', 'cpu', 'commandstats');
    const snap = { cpu: 0, stats: new Map() };
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      const colon = line.indexOf(':');
      if (colon < 0) continue;
      const field = line.slice(0, colon);
      const value = line.slice(colon + 1);
      if (field === 'used_cpu_sys' || field === 'used_cpu_user') {
        snap.cpu += Number(value);
      } else if (field.startsWith('cmdstat_')) {
        const kv = Object.fromEntries(value.split(',').map((p) => p.split('=')));
        snap.stats.set(field.slice('cmdstat_'.length), { calls: Number(kv.calls), usec: Number(kv.usec) });
      }
    }
    return snap;
  }

  async flush() {
    await this.conn.flushdb();
  }

  async close() {
    await this.conn.quit();
  }
}

function delta(before, after) {
  const stats = new Map();
  for (const [name, now] of after.stats) {
    const was = before.stats.get(name) || { calls: 0, usec: 0 };
    let calls = now.calls - was.calls;
    let usec = now.usec - was.usec;
    if (name === 'info') {
      calls -= 1;
      if (calls <= 0) usec = 0;
    }
    if (calls > 0) stats.set(name, { calls, usec });
  }
  return { cpu: after.cpu - before.cpu, stats };
}

function emptyDelta() {
  return { cpu: 0, stats: new Map() };
}

function addDelta(into, d) {
  into.cpu += d.cpu;
  for (const [name, s] of d.stats) {
    const mine = into.stats.get(name) || { calls: 0, usec: 0 };
    into.stats.set(name, { calls: mine.calls + s.calls, usec: mine.usec + s.usec });
  }
  return into;
}

const callsOf = (d) => [...d.stats.values()].reduce((n, s) => n + s.calls, 0);
const scriptCallsOf = (d) => SCRIPT_COMMANDS.reduce((n, c) => n + (d.stats.get(c)?.calls || 0), 0);

// CMDS (calls per unit, largest first) and CMDSTAT (calls and µs per unit) lines.
function commands(name, d, units) {
  const rows = [...d.stats.entries()].sort((a, b) => b[1].calls - a[1].calls || a[0].localeCompare(b[0]));
  const list = rows.filter(([, s]) => s.calls / units >= 0.05).map(([c, s]) => `${c}=${(s.calls / units).toFixed(2)}`);
  console.log(`CMDS bullmq.${name} ${list.join(' ')}`);
  for (const [c, s] of rows) {
    if (s.calls / units >= 0.001) {
      console.log(`CMDSTAT bullmq.${name} ${c} calls=${(s.calls / units).toFixed(4)} usec=${(s.usec / units).toFixed(3)}`);
    }
  }
}

// Redis CPU, commands and script calls per unit, one RESULT line each, plus the breakdown.
function redisFigures(name, unit, d, units) {
  result(`${name}.redis_cpu_per_${unit}`, 'us', [(d.cpu * 1e6) / units]);
  result(`${name}.redis_cmds_per_${unit}`, 'cmds', [callsOf(d) / units]);
  result(`${name}.script_calls_per_${unit}`, 'calls', [scriptCallsOf(d) / units]);
  commands(name, d, units);
}

// ------------------------------------------------------------------ completions

// One `completed` listener per QueueEvents; a promise per job id chosen before the job is added.
class Completions {
  constructor(events) {
    this.pending = new Map();
    events.on('completed', ({ jobId }) => {
      const resolve = this.pending.get(jobId);
      if (resolve) {
        this.pending.delete(jobId);
        resolve();
      }
    });
  }

  of(id) {
    return new Promise((resolve) => this.pending.set(id, resolve));
  }
}

let lastId = 0;
const nextId = () => `b${process.pid}-${++lastId}`;

async function ready(...parts) {
  await Promise.all(parts.map((p) => p.waitUntilReady()));
  await pause(100); // let the worker settle into its blocking wait
}

// ------------------------------------------------------------------ sequential scenarios

// `samples` sequential runs of `once` per rep, on a fresh setup per rep: p50/p99 per rep and
// Redis' cost per step over the measured samples of every rep.
async function sequential(obs, name, reps, samples, stepsPerRun, setup) {
  const p50s = [];
  const p99s = [];
  const cost = emptyDelta();
  for (let rep = 0; rep < reps; rep++) {
    await obs.flush();
    const { once, close } = await setup();
    for (let i = 0; i < WARM_UP; i++) await once(i);
    const lat = [];
    const before = await obs.snapshot();
    for (let i = 0; i < samples; i++) {
      const begin = clock();
      await once(i);
      lat.push(clock() - begin);
    }
    addDelta(cost, delta(before, await obs.snapshot()));
    await close();
    const [p50, p99] = p50p99(lat);
    p50s.push(p50);
    p99s.push(p99);
  }
  result(`${name}.p50`, 'ms', p50s);
  result(`${name}.p99`, 'ms', p99s);
  redisFigures(name, 'step', cost, reps * samples * stepsPerRun);
}

// Queue + QueueEvents + Worker on one queue; `once` gets (queue, completions, i).
function oneQueue(name, concurrency, body) {
  return async () => {
    const queue = new Queue(name, { connection });
    const events = new QueueEvents(name, { connection });
    const worker = new Worker(name, async (job) => job.data.x, { connection, concurrency });
    await ready(queue, events, worker);
    const done = new Completions(events);
    return {
      once: (i) => body(queue, done, i),
      close: async () => {
        await worker.close();
        await events.close();
        await queue.close();
      },
    };
  };
}

async function addAndWait(queue, done, data) {
  const id = nextId();
  const completed = done.of(id);
  await queue.add('step', data, { jobId: id, removeOnComplete: true });
  await completed;
}

const scenarios = {
  async one_step(obs, reps) {
    await sequential(obs, 'one_step', reps, LAT_N, 1, oneQueue('one-step', 1, (q, d, i) => addAndWait(q, d, { x: i })));
  },

  async chain5(obs, reps) {
    const five = async (q, d, i) => {
      for (let step = 0; step < 5; step++) await addAndWait(q, d, { x: i + step });
    };
    await sequential(obs, 'chain5', reps, CHAIN_N, 5, oneQueue('chain5', 1, five));
  },

  async fanout3(obs, reps) {
    const three = async (queue, done, i) => {
      const ids = [nextId(), nextId(), nextId()];
      const all = Promise.all(ids.map((id) => done.of(id)));
      await queue.addBulk(ids.map((id) => ({ name: 'step', data: { x: i }, opts: { jobId: id, removeOnComplete: true } })));
      await all;
    };
    await sequential(obs, 'fanout3', reps, FLOW_N, 3, oneQueue('fanout3', 3, three));
  },

  async parallel3_join(obs, reps) {
    const setup = async () => {
      const flows = new FlowProducer({ connection });
      const events = new QueueEvents('join', { connection });
      const branches = new Worker('branch', async (job) => job.data.x + 1, { connection, concurrency: 3 });
      const joins = new Worker('join', async () => 0, { connection, concurrency: 1 });
      await ready(flows, events, branches, joins);
      const done = new Completions(events);
      const once = async (i) => {
        const id = nextId();
        const completed = done.of(id);
        await flows.add({
          name: 'join',
          queueName: 'join',
          data: { x: i },
          opts: { jobId: id, removeOnComplete: true },
          children: [0, 1, 2].map(() => ({ name: 'branch', queueName: 'branch', data: { x: i }, opts: { removeOnComplete: true } })),
        });
        await completed;
      };
      const close = async () => {
        await Promise.all([branches.close(), joins.close()]);
        await events.close();
        await flows.close();
      };
      return { once, close };
    };
    await sequential(obs, 'parallel3_join', reps, FLOW_N, 4, setup);
  },

  async session_run_stop(obs, reps) {
    const p50s = [];
    const p99s = [];
    const cost = emptyDelta();
    for (let rep = 0; rep < reps; rep++) {
      await obs.flush();
      const lat = [];
      const before = await obs.snapshot();
      for (let i = 0; i < SESS_N; i++) {
        const begin = clock();
        const name = `sess-${rep}-${i}`;
        const queue = new Queue(name, { connection });
        const events = new QueueEvents(name, { connection });
        const worker = new Worker(name, async (job) => job.data.x, { connection, concurrency: 1 });
        await Promise.all([queue.waitUntilReady(), events.waitUntilReady(), worker.waitUntilReady()]);
        await addAndWait(queue, new Completions(events), { x: i });
        await worker.close();
        await events.close();
        await queue.obliterate({ force: true });
        await queue.close();
        lat.push(clock() - begin);
      }
      addDelta(cost, delta(before, await obs.snapshot()));
      const [p50, p99] = p50p99(lat);
      p50s.push(p50);
      p99s.push(p99);
    }
    result('session_run_stop.p50', 'ms', p50s);
    result('session_run_stop.p99', 'ms', p99s);
    redisFigures('session_run_stop', 'session', cost, reps * SESS_N);
  },

  async throughput(obs, reps) {
    for (const c of CONC) await underLoad(obs, reps, `throughput.c${c}`, c, 1, N);
  },

  async chain5_load(obs, reps) {
    const c = CONC[CONC.length - 1];
    await underLoad(obs, reps, `chain5_load.c${c}`, c, 5, Math.ceil(N / 5));
  },
};

// ------------------------------------------------------------------ under load

// One pass: `runs` runs of `steps` jobs queued (the first step of each, by addBulk), then one
// Worker at `concurrency`; a step's processor adds the run's next step.
async function loadPass(obs, name, concurrency, steps, runs) {
  await obs.flush();
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  const c0 = await obs.snapshot();
  const n0 = cpuOfNode();
  const queued = clock();
  for (let i = 0; i < runs; i += ADD_BULK) {
    const jobs = [];
    for (let k = i; k < Math.min(runs, i + ADD_BULK); k++) {
      jobs.push({ name: 'step', data: { x: k, step: 1 }, opts: { removeOnComplete: true } });
    }
    await queue.addBulk(jobs);
  }
  const submitMs = clock() - queued;
  const c1 = await obs.snapshot();
  const n1 = cpuOfNode();
  const start = clock();
  let done = 0;
  let first = 0;
  let last = 0;
  let worker;
  await new Promise((resolve, reject) => {
    worker = new Worker(
      name,
      async (job) => {
        const { x, step } = job.data;
        if (step < steps) {
          await queue.add('step', { x: x + 1, step: step + 1 }, { removeOnComplete: true });
        }
        return x;
      },
      { connection, concurrency },
    );
    worker.on('completed', (job) => {
      if (job.data.step !== steps) return;
      const now = clock();
      if (done === 0) first = now;
      done += 1;
      if (done === runs) {
        last = now;
        resolve();
      }
    });
    worker.on('error', reject);
  });
  const c2 = await obs.snapshot();
  const n2 = cpuOfNode();
  await worker.close();
  await queue.close();
  return {
    firstToLast: (runs - 1) / ((last - first) / 1000),
    startToLast: runs / ((last - start) / 1000),
    submitRate: runs / (submitMs / 1000),
    submitted: delta(c0, c1),
    processed: delta(c1, c2),
    nodeSubmit: n1 - n0,
    nodeProcess: n2 - n1,
  };
}

async function underLoad(obs, reps, name, concurrency, steps, runs) {
  const passes = [];
  for (let rep = 0; rep < reps; rep++) passes.push(await loadPass(obs, `q-${name}`, concurrency, steps, runs));
  const col = (f) => passes.map(f);
  result(`${name}.first_to_last`, 'runs/s', col((p) => p.firstToLast));
  result(`${name}.worker_start_to_last`, 'runs/s', col((p) => p.startToLast));
  result(`${name}.submit_rate`, 'runs/s', col((p) => p.submitRate));
  const phases = [
    ['_submit', (p) => p.submitted],
    ['_processing', (p) => p.processed],
    ['', (p) => addDelta(addDelta(emptyDelta(), p.submitted), p.processed)],
  ];
  const units = steps > 1 ? [['run', 1], ['step', steps]] : [['run', 1]];
  for (const [unit, per] of units) {
    for (const [suffix, of] of phases) {
      const div = runs * per;
      result(`${name}.redis_cpu_per_${unit}${suffix}`, 'us', col((p) => (of(p).cpu * 1e6) / div));
      result(`${name}.redis_cmds_per_${unit}${suffix}`, 'cmds', col((p) => callsOf(of(p)) / div));
      result(`${name}.script_calls_per_${unit}${suffix}`, 'calls', col((p) => scriptCallsOf(of(p)) / div));
    }
  }
  result(`${name}.node_cpu_per_run_submit`, 'us', col((p) => (p.nodeSubmit * 1e6) / runs));
  result(`${name}.node_cpu_per_run_processing`, 'us', col((p) => (p.nodeProcess * 1e6) / runs));
  const total = runs * passes.length;
  const submitted = passes.reduce((d, p) => addDelta(d, p.submitted), emptyDelta());
  const processed = passes.reduce((d, p) => addDelta(d, p.processed), emptyDelta());
  commands(`${name}.submit`, submitted, total);
  commands(`${name}.processing`, processed, total);
  commands(name, addDelta(addDelta(emptyDelta(), submitted), processed), total);
}

// ------------------------------------------------------------------ main

async function main() {
  const what = process.argv[2] || 'all';
  const reps = Number(process.argv[3] || 5);
  const todo = what === 'all' ? Object.keys(scenarios) : what.split(',');
  for (const name of todo) {
    if (!scenarios[name]) throw new Error(`unknown scenario ${name} (known: ${Object.keys(scenarios).join(', ')}, all)`);
  }
  const version = (m) => require(`${m}/package.json`).version;
  console.log(`# bullmq ${version('bullmq')}, ioredis ${version('ioredis')}, node ${process.version}, reps=${reps}`);
  const obs = new Observer();
  for (const name of todo) await scenarios[name](obs, reps);
  await obs.flush();
  await obs.close();
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
