// rookery.js, the browser client, against a real server: the Scaledrone API
// shapes, queueing until handshake/authentication, history, error routing,
// token refresh and gap-free recovery after a dropped connection.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, CHAT } from '../support/server.mjs';
import { WAIT, launchBrowser, newPage, unusedPort, signJwt } from '../support/browser.mjs';

/** Opens a same-origin page with rookery.js and a token helper loaded. */
async function clientPage(browser, baseUrl, { init } = {}) {
  const { context, page } = await newPage(browser);
  if (init) await page.addInitScript(init.fn, init.arg);
  // Any same-origin document will do; rookery.js itself is always served.
  await page.goto(`${baseUrl}/rookery.js`);
  await page.addScriptTag({ url: '/rookery.js' });
  await page.evaluate(() => {
    window.getToken = async (clientID) => {
      const form = new FormData();
      form.append('clientID', clientID);
      const res = await fetch('/auth', { method: 'POST', body: form });
      if (!res.ok) throw new Error(await res.text());
      return res.text();
    };
    // Resolves with the first value `fn` returns that is not undefined.
    window.within = (ms, setup) => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no result within ${ms} ms`)), ms);
      setup((value) => { clearTimeout(timer); resolve(value); }, reject);
    });
  });
  return { context, page };
}

describe('rookery.js', { timeout: 60_000 }, () => {
  let server;
  let browser;

  before(async () => {
    [server, browser] = await Promise.all([startServer(), launchBrowser()]);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('defines window.Scaledrone and window.ScaleDrone as a classic script', async () => {
    const { context, page } = await clientPage(browser, server.url);
    assert.equal(await page.evaluate(() => typeof window.Scaledrone === 'function' && window.ScaleDrone === window.Scaledrone), true);
    await context.close();
  });

  it('queues a subscribe and publish until the handshake and delivers the official message shape', async () => {
    const { context, page } = await clientPage(browser, server.url);
    const result = await page.evaluate((wait) => within(wait, (done) => {
      const drone = new Scaledrone('open');
      const room = drone.subscribe('plain-room');
      drone.publish({ room: 'plain-room', message: { hello: 'world' } });
      room.on('message', (msg) => done({ clientId: drone.clientId, msg, hasMember: 'member' in msg && msg.member !== undefined }));
    }), WAIT);
    assert.match(result.clientId, /^[A-Za-z0-9]+:[A-Za-z0-9]+$/);
    assert.deepEqual(result.msg.data, { hello: 'world' });
    assert.equal(result.msg.clientId, result.clientId);
    assert.equal(typeof result.msg.id, 'string');
    assert.ok(Number.isInteger(result.msg.timestamp));
    assert.equal(result.hasMember, false, 'no member outside observable rooms');
    await context.close();
  });

  it('gives observable-room members and passes the member to data events', async () => {
    const { context, page } = await clientPage(browser, server.url);
    const result = await page.evaluate((wait) => within(wait, (done) => {
      const drone = new Scaledrone('open', { data: { nick: 'pat' } });
      const room = drone.subscribe('observable-lobby');
      let members;
      room.on('members', (list) => {
        members = list;
        drone.publish({ room: 'observable-lobby', message: 'hey' });
      });
      room.on('data', (data, member) => done({ id: drone.clientId, members, data, member }));
    }), WAIT);
    assert.equal(result.members.length, 1);
    assert.equal(result.members[0].id, result.id);
    assert.deepEqual(result.members[0].clientData, { nick: 'pat' });
    assert.equal(result.data, 'hey');
    assert.equal(result.member.id, result.id);
    assert.deepEqual(result.member.clientData, { nick: 'pat' });
    await context.close();
  });

  it('waits for authentication when the server requires it, then sends history oldest first', async () => {
    const { context, page } = await clientPage(browser, server.url);
    const result = await page.evaluate((wait) => within(wait, async (done, fail) => {
      const publisher = new Scaledrone('chat', { authenticate: getToken });
      const publish = (message) => new Promise((ok, bad) => publisher.publish({ room: 'observable-room', message }, (err) => (err ? bad(err) : ok())));
      try {
        for (const m of ['h1', 'h2', 'h3']) await publish(m);
      } catch (err) {
        return fail(err);
      }
      // Subscribed straight away: sent only once authenticated, so no Unauthorized.
      const reader = new Scaledrone('chat', { authenticate: getToken });
      const room = reader.subscribe('observable-room', { historyCount: 2 });
      const history = [];
      let members;
      room.on('open', (err) => err && fail(err));
      room.on('members', (list) => { members = list; });
      room.on('history_message', (msg) => {
        history.push({ data: msg.data, index: msg.index, clientId: msg.clientId, publisher: publisher.clientId });
        if (history.length === 2) done({ history, members, me: reader.clientId });
      });
    }), WAIT);
    assert.deepEqual(result.history.map((h) => h.data), ['h2', 'h3']);
    assert.deepEqual(result.history.map((h) => h.index), [0, 1]);
    assert.equal(result.history[0].clientId, result.history[0].publisher);
    const me = result.members.find((m) => m.id === result.me);
    assert.ok(me, 'the subscriber is in its own members list');
    assert.equal(typeof me.authData.name, 'string');
    assert.match(me.authData.color, /^#[0-9a-fA-F]{6}$/);
    await context.close();
  });

  it('surfaces every refusal from the server', async () => {
    const { context, page } = await clientPage(browser, server.url);
    const result = await page.evaluate((wait) => within(wait, (done) => {
      const out = {};
      const check = () => {
        if (Object.keys(out).length === 6) done(out);
      };
      const drone = new Scaledrone('chat', { authenticate: getToken });
      drone.on('error', (err) => { out.uncorrelated = { message: err.message, room: err.room }; check(); });
      drone.on('authenticate', (err) => {
        if (err) return;
        const forbidden = drone.subscribe('private-room-somebody-else');
        forbidden.on('open', (e) => { out.subscribe = { message: e && e.message, room: e && e.room }; check(); });
        const own = `private-room-${drone.clientId}`; // subscribe-only for its owner
        drone.publish({ room: own, message: 'x' }, (e) => { out.publishCallback = e && e.message; check(); });
        drone.publish({ room: own, message: 'y' }); // no callback: becomes an 'error' event
      });

      const bad = new Scaledrone('chat');
      bad.on('open', () => bad.authenticate('not-a-jwt'));
      bad.on('authenticate', (err) => { out.badToken = err && err.message; check(); });

      const lost = new Scaledrone('no-such-channel');
      lost.on('open', (err) => { out.unknownChannel = err && err.message; });
      lost.on('close', () => { out.closed = lost.state; check(); });
    }), WAIT);
    assert.deepEqual(result.subscribe, { message: 'Unauthorized', room: 'private-room-somebody-else' });
    assert.equal(result.publishCallback, 'Unauthorized');
    assert.equal(result.uncorrelated.message, 'Unauthorized');
    assert.match(result.uncorrelated.room, /^private-room-/);
    assert.equal(result.badToken, 'JWT does not have 3 parts');
    assert.equal(result.unknownChannel, 'Unknown channel');
    assert.equal(result.closed, 'closed', 'a refused handshake is not retried');
    await context.close();
  });

  it('re-authenticates before the token expires when given an authenticate callback', async () => {
    const { context, page } = await clientPage(browser, server.url);
    // Tokens that live 3 s, signed here the way an app's auth server would.
    await page.exposeFunction('shortToken', (clientId) => signJwt({
      client: clientId,
      channel: CHAT.id,
      permissions: { '^observable-room$': { publish: true, subscribe: true, history: 0 } },
      exp: Math.floor(Date.now() / 1000) + 3,
    }, CHAT.secret));
    const result = await page.evaluate((wait) => within(wait, (done, fail) => {
      let calls = 0;
      const drone = new Scaledrone('chat', { authenticate: (id) => { calls++; return shortToken(id); } });
      let ok = 0;
      drone.on('authenticate', (err) => {
        if (err) return fail(err);
        if (++ok === 2) done({ calls, state: drone.state });
      });
    }), WAIT);
    assert.equal(result.calls, 2);
    assert.equal(result.state, 'open');
    await context.close();
  });

  it('reconnects after a dropped connection and recovers the messages it missed', async () => {
    const deadPort = await unusedPort();
    // Wraps WebSocket so the test can cut the connection and keep the
    // client offline (new sockets go to a closed port) for as long as it likes.
    const gate = {
      fn: (port) => {
        const Native = window.WebSocket;
        const g = { open: true, sockets: [] };
        window.__gate = g;
        window.WebSocket = class extends Native {
          constructor(url, protocols) {
            super(g.open ? url : `ws://127.0.0.1:${port}/`, protocols);
            g.sockets.push(this);
          }
        };
      },
      arg: deadPort,
    };
    const reader = await clientPage(browser, server.url, { init: gate });
    const writer = await clientPage(browser, server.url);

    await reader.page.evaluate(() => {
      window.log = [];
      const drone = new Scaledrone('chat', { authenticate: getToken });
      window.drone = drone;
      const room = drone.subscribe('observable-room');
      room.on('members', () => log.push({ kind: 'members' }));
      room.on('message', (m) => log.push({ kind: 'message', data: m.data, recovered: !!m.recovered }));
      room.on('resume', (r) => log.push({ kind: 'resume', recovered: r.recovered }));
      drone.on('disconnect', () => log.push({ kind: 'disconnect', id: drone.clientId }));
      drone.on('reconnect', () => log.push({ kind: 'reconnect', id: drone.clientId }));
    });
    await writer.page.evaluate(() => {
      const drone = new Scaledrone('chat', { authenticate: getToken });
      window.send = (message) => new Promise((ok, bad) => drone.publish({ room: 'observable-room', message }, (err) => (err ? bad(err) : ok())));
    });
    const waitLog = (pred) => reader.page.waitForFunction(pred, undefined, { timeout: WAIT });

    await waitLog(() => log.some((e) => e.kind === 'members'));
    await writer.page.evaluate(() => send('g1'));
    await waitLog(() => log.some((e) => e.data === 'g1'));

    await reader.page.evaluate(() => { __gate.open = false; __gate.sockets.at(-1).close(); });
    await waitLog(() => log.some((e) => e.kind === 'disconnect'));
    assert.equal(await reader.page.evaluate(() => drone.state), 'reconnecting');
    await writer.page.evaluate(async () => { await send('g2'); await send('g3'); });

    await reader.page.evaluate(() => { __gate.open = true; });
    await reader.page.waitForFunction(() => log.some((e) => e.kind === 'resume'), undefined, { timeout: 30_000 });
    await writer.page.evaluate(() => send('g4'));
    await waitLog(() => log.some((e) => e.data === 'g4'));

    const log = await reader.page.evaluate(() => window.log);
    const messages = log.filter((e) => e.kind === 'message');
    assert.deepEqual(messages.map((m) => m.data), ['g1', 'g2', 'g3', 'g4'], 'every message once, in order');
    assert.deepEqual(messages.map((m) => m.recovered), [false, true, true, false]);
    assert.deepEqual(log.find((e) => e.kind === 'resume'), { kind: 'resume', recovered: true });
    const before = log.find((e) => e.kind === 'disconnect').id;
    const afterId = log.find((e) => e.kind === 'reconnect').id;
    assert.notEqual(before, afterId, 'a new connection has a new client id');
    assert.equal(await reader.page.evaluate(() => drone.clientId), afterId);
    await reader.context.close();
    await writer.context.close();
  });
});
