// The chat page polish of issue 13, in headless Chromium at desktop
// (1366×768) and phone (390×844) sizes: limits that say when they cut,
// grapheme avatars, readable colours in both themes, calm reconnects, screen
// reader headers for grouped messages, the phone drawer, the People count,
// your own name on the phone, no pill on the login screen, a configuration
// fetch that retries, the favicon, whitespace-only messages, safe links,
// folding long messages, and an axe-core accessibility check.
//
// Each describe starts its own rookery (chat policy, fresh data dir); the
// steps inside one build on each other, so they run in order.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { startServer } from '../support/server.mjs';
import {
  PHONE, launchBrowser, newPage, joinChat, fillGuestForm, waitOnline, message, messageRow, send, screenshot,
  registerMember,
} from '../support/browser.mjs';

const DESKTOP = { width: 1366, height: 768 };
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/**
 * Runs axe-core in the page and fails on any serious or critical violation.
 * The script goes in through the DevTools protocol (page.evaluate), which the
 * page's CSP does not govern, so the real CSP stays on for the check.
 */
async function assertAccessible(page, label) {
  await page.evaluate(AXE_SOURCE);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) }));
  });
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${label}: ${JSON.stringify(bad, null, 2)}`);
}

/** WCAG contrast of two CSS colours as the browser computed them (rgb()/rgba()). */
function contrastOf(fg, bg) {
  const parse = (c) => c.match(/[\d.]+/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => {
    const ch = (v) => { const x = v / 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * ch(r) + 0.7152 * ch(g) + 0.0722 * ch(b);
  };
  const [hi, lo] = [lum(parse(fg)), lum(parse(bg))].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

/** Pastes `text` into the focused field through the real clipboard (Ctrl+V). */
async function paste(page, locator, text) {
  await page.evaluate((t) => navigator.clipboard.writeText(t), text);
  await locator.focus();
  await page.keyboard.press('Control+V');
}

const CLIPBOARD = ['clipboard-read', 'clipboard-write'];

describe('polish: the entry screen', { timeout: 120_000 }, () => {
  let server;
  let browser;

  before(async () => {
    [server, browser] = await Promise.all([startServer({ policy: 'chat' }), launchBrowser()]);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('shows no connection pill before joining, and loads without a single 404 (favicon included)', async () => {
    const { context, page } = await newPage(browser, { viewport: DESKTOP });
    const failed = [];
    // (GET /me answers 401 without a session: an answer, not a missing file.)
    page.on('response', (res) => { if (res.status() === 404) failed.push(res.url()); });
    await page.goto(`${server.url}/`);
    await page.locator('#login-form').waitFor();
    assert.equal(await page.locator('#status').isHidden(), true);
    assert.equal(await page.getByText('Not connected').isVisible(), false);
    const icon = await page.locator('link[rel="icon"]').getAttribute('href');
    assert.equal(icon, '/favicon.svg');
    const res = await fetch(new URL(icon, server.url));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/svg+xml');
    assert.match(await res.text(), /^<svg /);
    // The browser has asked for the icon by now (or never will): nothing failed.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0))));
    assert.deepEqual(failed, []);
    await screenshot(page, 'polish-login-no-pill');
    await context.close();
  });

  it('says when a pasted name was cut to 32 characters, and counts near the limit', async () => {
    const { context, page } = await newPage(browser, { viewport: DESKTOP, permissions: CLIPBOARD });
    await page.goto(`${server.url}/`);
    await page.getByRole('tab', { name: 'Guest' }).click();
    const field = page.locator('#guest-form').getByLabel('Display name');
    const long = 'a_very_long_display_name_that_goes_on_and_on'; // 44 characters
    await paste(page, field, long);
    assert.equal(await field.inputValue(), long.slice(0, 32));
    const note = page.locator('#name-input-limit');
    await note.locator('.said', { hasText: 'Pasted text was cut: 32 of 44 characters fit (the limit is 32).' }).waitFor();
    assert.equal(await note.locator('.counter').textContent(), '32 / 32 characters');
    // The note is part of the field's description, so a screen reader hears it.
    assert.match(await field.getAttribute('aria-describedby'), /\bname-input-limit\b/);
    await screenshot(page, 'polish-name-cut');
    // Typing clears the cut notice; well under the limit there is no counter.
    await field.fill('ada');
    assert.equal(await note.isHidden(), true);
    await field.fill('x'.repeat(26));
    assert.equal(await note.locator('.counter').textContent(), '26 / 32 characters');
    await context.close();
  });

  it('retries loading the configuration after "Failed to fetch", without another click', async () => {
    const { context, page } = await newPage(browser, { viewport: DESKTOP });
    let refused = 0;
    await page.route('**/config.json', (route) => {
      if (refused < 2) {
        refused++;
        return route.abort('connectionrefused');
      }
      return route.continue();
    });
    await page.goto(`${server.url}/`);
    await fillGuestForm(page, 'patient');
    await page.locator('#guest-error', { hasText: /Could not load the chat configuration: .*Retrying in \d+ s/ }).waitFor();
    await screenshot(page, 'polish-config-retrying');
    await waitOnline(page);
    assert.equal(refused, 2);
    assert.equal(await page.locator('#chat-view').isVisible(), true);
    assert.deepEqual(page.errors.map(String), []);
    await context.close();
  });

  for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    for (const colorScheme of ['light', 'dark']) {
      it(`has no serious accessibility violations on the login screen (${size}, ${colorScheme})`, async () => {
        const { context, page } = await newPage(browser, { viewport, colorScheme });
        await page.goto(`${server.url}/`);
        await page.locator('#login-form').waitFor();
        await assertAccessible(page, `login ${size} ${colorScheme}`);
        await page.getByRole('tab', { name: 'Create account' }).click();
        await assertAccessible(page, `register ${size} ${colorScheme}`);
        await screenshot(page, `polish-login-${size}-${colorScheme}`);
        await context.close();
      });
    }
  }
});

describe('polish: the chat screen', { timeout: 180_000 }, () => {
  let server;
  let browser;
  let ada; // member, desktop, light
  let bea; // member, phone, dark
  let emo; // guest with an emoji-first name
  const pages = [];

  before(async () => {
    [server, browser] = await Promise.all([startServer({ policy: 'chat' }), launchBrowser()]);
    ada = await registerMember(browser, server.url, { user: 'ada', name: 'Ada' }, { viewport: DESKTOP, permissions: CLIPBOARD });
    bea = await registerMember(browser, server.url, { user: 'bea', name: 'Bea' }, { viewport: PHONE, colorScheme: 'dark' });
    emo = await joinChat(browser, server.url, '😀 smiley', { viewport: DESKTOP });
    pages.push(ada.page, bea.page, emo.page);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('draws an emoji-first name\'s avatar with the whole emoji', async () => {
    await send(emo.page, 'hi from the emoji');
    const row = messageRow(ada.page, 'hi from the emoji');
    await row.waitFor();
    const letter = await row.locator('.avatar').textContent();
    assert.equal(letter, '😀');
    // No lone surrogate anywhere in it.
    assert.equal(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(letter), false);
    // A family emoji (a ZWJ sequence) stays one grapheme too.
    const family = await ada.page.evaluate(async () => (await import('/chat-dom.js')).initial('👩‍👩‍👧 family'));
    assert.equal(family, '👩‍👩‍👧');
    await screenshot(ada.page, 'polish-emoji-avatar');
  });

  it('renders names and avatars with AA contrast in the light and the dark theme', async () => {
    await send(ada.page, 'colour check from ada');
    for (const page of [ada.page, bea.page]) {
      await message(page, 'hi from the emoji').waitFor();
      await message(page, 'colour check from ada').waitFor();
    }
    // Every name on others' messages against its bubble, in both themes.
    for (const [page, theme] of [[ada.page, 'light'], [bea.page, 'dark']]) {
      const pairs = await page.locator('#messages li.msg:not(.own)').evaluateAll((rows) => rows.map((row) => ({
        name: getComputedStyle(row.querySelector('.author')).color,
        bubble: getComputedStyle(row.querySelector('.bubble')).backgroundColor,
        avatar: getComputedStyle(row.querySelector('.avatar')).backgroundColor,
        ink: getComputedStyle(row.querySelector('.avatar')).color,
      })));
      assert.ok(pairs.length > 0, `${theme}: messages from others are shown`);
      for (const p of pairs) {
        assert.ok(contrastOf(p.name, p.bubble) >= 4.5, `${theme}: name ${p.name} on ${p.bubble}`);
        assert.ok(contrastOf(p.ink, p.avatar) >= 4.5, `${theme}: avatar letter ${p.ink} on ${p.avatar}`);
      }
    }
    // A colour a token could carry that is pale on white (the pale blue)
    // comes out readable on both themes' backgrounds, and keeps its hue family.
    const out = await ada.page.evaluate(async () => {
      const dom = await import('/chat-dom.js');
      const pale = '#a0c4ff';
      const light = dom.readableOn(pale, dom.LIGHT_BG);
      const dark = dom.readableOn('#1d2a80', dom.DARK_BG);
      return {
        before: dom.contrast(pale, dom.LIGHT_BG),
        light: dom.contrast(light, dom.LIGHT_BG),
        dark: dom.contrast(dark, dom.DARK_BG),
        ink: dom.contrast(dom.inkOn(pale), pale),
        blue: parseInt(light.slice(5, 7), 16) > parseInt(light.slice(1, 3), 16),
      };
    });
    assert.ok(out.before < 4.5, 'the pale colour is really too pale');
    assert.ok(out.light >= 4.5 && out.dark >= 4.5 && out.ink >= 4.5, JSON.stringify(out));
    assert.ok(out.blue, 'still blue');
    await screenshot(bea.page, 'polish-colours-dark-phone');
    await screenshot(ada.page, 'polish-colours-light');
  });

  it('gives grouped messages a sender and a time for screen readers', async () => {
    await send(emo.page, 'first of two');
    await messageRow(emo.page, 'first of two').locator('.state', { hasText: /^Sent$/ }).waitFor();
    await send(emo.page, 'second in a row');
    const row = messageRow(ada.page, 'second in a row');
    await row.waitFor();
    assert.match(await row.getAttribute('class'), /\bcont\b/, 'grouped under the previous message');
    // Not shown, but in the accessibility tree.
    const box = await row.locator('.meta').boundingBox();
    assert.ok(box.width <= 1 && box.height <= 1, `header drawn at ${JSON.stringify(box)}`);
    const snapshot = await row.ariaSnapshot();
    assert.match(snapshot, /😀 smiley/);
    assert.match(snapshot, /\d{1,2}:\d{2}/);
  });

  it('says when a 10,000-character paste was cut to 4,000, with a counter', async () => {
    const input = ada.page.getByLabel('Message', { exact: true });
    await paste(ada.page, input, 'x'.repeat(10_000));
    assert.equal((await input.inputValue()).length, 4000);
    const note = ada.page.locator('#composer-note');
    await note.locator('.said', { hasText: 'Pasted text was cut: 4,000 of 10,000 characters fit (the limit is 4,000).' }).waitFor();
    assert.equal(await note.locator('.counter').textContent(), '4,000 / 4,000 characters');
    await screenshot(ada.page, 'polish-message-cut');
    await input.fill('');
    assert.equal(await note.isHidden(), true);
  });

  it('disables Send for an empty message and explains a whitespace-only one', async () => {
    const input = ada.page.getByLabel('Message', { exact: true });
    const sendButton = ada.page.getByRole('button', { name: 'Send message' });
    assert.equal(await sendButton.isDisabled(), true);
    await input.fill('   ');
    assert.equal(await sendButton.isDisabled(), true);
    await input.press('Enter');
    await ada.page.locator('#composer-note .said', { hasText: 'Nothing to send: the message is only spaces.' }).waitFor();
    assert.equal(await input.inputValue(), '   ');
    await screenshot(ada.page, 'polish-whitespace');
    await input.fill('now with words');
    assert.equal(await sendButton.isEnabled(), true);
    await sendButton.click();
    await message(bea.page, 'now with words').waitFor();
    assert.equal(await sendButton.isDisabled(), true);
  });

  it('makes http and https URLs links that open safely, and nothing else', async () => {
    const text = 'docs at https://example.com/a?b=1&c=%3C2%3E. or (see http://example.org/wiki/X_(y)), '
      + 'not javascript:alert(1) nor data:text/html,hi nor ftp://example.net/ nor https://exa mple.com';
    await send(ada.page, text);
    const row = messageRow(bea.page, text);
    await row.waitFor();
    const links = await row.locator('.text a').evaluateAll((as) => as.map((a) => ({
      href: a.getAttribute('href'), text: a.textContent, rel: a.rel, target: a.target,
    })));
    const safe = { rel: 'noopener noreferrer', target: '_blank' };
    assert.deepEqual(links, [
      { href: 'https://example.com/a?b=1&c=%3C2%3E', text: 'https://example.com/a?b=1&c=%3C2%3E', ...safe },
      { href: 'http://example.org/wiki/X_(y)', text: 'http://example.org/wiki/X_(y)', ...safe },
      { href: 'https://exa/', text: 'https://exa', ...safe },
    ]);
    // The whole text is still there, as text.
    assert.equal(await row.locator('.text').textContent(), text);
    await screenshot(bea.page, 'polish-links-phone');
  });

  it('folds a very long message behind "Show more"', async () => {
    const long = Array.from({ length: 60 }, (_, i) => `line ${i + 1} of a very long message`).join('\n');
    await send(ada.page, long);
    const row = messageRow(bea.page, long);
    await row.waitFor();
    const more = row.getByRole('button', { name: 'Show more' });
    assert.equal(await more.getAttribute('aria-expanded'), 'false');
    const folded = (await row.locator('.text').boundingBox()).height;
    assert.ok(folded < 844 / 2, `folded height ${folded}`);
    await screenshot(bea.page, 'polish-long-folded-phone');
    await more.click();
    const less = row.getByRole('button', { name: 'Show less' });
    assert.equal(await less.getAttribute('aria-expanded'), 'true');
    const unfolded = (await row.locator('.text').boundingBox()).height;
    assert.ok(unfolded > folded * 2, `unfolded ${unfolded} vs folded ${folded}`);
    await less.click();
    await row.getByRole('button', { name: 'Show more' }).waitFor();
  });

  it('on the phone: shows your name, the online count, and a drawer that closes on an outside tap', async () => {
    const page = bea.page;
    await page.locator('#account-name', { hasText: /^Bea$/ }).waitFor({ state: 'visible' });
    const toggle = page.locator('#people-toggle');
    await page.locator('#people-count', { hasText: /^3$/ }).waitFor({ state: 'visible' });
    assert.match(await toggle.getAttribute('aria-label'), /^People, 3 online/);
    assert.equal(await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth), false);
    await screenshot(page, 'polish-phone-main');
    await toggle.click();
    await page.locator('#sidebar.open').waitFor();
    await page.locator('#drawer-backdrop').waitFor({ state: 'visible' });
    await screenshot(page, 'polish-phone-drawer-backdrop');
    // A tap to the right of the drawer, on the dimmed conversation.
    await page.mouse.click(PHONE.width - 20, PHONE.height / 2);
    await page.locator('#sidebar.open').waitFor({ state: 'detached' });
    assert.equal(await page.locator('#drawer-backdrop').isHidden(), true);
    assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
  });

  for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    for (const colorScheme of ['light', 'dark']) {
      it(`has no serious accessibility violations on the chat screen (${size}, ${colorScheme})`, async () => {
        const { context, page } = await newPage(browser, { viewport, colorScheme });
        await page.goto(`${server.url}/`);
        await fillGuestForm(page, `axe_${size}_${colorScheme}`);
        await waitOnline(page);
        await message(page, 'now with words').waitFor();
        await assertAccessible(page, `chat ${size} ${colorScheme}`);
        await screenshot(page, `polish-chat-${size}-${colorScheme}`);
        await context.close();
      });
    }
  }

  it('after a restart: one calm "Reconnected.", no recovery warning, no burst of "joined"', async () => {
    const { port, dir } = server;
    const sysLines = (page) => page.locator('#messages li.sys').allTextContents();
    // The accessibility checks' guests have left everyone's list (and log).
    for (const page of pages) await page.locator('#members li').nth(3).waitFor({ state: 'detached' });
    const before = await Promise.all(pages.map(sysLines));
    await server.kill();
    for (const page of pages) await page.locator('#status[data-state="reconnecting"]').waitFor();
    server = await startServer({ port, dir, policy: 'chat' });
    for (const page of pages) await waitOnline(page);
    // Everyone is back in everyone's list before we look at the log.
    for (const page of pages) {
      for (const user of ['ada', 'bea']) await page.locator(`#members li[data-user="${user}"]`).waitFor({ state: 'attached' });
      await page.locator('#members li.guest').first().waitFor({ state: 'attached' });
    }
    // A message after everyone is back marks the point where any line would have come.
    await send(ada.page, 'after the restart');
    for (const page of pages) await message(page, 'after the restart').waitFor();
    for (const [i, page] of pages.entries()) {
      const added = (await sysLines(page)).slice(before[i].length).map((t) => t.replace(/\d{1,2}:\d{2}.*$/, '').trim());
      assert.deepEqual(added, ['Reconnected.'], `page ${i}`);
    }
    await screenshot(ada.page, 'polish-reconnected');
    for (const page of pages) assert.deepEqual(page.errors.map(String), []);
  });

  it('warns about missed messages only when the server could not recover them', async () => {
    // A server with a new data dir on the same address knows nothing of the
    // ids the pages saw: the gap cannot be filled, and the page says so once.
    const { port } = server;
    await server.kill();
    for (const page of pages) await page.locator('#status[data-state="reconnecting"]').waitFor();
    server = await startServer({ port, policy: 'chat' });
    // The guest's page has no account to lose; it comes back to the public room.
    await waitOnline(emo.page);
    await emo.page.locator('#messages li.sys.warn', { hasText: 'Some messages sent while you were away could not be recovered.' }).waitFor();
    assert.equal(await emo.page.locator('#messages li.sys.warn').count(), 1);
    await screenshot(emo.page, 'polish-recovery-warning');
  });
});
