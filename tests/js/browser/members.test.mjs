// Members on the chat page (PROTOCOL.md §11): conversations belong to users,
// not connections. Accounts with the same display name, a recipient who is
// offline, reloads and other devices, several tabs of one user, messages
// queued while the server is down, a refused publish with retry, and logout.
//
// Each describe starts its own rookery (chat policy, fresh data dir); the
// steps inside one build on each other, so they run in order.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../support/server.mjs';
import {
  PHONE, launchBrowser, newPage, waitOnline, message, messageRow, send, screenshot,
  registerMember, loginMember, person, dmButton,
} from '../support/browser.mjs';

const ANN1 = { user: 'ann1', name: 'Ann' };
const ANN2 = { user: 'ann2', name: 'Ann' };
const CAROL = { user: 'carol', name: 'Carol' };

/** Opens the conversation with `peer` on `who`'s page. */
async function openDm(who, peer) {
  await dmButton(who.page, who.user, peer).click();
  await who.page.locator('#conv-subtitle', { hasText: `@${peer}` }).waitFor();
}

describe('members and their conversations', { timeout: 120_000 }, () => {
  let server;
  let browser;
  let ann1;
  let ann2;
  let carol;
  const pages = [];

  before(async () => {
    [server, browser] = await Promise.all([startServer({ policy: 'chat' }), launchBrowser()]);
    ann1 = await registerMember(browser, server.url, ANN1);
    ann2 = await registerMember(browser, server.url, ANN2);
    carol = await registerMember(browser, server.url, CAROL);
    pages.push(ann1.page, ann2.page, carol.page);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('never lets two accounts with the same display name receive each other\'s messages', async () => {
    // Both Anns are listed, told apart by their usernames.
    for (const ann of [ANN1, ANN2]) await person(carol.page, ann.user).locator('.handle', { hasText: `@${ann.user}` }).waitFor();
    await person(carol.page, ANN1.user).getByRole('button').click();
    await carol.page.locator('#conv-subtitle', { hasText: '@ann1 · online' }).waitFor();
    await send(carol.page, 'for ann1 only');
    await messageRow(carol.page, 'for ann1 only').locator('.state', { hasText: /^Sent$/ }).waitFor();

    await dmButton(ann1.page, 'ann1', 'carol').locator('.badge', { hasText: '1' }).waitFor();
    await openDm(ann1, 'carol');
    const row = messageRow(ann1.page, 'for ann1 only');
    assert.equal(await row.locator('.author').textContent(), 'Carol');
    assert.equal(await row.locator('.handle').textContent(), '@carol');
    await screenshot(carol.page, 'desktop-dm');

    // ann1 leaves. The conversation stays ann1's: it is not handed to the
    // other Ann, who is online under the same display name.
    await ann1.context.close();
    pages.splice(pages.indexOf(ann1.page), 1);
    await carol.page.locator('#conv-subtitle', { hasText: '@ann1 · offline · messages are delivered when Ann is back' }).waitFor();
    await send(carol.page, 'while you were away');
    await messageRow(carol.page, 'while you were away').locator('.state', { hasText: 'Sent · delivered when Ann is back' }).waitFor();
    await screenshot(carol.page, 'desktop-dm-offline');
    // A later public message reaches ann2, so anything for her would have too.
    await carol.page.locator('#conversations .conv-button').first().click();
    await send(carol.page, 'public marker');
    await message(ann2.page, 'public marker').waitFor();
    assert.equal(await ann2.page.locator('#conversations .conv-button').count(), 1);
    for (const text of ['for ann1 only', 'while you were away']) {
      assert.equal(await ann2.page.getByText(text).count(), 0);
    }
    // And ann2's token cannot read ann1's conversation even if she asks.
    const refused = await ann2.page.evaluate(() => new Promise((resolve) => {
      const room = window.rookeryChat.drone.subscribe('dm-ann1-carol');
      room.on('open', (err) => resolve(err ? err.message : 'subscribed'));
    }));
    assert.equal(refused, 'Unauthorized');
  });

  it('delivers a message sent while the recipient was offline when they come back', async () => {
    // Another device: no local cache, so the inbox is what brings it back.
    ann1 = await loginMember(browser, server.url, ANN1, { viewport: PHONE });
    pages.push(ann1.page);
    await person(carol.page, 'ann1').waitFor();
    await ann1.page.getByRole('button', { name: /People/ }).click();
    await openDm(ann1, 'carol');
    await message(ann1.page, 'while you were away').waitFor();
    await message(ann1.page, 'for ann1 only').waitFor();
    const texts = await ann1.page.locator('#messages li.msg .text').allTextContents();
    assert.ok(texts.indexOf('for ann1 only') < texts.indexOf('while you were away'));
    assert.equal(await ann1.page.locator('#messages li.msg.own').count(), 0);
    await send(ann1.page, 'back now, carol');
    await messageRow(ann1.page, 'back now, carol').locator('.state', { hasText: /^Sent$/ }).waitFor();
    await screenshot(ann1.page, 'phone-dm');
    const overflow = await ann1.page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    assert.equal(overflow, false, 'the page must not scroll sideways at phone width');
  });

  it('restores every conversation and its history after a reload, own messages as own', async () => {
    await carol.page.reload();
    await waitOnline(carol.page);
    await openDm(carol, 'ann1');
    await message(carol.page, 'back now, carol').waitFor();
    for (const text of ['for ann1 only', 'while you were away']) {
      assert.match(await messageRow(carol.page, text).getAttribute('class'), /\bown\b/);
    }
    assert.doesNotMatch(await messageRow(carol.page, 'back now, carol').getAttribute('class'), /\bown\b/);

    // On a fresh device (nothing in localStorage) the server alone restores
    // it: ann1 answered, so carol's inbox lists the conversation.
    const other = await loginMember(browser, server.url, CAROL);
    pages.push(other.page);
    await openDm(other, 'ann1');
    await message(other.page, 'back now, carol').waitFor();
    assert.match(await messageRow(other.page, 'for ann1 only').getAttribute('class'), /\bown\b/);
    await other.context.close();
    pages.splice(pages.indexOf(other.page), 1);
  });

  it('shows one person with several tabs once, and every tab receives', async () => {
    const second = await carol.context.newPage();
    second.errors = [];
    second.on('pageerror', (err) => second.errors.push(err));
    await second.goto(`${server.url}/`);
    await waitOnline(second);
    pages.push(second);
    const entry = person(ann2.page, 'carol');
    await entry.locator('.tag', { hasText: '2 tabs' }).waitFor();
    assert.equal(await entry.count(), 1);
    assert.equal(await ann2.page.locator('#member-count').textContent(), '3');

    await send(ann1.page, 'to both your tabs');
    for (const page of [carol.page, second]) {
      await dmButton(page, 'carol', 'ann1').click();
      await message(page, 'to both your tabs').waitFor();
    }
    // What one tab sends, the other shows as its own too.
    await send(second, 'from my second tab');
    await messageRow(carol.page, 'from my second tab').and(carol.page.locator('.own')).waitFor();
    await message(ann1.page, 'from my second tab').waitFor();
    await screenshot(second, 'desktop-two-tabs');

    // Offline only when the last tab leaves.
    await second.close();
    pages.splice(pages.indexOf(second), 1);
    await entry.locator('.tag', { hasText: '2 tabs' }).waitFor({ state: 'detached' });
    assert.equal(await entry.count(), 1);
  });

  it('queues messages written while offline and sends them to the right room on reconnect', async () => {
    // carol's sockets go through a switch the test controls (accounts live in
    // memory today, so restarting the server would end every session).
    let offline = false;
    const live = [];
    await carol.page.routeWebSocket(/\/v3\/websocket$/, (ws) => {
      if (offline) {
        ws.close({ code: 4000, reason: 'test: offline' });
        return;
      }
      live.push({ ws, server: ws.connectToServer() });
    });
    await carol.page.reload();
    await waitOnline(carol.page);
    await openDm(carol, 'ann1');

    offline = true;
    for (const { ws, server: upstream } of live.splice(0)) {
      upstream.close();
      ws.close({ code: 4000, reason: 'test: offline' });
    }
    await carol.page.locator('#status[data-state="reconnecting"]').waitFor();
    await send(carol.page, 'written while offline');
    const state = messageRow(carol.page, 'written while offline').locator('.state');
    await state.filter({ hasText: 'Queued · sends when you are back online' }).waitFor();
    await screenshot(carol.page, 'desktop-queued');

    offline = false;
    await state.filter({ hasText: /^Sent$/ }).waitFor({ timeout: 30_000 });
    await message(ann1.page, 'written while offline').waitFor();
    assert.equal(await ann2.page.getByText('written while offline').count(), 0);
    // Sent once: the queued publish and the recovery after reconnecting do not duplicate it.
    assert.equal(await message(ann1.page, 'written while offline').count(), 1);
    assert.equal(await message(carol.page, 'written while offline').count(), 1);
    await carol.page.unrouteAll();
  });

  it('ends the session on logout: /me says 401, and a copy of the old cookie is dead', async () => {
    const cookies = await ann2.context.cookies();
    const session = cookies.find((c) => c.name === 'rookery_session');
    assert.ok(session, 'a session cookie after login');
    const me = () => fetch(`${server.url}/me`, { headers: { Cookie: `rookery_session=${session.value}` } });
    assert.equal((await me()).status, 200);

    await ann2.page.getByRole('button', { name: 'Log out' }).click();
    await ann2.page.getByRole('tab', { name: 'Log in' }).waitFor();
    await person(carol.page, 'ann2').waitFor({ state: 'detached' });
    assert.equal(await ann2.page.evaluate(async () => (await fetch('/me')).status), 401);
    const copy = await me();
    assert.equal(copy.status, 401);
    assert.deepEqual(await copy.json(), { message: 'Not logged in' });
    // A reload stays logged out.
    await ann2.page.reload();
    await ann2.page.getByRole('tab', { name: 'Log in', selected: true }).waitFor();
    assert.equal(await ann2.page.locator('#chat-view').isHidden(), true);
    await screenshot(ann2.page, 'desktop-login');
  });

  it('shows the server\'s reasons on the login and registration forms', async () => {
    const { context, page } = await newPage(browser);
    await page.goto(`${server.url}/`);
    const login = page.locator('#login-form');
    await login.getByLabel('Username').fill('carol');
    await login.getByLabel('Password').fill('not her password');
    await login.getByRole('button', { name: 'Log in' }).click();
    await page.locator('#login-error', { hasText: /^Invalid username or password$/ }).waitFor();

    await page.getByRole('tab', { name: 'Create account' }).click();
    const register = page.locator('#register-form');
    await register.getByLabel('Username').fill('carol');
    await register.getByLabel('Password').fill('long enough password');
    await register.getByRole('button', { name: 'Create account' }).click();
    await page.locator('#register-error', { hasText: /^Username taken$/ }).waitFor();
    assert.equal(await register.getByLabel('Username').evaluate((el) => el === document.activeElement), true);

    await register.getByLabel('Username').fill('x');
    await register.getByRole('button', { name: 'Create account' }).click();
    await page.locator('#register-error', { hasText: /^Invalid username/ }).waitFor();
    await screenshot(page, 'desktop-register-refused');
    await context.close();
  });

  it('raised no page errors', () => {
    for (const page of pages) assert.deepEqual(page.errors.map(String), []);
  });
});

describe('a refused message', { timeout: 60_000 }, () => {
  let server;
  let browser;

  before(async () => {
    // One publish per second, burst 2: the third of several quick messages is refused.
    const extraToml = '[limits]\npublish_rate_per_second = 1\npublish_burst = 2\n';
    [server, browser] = await Promise.all([startServer({ policy: 'chat', extraToml }), launchBrowser()]);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('is marked failed with the server\'s reason, and Retry sends it', async () => {
    const dave = await registerMember(browser, server.url, { user: 'dave' }, { viewport: { width: 1366, height: 768 } });
    // Five messages in one task: they reach the server together, well within a second.
    await dave.page.evaluate(() => {
      const input = document.getElementById('message-input');
      const form = document.getElementById('composer');
      for (let i = 1; i <= 5; i++) {
        input.value = `burst ${i}`;
        form.requestSubmit();
      }
    });
    const failed = dave.page.locator('#messages li.msg.failed');
    await failed.first().waitFor();
    const text = await failed.first().locator('.text').textContent();
    assert.match(await failed.first().locator('.state').textContent(), /Not sent: Rate limit exceeded/);
    await screenshot(dave.page, 'desktop-failed');
    const row = messageRow(dave.page, text);
    // Retry until the server takes it (the allowance refills once a second).
    for (let attempt = 0; attempt < 20; attempt++) {
      await row.getByRole('button', { name: /Retry/ }).click();
      await row.locator('.state', { hasText: /^(Sent|Not sent.*)$/ }).waitFor({ timeout: 10_000 });
      if (/^Sent/.test(await row.locator('.state').textContent())) break;
      await dave.page.waitForTimeout(500);
    }
    await row.locator('.state', { hasText: /^Sent$/ }).waitFor();
    assert.equal(await message(dave.page, text).count(), 1);
    assert.deepEqual(dave.page.errors.map(String), []);
  });
});
