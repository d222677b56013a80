// static/examples/tutorial.html is written like the official Scaledrone
// tutorial (token from POST /auth with FormData, observable-room presence,
// 'data' events) and must work on rookery.js unchanged.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../support/server.mjs';
import { launchBrowser, newPage, screenshot } from '../support/browser.mjs';

describe('tutorial example page', { timeout: 60_000 }, () => {
  let server;
  let browser;

  before(async () => {
    [server, browser] = await Promise.all([startServer(), launchBrowser()]);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('lets two visitors see each other and exchange a message', async () => {
    const [one, two] = await Promise.all([newPage(browser), newPage(browser)]);
    for (const { page } of [one, two]) await page.goto(`${server.url}/examples/tutorial.html`);
    for (const { page } of [one, two]) {
      await page.locator('.members-count', { hasText: /^2$/ }).waitFor();
      assert.equal(await page.locator('.members-list .member').count(), 2);
    }

    await one.page.getByLabel('Message').fill('hi from the tutorial');
    await one.page.getByLabel('Message').press('Enter');
    for (const { page } of [one, two]) {
      await page.locator('.messages .message', { hasText: 'hi from the tutorial' }).waitFor();
    }
    // The sender's name (from the token's data claim, i.e. authData) precedes the text.
    const name = await two.page.locator('.messages .message .member').first().textContent();
    assert.ok(name && name.length > 0);
    await screenshot(two.page, 'desktop-tutorial');

    await one.context.close();
    await two.page.locator('.members-count', { hasText: /^1$/ }).waitFor();
    assert.deepEqual(two.page.errors.map(String), []);
  });
});
