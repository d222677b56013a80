// Compatibility tests with the official Node client, `scaledrone-node` from npm,
// used unmodified.
//
// How the client is pointed at Rookery: `new Scaledrone(channelId, { url })`.
// The package's `config.js` hard-codes `wss://api.scaledrone.com/v3/websocket`
// only as the default; `getConnection()` uses `options.url || config.websocketUrl`,
// so passing `url: server.wsUrl` is the supported way and nothing is patched.
// The client always sends the fixed header `Origin: http://websocket.org`.
//
// What the tests touch besides the public API, read-only: `drone.clientId`,
// `drone.requireAuth` (set from the handshake reply) and `drone.connection`
// (the `ws` socket), on which a listener records every raw frame received and
// a wrapper around the instance's `send` records every frame sent, so that a
// failing assertion can show the exact conversation.
//
// Users are created with `autoReconnect: false` (a documented option; the default is
// true) so that no test leaves reconnect timers running after it ends; the one test
// about closing uses the default, because that is where reconnecting matters.
//
// Every wait goes through `within()` so a broken server fails a test instead of
// hanging it; "nothing else arrived" checks use a barrier message that must be
// delivered after the event that must not happen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Scaledrone from 'scaledrone-node';
import { startServer, startCluster, fetchToken, CHAT, OPEN } from '../support/server.mjs';

const WAIT_MS = 5_000;
const TEST_MS = 60_000;
const CLIENT_ID = /^[A-Za-z0-9]+:[A-Za-z0-9]+$/;
const COLOR = /^#[0-9a-fA-F]{6}$/;

/** Rejects with a message naming `what` when `promise` has not settled in `ms`. */
function within(promise, what, ms = WAIT_MS, context = () => '') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}${context()}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Records events in arrival order; `waitFor` resolves with the first match, past or future. */
class EventLog {
  constructor() {
    this.entries = [];
    this.waiters = new Set();
  }

  record(type, value) {
    this.entries.push({ type, value });
    for (const w of this.waiters) {
      if (w.type === type && w.match(value)) {
        this.waiters.delete(w);
        w.resolve(value);
      }
    }
  }

  of(type) {
    return this.entries.filter((e) => e.type === type).map((e) => e.value);
  }

  waitFor(type, match = () => true) {
    const hit = this.entries.find((e) => e.type === type && match(e.value));
    if (hit) return Promise.resolve(hit.value);
    return new Promise((resolve) => this.waiters.add({ type, match, resolve }));
  }
}

const ROOM_EVENTS = ['open', 'members', 'member_join', 'member_leave', 'message', 'history_message'];
const DRONE_EVENTS = ['open', 'authenticate', 'error', 'close', 'disconnect', 'reconnect'];

/** One person using the official client, as in the Scaledrone tutorial. */
class User {
  constructor(server, channel, { name, data, autoReconnect = false } = {}) {
    this.server = server;
    this.channel = channel;
    this.name = name;
    this.label = name ?? 'user';
    const options = { url: server.wsUrl, autoReconnect };
    if (data !== undefined) options.data = data;
    this.drone = new Scaledrone(channel, options);
    this.log = new EventLog();
    this.rooms = new Map();
    this.received = [];
    this.sent = [];
    this.closeCodes = [];
    const conn = this.drone.connection;
    conn.on('message', (raw) => this.received.push(String(raw)));
    conn.on('close', (code) => this.closeCodes.push(code));
    const send = conn.send.bind(conn);
    conn.send = (payload, ...rest) => {
      this.sent.push(String(payload));
      return send(payload, ...rest);
    };
    for (const type of DRONE_EVENTS) this.drone.on(type, (value) => this.log.record(type, value ?? null));
  }

  /** The raw conversation, appended to timeout messages. */
  transcript() {
    return `\n--- ${this.label}${this.id ? ` (${this.id})` : ''} sent:\n${this.sent.join('\n')}` +
      `\n--- ${this.label} received:\n${this.received.join('\n')}`;
  }

  /** Frames received so far, parsed. */
  frames() {
    return this.received.map((raw) => JSON.parse(raw));
  }

  wait(log, type, match, what) {
    return within(log.waitFor(type, match), `${this.label}: ${what}`, WAIT_MS, () => this.transcript());
  }

