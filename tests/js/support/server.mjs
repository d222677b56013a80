// Starts a real Rookery server for a Node test: writes a throw-away config with
// known channels, spawns the binary on an ephemeral port and waits for the
// "rookery listening on http://HOST:PORT" line it prints once bound. For the
// cluster tests, `startCluster` starts a `redis-server` and several such nodes.
import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The channel that requires auth and that `POST /auth` mints tokens for. */
export const CHAT = { id: 'chat', secret: 'chat-secret-for-tests-only' };
/** A channel without `require_auth`. */
export const OPEN = { id: 'open', secret: 'open-secret-for-tests-only' };

export function rookeryBinary() {
  const bin = process.env.ROOKERY_BIN || join(repoRoot, 'target', 'debug', 'rookery');
  if (!existsSync(bin)) throw new Error(`rookery binary not found at ${bin}; run cargo build first`);
  return bin;
}

/** Cheap password hashing for tests (registering and logging in stay fast). */
export const CHEAP_HASHING = '[accounts]\nargon2_memory_kib = 8\nargon2_iterations = 1\n';

/**
 * Start the server. `extraToml` is appended to the generated config (for
 * example a `[limits]` table). `port` 0 picks a free port; pass a fixed port to
 * restart a server on the same address (with the same `dir`, its data survives).
 * `policy` is the auth channel's policy: `default` (the tutorial's) or `chat`
 * (members' conversations and inboxes, PROTOCOL.md §11), which also turns on
 * cheap password hashing. Resolves to `{ url, wsUrl, port, dir, stop(), kill(), logs() }`.
 */
export async function startServer({ extraToml = '', port = 0, dir, policy = 'default' } = {}) {
  dir ??= mkdtempSync(join(tmpdir(), 'rookery-test-'));
  const config = join(dir, 'rookery.toml');
  writeFileSync(config, `
listen = "127.0.0.1:${port}"
static_dir = ${JSON.stringify(join(repoRoot, 'static'))}
policies_dir = ${JSON.stringify(join(repoRoot, 'policies'))}
data_dir = ${JSON.stringify(dir)}
auth_channel = "${CHAT.id}"

[[channel]]
id = "${CHAT.id}"
secret = "${CHAT.secret}"
require_auth = true
policy = "${policy}"

[[channel]]
id = "${OPEN.id}"
secret = "${OPEN.secret}"
require_auth = false
policy = "default"
${policy === 'chat' ? CHEAP_HASHING : ''}
${extraToml}
`);
  // The config's `[cluster] redis_url` decides, never the environment's.
  const { ROOKERY_REDIS_URL: _ignored, ...env } = process.env;
  const child = spawn(rookeryBinary(), ['serve', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  let output = '';
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`rookery did not start in 10 s:\n${output}`)), 10_000);
    const onData = (chunk) => {
      output += chunk;
      const m = output.match(/rookery listening on (http:\/\/[\d.]+:\d+)/);
      if (m) { clearTimeout(timer); resolveUrl(m[1]); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (c) => { output += c; });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`rookery exited (${code}):\n${output}`)); });
  });
  const exited = new Promise((r) => child.on('exit', r));
  const actualPort = Number(new URL(url).port);
  return {
    url,
    wsUrl: url.replace('http://', 'ws://') + '/v3/websocket',
    port: actualPort,
    dir,
    logs: () => output,
    /** Graceful stop (SIGTERM), waits for exit. */
    async stop() { if (child.exitCode === null) { child.kill('SIGTERM'); await exited; } },
    /** Hard kill (SIGKILL), waits for exit. */
    async kill() { if (child.exitCode === null) { child.kill('SIGKILL'); await exited; } },
  };
}

/** A free loopback TCP port (bound, read, released). */
async function freePort() {
  const server = createServer();
  await new Promise((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolveListen);
  });
  const { port } = server.address();
  await new Promise((resolveClose) => server.close(resolveClose));
  return port;
}

/**
 * Start `redis-server` (on the PATH; scripts/test.sh installs it) on a free
 * loopback port, without persistence, and wait until it answers `PING`.
 * Resolves to `{ url, port, stop() }`.
 */
export async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let output = '';
  child.stderr.on('data', (c) => { output += c; });
  const exited = new Promise((r) => child.on('exit', r));
  const spawned = new Promise((resolveSpawn, reject) => {
    child.once('spawn', resolveSpawn);
    child.once('error', (e) => reject(new Error(`redis-server must be installed for the cluster tests: ${e.message}`)));
  });
  await spawned;
  const stop = async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited; } };
  const deadline = Date.now() + 10_000;
  while (!(await answersPing(port))) {
    if (Date.now() > deadline || child.exitCode !== null) {
      await stop();
      throw new Error(`redis-server did not come up on port ${port}:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { url: `redis://127.0.0.1:${port}`, port, stop };
}

/** Whether a Redis on `port` answers `PING` with `+PONG`. */
function answersPing(port) {
  return new Promise((resolvePing) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok) => { socket.destroy(); resolvePing(ok); };
    socket.setTimeout(1_000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

/**
 * A deployment of `nodes` Rookery nodes sharing one fresh `redis-server`
 * (docs/cluster.md), each started like `startServer` with a `[cluster]` table.
 * Resolves to `{ redis, nodes, stop() }`; `stop()` stops the nodes gracefully
 * (killing any that do not stop), then Redis, and is safe to call twice.
 */
export async function startCluster({ nodes = 2 } = {}) {
  const redis = await startRedis();
  const started = [];
  const stop = async () => {
    const stopping = started.splice(0);
    const results = await Promise.allSettled(stopping.map((node) => node.stop()));
    await Promise.all(stopping.map((node) => node.kill()));
    await redis.stop();
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  };
  try {
    for (let i = 0; i < nodes; i += 1) {
      started.push(await startServer({ extraToml: `[cluster]\nredis_url = "${redis.url}"\nnode_lease_seconds = 2\n` }));
    }
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }
  return { redis, nodes: [...started], stop };
}

/** Mint a token from the embedded auth service, as the tutorial page does. */
export async function fetchToken(baseUrl, clientId, name) {
  const form = new FormData();
  form.append('clientID', clientId);
  if (name !== undefined) form.append('name', name);
  const res = await fetch(`${baseUrl}/auth`, { method: 'POST', body: form });
  if (!res.ok) throw new Error(`/auth ${res.status}: ${await res.text()}`);
  return res.text();
}