  /** Waits for the handshake reply; resolves to the client id. */
  async connect() {
    const error = await this.wait(this.log, 'open', undefined, 'drone "open"');
    assert.equal(error, null, `handshake failed: ${error?.message}${this.transcript()}`);
    this.id = this.drone.clientId;
    assert.match(this.id, CLIENT_ID, 'client id alphabet (PROTOCOL.md §3)');
    return this.id;
  }

  /** The tutorial's flow: POST /auth with the client id, then `drone.authenticate(token)`. */
  async authenticate(token) {
    token ??= await within(fetchToken(this.server.url, this.id, this.name), `${this.label}: POST /auth`);
    const before = this.log.of('authenticate').length;
    this.drone.authenticate(token);
    const error = await this.wait(this.log, 'authenticate', () => this.log.of('authenticate').length > before, 'drone "authenticate"');
    return error;
  }

  /** Subscribes and starts recording the room's events before any can arrive. */
  subscribe(roomName, options) {
    const room = this.drone.subscribe(roomName, options);
    const log = new EventLog();
    for (const type of ROOM_EVENTS) room.on(type, (value) => log.record(type, value ?? null));
    this.rooms.set(roomName, { room, log });
    return log;
  }

  /** Subscribes and asserts the subscription succeeded. */
  async join(roomName, options) {
    const log = this.subscribe(roomName, options);
    const error = await this.wait(log, 'open', undefined, `room "open" for ${roomName}`);
    assert.equal(error, null, `${this.label}: subscribe ${roomName} failed: ${error?.message}${this.transcript()}`);
    return log;
  }

  roomLog(roomName) {
    return this.rooms.get(roomName).log;
  }

  /** Waits for a live message whose data deep-equals `data`. */
  message(roomName, data) {
    return this.wait(this.roomLog(roomName), 'message', (m) => isDeepEqual(m.data, data), `message ${JSON.stringify(data)} in ${roomName}`);
  }

  async close() {
    if (this.closed) return;
    this.closed = true;
    const before = this.log.of('close').length;
    this.drone.close();
    await this.wait(this.log, 'close', () => this.log.of('close').length > before, 'drone "close"');
  }
}

function isDeepEqual(a, b) {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

/** Teardown only: closes every user without letting the client reconnect. */
function closeAll(users) {
  for (const u of users) {
    // A socket the server drops while we close it ends with 1006,
    // which would make the client schedule reconnects and keep node alive.
    u.drone.autoReconnect = false;
    if (!u.closed) {
      u.closed = true;
      u.drone.close();
    }
  }
}

/** Starts a server and closes every user, then the server, when the test ends. */
async function setup(t) {
  const server = await startServer();
  const users = [];
  t.after(async () => {
    closeAll(users);
    await within(server.stop(), 'graceful server stop (SIGTERM)', 10_000).catch(async (e) => {
      await server.kill();
      throw e;
    });
  });
  const user = (channel, options) => {
    const u = new User(server, channel, options);
    users.push(u);
    return u;
  };
  return { server, user };
}

/**
 * Starts a deployment of two nodes sharing a fresh `redis-server` (PROTOCOL.md §13);
 * `user(node, channel, options)` connects to that node. Everything is stopped when
 * the test ends: users, nodes, Redis.
 */
async function setupCluster(t) {
  const cluster = await startCluster({ nodes: 2 });
  const users = [];
  t.after(async () => {
    closeAll(users);
    await within(cluster.stop(), 'cluster stop (nodes, then Redis)', 15_000);
  });
  const user = (node, channel, options) => {
    const u = new User(node, channel, options);
    users.push(u);
    return u;
  };
  return { nodes: cluster.nodes, user };
}

/** A user on the auth channel: connect, read the client id, fetch a token, authenticate. */
async function chatUser(user, name, data) {
  const u = user(CHAT.id, { name, data });
  await u.connect();
  assert.equal(u.drone.requireAuth, true, 'handshake reply must say require_auth: true on the auth channel');
  const error = await u.authenticate();
  assert.equal(error, null, `${name}: authenticate failed: ${error?.message}${u.transcript()}`);
  return u;
}

function assertTimestamp(ts) {
  assert.ok(Number.isInteger(ts), `timestamp must be integer seconds, got ${ts}`);
  assert.ok(Math.abs(ts - Date.now() / 1000) < 120, `timestamp ${ts} is not near now`);
}

function assertChatMember(member, user, clientData) {
  assert.equal(member.id, user.id);
  assert.equal(member.authData?.name, user.name, `authData.name of ${user.label}: ${JSON.stringify(member)}`);
  assert.match(member.authData.color, COLOR);
  assert.deepEqual(Object.keys(member.authData).sort(), ['color', 'name']);
  if (clientData === undefined) assert.ok(!('clientData' in member), `clientData must be omitted: ${JSON.stringify(member)}`);
  else assert.deepEqual(member.clientData, clientData);
}

const OBS = 'observable-room';
const sortIds = (list) => list.map((m) => m.id).sort();

test('tutorial flow on an auth channel: presence, messages, history, private rooms, leave', { timeout: TEST_MS }, async (t) => {
  const { user } = await setup(t);

  // --- Alice joins the public room first.
  const a = await chatUser(user, 'alice', { device: 'node-a' });
  const aObs = await a.join(OBS, { historyCount: 100 });
  const aMembers = await a.wait(aObs, 'members', undefined, 'members');
  assert.equal(aMembers.length, 1, `first subscriber sees only itself: ${JSON.stringify(aMembers)}`);
  assertChatMember(aMembers[0], a, { device: 'node-a' });

  // --- Bob joins: he sees both, Alice gets one join event about Bob.
  const b = await chatUser(user, 'bob');
  const bObs = await b.join(OBS, { historyCount: 100 });
  const bMembers = await b.wait(bObs, 'members', undefined, 'members');
  assert.deepEqual(sortIds(bMembers), [a.id, b.id].sort());
  assertChatMember(bMembers.find((m) => m.id === a.id), a, { device: 'node-a' });
  assertChatMember(bMembers.find((m) => m.id === b.id), b);
  const joinB = await a.wait(aObs, 'member_join', (m) => m.id === b.id, 'member_join(bob)');
  assertChatMember(joinB, b);

  // --- Three messages, one at a time so their stored order is fixed.
  const live = [];
  const sequence = [[a, { text: 'hello 1' }], [b, 'hello 2'], [a, { text: 'hello 3', n: [1, 2] }]];
  for (const [sender, data] of sequence) {
    sender.drone.publish({ room: OBS, message: data });
    const [atA, atB] = await Promise.all([a.message(OBS, data), b.message(OBS, data)]);
    for (const m of [atA, atB]) {
      assert.equal(m.clientId, sender.id);
      assert.equal(typeof m.id, 'string');
      assert.ok(m.id.length > 0);
      assertTimestamp(m.timestamp);
      assert.ok(m.member, `message in an observable room must resolve to a member: ${JSON.stringify(m)}`);
      assert.equal(m.member.id, sender.id);
      assert.equal(m.member.authData.name, sender.name);
    }
    assert.equal(atA.id, atB.id, 'both subscribers see the same message id');
    live.push(atA);
  }
  assert.equal(new Set(live.map((m) => m.id)).size, 3, 'message ids are unique');

  // --- Carol joins late with history: members, then the three messages oldest first.
  const c = await chatUser(user, 'carol');
  const cObs = await c.join(OBS, { historyCount: 100 });
  const cMembers = await c.wait(cObs, 'members', undefined, 'members');
  assert.deepEqual(sortIds(cMembers), [a.id, b.id, c.id].sort());
  await c.wait(cObs, 'history_message', (m) => m.id === live[2].id, 'third history message');
  const history = cObs.of('history_message');
  assert.deepEqual(history.map((m) => m.id), live.map((m) => m.id), 'history: all three, oldest first');
  assert.deepEqual(history.map((m) => m.data), sequence.map(([, data]) => data));
  assert.deepEqual(history.map((m) => m.clientId), [a.id, b.id, a.id]);
  history.forEach((m, i) => assert.equal(m.timestamp, live[i].timestamp));
  for (const [u, log] of [[a, aObs], [b, bObs]]) {
    assertChatMember(await u.wait(log, 'member_join', (m) => m.id === c.id, 'member_join(carol)'), c);
  }
  const cFrames = c.frames();
  const subscribeCb = c.sent.map((raw) => JSON.parse(raw)).find((f) => f.type === 'subscribe' && f.room === OBS).callback;
  const replyAt = cFrames.findIndex((f) => f.callback === subscribeCb);
  assert.deepEqual(cFrames[replyAt], { callback: subscribeCb }, 'subscribe success reply (PROTOCOL.md §5.1)');
  const membersAt = cFrames.findIndex((f) => f.type === 'observable_members');
  const firstHistoryAt = cFrames.findIndex((f) => f.type === 'history_message');
  assert.ok(replyAt >= 0 && replyAt < membersAt && membersAt < firstHistoryAt,
    `order for a new subscriber must be reply, observable_members, history (PROTOCOL.md §5.4)${c.transcript()}`);
  assert.deepEqual(cFrames.filter((f) => f.type === 'history_message').map((f) => f.index), [0, 1, 2]);

  // --- Private rooms. Bob listens on his own room; Alice writes to it without subscribing.
  const bPrivate = `private-room-${b.id}`;
  await b.join(bPrivate, { historyCount: 100 });
  a.drone.publish({ room: bPrivate, message: { dm: 'psst, bob' } });
  const dm = await b.message(bPrivate, { dm: 'psst, bob' });
  assert.equal(dm.clientId, a.id, 'client_id is present in non-observable rooms too');
  assert.equal(dm.member, undefined, 'the client resolves members only in observable rooms');
  assertTimestamp(dm.timestamp);

  // Carol may not listen to Bob's private room.
  const cSpy = c.subscribe(bPrivate);
  const denied = await c.wait(cSpy, 'open', undefined, `room "open" for ${bPrivate}`);
  assert.ok(denied instanceof Error, `subscribe to another user's private room must fail${c.transcript()}`);
  assert.equal(denied.message, 'Unauthorized');

  // Barrier: Alice publishes in the public room after the DM; once Alice and Carol have it,
  // a misdelivered DM would have arrived before it.
  a.drone.publish({ room: OBS, message: 'barrier 1' });
  await Promise.all([a.message(OBS, 'barrier 1'), b.message(OBS, 'barrier 1'), c.message(OBS, 'barrier 1')]);
  for (const u of [a, c]) {
    assert.ok(!u.frames().some((f) => f.room === bPrivate && f.type !== undefined),
      `${u.label} must not receive frames for ${bPrivate}${u.transcript()}`);
  }

  // Alice may listen to her own private room but not publish to it (policy: publish false).
  const aPrivate = `private-room-${a.id}`;
  const aPriv = await a.join(aPrivate, { historyCount: 100 });
  const errorsBefore = a.log.of('error').length;
  a.drone.publish({ room: aPrivate, message: 'note to self' });
  const refused = await a.wait(a.log, 'error', () => a.log.of('error').length > errorsBefore, 'error for refused publish');
  assert.equal(refused.message, 'Unauthorized');
  assert.ok(a.frames().some((f) => isDeepEqual(f, { error: 'Unauthorized' })),
    `a refused publish without callback gets exactly {"error":"Unauthorized"} (PROTOCOL.md §6)${a.transcript()}`);
  // Bob writes to Alice: that message arrives, the refused one never does.
  b.drone.publish({ room: aPrivate, message: 'hi alice' });
  const reply = await a.message(aPrivate, 'hi alice');
  assert.equal(reply.clientId, b.id);
  assert.deepEqual(aPriv.of('message').map((m) => m.data), ['hi alice'], 'the refused publish must not be delivered');

  // --- Bob leaves the public room: Alice and Carol get member_leave; Bob gets no more messages.
  b.rooms.get(OBS).room.unsubscribe();
  for (const [u, log] of [[a, aObs], [c, cObs]]) {
    const left = await u.wait(log, 'member_leave', (m) => m.id === b.id, 'member_leave(bob) after unsubscribe');
    assert.equal(left.authData?.name, 'bob');
  }
  a.drone.publish({ room: OBS, message: 'after bob left' });
  await Promise.all([a.message(OBS, 'after bob left'), c.message(OBS, 'after bob left')]);
  a.drone.publish({ room: bPrivate, message: 'barrier 2' });
  await b.message(bPrivate, 'barrier 2');
  assert.ok(!b.frames().some((f) => f.message === 'after bob left'),
    `bob unsubscribed and must not receive later messages of ${OBS}${b.transcript()}`);

  // --- Carol closes her connection: Alice gets member_leave.
  await c.close();
  const leftC = await a.wait(aObs, 'member_leave', (m) => m.id === c.id, 'member_leave(carol) after close');
  assert.equal(leftC.authData?.name, 'carol');

  // --- Nobody ever got a join event about themselves, and no join arrived twice.
  a.drone.publish({ room: OBS, message: 'barrier 3' });
  await a.message(OBS, 'barrier 3');
  assert.deepEqual(aObs.of('member_join').map((m) => m.id), [b.id, c.id]);
  assert.deepEqual(bObs.of('member_join').map((m) => m.id), [c.id]);
  assert.deepEqual(cObs.of('member_join').map((m) => m.id), []);
  assert.deepEqual(aObs.of('member_leave').map((m) => m.id), [b.id, c.id]);
  for (const u of [a, b, c]) {
    assert.deepEqual(u.log.of('disconnect'), [], `${u.label} must not see an abnormal close`);
    assert.equal(u.rooms.get(OBS).log.of('members').length, 1, `${u.label} gets one members event`);
  }
  assert.deepEqual(a.log.of('error').map((e) => e.message), ['Unauthorized']);
  assert.deepEqual(b.log.of('error'), []);
});

test('historyCount returns only the latest messages, index 0 the oldest', { timeout: TEST_MS }, async (t) => {
  const { user } = await setup(t);
  const a = await chatUser(user, 'alice');
  await a.join(OBS);
  for (let i = 1; i <= 5; i++) {
    a.drone.publish({ room: OBS, message: `m${i}` });
    await a.message(OBS, `m${i}`);
  }
  const d = await chatUser(user, 'dave');
  const dObs = await d.join(OBS, { historyCount: 2 });
  await d.wait(dObs, 'history_message', (m) => m.data === 'm5', 'history m5');
  // Barrier: a live message after the subscribe; all history precedes it.
  d.drone.publish({ room: OBS, message: 'live' });
  await d.message(OBS, 'live');
  assert.deepEqual(dObs.of('history_message').map((m) => m.data), ['m4', 'm5']);
  assert.deepEqual(
    d.frames().filter((f) => f.type === 'history_message').map((f) => [f.index, f.message]),
    [[0, 'm4'], [1, 'm5']],
  );
  assert.deepEqual(dObs.of('message').map((m) => m.data), ['live'], 'history is not replayed as live messages');

  // Without historyCount: no history at all.
  const e = await chatUser(user, 'erin');
  const eObs = await e.join(OBS);
  await e.wait(eObs, 'members', undefined, 'members');
  e.drone.publish({ room: OBS, message: 'live 2' });
  await e.message(OBS, 'live 2');
  assert.deepEqual(eObs.of('history_message'), []);
  assert.ok(!e.frames().some((f) => f.type === 'history_message'));
});

test('authenticate errors reach the client; rooms outside the policy are refused', { timeout: TEST_MS }, async (t) => {
  const { server, user } = await setup(t);
  // Note: the client decides "fully connected" on the FIRST authenticate reply; after a
  // failed first authenticate it never sends subscribe/unsubscribe again. So error cases
  // use throw-away connections, or a re-authenticate after a successful one.
  const b = user(CHAT.id, { name: 'bob' });
  await b.connect();
  const bobsToken = await within(fetchToken(server.url, b.id, 'bob'), 'POST /auth');

  // The client also leaves its internal `eventPromises.fullyConnected` promise rejected
  // with nobody handling it, which node reports as an unhandled rejection; for these two
  // deliberately failing connections a no-op handler is attached to it.
  const x = user(CHAT.id, { name: 'mallory' });
  x.drone.eventPromises.fullyConnected.catch(() => {});
  await x.connect();
  const mismatch = await x.authenticate(bobsToken);
  assert.ok(mismatch instanceof Error, `a token minted for another client must be refused${x.transcript()}`);
  assert.equal(mismatch.message, 'JWT client mismatch');
  const y = user(CHAT.id, { name: 'trudy' });
  y.drone.eventPromises.fullyConnected.catch(() => {});
  await y.connect();
  assert.equal((await y.authenticate('not-a-jwt'))?.message, 'JWT does not have 3 parts');

  const a = await chatUser(user, 'alice');
  assert.equal(await b.authenticate(bobsToken), null);
  // A failed re-authenticate leaves the earlier authentication in force (PROTOCOL.md §6).
  assert.equal((await a.authenticate(bobsToken))?.message, 'JWT client mismatch');

  const other = a.subscribe('some-other-room');
  const err = await a.wait(other, 'open', undefined, 'room "open" for some-other-room');
  assert.equal(err?.message, 'Unauthorized', 'no permission key matches: denied');

  // Publishing to a room no key matches is dropped with an uncorrelated error.
  const errorsBefore = a.log.of('error').length;
  a.drone.publish({ room: 'some-other-room', message: 'nope' });
  const refused = await a.wait(a.log, 'error', () => a.log.of('error').length > errorsBefore, 'error for refused publish');
  assert.equal(refused.message, 'Unauthorized');

  // The connection is still usable afterwards, with alice's own identity.
  const aObs = await a.join(OBS);
  const bObs = await b.join(OBS);
  await a.wait(aObs, 'member_join', (m) => m.id === b.id, 'member_join(bob)');
  a.drone.publish({ room: OBS, message: 'still here' });
  const [atA, atB] = await Promise.all([a.message(OBS, 'still here'), b.message(OBS, 'still here')]);
  assert.equal(atA.member?.authData?.name, 'alice');
  assert.equal(atB.member?.authData?.name, 'alice');
  assert.equal(atB.clientId, a.id);
});

test('channel without auth: no authenticate, clientData presence, plain and observable rooms', { timeout: TEST_MS }, async (t) => {
  const { user } = await setup(t);
  const u1 = user(OPEN.id, { name: 'uno', data: { nick: 'uno', tags: ['x'] } });
  await u1.connect();
  assert.equal(u1.drone.requireAuth, false, 'handshake reply must say require_auth: false');
  const lobby = 'observable-lobby';
  const l1 = await u1.join(lobby, { historyCount: 10 });
  const m1 = await u1.wait(l1, 'members', undefined, 'members');
  assert.deepEqual(m1, [{ id: u1.id, clientData: { nick: 'uno', tags: ['x'] } }],
    'no authData key on a channel without auth; clientData is the handshake client_data');

  // A second user without client data: a member is just its id (null keys are omitted).
  const u2 = user(OPEN.id, { name: 'dos' });
  await u2.connect();
  const l2 = await u2.join(lobby, { historyCount: 10 });
  const m2 = await u2.wait(l2, 'members', undefined, 'members');
  assert.deepEqual(sortIds(m2), [u1.id, u2.id].sort());
  assert.deepEqual(m2.find((m) => m.id === u2.id), { id: u2.id });
  assert.deepEqual(await u1.wait(l1, 'member_join', (m) => m.id === u2.id, 'member_join'), { id: u2.id });

  u1.drone.publish({ room: lobby, message: { n: 1 } });
  const [at1, at2] = await Promise.all([u1.message(lobby, { n: 1 }), u2.message(lobby, { n: 1 })]);
  assert.equal(at2.clientId, u1.id);
  assert.deepEqual(at2.member, { id: u1.id, clientData: { nick: 'uno', tags: ['x'] } });
  assert.equal(at1.id, at2.id);

  // A plain room: messages carry client_id, the client resolves no member.
  await u1.join('plain');
  u2.drone.publish({ room: 'plain', message: 'from dos' });
  const plain = await u1.message('plain', 'from dos');
  assert.equal(plain.clientId, u2.id);
  assert.equal(plain.member, undefined);
  assertTimestamp(plain.timestamp);

  // History on a channel without auth (allowance 100).
  const u3 = user(OPEN.id, { name: 'tres' });
  await u3.connect();
  const l3 = await u3.join(lobby, { historyCount: 10 });
  const h = await u3.wait(l3, 'history_message', (m) => isDeepEqual(m.data, { n: 1 }), 'history {n:1}');
  assert.equal(h.id, at1.id);
  assert.equal(h.clientId, u1.id);

  // Leave on close reaches the others.
  await u2.close();
  for (const [u, log] of [[u1, l1], [u3, l3]]) {
    assert.deepEqual(await u.wait(log, 'member_leave', (m) => m.id === u2.id, 'member_leave(dos)'), { id: u2.id });
  }
  for (const u of [u1, u2, u3]) assert.deepEqual(u.log.of('error'), [], `${u.label}: no errors`);
});

test('drone.close() ends the socket cleanly, so the official client does not reconnect', { timeout: TEST_MS }, async (t) => {
  const { user } = await setup(t);
  const watcher = user(OPEN.id, { name: 'watcher' });
  await watcher.connect();
  const wLobby = await watcher.join('observable-lobby');
  // The default options, as an application uses them: autoReconnect is on.
  const u = user(OPEN.id, { name: 'closer', autoReconnect: true });
  await u.connect();
  await u.join('observable-lobby');
  await watcher.wait(wLobby, 'member_join', (m) => m.id === u.id, 'member_join(closer)');

  u.drone.close();
  const outcome = await within(
    Promise.race([u.log.waitFor('close').then(() => 'close'), u.log.waitFor('disconnect').then(() => 'disconnect')]),
    'closer: drone "close" or "disconnect"', WAIT_MS, () => u.transcript(),
  );
  await watcher.wait(wLobby, 'member_leave', (m) => m.id === u.id, 'member_leave(closer)');
  if (outcome === 'disconnect') {
    // Contain the reconnect the client has started before failing, so no timers outlive the test.
    await u.wait(u.log, 'reconnect', undefined, 'drone "reconnect"');
    u.drone.autoReconnect = false;
    u.drone.close();
    await u.wait(u.log, 'close', undefined, 'drone "close" after the reconnect');
  }
  assert.equal(outcome, 'close',
    `after the client's close frame the socket ended with code ${u.closeCodes[0]}; 1006 means the server sent ` +
    'no close frame back (RFC 6455 §5.5.1), and the official client then treats drone.close() as a dropped ' +
    'connection and reconnects');
  assert.notEqual(u.closeCodes[0], 1006);
});

test('cluster: a client on node B gets what is published on node A and sees A\'s members', { timeout: TEST_MS }, async (t) => {
  const { nodes: [nodeA, nodeB], user } = await setupCluster(t);
  const lobby = 'observable-cluster';
  const onA = user(nodeA, OPEN.id, { name: 'on A', data: { node: 'A' } });
  await onA.connect();
  const aLobby = await onA.join(lobby);
  await onA.wait(aLobby, 'members', undefined, 'members on A');

  // B's member list is the deployment's: it includes the member on A, with its clientData.
  const onB = user(nodeB, OPEN.id, { name: 'on B' });
  await onB.connect();
  assert.notEqual(onB.id.split(':')[0], onA.id.split(':')[0], 'client ids of different nodes have different prefixes');
  const bLobby = await onB.join(lobby);
  const members = await onB.wait(bLobby, 'members', undefined, 'members on B');
  assert.deepEqual(sortIds(members), [onA.id, onB.id].sort(), `B's members event lists A's member: ${JSON.stringify(members)}`);
  assert.deepEqual(members.find((m) => m.id === onA.id), { id: onA.id, clientData: { node: 'A' } });
  assert.deepEqual(await onA.wait(aLobby, 'member_join', (m) => m.id === onB.id, 'member_join(on B) on A'), { id: onB.id });

  // A WebSocket publish on A reaches B, with A's client id and member.
  onA.drone.publish({ room: lobby, message: { via: 'websocket on A' } });
  const viaSocket = await onB.message(lobby, { via: 'websocket on A' });
  assert.equal(viaSocket.clientId, onA.id);
  assert.deepEqual(viaSocket.member, { id: onA.id, clientData: { node: 'A' } });
  assertTimestamp(viaSocket.timestamp);

  // A REST publish on A reaches B in a plain room, with no client id.
  await onB.join('plain-cluster');
  const auth = `Basic ${Buffer.from(`${OPEN.id}:${OPEN.secret}`).toString('base64')}`;
  const res = await within(fetch(`${nodeA.url}/api/${OPEN.id}/plain-cluster/publish`, {
    method: 'POST',
    headers: { authorization: auth, 'content-type': 'application/json' },
    body: JSON.stringify({ via: 'rest on A' }),
  }), 'REST publish on A');
  assert.equal(res.status, 200, await res.clone().text());
  const { id } = await res.json();
  const viaRest = await onB.message('plain-cluster', { via: 'rest on A' });
  assert.equal(viaRest.id, id, 'the id REST answered is the one delivered');
  assert.equal(viaRest.clientId, undefined);

  // A's member leaving on A is a member_leave on B.
  await onA.close();
  assert.deepEqual(await onB.wait(bLobby, 'member_leave', (m) => m.id === onA.id, 'member_leave(on A) on B'), { id: onA.id, clientData: { node: 'A' } });
  for (const u of [onA, onB]) assert.deepEqual(u.log.of('error'), [], `${u.label}: no errors`);
});
